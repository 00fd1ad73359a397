"""Data, splits and the synthetic expert population of the experiment.

``load_data`` reads a data set and cuts the splits of ``config`` (see its
Conventions); ``population`` gives the ten experts' answers on every image
and ``labelled_indices`` the ``k`` labelled points per class of a budget.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from experiments.population_l2d import config
from l2d_jax import data as data_lib
from l2d_jax import experts

SPLITS = ("train", "val_ctx", "val_query", "test_ctx", "test_query")


@dataclasses.dataclass
class Data:
  """Images, labels and the index splits of one data set.

  Attributes:
    dataset: the data set name.
    images: ``float32 [N, H, W, C]`` pixels in ``[0, 1]``.
    labels: ``int32 [N]`` in ``[0, K)``.
    splits: split name (``SPLITS``) -> int index array into ``images``.
    num_classes: K.
  """

  dataset: str
  images: np.ndarray
  labels: np.ndarray
  splits: dict[str, np.ndarray]
  num_classes: int

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.images.shape[1:])


def _halve(idx: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
  idx = rng.permutation(idx)
  return idx[:idx.size // 2], idx[idx.size // 2:]


def make_data(dataset: str, images: np.ndarray, labels: np.ndarray, *,
              num_classes: int, test_start: int | None = None,
              seed: int = config.DATA_SEED) -> Data:
  """Cuts the splits of ``config`` (see its Conventions).

  Args:
    dataset: the name recorded.
    images: ``[N, H, W, C]`` uint8 or float in ``[0, 1]``.
    labels: ``[N]`` integer labels.
    num_classes: K.
    test_start: index where an official test set starts in ``images``
      (training part cut 90/10); ``None``: one pool cut 55/15/30.
    seed: the split permutation's seed.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  images = images.astype(np.float32)
  labels = np.asarray(labels, np.int32)
  rng = np.random.default_rng(seed)
  n = labels.shape[0]
  if test_start is None:
    perm = rng.permutation(n)
    cuts = np.cumsum([int(round(config.DIGITS_SPLIT[s] * n))
                      for s in ("train", "val")])
    train, val, test = np.split(perm, cuts)
  else:
    perm = rng.permutation(test_start)
    n_val = int(round(config.CIFAR_VAL_FRACTION * test_start))
    val, train = perm[:n_val], perm[n_val:]
    test = np.arange(test_start, n)
  val_ctx, val_query = _halve(val, rng)
  test_ctx, test_query = _halve(test, rng)
  splits = {"train": np.sort(train), "val_ctx": val_ctx,
            "val_query": val_query, "test_ctx": test_ctx,
            "test_query": test_query}
  return Data(dataset, images, labels, splits, num_classes)


def _subsample(images, labels, cap, rng):
  if cap is None or labels.shape[0] <= cap:
    return images, labels
  keep = np.sort(rng.permutation(labels.shape[0])[:cap])
  return images[keep], labels[keep]


def check_dataset_files(dataset: str, data_dir) -> None:
  """Raises ``FileNotFoundError`` naming the missing path of ``dataset``."""
  root = pathlib.Path(data_dir)
  if dataset == "digits":
    return
  if dataset == "cifar10":
    for f in ("cifar10_train_jpg.zip", "cifar10_test_jpg.zip"):
      p = root / "cifar10_images" / f
      if not p.exists():
        raise FileNotFoundError(f"CIFAR-10 images not found: {p} does not "
                                "exist; pass the shared data folder with "
                                "--data-dir")
    return
  folders = {"fashion_mnist": ("fashion_mnist", "fashion-mnist",
                               "FashionMNIST"),
             "gtsrb": ("gtsrb", "GTSRB", "Final_Training")}[dataset]
  if not any((root / f).is_dir() for f in folders):
    raise FileNotFoundError(
        f"{dataset} not found: {root / folders[0]} does not exist (it is not "
        f"part of the shared data here); place the original files there or "
        f"pass their folder with --data-dir")


def load_data(dataset: str, *, data_dir, budget: config.Budget,
              cache_dir=None, max_images: int | None = None) -> Data:
  """Loads ``dataset`` and cuts its splits.

  Args:
    dataset: one of ``config.DATASETS``.
    data_dir: the shared data root (unused for digits).
    budget: caps on the numbers of training / test images.
    cache_dir: folder for decoded images (CIFAR-10).
    max_images: digits only: keep this many images (tests).
  """
  check_dataset_files(dataset, data_dir)
  rng = np.random.default_rng(config.DATA_SEED)
  if dataset == "digits":
    x, y = data_lib.load_digits()
    x, y = _subsample(x, y, max_images, rng)
    return make_data(dataset, x, y, num_classes=10)
  if dataset == "gtsrb":
    x, y = data_lib.load_gtsrb(data_dir)
    cap = None if budget.train_images is None else (
        budget.train_images + budget.test_images)
    x, y = _subsample(x, y, cap, rng)
    return make_data(dataset, x, y, num_classes=43)
  if dataset == "cifar10":
    load = functools.partial(data_lib.load_cifar10_images, data_dir,
                             cache_dir=cache_dir)
    (xtr, ytr), (xte, yte) = load(split="train"), load(split="test")
  else:
    (xtr, ytr), (xte, yte) = (data_lib.load_fashion_mnist(data_dir, "train"),
                              data_lib.load_fashion_mnist(data_dir, "test"))
  xtr, ytr = _subsample(xtr, ytr, budget.train_images, rng)
  xte, yte = _subsample(xte, yte, budget.test_images, rng)
  return make_data(dataset, np.concatenate([xtr, xte]),
                   np.concatenate([ytr, yte]), num_classes=10,
                   test_start=ytr.shape[0])


# ---------------------------------------------------------------------------
# Experts.


def population(data: Data, *, seed: int, size_h: int, order: str,
               wrong: str) -> np.ndarray:
  """``[N, 10]`` int32 answers of the 10 synthetic experts on every image.

  Column j is expert ``(SEEN_EXPERTS + UNSEEN_EXPERTS)[j]``: the seen
  experts first.
  """
  sets = experts.population_oracle_sets(config.NUM_EXPERTS, data.num_classes,
                                        size_h=size_h, order=order)
  n = data.labels.shape[0]
  order_ids = jnp.asarray(config.SEEN_EXPERTS + config.UNSEEN_EXPERTS)
  ids = jnp.broadcast_to(order_ids, (n, config.NUM_EXPERTS))
  return np.asarray(experts.population_answers(
      jax.random.fold_in(jax.random.key(seed), 1), data.labels,
      jnp.arange(n), ids, sets, wrong=wrong))


def labelled_indices(data: Data, k: int, *, seed: int) -> np.ndarray:
  """``k`` training points per class (nested: a larger k keeps the smaller).

  Raises:
    ValueError: a class has fewer than ``k`` training points.
  """
  rng = np.random.default_rng(seed + 7919)
  tr = data.splits["train"]
  out = []
  for c in range(data.num_classes):
    pool = tr[data.labels[tr] == c]
    if pool.size < k:
      raise ValueError(
          f"--budget-k {k} needs {k} labelled points per class, but the "
          f"training split of {data.dataset} has only {pool.size} of class "
          f"{c}; choose a smaller --budget-k")
    out.append(rng.permutation(pool)[:k])
  return np.sort(np.concatenate(out))
