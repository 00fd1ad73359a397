"""Training and test metrics of the calibration experiment's runs.

Two ways to train:

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

import functools
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.multi_expert_calibration.data import Dataset
from experiments.multi_expert_calibration.data import Split
from experiments.multi_expert_calibration.data import expert_predictions
from l2d_jax import deferral
from l2d_jax import losses
from l2d_jax import metrics
from l2d_jax import training

SURROGATES = {"softmax": losses.multi_expert_softmax_loss,
              "ova": losses.multi_expert_ova_loss}
# Key of the on-device data order (0, 1, 2 draw the train/val/test experts).
ORDER_STREAM = 3


# ---------------------------------------------------------------------------
# Model, optimiser, losses.


def build_model(cfg: dict[str, Any], num_classes: int, num_experts: int,
                seed: int) -> nnx.Module:
  """The config's model with ``num_classes + num_experts`` outputs."""
  return _model(cfg, num_classes, num_experts, nnx.Rngs(seed))


def build_models(cfg: dict[str, Any], num_classes: int, num_experts: int,
                 seeds: Sequence[int]) -> list[nnx.Module]:
  """``[build_model(cfg, num_classes, num_experts, s) for s in seeds]``.

  The same parameters, bit for bit, drawn by one compiled program per
  architecture instead of one eager initialiser call (and, for a new
  shape, one compilation) per layer and seed.
  """
  graphdef, init = _initializer(json.dumps(cfg, sort_keys=True), num_classes,
                                num_experts)
  return [nnx.merge(graphdef, init(jax.random.key(seed))) for seed in seeds]


@functools.lru_cache(maxsize=64)
def _initializer(cfg_json: str, num_classes: int, num_experts: int):
  cfg = json.loads(cfg_json)
  build = lambda key: _model(cfg, num_classes, num_experts, nnx.Rngs(key))
  graphdef = nnx.graphdef(nnx.eval_shape(build, jax.random.key(0)))
  init = jax.jit(lambda key: nnx.state(build(key)),
                 compiler_options=training.cpu_compiler_options(_ONE_OFF)
                 or None)
  return graphdef, init


def _model(cfg: dict[str, Any], num_classes: int, num_experts: int,
           rngs: nnx.Rngs) -> nnx.Module:
  from l2d_jax import models  # pylint: disable=g-import-not-at-top
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
  """SGD or Adam with a cosine schedule over ``total_steps``.

  Equal settings give the same optax object, so the trainers of runs that
  share them (and the model structure and surrogate) share their compiled
  programs (``training.Trainer`` keys them by the optimiser object).
  """
  return _optimizer(cfg["optimizer"], float(cfg["lr"]), total_steps,
                    float(cfg["momentum"]), bool(cfg["nesterov"]),
                    float(cfg["weight_decay"]))


@functools.lru_cache(maxsize=64)
def _optimizer(name: str, lr: float, total_steps: int, momentum: float,
               nesterov: bool, weight_decay: float):
  if name == "sgd":
    return training.sgd_cosine(lr, total_steps, momentum=momentum,
                               nesterov=nesterov, weight_decay=weight_decay)
  if name == "adam":
    return training.adam_cosine(lr, total_steps, weight_decay=weight_decay)
  raise ValueError(f"unknown optimizer {name!r} (sgd, adam).")


def _inputs(batch: dict[str, jax.Array]) -> jax.Array:
  x = batch["x"]
  if x.dtype == jnp.uint8:  # CIFAR-10: normalise on the device.
    from l2d_jax import data  # pylint: disable=g-import-not-at-top
    mean = jnp.asarray(data.CIFAR10_MEAN, jnp.float32)
    std = jnp.asarray(data.CIFAR10_STD, jnp.float32)
    x = (x.astype(jnp.float32) / 255.0 - mean) / std
  return x


@functools.lru_cache(maxsize=64)
def make_fns(parameterisation: str, num_experts: int):
  """``(loss_fn, val_metrics_fn, logits_fn)`` for the Trainer.

  The same function objects for the same arguments (the trainers key their
  compiled programs by them).
  """
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


# XLA's classic loop emitters (and, for programs run once, LLVM -O1) compile
# the MoG programs in 25-50 % less time; their numbers are bitwise the same
# here (results.json unchanged). Probed: {} where this jaxlib rejects them.
_CLASSIC_EMITTERS = {"xla_cpu_use_fusion_emitters": False}
_ONE_OFF = {**_CLASSIC_EMITTERS, "xla_backend_optimization_level": 1}


@functools.cache
def _compiled_test_metrics():
  return jax.jit(_test_metrics, static_argnames=("parameterisation",
                                                  "num_bins"),
                 compiler_options=training.cpu_compiler_options(_ONE_OFF)
                 or None)


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
  m = jax.device_get(_compiled_test_metrics()(
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
  models = build_models(cfg, first.num_classes, num_experts, seeds)
  tx = build_optimizer(cfg, steps * cfg["epochs"])
  t0 = time.perf_counter()
  mesh = training.seed_mesh(len(seeds))
  options = training.cpu_compiler_options(
      {**training.default_compiler_options(mesh), **_CLASSIC_EMITTERS},
      mesh=mesh)
  trainer = training.SeedTrainer(models, tx, loss_fn, mesh=mesh,
                                 compiler_options=options or None)
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
