"""Data: loaders for real annotation data sets, image and tabular sets, and simulated data.

Loaders read numpy/csv/json/zip only (never pickle) from a ``data_dir``.
A file that cannot be read as its format requires (not UTF-8, truncated,
corrupt, encrypted, inflating beyond ``MAX_ZIP_MEMBER_BYTES`` or
``MAX_ZIP_RATIO``, numbers beyond int64) raises ``DataFileError``, a
``ValueError`` whose message starts with the file (and line). The two zip
limits are read live (``l2d_jax.data.MAX_ZIP_RATIO`` is the value every loader
uses) and changed with ``set_zip_limits``.
"""
from typing import Any
from l2d_jax.data._common import AnnotatedDataset
from l2d_jax.data._file_errors import DataFileError
from l2d_jax.data._archives import set_zip_limits
from l2d_jax.data._cifar10h import load_cifar10h_counts
from l2d_jax.data._cifar10h import load_cifar10h_raw
from l2d_jax.data._cifar10s import load_cifar10s
from l2d_jax.data._cifar10n import load_cifar10n
from l2d_jax.data._cifar10n import load_cifar10n_labels
from l2d_jax.data._imagenet16h import load_imagenet16h
from l2d_jax.data._imagenet16h import load_imagenet16h_classes
from l2d_jax.data._imagenet16h import load_imagenet16h_human
from l2d_jax.data._imagenet16h import load_imagenet16h_model_preds
from l2d_jax.data._model_probs import MODEL_NAMES
from l2d_jax.data._model_probs import load_human_model_truth
from l2d_jax.data._model_probs import load_model_probs
from l2d_jax.data._byo import load_byo
from l2d_jax.data._byo import save_byo
from l2d_jax.data._synthetic import balanced_assignment
from l2d_jax.data._synthetic import synthetic_pool
from l2d_jax.data._mog import mixture_of_gaussians
from l2d_jax.data._mog import PAPER_MEANS as MOG_PAPER_MEANS
from l2d_jax.data._mog import train_val_test_split
from l2d_jax.data._mog import as_numpy_rng
from l2d_jax.data._cifar10_images import CIFAR10_CLASSES
from l2d_jax.data._cifar10_images import load_cifar10_images
from l2d_jax.data._cifar10_images import load_cifar10_tfds
from l2d_jax.data._cifar10n import CIFAR100_CLASSES
from l2d_jax.data._cifar100 import CIFAR100_COARSE_CLASSES
from l2d_jax.data._cifar100 import load_cifar100
from l2d_jax.data._cifar100 import load_cifar100_tfds
from l2d_jax.data._svhn import load_svhn
from l2d_jax.data._svhn import load_svhn_tfds
from l2d_jax.data._digits import load_digits
from l2d_jax.data._fashion_mnist import FASHION_MNIST_CLASSES
from l2d_jax.data._fashion_mnist import load_fashion_mnist
from l2d_jax.data._fashion_mnist import load_fashion_mnist_tfds
from l2d_jax.data._gtsrb import load_gtsrb
from l2d_jax.data._medmnist import MEDMNIST_CLASSES
from l2d_jax.data._medmnist import load_medmnist
from l2d_jax.data._medmnist import medmnist_path
from l2d_jax.data._california import CALIFORNIA_FEATURES
from l2d_jax.data._california import CALIFORNIA_RAW_COLUMNS
from l2d_jax.data._california import load_california_housing
from l2d_jax.data._cifar10_images import CIFAR10_MEAN
from l2d_jax.data._cifar10_images import CIFAR10_STD
from l2d_jax.data._cifar10_images import normalize_images
from l2d_jax.data._cifar10_images import crop_and_flip
from l2d_jax.data._cifar10_images import augment_crop_flip
from l2d_jax.data._cifar10_images import epoch_permutation
from l2d_jax.data._cifar10_images import steps_per_epoch
from l2d_jax.data._cifar10_images import iterate_batches
from l2d_jax.data._augment import RANDAUGMENT_OPS
from l2d_jax.data._augment import weak_augment
from l2d_jax.data._augment import strong_augment

from l2d_jax.data import _archives

__all__ = (
    # The data model and file errors.
    "AnnotatedDataset",
    "DataFileError",
    "set_zip_limits",
    "MAX_ZIP_MEMBER_BYTES",
    "MAX_ZIP_RATIO",
    # Real annotation data (CIFAR-10H/S/N, ImageNet-16H, model probabilities).
    "load_cifar10h_counts",
    "load_cifar10h_raw",
    "load_cifar10s",
    "load_cifar10n",
    "load_cifar10n_labels",
    "load_imagenet16h",
    "load_imagenet16h_classes",
    "load_imagenet16h_human",
    "load_imagenet16h_model_preds",
    "MODEL_NAMES",
    "load_human_model_truth",
    "load_model_probs",
    # Bring your own pool (atomic, checksummed).
    "load_byo",
    "save_byo",
    # Simulated data: pools and mixtures of Gaussians.
    "balanced_assignment",
    "synthetic_pool",
    "mixture_of_gaussians",
    "MOG_PAPER_MEANS",
    "train_val_test_split",
    "as_numpy_rng",
    # Image sets.
    "CIFAR10_CLASSES",
    "load_cifar10_images",
    "load_cifar10_tfds",
    "CIFAR100_CLASSES",
    "CIFAR100_COARSE_CLASSES",
    "load_cifar100",
    "load_cifar100_tfds",
    "load_svhn",
    "load_svhn_tfds",
    "load_digits",
    "FASHION_MNIST_CLASSES",
    "load_fashion_mnist",
    "load_fashion_mnist_tfds",
    "load_gtsrb",
    "MEDMNIST_CLASSES",
    "load_medmnist",
    "medmnist_path",
    # Tabular sets.
    "CALIFORNIA_FEATURES",
    "CALIFORNIA_RAW_COLUMNS",
    "load_california_housing",
    # Host-side image batches and augmentation.
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "normalize_images",
    "crop_and_flip",
    "augment_crop_flip",
    "epoch_permutation",
    "steps_per_epoch",
    "iterate_batches",
    # Keyed JAX augmentation (FixMatch weak / strong views).
    "RANDAUGMENT_OPS",
    "weak_augment",
    "strong_augment",
)

_ZIP_LIMITS = ("MAX_ZIP_MEMBER_BYTES", "MAX_ZIP_RATIO")


def __getattr__(name: str) -> Any:
  # The zip limits live in one place; reading them here gives the value every
  # loader uses (set them with ``set_zip_limits``).
  if name in _ZIP_LIMITS:
    return getattr(_archives, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
