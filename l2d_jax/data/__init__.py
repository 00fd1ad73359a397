"""Data: loaders for real annotation data sets and simulated data.

Loaders read numpy/csv/json/zip only (never pickle) from a ``data_dir``.
A file that cannot be read as its format requires (not UTF-8, truncated,
corrupt, encrypted, inflating beyond ``MAX_ZIP_MEMBER_BYTES`` or
``MAX_ZIP_RATIO``, numbers beyond int64) raises ``DataFileError``, a
``ValueError`` whose message starts with the file (and line).
"""

__all__ = (
    "AnnotatedDataset",
    "as_numpy_rng",
    "augment_crop_flip",
    "balanced_assignment",
    "CALIFORNIA_FEATURES",
    "CALIFORNIA_RAW_COLUMNS",
    "CIFAR100_CLASSES",
    "CIFAR100_COARSE_CLASSES",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "crop_and_flip",
    "DataFileError",
    "epoch_permutation",
    "iterate_batches",
    "load_byo",
    "load_california_housing",
    "load_cifar100",
    "load_cifar100_tfds",
    "load_cifar10_images",
    "load_cifar10_tfds",
    "load_cifar10h_counts",
    "load_cifar10h_raw",
    "load_cifar10n",
    "load_cifar10n_labels",
    "load_cifar10s",
    "load_human_model_truth",
    "load_imagenet16h",
    "load_imagenet16h_classes",
    "load_imagenet16h_human",
    "load_imagenet16h_model_preds",
    "load_model_probs",
    "load_svhn",
    "load_svhn_tfds",
    "MAX_ZIP_MEMBER_BYTES",
    "MAX_ZIP_RATIO",
    "mixture_of_gaussians",
    "MODEL_NAMES",
    "MOG_PAPER_MEANS",
    "normalize_images",
    "save_byo",
    "steps_per_epoch",
    "synthetic_pool",
    "train_val_test_split",
    # Keyed JAX augmentation: FixMatch weak / strong views (issue 8).
    "RANDAUGMENT_OPS",
    "strong_augment",
    "weak_augment",
    # L2D-Pop image data sets: digits, Fashion-MNIST, GTSRB (issue 8).
    "load_digits",
    "FASHION_MNIST_CLASSES",
    "load_fashion_mnist",
    "load_fashion_mnist_tfds",
    "load_gtsrb",
    # MedMNIST 2D sets from their .npz archives (EA-L2D, issue 9).
    "MEDMNIST_CLASSES",
    "load_medmnist",
    "medmnist_path",
)


# --- real annotation loaders (issue 2) ---
from l2d_jax.data._byo import load_byo
from l2d_jax.data._byo import save_byo
from l2d_jax.data._cifar10h import load_cifar10h_counts
from l2d_jax.data._cifar10h import load_cifar10h_raw
from l2d_jax.data._cifar10n import CIFAR100_CLASSES
from l2d_jax.data._cifar10n import load_cifar10n
from l2d_jax.data._cifar10n import load_cifar10n_labels
from l2d_jax.data._cifar10s import load_cifar10s
from l2d_jax.data._common import AnnotatedDataset
from l2d_jax.data._common import DataFileError
from l2d_jax.data._common import MAX_ZIP_MEMBER_BYTES
from l2d_jax.data._common import MAX_ZIP_RATIO
from l2d_jax.data._imagenet16h import load_imagenet16h
from l2d_jax.data._imagenet16h import load_imagenet16h_classes
from l2d_jax.data._imagenet16h import load_imagenet16h_human
from l2d_jax.data._imagenet16h import load_imagenet16h_model_preds
from l2d_jax.data._model_probs import MODEL_NAMES
from l2d_jax.data._model_probs import load_human_model_truth
from l2d_jax.data._model_probs import load_model_probs
# --- end real annotation loaders ---
# --- synthetic pools (issue 2) ---
from l2d_jax.data._synthetic import balanced_assignment
from l2d_jax.data._synthetic import synthetic_pool
# --- end synthetic pools ---
# --- images and mixture of Gaussians (issue 3) ---
from l2d_jax.data._cifar10_images import CIFAR10_CLASSES
from l2d_jax.data._cifar10_images import CIFAR10_MEAN
from l2d_jax.data._cifar10_images import CIFAR10_STD
from l2d_jax.data._cifar10_images import augment_crop_flip
from l2d_jax.data._cifar10_images import crop_and_flip
from l2d_jax.data._cifar10_images import epoch_permutation
from l2d_jax.data._cifar10_images import iterate_batches
from l2d_jax.data._cifar10_images import load_cifar10_images
from l2d_jax.data._cifar10_images import load_cifar10_tfds
from l2d_jax.data._cifar10_images import normalize_images
from l2d_jax.data._cifar10_images import steps_per_epoch
from l2d_jax.data._mog import PAPER_MEANS as MOG_PAPER_MEANS
from l2d_jax.data._mog import as_numpy_rng
from l2d_jax.data._mog import mixture_of_gaussians
from l2d_jax.data._mog import train_val_test_split
# --- end images and mixture of Gaussians ---
# --- top-k data sets: California Housing, SVHN, CIFAR-100 (issue 10) ---
from l2d_jax.data._california import CALIFORNIA_FEATURES
from l2d_jax.data._california import CALIFORNIA_RAW_COLUMNS
from l2d_jax.data._california import load_california_housing
from l2d_jax.data._cifar100 import CIFAR100_COARSE_CLASSES
from l2d_jax.data._cifar100 import load_cifar100
from l2d_jax.data._cifar100 import load_cifar100_tfds
from l2d_jax.data._svhn import load_svhn
from l2d_jax.data._svhn import load_svhn_tfds
# --- end top-k data sets ---
# --- keyed JAX augmentation: FixMatch weak / strong views (issue 8) ---
from l2d_jax.data._augment import RANDAUGMENT_OPS
from l2d_jax.data._augment import strong_augment
from l2d_jax.data._augment import weak_augment
# --- end keyed JAX augmentation ---
# --- L2D-Pop image data sets: digits, Fashion-MNIST, GTSRB (issue 8) ---
from l2d_jax.data._digits import load_digits
from l2d_jax.data._fashion_mnist import FASHION_MNIST_CLASSES
from l2d_jax.data._fashion_mnist import load_fashion_mnist
from l2d_jax.data._fashion_mnist import load_fashion_mnist_tfds
from l2d_jax.data._gtsrb import load_gtsrb
# --- end L2D-Pop image data sets ---
# --- MedMNIST .npz archives (issue 9) ---
from l2d_jax.data._medmnist import MEDMNIST_CLASSES
from l2d_jax.data._medmnist import load_medmnist
from l2d_jax.data._medmnist import medmnist_path
# --- end MedMNIST ---
