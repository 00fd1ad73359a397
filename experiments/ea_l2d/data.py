"""Data of the EA-L2D experiment: input vectors, labels and index splits.

``load_data`` reads a data set as fixed input vectors (pooled pixels, or
CIFAR-10's cached frozen embedding) and cuts the splits of ``config``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.ea_l2d import config
from l2d_jax import data as data_lib


@dataclasses.dataclass
class Data:
  """Input vectors, labels and index splits of one data set.

  Attributes:
    dataset: the data set name.
    x: ``float32 [N, D]`` inputs of every method's classifier.
    y: ``int32 [N]`` labels in ``[0, K)``.
    splits: ``train``, ``val``, ``test_ctx``, ``test_query`` -> indices.
    num_classes: K.
    model: a short description of the classifier's input, for titles.
  """

  dataset: str
  x: np.ndarray
  y: np.ndarray
  splits: dict[str, np.ndarray]
  num_classes: int
  model: str



def _pool(images: np.ndarray, factor: int) -> np.ndarray:
  n, h, w, c = images.shape
  h2, w2 = h // factor, w // factor
  x = images[:, :h2 * factor, :w2 * factor].reshape(n, h2, factor, w2,
                                                     factor, c)
  return x.mean(axis=(2, 4)).reshape(n, -1)


def _standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
  mu, sd = x[train].mean(0), x[train].std(0)
  return ((x - mu) / np.where(sd > 1e-6, sd, 1.0)).astype(np.float32)


def _cut(n: int, rng) -> dict[str, np.ndarray]:
  perm = rng.permutation(n)
  cuts = np.cumsum([int(round(config.SPLIT[s] * n)) for s in ("train",
                                                             "val")])
  train, val, test = np.split(perm, cuts)
  half = test.size // 2
  return {"train": np.sort(train), "val": np.sort(val),
          "test_ctx": np.sort(test[:half]), "test_query": np.sort(test[half:])}


def check_dataset_files(dataset: str, data_dir) -> None:
  """Raises ``FileNotFoundError`` naming the missing input of ``dataset``."""
  if dataset == "digits":
    return
  if dataset == "cifar10":
    from experiments.population_l2d import run as pop_run  # pylint: disable=g-import-not-at-top
    pop_run.check_dataset_files("cifar10", data_dir)
    return
  path = data_lib.medmnist_path(data_dir, dataset)
  if not path.is_file():
    raise FileNotFoundError(
        f"{dataset} not found: {path} does not exist (MedMNIST is not part "
        f"of the shared data here); download {path.name} from "
        f"https://medmnist.com into --data-dir")


def load_data(dataset: str, *, data_dir, budget: config.Budget,
              cache_dir=None, max_images: int | None = None,
              progress: bool = True) -> Data:
  """Loads ``dataset`` as input vectors and cuts its splits.

  Args:
    dataset: one of ``config.DATASETS``.
    data_dir: the data folder (unused for digits).
    budget: CIFAR-10: ``phi_config`` names the frozen embedding's budget.
    cache_dir: CIFAR-10: folder of the cached frozen embedding.
    max_images: digits only: keep this many images (tests).
    progress: show progress bars.
  """
  check_dataset_files(dataset, data_dir)
  rng = np.random.default_rng(config.DATA_SEED)
  if dataset == "digits":
    images, y = data_lib.load_digits()
    if max_images is not None and max_images < y.size:
      keep = np.sort(rng.permutation(y.size)[:max_images])
      images, y = images[keep], y[keep]
    splits = _cut(y.size, rng)
    x = _standardise(_pool(images, 2), splits["train"])
    return Data(dataset, x, y.astype(np.int32), splits, 10,
                "MLP on 4x4-pooled pixels")
  if dataset == "cifar10":
    return _load_cifar10(data_dir, budget, cache_dir, progress)
  parts = [data_lib.load_medmnist(data_dir, dataset, s)
           for s in ("train", "val", "test")]
  images = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
  y = np.concatenate([p[1] for p in parts]).astype(np.int32)
  sizes = np.cumsum([p[1].size for p in parts])
  test = rng.permutation(np.arange(sizes[1], sizes[2]))
  half = test.size // 2
  splits = {"train": np.arange(sizes[0]), "val": np.arange(sizes[0],
                                                          sizes[1]),
            "test_ctx": np.sort(test[:half]),
            "test_query": np.sort(test[half:])}
  x = _standardise(_pool(images, 4), splits["train"])
  return Data(dataset, x, y, splits, data_lib.MEDMNIST_CLASSES[dataset],
              "MLP on 7x7-pooled pixels")


def _load_cifar10(data_dir, budget, cache_dir, progress) -> Data:
  """CIFAR-10 through ``experiments.population_l2d``'s cached embedding.

  φ, its image caps and its cache folder are those of population_l2d's
  CIFAR-10 budget named by ``budget.phi_config``, so both experiments read
  the same cached φ (trained once, by whichever runs first).
  """
  from experiments.population_l2d import config as pop_config  # pylint: disable=g-import-not-at-top
  from experiments.population_l2d import run as pop_run  # pylint: disable=g-import-not-at-top
  pop_budget = pop_config.budget_for("cifar10", budget.phi_config)
  d = pop_run.load_data("cifar10", data_dir=data_dir, budget=pop_budget,
                        cache_dir=cache_dir)
  _, _, feats, _ = pop_run.train_embedding(d, pop_budget, seed=0,
                                           cache_dir=cache_dir,
                                           progress=progress)
  s = d.splits
  splits = {"train": s["train"], "val": np.sort(np.concatenate(
      [s["val_ctx"], s["val_query"]])), "test_ctx": s["test_ctx"],
            "test_query": s["test_query"]}
  x = _standardise(np.asarray(feats, np.float32), splits["train"])
  return Data("cifar10", x, d.labels, splits, 10,
              "MLP on a frozen small-CNN embedding")
