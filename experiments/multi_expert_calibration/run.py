"""Calibration of multi-expert learning to defer: softmax vs one-vs-all.

Reproduces §5.2-5.4 of Verma, Barrejón & Nalisnick (AISTATS 2023;
METHODS.md §5). For every (parameterisation, setting, seed) a model with
``K + J`` outputs is trained with the library's ``Trainer`` on the softmax
or the one-vs-all (OvA) surrogate, then evaluated on the test set:

* the correctness estimates P(m_j = y | x): softmax
  ``q_⊥j / (1 - Σ_j' q_⊥j')`` capped at 1, OvA ``sigmoid(g_⊥j)``;
* the ECE of each expert's estimate against the observed ``1[m_j = y]``
  (equal-width bins, 15 by default; the paper does not give the number);
* the system accuracy with the deferral rule ``argmax_j g_⊥j`` when it beats
  ``max_k g_k``.

Experiments (``--experiment``), expert ``j`` 0-based:

* ``increasing-experts`` (§5.2): setting = number of experts J; each expert
  is an oracle on MoG clusters 3-4 (ids 2, 3) / the first 5 CIFAR-10 classes
  and guesses uniformly over all K classes elsewhere.
* ``expert-dependence`` (§5.3): 4 experts; expert 0 always guesses at
  random; experts 1-3 know the label with probability p = setting on the
  same groups as above and guess elsewhere. The plotted ECE is expert 0's.
* ``specialised`` (§5.4): setting = J; expert e is an oracle on groups
  ``2e, 2e + 1`` (modulo the number of groups: on the 4-cluster MoG, experts
  2, 3, ... repeat the expertise of experts 0, 1, ...).

A guess may hit the true label (accuracy ``p + (1 - p) / K``), as in the
authors' simulators.

Example::

  python -m experiments.multi_expert_calibration --dataset mog \
      --experiment increasing-experts --parameterisation both --seeds 3 \
      --out results/multi_expert_calibration/mog_increasing-experts

Writes, under ``--out``: ``results.json`` (exactly ``{"dataset",
"experiment", "results": [{"parameterisation", "setting", "seed",
"ece_mean", "ece_per_expert", "system_accuracy"}, ...]}``), ``details.json``
(config, per-run training and diagnostic numbers), ``table.md``,
``ece.png``, ``system_accuracy.png`` and ``reliability.png``. ``progress.json``
is rewritten atomically after every run and each run checkpoints under
``checkpoints/``; rerunning the same command resumes, skipping finished runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pathlib
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from experiments import _io
from experiments.configs import multi_expert_calibration as configs
from l2d_jax import deferral
from l2d_jax import experts
from l2d_jax import losses
from l2d_jax import metrics
from l2d_jax import training

EXPERIMENTS = ("increasing-experts", "expert-dependence", "specialised")
PARAMETERISATIONS = ("softmax", "ova")
RESULT_KEYS = ("parameterisation", "setting", "seed", "ece_mean",
               "ece_per_expert", "system_accuracy")
# Groups on which the experts of §5.2/§5.3 know the label (0-based): MoG
# clusters 3 and 4 of the paper, the first five CIFAR-10 classes.
EXPERT_GROUPS = {"mog": (2, 3), "cifar10": (0, 1, 2, 3, 4)}
NUM_CLASSES = {"mog": 4, "cifar10": 10}
DEPENDENCE_EXPERTS = 4  # one random expert + three improving ones
SURROGATES = {"softmax": losses.multi_expert_softmax_loss,
              "ova": losses.multi_expert_ova_loss}
COLOURS = {"softmax": "tab:blue", "ova": "tab:orange"}
LABELS = {"softmax": "Softmax", "ova": "OvA"}


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
  """``[N, J]`` int32 answers; expert j always uses ``fold_in(key, j)``.

  Keying each expert separately keeps expert j's answers identical across
  settings (J = 2 and J = 8 share their first two experts; §5.3's settings
  differ only in p), so the settings of one seed are paired.
  """
  cols = [experts.noisy_expert(jax.random.fold_in(key, j), split.labels,
                               num_classes=num_classes,
                               p_correct=jnp.asarray(p), groups=split.groups)
          for j, p in enumerate(knowledge)]
  return np.stack([np.asarray(c) for c in cols], axis=1).astype(np.int32)


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
      coverage=metrics.coverage(defer),
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
# One training run.


def train_and_evaluate(ds: Dataset, *, parameterisation: str,
                       knowledge: np.ndarray, seed: int,
                       cfg: dict[str, Any], num_bins: int,
                       checkpoint_dir: pathlib.Path | None,
                       progress: bool) -> tuple[dict[str, Any],
                                                dict[str, Any]]:
  """Trains one model and evaluates it on the test split."""
  num_experts = knowledge.shape[0]
  key = jax.random.key(seed)
  preds = {name: simulate_experts(jax.random.fold_in(key, i),
                                  getattr(ds, name), knowledge,
                                  ds.num_classes)
           for i, name in enumerate(("train", "val", "test"))}
  model = build_model(cfg, ds.num_classes, num_experts, seed)
  steps = ds.train.labels.size // cfg["batch_size"]
  if steps < 1:
    raise ValueError(f"batch_size {cfg['batch_size']} exceeds the "
                     f"{ds.train.labels.size} training examples.")
  tx = build_optimizer(cfg, steps * cfg["epochs"])
  loss_fn, val_fn, logits_fn = make_fns(parameterisation, num_experts)
  monitor = cfg["monitor"]
  if monitor not in ("loss", "system_accuracy"):
    raise ValueError(f"monitor must be 'loss' or 'system_accuracy', got "
                     f"{monitor!r}.")
  mode = "min" if monitor == "loss" else "max"
  eval_bs = cfg["eval_batch_size"]
  t0 = time.perf_counter()
  with training.Trainer(model, tx, loss_fn, checkpoint_dir=checkpoint_dir,
                        save_every=cfg["save_every"], max_to_keep=1,
                        progress=progress) as trainer:
    history = trainer.fit(
        lambda e: make_batches(ds.train, preds["train"],
                               batch_size=cfg["batch_size"], seed=seed,
                               epoch=e, train=True,
                               augment=cfg.get("augment", False)),
        cfg["epochs"],
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
  values = [r[f"eval/{monitor}"] for r in history]
  best = int(np.argmin(values) if mode == "min" else np.argmax(values))
  diag.update(epochs=len(history), best_epoch=history[best]["epoch"],
              best_val=values[best],
              best_val_system_accuracy=history[best]["eval/system_accuracy"],
              final_train_loss=history[-1]["train/loss"],
              train_seconds=seconds)
  return out, diag


# ---------------------------------------------------------------------------
# Sweep, resumption, summaries.


def parse_settings(text: str | None, dataset: str,
                   experiment: str) -> list[float]:
  """``--settings`` (comma-separated) or the config's default settings."""
  if text is None:
    return list(configs.SETTINGS[(dataset, experiment)])
  try:
    values = [float(v) for v in text.split(",") if v.strip()]
  except ValueError as e:
    raise ValueError(f"--settings must be comma-separated numbers: {e}") from e
  if not values:
    raise ValueError("--settings is empty.")
  if len(set(values)) != len(values):
    raise ValueError(f"--settings has duplicates: {text!r}.")
  if experiment == "expert-dependence":
    if any(not 0.0 <= v <= 1.0 for v in values):
      raise ValueError(f"--settings for expert-dependence are probabilities "
                       f"in [0, 1], got {values}.")
    return values
  if any(v < 1 or v != int(v) for v in values):
    raise ValueError(f"--settings for {experiment} are numbers of experts "
                     f"(integers >= 1), got {values}.")
  return [int(v) for v in values]


def apply_overrides(cfg: dict[str, Any], args: argparse.Namespace
                    ) -> dict[str, Any]:
  """Applies ``--epochs``/``--patience``/... and ``--set KEY=VALUE``."""
  for item in args.set or ():
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
  for name in ("epochs", "patience", "batch_size", "lr", "monitor"):
    value = getattr(args, name)
    if value is not None:
      cfg[name] = value
  if cfg.get("patience") is not None and cfg["patience"] <= 0:
    cfg["patience"] = None  # --patience 0 disables early stopping
  if not isinstance(cfg["epochs"], int) or cfg["epochs"] < 1:
    raise ValueError(f"--epochs must be an integer >= 1, got {cfg['epochs']}.")
  if cfg["batch_size"] < 1:
    raise ValueError(f"--batch-size must be >= 1, got {cfg['batch_size']}.")
  if cfg["monitor"] not in ("loss", "system_accuracy"):
    raise ValueError(f"--monitor must be loss or system_accuracy, got "
                     f"{cfg['monitor']!r}.")
  return cfg


def _run_name(parameterisation: str, setting: float, seed: int) -> str:
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
  if state.get("identity") != json.loads(json.dumps(identity)):
    flat = lambda d: {**{k: v for k, v in d.items() if k != "config"},
                      **{f"config.{k}": v
                         for k, v in d.get("config", {}).items()}}
    old, new = flat(state.get("identity", {})), flat(identity)
    diff = sorted(k for k in set(old) | set(new)
                  if json.dumps(old.get(k)) != json.dumps(new.get(k)))
    raise ValueError(
        f"{out} holds runs of a different configuration (differs in: "
        f"{', '.join(diff)}); use another --out or pass --restart.")
  return list(state["runs"])


def summarise(results: list[dict[str, Any]], experiment: str
              ) -> dict[str, dict[float, dict[str, float]]]:
  """Mean and std over seeds of the plotted ECE and system accuracy."""
  summary: dict[str, dict[float, dict[str, float]]] = {}
  for p in PARAMETERISATIONS:
    rows = [r for r in results if r["parameterisation"] == p]
    for s in sorted({r["setting"] for r in rows}):
      sel = [r for r in rows if r["setting"] == s]
      ece = np.array([r["ece_mean"] for r in sel])
      rand = np.array([r["ece_per_expert"][0] for r in sel])
      acc = np.array([r["system_accuracy"] for r in sel])
      sd = lambda a: float(a.std(ddof=1)) if a.size > 1 else 0.0
      summary.setdefault(p, {})[s] = {
          "n": len(sel), "ece_mean": float(ece.mean()), "ece_std": sd(ece),
          "random_ece_mean": float(rand.mean()), "random_ece_std": sd(rand),
          "acc_mean": float(acc.mean()), "acc_std": sd(acc)}
  return summary


def table(results: list[dict[str, Any]], dataset: str, experiment: str
          ) -> str:
  """Markdown table: ECE and system accuracy, mean ± std over seeds."""
  summary = summarise(results, experiment)
  dep = experiment == "expert-dependence"
  head = "p (others)" if dep else "experts"
  cols = ["ECE random expert", "ECE mean"] if dep else ["ECE mean"]
  lines = [f"**{dataset} / {experiment}** (mean ± std over seeds; ECE "
           "15 equal-width bins unless stated)", "",
           f"| {head} | " + " | ".join(
               f"{c} {LABELS[p]}" for c in cols for p in PARAMETERISATIONS)
           + " | " + " | ".join(f"sys. acc. {LABELS[p]}"
                                for p in PARAMETERISATIONS) + " | seeds |",
           "|" + "---|" * (2 + 2 * len(cols) + 2)]
  settings = sorted({r["setting"] for r in results})
  for s in settings:
    cells = []
    keys = (["random_ece", "ece"] if dep else ["ece"])
    for k in keys:
      for p in PARAMETERISATIONS:
        v = summary.get(p, {}).get(s)
        cells.append(f"{v[k + '_mean']:.3f} ± {v[k + '_std']:.3f}" if v
                     else "-")
    for p in PARAMETERISATIONS:
      v = summary.get(p, {}).get(s)
      cells.append(f"{100 * v['acc_mean']:.1f} ± {100 * v['acc_std']:.1f}"
                   if v else "-")
    n = max(summary.get(p, {}).get(s, {"n": 0})["n"]
            for p in PARAMETERISATIONS)
    lines.append(f"| {s:g} | " + " | ".join(cells) + f" | {n} |")
  return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], details: list[dict[str, Any]],
         experiment: str, out: pathlib.Path) -> list[str]:
  """Figure 1/2 layout: ECE and system accuracy against the setting."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  summary = summarise(results, experiment)
  dep = experiment == "expert-dependence"
  xlabel = {"increasing-experts": "number of experts",
            "expert-dependence": "P(other experts correct) on their groups",
            "specialised": "number of specialised experts"}[experiment]
  ece_key = "random_ece" if dep else "ece"
  ece_label = "ECE of the random expert" if dep else "ECE (mean over experts)"
  written = []
  for name, key, ylabel in (("ece.png", ece_key, ece_label),
                            ("system_accuracy.png", "acc",
                             "system accuracy [%]")):
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for p, rows in summary.items():
      x = np.array(sorted(rows))
      scale = 100.0 if key == "acc" else 1.0
      m = scale * np.array([rows[s][key + "_mean"] for s in x])
      sd = scale * np.array([rows[s][key + "_std"] for s in x])
      ax.plot(x, m, marker="o", color=COLOURS[p], label=LABELS[p])
      ax.fill_between(x, m - sd, m + sd, color=COLOURS[p], alpha=0.25)
      # Individual seeds: a mean over seeds can hide failed runs.
      runs = [r for r in results if r["parameterisation"] == p]
      y = [(r["ece_per_expert"][0] if key == "random_ece" else
            r["ece_mean"] if key == "ece" else 100 * r["system_accuracy"])
           for r in runs]
      ax.scatter([r["setting"] for r in runs], y, s=9, color=COLOURS[p],
                 alpha=0.5, linewidths=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{experiment} (mean ± std over seeds; dots: seeds)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    _io.save_figure(fig, out / name)
    plt.close(fig)
    written.append(name)
  # Reliability diagrams of expert 0 at the largest setting, first seed.
  if details:
    last = max(d["setting"] for d in details)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharey=True)
    for ax, p in zip(axes, PARAMETERISATIONS):
      sel = sorted((d for d in details if d["parameterisation"] == p
                    and d["setting"] == last), key=lambda d: d["seed"])
      ax.plot([0, 1], [0, 1], "k--", lw=0.8)
      ax.set_title(f"{LABELS[p]}, setting {last:g}, expert 1", fontsize=9)
      ax.set_xlabel("estimated P(m=y|x)")
      if not sel:
        continue
      r = sel[0]["reliability"][0]
      counts = np.asarray(r["counts"])
      nb = counts.size
      centres = (np.arange(nb) + 0.5) / nb
      ok = counts > 0
      ax.bar(centres[ok], np.asarray(r["accuracy"])[ok], width=1 / nb,
             edgecolor="k", color=COLOURS[p], alpha=0.7, label="observed")
      ax.plot(np.asarray(r["confidence"])[ok], np.asarray(r["accuracy"])[ok],
              "k.", label="bin mean estimate")
    axes[0].set_ylabel("observed correctness")
    for ax in axes:
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
        break
    _io.save_figure(fig, out / "reliability.png")
    plt.close(fig)
    written.append("reliability.png")
  return written


def write_outputs(out: pathlib.Path, dataset: str, experiment: str,
                  identity: dict[str, Any], runs: list[dict[str, Any]],
                  final: bool) -> list[dict[str, Any]]:
  """Writes progress.json (always) and the results, table and plots."""
  runs = sorted(runs, key=_key)
  _io.write_json(out / "progress.json", {"identity": identity, "runs": runs})
  results = [{k: r[k] for k in RESULT_KEYS} for r in runs]
  _io.write_json(out / "results.json", {"dataset": dataset,
                                        "experiment": experiment,
                                        "results": results})
  if final:
    details = [{**{k: r[k] for k in ("parameterisation", "setting", "seed")},
                **r["details"]} for r in runs]
    _io.write_json(out / "details.json", {**identity, "runs": details})
    _io.write_text(out / "table.md", table(results, dataset, experiment))
    plot(results, details, experiment, out)
  return results


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Runs the sweep described by ``args``; returns ``results.json``."""
  if args.seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {args.seeds}.")
  if args.num_bins < 1:
    raise ValueError(f"--num-bins must be >= 1, got {args.num_bins}.")
  cfg = apply_overrides(configs.get_config(args.dataset, args.config), args)
  settings = parse_settings(args.settings, args.dataset, args.experiment)
  params = (list(PARAMETERISATIONS) if args.parameterisation == "both"
            else [args.parameterisation])
  seeds = [args.first_seed + i for i in range(args.seeds)]
  out = pathlib.Path(args.out or f"results/multi_expert_calibration/"
                     f"{args.dataset}_{args.experiment}")
  identity = {"dataset": args.dataset, "experiment": args.experiment,
              "config_name": args.config, "config": cfg,
              "num_bins": args.num_bins}
  if args.dataset == "cifar10":
    data_dir = pathlib.Path(args.data_dir)
    if not (data_dir / "cifar10_images").is_dir() and not any(
        data_dir.glob("cifar10_*_jpg.zip")):
      raise FileNotFoundError(
          f"CIFAR-10 JPEG zips not found under {data_dir}/cifar10_images; "
          "pass --data-dir (the shared data root).")
  runs = load_progress(out, identity, args.restart)
  done = {_key(r) for r in runs}
  todo = [(p, s, seed) for seed in seeds for s in settings for p in params
          if (p, float(s), seed) not in done]
  print(f"{args.dataset}/{args.experiment}: {len(todo)} runs to do, "
        f"{len(runs)} already recorded in {out}")
  t0 = time.perf_counter()
  cache: dict[int, Dataset] = {}
  bar = tqdm(todo, desc="runs", disable=args.no_progress)
  for p, s, seed in bar:
    bar.set_postfix(run=_run_name(p, s, seed))
    if seed not in cache:
      cache.clear()
      cache[seed] = (load_mog(cfg, seed) if args.dataset == "mog" else
                     load_cifar10(cfg, seed, args.data_dir, args.cache_dir))
    ds = cache[seed]
    knowledge = expert_knowledge(args.dataset, args.experiment, s,
                                 ds.num_groups)
    ckpt = out / "checkpoints" / _run_name(p, s, seed)
    res, diag = train_and_evaluate(
        ds, parameterisation=p, knowledge=knowledge, seed=seed, cfg=cfg,
        num_bins=args.num_bins, checkpoint_dir=ckpt,
        progress=not args.no_progress and args.epoch_progress)
    runs.append({"parameterisation": p, "setting": s, "seed": seed, **res,
                 "details": diag})
    write_outputs(out, args.dataset, args.experiment, identity, runs,
                  final=False)
    if not args.keep_checkpoints:
      shutil.rmtree(ckpt, ignore_errors=True)
    tqdm.write(f"{_run_name(p, s, seed)}: ECE mean {res['ece_mean']:.4f} "
               f"(per expert {np.round(res['ece_per_expert'], 3).tolist()}), "
               f"system accuracy {res['system_accuracy']:.4f}, "
               f"{diag['epochs']} epochs (best {diag['best_epoch']}), "
               f"{diag['train_seconds']:.1f} s")
  results = write_outputs(out, args.dataset, args.experiment, identity, runs,
                          final=True)
  ckpt_root = out / "checkpoints"
  if ckpt_root.is_dir() and not any(ckpt_root.iterdir()):
    ckpt_root.rmdir()
  print(table(results, args.dataset, args.experiment))
  print(f"wrote {out}/results.json, details.json, table.md, ece.png, "
        f"system_accuracy.png, reliability.png "
        f"({time.perf_counter() - t0:.1f} s)")
  return {"dataset": args.dataset, "experiment": args.experiment,
          "results": results}


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m experiments.multi_expert_calibration",
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--dataset", choices=configs.DATASETS, default="mog")
  p.add_argument("--experiment", choices=EXPERIMENTS,
                 default="increasing-experts",
                 help="§5.2 increasing-experts, §5.3 expert-dependence, "
                 "§5.4 specialised.")
  p.add_argument("--parameterisation", choices=PARAMETERISATIONS + ("both",),
                 default="both")
  p.add_argument("--seeds", type=int, default=3, help="number of seeds.")
  p.add_argument("--first-seed", type=int, default=0,
                 help="seeds are first-seed, first-seed + 1, ...")
  p.add_argument("--settings", default=None,
                 help="comma-separated x-axis values (numbers of experts, or "
                 "p for expert-dependence); default: the config's "
                 "SETTINGS.")
  p.add_argument("--config", choices=configs.CONFIG_NAMES, default="cpu",
                 help="cpu: small models that run on a CPU; gpu: the paper's "
                 "(WRN-28-10 on CIFAR-10). See experiments/configs/"
                 "multi_expert_calibration.py.")
  p.add_argument("--epochs", type=int, default=None,
                 help="override the config's maximum number of epochs.")
  p.add_argument("--patience", type=int, default=None,
                 help="override the early-stopping look-ahead (0: none).")
  p.add_argument("--batch-size", type=int, default=None)
  p.add_argument("--lr", type=float, default=None)
  p.add_argument("--monitor", choices=("loss", "system_accuracy"),
                 default=None, help="override the early-stopping metric.")
  p.add_argument("--set", action="append", metavar="KEY=VALUE",
                 help="override any config key (JSON value), repeatable, "
                 "e.g. --set hidden=[64,64,64] --set num_samples=6000.")
  p.add_argument("--num-bins", type=int, default=15, help="ECE bins.")
  p.add_argument("--data-dir", default="../shared/data")
  p.add_argument("--cache-dir", default="results/.cache",
                 help="decoded CIFAR-10 cache (.npz).")
  p.add_argument("--out", default=None,
                 help="output folder (default results/multi_expert_"
                 "calibration/<dataset>_<experiment>).")
  p.add_argument("--restart", action="store_true",
                 help="discard recorded runs and checkpoints in --out.")
  p.add_argument("--keep-checkpoints", action="store_true",
                 help="keep each finished run's checkpoint folder.")
  p.add_argument("--epoch-progress", action="store_true",
                 help="also show the trainer's per-epoch progress bars.")
  p.add_argument("--no-progress", action="store_true")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  run(args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
