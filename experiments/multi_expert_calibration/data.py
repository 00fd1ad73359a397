"""Data and simulated experts of the calibration experiment.

The MoG draw and CIFAR-10 splits of a seed (:func:`load_mog`,
:func:`load_cifar10`), the expertise of each experiment's experts
(:func:`expert_knowledge`) and their simulated answers
(:func:`simulate_experts`, :func:`expert_predictions`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import experts

EXPERIMENTS = ("increasing-experts", "expert-dependence", "specialised")
# Groups on which the experts of §5.2/§5.3 know the label (0-based): MoG
# clusters 3 and 4 of the paper, the first five CIFAR-10 classes.
EXPERT_GROUPS = {"mog": (2, 3), "cifar10": (0, 1, 2, 3, 4)}
NUM_CLASSES = {"mog": 4, "cifar10": 10}
DEPENDENCE_EXPERTS = 4  # one random expert + three improving ones


# ---------------------------------------------------------------------------
# Data and experts.


@dataclasses.dataclass
class Split:
  """One data split, as numpy arrays.

  Attributes:
    inputs: ``[N, 2]`` float32 features (MoG) or ``[N, 32, 32, 3]`` uint8
      images (CIFAR-10).
    labels: ``[N]`` int32 labels.
    groups: ``[N]`` int32 group ids on which expertise is defined (MoG
      clusters, CIFAR-10 classes).
  """

  inputs: np.ndarray
  labels: np.ndarray
  groups: np.ndarray


@dataclasses.dataclass
class Dataset:
  """Train, validation and test splits of one seed."""

  train: Split
  val: Split
  test: Split
  num_classes: int
  num_groups: int


def load_mog(cfg: dict[str, Any], seed: int) -> Dataset:
  """Draws the mixture of Gaussians of ``seed`` and splits it."""
  from l2d_jax import data  # pylint: disable=g-import-not-at-top
  n = int(cfg["num_samples"])
  if n < 12:
    raise ValueError(f"num_samples must be >= 12, got {n}.")
  x, y, c = data.mixture_of_gaussians(
      seed, n, separation=cfg.get("separation"), scales=cfg.get("scale", 1.0))
  parts = data.train_val_test_split(seed + 1, x, y, c,
                                    fractions=tuple(cfg["fractions"]))
  train, val, test = (Split(*p) for p in parts)
  return Dataset(train, val, test, NUM_CLASSES["mog"], 4)


def load_cifar10(cfg: dict[str, Any], seed: int, data_dir: str,
                 cache_dir: str | None) -> Dataset:
  """CIFAR-10 test split, and a seeded 90/10 train/validation split."""
  from l2d_jax import data  # pylint: disable=g-import-not-at-top
  x_tr, y_tr = data.load_cifar10_images(data_dir, split="train",
                                        cache_dir=cache_dir)
  x_te, y_te = data.load_cifar10_images(data_dir, split="test",
                                        cache_dir=cache_dir)
  rng = np.random.default_rng(seed)
  order = rng.permutation(x_tr.shape[0])
  n_val = int(round(cfg["val_fraction"] * x_tr.shape[0]))
  val, train = order[:n_val], order[n_val:]
  if cfg.get("train_size"):
    if not 1 <= cfg["train_size"] <= train.size:
      raise ValueError(f"train_size must lie in [1, {train.size}], got "
                       f"{cfg['train_size']}.")
    train = train[:int(cfg["train_size"])]
  split = lambda x, y: Split(x, y.astype(np.int32), y.astype(np.int32))
  return Dataset(split(x_tr[train], y_tr[train]), split(x_tr[val], y_tr[val]),
                 split(x_te, y_te), NUM_CLASSES["cifar10"], 10)


def expert_knowledge(dataset: str, experiment: str, setting: float,
                     num_groups: int) -> np.ndarray:
  """Probability that each expert knows the label, per group.

  Args:
    dataset: ``"mog"`` or ``"cifar10"``.
    experiment: one of :data:`EXPERIMENTS`.
    setting: number of experts, or the probability p of §5.3.
    num_groups: G.

  Returns:
    ``[J, G]`` float32 probabilities (1 = oracle, 0 = uniform guess).
  """
  known = np.zeros(num_groups, bool)
  known[list(EXPERT_GROUPS[dataset])] = True
  if experiment == "increasing-experts":
    return np.broadcast_to(known, (int(setting), num_groups)).astype(np.float32)
  if experiment == "expert-dependence":
    p = np.zeros((DEPENDENCE_EXPERTS, num_groups), np.float32)
    p[1:, known] = setting
    return p
  if experiment == "specialised":
    return experts.specialised_oracle_groups(
        int(setting), num_groups, groups_per_expert=2).astype(np.float32)
  raise ValueError(f"--experiment must be one of {EXPERIMENTS}, got "
                   f"{experiment!r}.")


def simulate_experts(key: jax.Array, split: Split, knowledge: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """``[N, J]`` int32 answers; expert j uses ``fold_in(key, j)``.

  Column ``j`` is ``experts.noisy_expert(fold_in(key, j), ...,
  p_correct=knowledge[j])``, the column ``experts.noisy_experts`` gives,
  drawn one expert at a time by one compiled program whose shapes do not
  depend on J (every setting of a sweep reuses it). Expert j's answers are
  identical across settings (J = 2 and J = 8 share their first two experts;
  §5.3's settings differ only in p): the settings of one seed are paired.
  """
  labels = jnp.asarray(split.labels)
  groups = jnp.asarray(split.groups)
  columns = [_one_expert(jax.random.fold_in(key, j), labels,
                         jnp.asarray(knowledge[j], jnp.float32), groups,
                         num_classes=num_classes)
             for j in range(knowledge.shape[0])]
  return np.stack([np.asarray(c, np.int32) for c in columns], axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _one_expert(key: jax.Array, labels: jax.Array, p_correct: jax.Array,
                groups: jax.Array, *, num_classes: int) -> jax.Array:
  return experts.noisy_expert(key, labels, num_classes=num_classes,
                              p_correct=p_correct, groups=groups)


def expert_predictions(ds: Dataset, knowledge: np.ndarray, seed: int
                       ) -> dict[str, np.ndarray]:
  """Simulated answers ``[N, J]`` on the train, val and test splits."""
  key = jax.random.key(seed)
  return {name: simulate_experts(jax.random.fold_in(key, i),
                                 getattr(ds, name), knowledge, ds.num_classes)
          for i, name in enumerate(("train", "val", "test"))}
