"""Training and evaluation of the calibration experiment (library calls only).

For every (parameterisation, setting, seed) a model with ``K + J`` outputs is
trained on the softmax or the one-vs-all (OvA) surrogate, then evaluated on
the test split (correctness estimates, their per-expert ECE, system
accuracy); see the package docstring. Two ways to train:

* the seeds of one (setting, surrogate) trained at once
  (:func:`train_together`) in one ``training.SeedTrainer`` program. Used for
  the MLP configs (MoG), whose steps are far too small to keep a device busy
  alone.
* one run at a time (:func:`train_and_evaluate`) with ``training.Trainer``,
  checkpointed every ``save_every`` epochs so a killed run resumes mid-way
  (CIFAR-10, ``--sequential``).

On MoG both give the same numbers for the same seeds (same initialisation,
same on-device data order ``fold_in(key(seed), 3)``, same early stopping),
up to float summation order.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from experiments import _io
from experiments.multi_expert_calibration import config as configs
from experiments.multi_expert_calibration import report
from l2d_jax import deferral
from l2d_jax import experts
from l2d_jax import losses
from l2d_jax import metrics
from l2d_jax import training

EXPERIMENTS = ("increasing-experts", "expert-dependence", "specialised")
PARAMETERISATIONS = report.PARAMETERISATIONS
RESULT_KEYS = report.RESULT_KEYS
# Groups on which the experts of §5.2/§5.3 know the label (0-based): MoG
# clusters 3 and 4 of the paper, the first five CIFAR-10 classes.
EXPERT_GROUPS = {"mog": (2, 3), "cifar10": (0, 1, 2, 3, 4)}
NUM_CLASSES = {"mog": 4, "cifar10": 10}
DEPENDENCE_EXPERTS = 4  # one random expert + three improving ones
SURROGATES = {"softmax": losses.multi_expert_softmax_loss,
              "ova": losses.multi_expert_ova_loss}
# Key of the on-device data order (0, 1, 2 draw the train/val/test experts).
ORDER_STREAM = 3


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

  ``experts.noisy_experts`` keys each expert separately, so expert j's
  answers are identical across settings (J = 2 and J = 8 share their first
  two experts; §5.3's settings differ only in p): the settings of one seed
  are paired.
  """
  return np.asarray(experts.noisy_experts(
      key, split.labels, num_classes=num_classes,
      p_correct=jnp.asarray(knowledge), groups=split.groups), np.int32)


# ---------------------------------------------------------------------------
# Model, optimiser, losses.


def build_model(cfg: dict[str, Any], num_classes: int, num_experts: int,
                seed: int) -> nnx.Module:
  """The config's model with ``num_classes + num_experts`` outputs."""
  from l2d_jax import models  # pylint: disable=g-import-not-at-top
  rngs = nnx.Rngs(seed)
  if cfg["model"] == "mlp":
    return models.MLP(2, tuple(cfg["hidden"]), num_classes,
                      num_experts=num_experts, rngs=rngs)
  if cfg["model"] == "small_cnn":
    return models.SmallCNN(num_classes, num_experts=num_experts, rngs=rngs)
  if cfg["model"] == "wrn":
    dtype = {"float32": None, "bfloat16": jnp.bfloat16}[cfg.get("dtype",
                                                                "float32")]
    return models.WideResNet(cfg["depth"], cfg["widen_factor"], num_classes,
                             num_experts=num_experts, dropout=cfg["dropout"],
                             dtype=dtype, rngs=rngs)
  raise ValueError(f"unknown model {cfg['model']!r} (mlp, small_cnn, wrn).")


def build_optimizer(cfg: dict[str, Any], total_steps: int):
  """SGD or Adam with a cosine schedule over ``total_steps``."""
  if cfg["optimizer"] == "sgd":
    return training.sgd_cosine(cfg["lr"], total_steps,
                               momentum=cfg["momentum"],
                               nesterov=cfg["nesterov"],
                               weight_decay=cfg["weight_decay"])
  if cfg["optimizer"] == "adam":
    return training.adam_cosine(cfg["lr"], total_steps,
                                weight_decay=cfg["weight_decay"])
  raise ValueError(f"unknown optimizer {cfg['optimizer']!r} (sgd, adam).")


def _inputs(batch: dict[str, jax.Array]) -> jax.Array:
  x = batch["x"]
  if x.dtype == jnp.uint8:  # CIFAR-10: normalise on the device.
    from l2d_jax import data  # pylint: disable=g-import-not-at-top
    mean = jnp.asarray(data.CIFAR10_MEAN, jnp.float32)
    std = jnp.asarray(data.CIFAR10_STD, jnp.float32)
    x = (x.astype(jnp.float32) / 255.0 - mean) / std
  return x


def make_fns(parameterisation: str, num_experts: int):
  """``(loss_fn, val_metrics_fn, logits_fn)`` for the Trainer."""
  surrogate = SURROGATES[parameterisation]

  def loss_fn(model, batch):
    logits = model(_inputs(batch))
    return surrogate(logits, batch["label"], batch["experts"]).mean(), {}

  def val_metrics_fn(model, batch):
    logits = model(_inputs(batch))
    num_classes = logits.shape[-1] - num_experts
    defer = deferral.argmax_deferral(logits, num_experts=num_experts)
    answers = metrics.system_predictions(
        defer, jnp.argmax(logits[:, :num_classes], axis=-1), batch["experts"])
    return {"loss": surrogate(logits, batch["label"], batch["experts"]),
            "system_accuracy": (answers == batch["label"]).astype(jnp.float32)}

  def logits_fn(model, batch):
    return {"logits": model(_inputs(batch))}

  return loss_fn, val_metrics_fn, logits_fn


# ---------------------------------------------------------------------------
# Batches.


class _ImageBatches:
  """One epoch of CIFAR-10 batches (pure function of seed and epoch)."""

  def __init__(self, split: Split, expert_preds: np.ndarray, *,
               batch_size: int, seed: int, epoch: int, train: bool,
               augment: bool):
    from l2d_jax import data  # pylint: disable=g-import-not-at-top
    self._data = data
    self._kw = dict(batch_size=batch_size, seed=seed, epoch=epoch,
                    shuffle=train, augment=augment and train, normalize=False,
                    drop_remainder=train, extra={"experts": expert_preds})
    self._split = split
    self._len = data.steps_per_epoch(split.labels.size, batch_size,
                                     drop_remainder=train)

  def __len__(self) -> int:
    return self._len

  def __iter__(self):
    for b in self._data.iterate_batches(self._split.inputs, self._split.labels,
                                        prefetch=2, **self._kw):
      yield {"x": b["image"], "label": b["label"], "experts": b["experts"]}


def make_batches(split: Split, expert_preds: np.ndarray, *, batch_size: int,
                 seed: int, epoch: int, train: bool, augment: bool = False):
  """Train (shuffled, full batches) or evaluation (in order) batches."""
  if split.inputs.ndim == 4:
    return _ImageBatches(split, expert_preds, batch_size=batch_size, seed=seed,
                         epoch=epoch, train=train, augment=augment)
  arrays = {"x": split.inputs, "label": split.labels, "experts": expert_preds}
  return training.EpochBatches(arrays, batch_size, seed=seed, epoch=epoch,
                               shuffle=train, drop_remainder=train)


# ---------------------------------------------------------------------------
# Evaluation.


@functools.partial(jax.jit, static_argnames=("parameterisation", "num_bins"))
def _test_metrics(logits, labels, expert_preds, *, parameterisation,
                  num_bins):
  """All test-set numbers in one compiled function (see evaluate_logits)."""
  num_experts = expert_preds.shape[1]
  num_classes = logits.shape[-1] - num_experts
  if parameterisation == "softmax":
    conf = losses.softmax_correctness(logits, num_experts=num_experts)
    raw = losses.softmax_correctness(logits, num_experts=num_experts,
                                     cap=False)
    above_one = jnp.mean(raw > 1, axis=0)
  else:
    conf = losses.ova_correctness(logits, num_experts=num_experts)
    above_one = jnp.zeros(num_experts)
  correct = expert_preds == labels[:, None]
  ece = metrics.expert_calibration_errors(conf, expert_preds, labels,
                                          num_bins=num_bins)
  defer = deferral.argmax_deferral(logits, num_experts=num_experts)
  class_pred = jnp.argmax(logits[:, :num_classes], axis=-1)
  diagram = jax.vmap(
      lambda c, k: metrics.reliability_diagram(c, k, num_bins=num_bins),
      in_axes=1)(conf, correct)
  return dict(
      ece=ece,
      system_accuracy=metrics.system_accuracy(defer, class_pred,
                                              expert_preds, labels),
      mean_estimate=conf.mean(axis=0),
      expert_accuracy=correct.mean(axis=0),
      softmax_estimate_above_one=above_one,
      classifier_accuracy=jnp.mean(class_pred == labels),
      coverage=metrics.model_coverage(defer),
      deferral_rates=metrics.deferral_rates(defer, num_experts=num_experts),
      diagram=diagram)


def evaluate_logits(logits: np.ndarray, labels: np.ndarray,
                    expert_preds: np.ndarray, parameterisation: str, *,
                    num_bins: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """ECE per expert and system accuracy from test logits.

  Args:
    logits: ``[N, K + J]`` test logits.
    labels: ``[N]`` true labels.
    expert_preds: ``[N, J]`` expert answers.
    parameterisation: ``"softmax"`` (estimates capped at 1) or ``"ova"``.
    num_bins: ECE bins.

  Returns:
    ``(metrics, diagnostics)``: ``{"ece_per_expert", "ece_mean",
    "system_accuracy"}`` and extra numbers (mean estimate and observed
    accuracy per expert, share of uncapped softmax estimates above 1,
    classifier accuracy, coverage, deferral rates, per-expert reliability
    diagrams).
  """
  m = jax.device_get(_test_metrics(
      jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int32),
      jnp.asarray(expert_preds, jnp.int32),
      parameterisation=parameterisation, num_bins=num_bins))
  ece = np.asarray(m["ece"], np.float64)
  out = {"ece_per_expert": [float(v) for v in ece],
         "ece_mean": float(ece.mean()),
         "system_accuracy": float(m["system_accuracy"])}
  d = m["diagram"]
  diag = {k: (np.asarray(m[k]) if np.ndim(m[k]) else float(m[k]))
          for k in ("mean_estimate", "expert_accuracy",
                    "softmax_estimate_above_one", "classifier_accuracy",
                    "coverage", "deferral_rates")}
  diag["reliability"] = [
      {"confidence": d.confidence[j], "accuracy": d.accuracy[j],
       "counts": d.counts[j]} for j in range(ece.size)]
  return out, diag


# ---------------------------------------------------------------------------
# Training.


def expert_predictions(ds: Dataset, knowledge: np.ndarray, seed: int
                       ) -> dict[str, np.ndarray]:
  """Simulated answers ``[N, J]`` on the train, val and test splits."""
  key = jax.random.key(seed)
  return {name: simulate_experts(jax.random.fold_in(key, i),
                                 getattr(ds, name), knowledge, ds.num_classes)
          for i, name in enumerate(("train", "val", "test"))}


def order_key(seed: int) -> jax.Array:
  """Key of the on-device data order of ``seed``'s runs."""
  return jax.random.fold_in(jax.random.key(seed), ORDER_STREAM)


def _check_cfg(cfg: dict[str, Any], num_train: int) -> tuple[int, str, str]:
  steps = num_train // cfg["batch_size"]
  if steps < 1:
    raise ValueError(f"batch_size {cfg['batch_size']} exceeds the "
                     f"{num_train} training examples.")
  monitor = cfg["monitor"]
  if monitor not in ("loss", "system_accuracy"):
    raise ValueError(f"monitor must be 'loss' or 'system_accuracy', got "
                     f"{monitor!r}.")
  return steps, monitor, "min" if monitor == "loss" else "max"


def _summary(history: Sequence[dict[str, Any]], monitor: str, mode: str,
             seconds: float) -> dict[str, Any]:
  values = [r[f"eval/{monitor}"] for r in history]
  best = int(np.argmin(values) if mode == "min" else np.argmax(values))
  return dict(epochs=len(history), best_epoch=history[best]["epoch"],
              best_val=values[best],
              best_val_system_accuracy=history[best]["eval/system_accuracy"],
              final_train_loss=history[-1]["train/loss"],
              train_seconds=seconds)


def train_and_evaluate(ds: Dataset, *, parameterisation: str,
                       knowledge: np.ndarray, seed: int,
                       cfg: dict[str, Any], num_bins: int,
                       checkpoint_dir: pathlib.Path | None,
                       progress: bool) -> tuple[dict[str, Any],
                                                dict[str, Any]]:
  """Trains one model with ``training.Trainer`` and evaluates it.

  Feature data (MoG) stays on the device (``training.DeviceEpochs`` keyed by
  :func:`order_key`); images go through the host pipeline (augmentation).

  Returns:
    ``(result, details)``: the ``results.json`` numbers of the run and the
    diagnostics of :func:`evaluate_logits` plus training facts.
  """
  num_experts = knowledge.shape[0]
  preds = expert_predictions(ds, knowledge, seed)
  model = build_model(cfg, ds.num_classes, num_experts, seed)
  steps, monitor, mode = _check_cfg(cfg, ds.train.labels.size)
  tx = build_optimizer(cfg, steps * cfg["epochs"])
  loss_fn, val_fn, logits_fn = make_fns(parameterisation, num_experts)
  eval_bs = cfg["eval_batch_size"]
  if ds.train.inputs.ndim == 4:
    train = lambda e: make_batches(ds.train, preds["train"],
                                   batch_size=cfg["batch_size"], seed=seed,
                                   epoch=e, train=True,
                                   augment=cfg.get("augment", False))
  else:
    train = training.DeviceEpochs(
        {"x": ds.train.inputs, "label": ds.train.labels,
         "experts": preds["train"]}, cfg["batch_size"], key=order_key(seed))
  t0 = time.perf_counter()
  with training.Trainer(model, tx, loss_fn, checkpoint_dir=checkpoint_dir,
                        save_every=cfg["save_every"], max_to_keep=1,
                        progress=progress) as trainer:
    history = trainer.fit(
        train, cfg["epochs"],
        eval_fn=lambda: trainer.evaluate(
            make_batches(ds.val, preds["val"], batch_size=eval_bs, seed=seed,
                         epoch=0, train=False), val_fn),
        monitor=monitor, mode=mode, patience=cfg["patience"],
        resume="auto" if checkpoint_dir is not None else False)
    logits = trainer.predict(
        make_batches(ds.test, preds["test"], batch_size=eval_bs, seed=seed,
                     epoch=0, train=False), logits_fn)["logits"]
  seconds = time.perf_counter() - t0
  out, diag = evaluate_logits(logits, ds.test.labels, preds["test"],
                              parameterisation, num_bins=num_bins)
  diag.update(_summary(history, monitor, mode, seconds),
              trained_with="Trainer (one run)")
  return out, diag


# Evaluation chunk of the runs trained together: activations of 10 runs x
# 20,000 examples fall out of the CPU caches (an epoch's validation took 200
# ms in one chunk, 40 ms in chunks of 1,000 here); the means do not depend on
# the chunking beyond float rounding.
_EVAL_CHUNK = 1024


def _eval_chunk(cfg: dict[str, Any], n: int) -> int:
  """Chunk <= eval_batch_size and _EVAL_CHUNK that pads ``n`` the least."""
  limit = max(1, min(int(cfg["eval_batch_size"]), _EVAL_CHUNK, n))
  return -(-n // -(-n // limit))


def train_together(datasets: dict[int, Dataset], *, parameterisation: str,
                   knowledge: np.ndarray, cfg: dict[str, Any], num_bins: int
                   ) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
  """Trains one run per seed of ``datasets`` at once, on one surrogate.

  One ``training.SeedTrainer`` program holds every seed's run (``jax.vmap``
  over the stacked model/optimiser states): the run of ``seed`` starts from
  ``build_model(..., seed)``, sees its seed's data in the order of
  :func:`order_key`, and stops early on its own validation ``monitor``,
  exactly as :func:`train_and_evaluate` would train it. (One program per
  surrogate: computing both losses for every run, selected by a flag, was
  1.75x slower per run here than the compile it saves.)

  Args:
    datasets: ``{seed: Dataset}`` (feature data, same sizes for all seeds).
    parameterisation: ``"softmax"`` or ``"ova"``.
    knowledge: ``[J, G]`` expert knowledge of the setting.
    cfg: the experiment config.
    num_bins: ECE bins.

  Returns:
    ``{seed: (result, details)}``.
  """
  seeds = sorted(datasets)
  num_experts = knowledge.shape[0]
  first = datasets[seeds[0]]
  steps, monitor, mode = _check_cfg(cfg, first.train.labels.size)
  preds = {seed: expert_predictions(datasets[seed], knowledge, seed)
           for seed in seeds}

  def stacked(split: str) -> dict[str, np.ndarray]:
    parts = [{"x": getattr(datasets[seed], split).inputs,
              "label": getattr(datasets[seed], split).labels,
              "experts": preds[seed][split]} for seed in seeds]
    return {k: np.stack([d[k] for d in parts]) for k in parts[0]}

  loss_fn, val_fn, logits_fn = make_fns(parameterisation, num_experts)
  models = [build_model(cfg, first.num_classes, num_experts, seed)
            for seed in seeds]
  tx = build_optimizer(cfg, steps * cfg["epochs"])
  t0 = time.perf_counter()
  trainer = training.SeedTrainer(models, tx, loss_fn)
  histories = trainer.fit(
      stacked("train"), cfg["epochs"], batch_size=cfg["batch_size"],
      keys=jnp.stack([order_key(seed) for seed in seeds]),
      val=stacked("val"), metrics_fn=val_fn,
      eval_batch_size=_eval_chunk(cfg, first.val.labels.size), monitor=monitor,
      mode=mode, patience=cfg["patience"])
  test = stacked("test")
  logits = trainer.predict(test, logits_fn, batch_size=_eval_chunk(
      cfg, first.test.labels.size))["logits"]
  seconds = time.perf_counter() - t0
  out = {}
  for r, seed in enumerate(seeds):
    res, diag = evaluate_logits(logits[r], test["label"][r],
                                test["experts"][r], parameterisation,
                                num_bins=num_bins)
    diag.update(_summary(histories[r], monitor, mode, seconds),
                trained_with=f"SeedTrainer ({len(seeds)} seeds at once; "
                "train_seconds is the group's)")
    out[seed] = (res, diag)
  return out


# ---------------------------------------------------------------------------
# Sweep and resumption.


def default_settings(dataset: str, experiment: str) -> list[float]:
  """The config's x-axis values of ``(dataset, experiment)``."""
  return list(configs.SETTINGS[(dataset, experiment)])


def check_settings(values: Sequence[float], experiment: str) -> list[float]:
  """Validates ``--settings`` for ``experiment`` (numbers of experts or p)."""
  if experiment == "expert-dependence":
    if any(not 0.0 <= v <= 1.0 for v in values):
      raise ValueError(f"--settings for expert-dependence are probabilities "
                       f"in [0, 1], got {list(values)}.")
    return [float(v) for v in values]
  if any(v < 1 or v != int(v) for v in values):
    raise ValueError(f"--settings for {experiment} are numbers of experts "
                     f"(integers >= 1), got {list(values)}.")
  return [int(v) for v in values]


OVERRIDES = ("epochs", "patience", "batch_size", "lr", "monitor")


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any],
                    sets: Sequence[str] = ()) -> dict[str, Any]:
  """Applies ``--set KEY=VALUE`` then the named options that are not None.

  Args:
    cfg: a config dict (modified and returned).
    overrides: ``{key: value or None}`` for :data:`OVERRIDES`.
    sets: ``KEY=VALUE`` strings; VALUE is JSON (else a string).

  Returns:
    ``cfg``.

  Raises:
    ValueError: a malformed or unknown ``--set``, or invalid values.
  """
  for item in sets:
    if "=" not in item:
      raise ValueError(f"--set expects KEY=VALUE, got {item!r}.")
    k, v = item.split("=", 1)
    if k not in cfg:
      raise ValueError(f"--set: unknown config key {k!r}; keys: "
                       f"{sorted(cfg)}.")
    try:
      cfg[k] = json.loads(v)
    except json.JSONDecodeError:
      cfg[k] = v
  for name, value in overrides.items():
    if value is not None:
      cfg[name] = value
  if cfg.get("patience") is not None and cfg["patience"] <= 0:
    cfg["patience"] = None  # --patience 0 disables early stopping
  if not isinstance(cfg["epochs"], int) or cfg["epochs"] < 1:
    raise ValueError(f"--epochs must be an integer >= 1, got {cfg['epochs']}.")
  if not isinstance(cfg["batch_size"], int) or cfg["batch_size"] < 1:
    raise ValueError(f"--batch-size must be an integer >= 1, got "
                     f"{cfg['batch_size']}.")
  if cfg["monitor"] not in ("loss", "system_accuracy"):
    raise ValueError(f"--monitor must be loss or system_accuracy, got "
                     f"{cfg['monitor']!r}.")
  return cfg


def run_name(parameterisation: str, setting: float, seed: int) -> str:
  """Name of one run's checkpoint folder."""
  return f"{parameterisation}_{setting:g}_seed{seed}"


def _key(entry: dict[str, Any]) -> tuple[str, float, int]:
  return (entry["parameterisation"], float(entry["setting"]),
          int(entry["seed"]))


def load_progress(out: pathlib.Path, identity: dict[str, Any],
                  restart: bool) -> list[dict[str, Any]]:
  """Finished runs recorded by an earlier (killed) sweep into ``out``."""
  path = out / "progress.json"
  if restart:
    if path.exists():
      path.unlink()
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return []
  if not path.exists():
    return []
  state = json.loads(path.read_text())
  # Compared as written (floats rounded by _io), also for older files.
  same = lambda d: json.loads(_io.to_json(d))
  if same(state.get("identity")) != same(identity):
    flat = lambda d: {**{k: v for k, v in d.items() if k != "config"},
                      **{f"config.{k}": v
                         for k, v in d.get("config", {}).items()}}
    old, new = flat(same(state.get("identity", {}))), flat(same(identity))
    diff = sorted(k for k in set(old) | set(new)
                  if json.dumps(old.get(k)) != json.dumps(new.get(k)))
    raise ValueError(
        f"{out} holds runs of a different configuration (differs in: "
        f"{', '.join(diff)}); use another --out or pass --restart.")
  return list(state["runs"])


@dataclasses.dataclass
class Options:
  """What to run (the parsed command line, minus presentation options)."""

  dataset: str = "mog"
  experiment: str = "increasing-experts"
  parameterisations: tuple[str, ...] = PARAMETERISATIONS
  seeds: tuple[int, ...] = (0, 1, 2)
  settings: tuple[float, ...] | None = None
  config_name: str = "cpu"
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  sets: tuple[str, ...] = ()
  num_bins: int = 15
  data_dir: str = "../shared/data"
  cache_dir: str | None = "results/.cache"
  out: pathlib.Path = pathlib.Path("results/multi_expert_calibration/run")
  restart: bool = False
  keep_checkpoints: bool = False
  sequential: bool = False
  workers: int | None = None
  progress: bool = True
  epoch_progress: bool = False
  command: str = ""


def resolve(options: Options) -> tuple[dict[str, Any], list[float],
                                       dict[str, Any]]:
  """The config, the settings and the run identity of ``options``."""
  cfg = apply_overrides(configs.get_config(options.dataset,
                                           options.config_name),
                        dict(options.overrides), options.sets)
  settings = (default_settings(options.dataset, options.experiment)
              if options.settings is None else
              check_settings(options.settings, options.experiment))
  identity = {"dataset": options.dataset, "experiment": options.experiment,
              "config_name": options.config_name, "config": cfg,
              "num_bins": options.num_bins}
  return cfg, settings, identity


def available_cores() -> int:
  """CPU cores this process may run on (its affinity mask)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


# Compilations shorter than this are not written to the persistent cache.
_CACHE_MIN_COMPILE_S = 0.2


def use_compilation_cache(cache_dir: str | None) -> pathlib.Path | None:
  """Turns on JAX's persistent compilation cache in ``<cache_dir>/jax``.

  Every (setting, surrogate) of a sweep compiles its own training program
  (the output layer has ``K + J`` units); on CPU this is a large share of a
  MoG sweep. With the cache, a rerun (another ``--out``, a resumed sweep,
  other seeds) loads the compiled programs instead. Programs are keyed by
  their HLO, compile options and jaxlib version, so results do not change.
  Does nothing when ``cache_dir`` is None or JAX already uses a cache
  folder (e.g. ``JAX_COMPILATION_CACHE_DIR``).

  Args:
    cache_dir: the experiment's cache folder (``--cache-dir``).

  Returns:
    The compilation cache folder in use, or None.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return pathlib.Path(current)
  if cache_dir is None:
    return None
  path = pathlib.Path(cache_dir) / "jax"
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    _CACHE_MIN_COMPILE_S)
  return path


def run(options: Options) -> dict[str, Any]:
  """Runs (or resumes) the sweep of ``options``; returns ``results.json``.

  Runs of one setting and surrogate that are not yet recorded train
  together (MLP configs, unless ``sequential``), ``workers`` groups at a
  time on as many threads (default :func:`available_cores`; each group's
  numbers do not depend on it), or one run after another;
  ``progress.json`` and ``results.json`` are rewritten after each group,
  the full output set at the end. Compiled programs are kept in ``<cache_dir>/jax``
  (:func:`use_compilation_cache`).
  """
  cfg, settings, identity = resolve(options)
  use_compilation_cache(options.cache_dir)
  out = pathlib.Path(options.out)
  runs = load_progress(out, identity, options.restart)
  done = {_key(r) for r in runs}
  todo = [(s, [(p, seed) for seed in options.seeds
               for p in options.parameterisations
               if (p, float(s), seed) not in done]) for s in settings]
  todo = [(s, group) for s, group in todo if group]
  together = cfg["model"] == "mlp" and not options.sequential
  count = sum(len(g) for _, g in todo)
  print(f"{options.dataset}/{options.experiment}: {count} runs to do, "
        f"{len(runs)} already recorded in {out}"
        + (" (the runs of each setting train together)"
           if together and count else ""))
  t0 = time.perf_counter()
  cache: dict[int, Dataset] = {}

  def dataset(seed: int) -> Dataset:
    if seed not in cache:
      if options.dataset != "mog":
        cache.clear()  # one CIFAR-10 split in memory at a time
      cache[seed] = (load_mog(cfg, seed) if options.dataset == "mog" else
                     load_cifar10(cfg, seed, options.data_dir,
                                  options.cache_dir))
    return cache[seed]

  def record(p, s, seed, res, diag):
    runs.append({"parameterisation": p, "setting": s, "seed": seed, **res,
                 "details": diag})
    tqdm.write(f"{run_name(p, s, seed)}: ECE mean {res['ece_mean']:.4f} "
               f"(per expert {np.round(res['ece_per_expert'], 3).tolist()}),"
               f" system accuracy {res['system_accuracy']:.4f}, "
               f"{diag['epochs']} epochs (best {diag['best_epoch']}), "
               f"{diag['train_seconds']:.1f} s")

  bar = tqdm(total=count, desc="runs", disable=not options.progress)
  if together:
    groups = []
    for s, group in todo:
      for p in options.parameterisations:
        seeds = [seed for q, seed in group if q == p]
        if seeds:
          groups.append((s, p, {seed: dataset(seed) for seed in seeds}))
    workers = max(1, min(len(groups), options.workers or available_cores()))

    def train_group(s, p, datasets):
      knowledge = expert_knowledge(
          options.dataset, options.experiment, s,
          next(iter(datasets.values())).num_groups)
      return train_together(datasets, parameterisation=p, knowledge=knowledge,
                            cfg=cfg, num_bins=options.num_bins)

    # Each group is one deterministic program: running groups on several
    # cores at once changes when they finish, not their numbers.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      futures = {pool.submit(train_group, *g): g for g in groups}
      for future in concurrent.futures.as_completed(futures):
        s, p, datasets = futures[future]
        trained = future.result()
        for seed in sorted(datasets):
          record(p, s, seed, *trained[seed])
        bar.set_postfix(setting=f"{s:g}", surrogate=p, seeds=len(datasets))
        bar.update(len(datasets))
        runs.sort(key=_key)
        report.write_progress(out, options.dataset, options.experiment,
                              identity, runs)
    todo = []
  for s, group in todo:  # one run at a time (CNN configs, --sequential)
    for p, seed in group:
      bar.set_postfix(run=run_name(p, s, seed))
      ds = dataset(seed)
      knowledge = expert_knowledge(options.dataset, options.experiment, s,
                                   ds.num_groups)
      ckpt = out / "checkpoints" / run_name(p, s, seed)
      res, diag = train_and_evaluate(
          ds, parameterisation=p, knowledge=knowledge, seed=seed, cfg=cfg,
          num_bins=options.num_bins, checkpoint_dir=ckpt,
          progress=options.epoch_progress)
      record(p, s, seed, res, diag)
      runs.sort(key=_key)
      report.write_progress(out, options.dataset, options.experiment,
                            identity, runs)
      if not options.keep_checkpoints:
        shutil.rmtree(ckpt, ignore_errors=True)
      bar.update(1)
  bar.close()
  results = report.write_outputs(
      out, dataset=options.dataset, experiment=options.experiment,
      identity=identity, runs=runs, command=options.command)
  ckpt_root = out / "checkpoints"
  if ckpt_root.is_dir() and not any(ckpt_root.iterdir()):
    ckpt_root.rmdir()
  print(report.table(results, options.dataset, options.experiment,
                     options.num_bins))
  print(f"wrote {out}/results.json, details.json, table.md, ece.png, "
        f"system_accuracy.png, reliability.png "
        f"({time.perf_counter() - t0:.1f} s)")
  return {"dataset": options.dataset, "experiment": options.experiment,
          "results": results}
