"""Studies of the EA-L2D experiment: rq1, rq2, rq3 and the LCB ablation.

``run`` runs one study over seeds and overlaps and returns result rows
and mean curves. The pieces live in ``data`` (inputs and splits), ``nets``
(the models), ``training`` (jitted training and evaluation) and ``scoring``
(AURSAC / AURDAC); their public names are re-exported here. See ``config``
for the conventions.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from experiments.ea_l2d import config
from experiments.ea_l2d.data import Data
from experiments.ea_l2d.data import check_dataset_files
from experiments.ea_l2d.data import load_data
from experiments.ea_l2d.nets import EAL2D
from experiments.ea_l2d.nets import Backbone
from experiments.ea_l2d.nets import MultiL2D
from experiments.ea_l2d.nets import make_model
from experiments.ea_l2d.nets import pop_logits
from experiments.ea_l2d.scoring import CURVE_GRID
from experiments.ea_l2d.scoring import score
from experiments.ea_l2d.training import Trained
from experiments.ea_l2d.training import evaluate
from experiments.ea_l2d.training import train
from l2d_jax import distributed
from l2d_jax import experts

__all__ = [
    # Data.
    "Data",
    "check_dataset_files",
    "load_data",
    # Models.
    "Backbone",
    "EAL2D",
    "MultiL2D",
    "make_model",
    "pop_logits",
    # Training and scoring.
    "Trained",
    "train",
    "evaluate",
    "score",
    "CURVE_GRID",
    # Studies.
    "id_ood_classes",
    "run_rq1",
    "run_rq2",
    "run_rq3",
    "run_lcb",
    "STUDIES",
    "run",
]


def id_ood_classes(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """ID = the first ``ceil(K/2)`` classes, OOD the rest."""
  return experts.split_classes(num_classes,
                               num_id=(num_classes + 1) // 2)


def _rows(result, base) -> list[dict[str, Any]]:
  return [dict(base, aggregation=agg, **result[agg])
          for agg in config.AGGREGATIONS]


def _add_curve(curves, name, result):
  curves.setdefault(name, []).append(result["curves"])


def run_rq1(data: Data, *, seed: int, overlaps, budget, progress=True,
            methods=config.METHODS):
  """Table 5.1: each overlap, ID and both OOD readings."""
  k = data.num_classes
  ids, oods = id_ood_classes(k)
  rows, curves, info = [], {}, {}
  mask = experts.expertise_mask(np.arange(k), num_classes=k)
  for oi, p in enumerate(overlaps):
    key = jax.random.fold_in(jax.random.key(seed), oi)
    answers = np.asarray(experts.overlap_experts(
        jax.random.fold_in(key, 0), jnp.asarray(data.y), num_classes=k,
        expertise=jnp.asarray(mask), overlap=p))
    a_id, a_ood = answers[:, ids], answers[:, oods]
    for method in methods:
      mkey = jax.random.fold_in(key, 1 + config.METHODS.index(method))
      base = {"method": method, "overlap": p, "seed": seed}
      model = train(method, data, a_id, key=mkey, budget=budget,
                    progress=progress, desc=f"{method} p={p} ID")
      info[f"{method}/p={p}/train_id"] = {"best_step": model.best_step,
                                          "val_aursac": model.val_aursac}
      r = evaluate(model, data, a_id, key=jax.random.fold_in(mkey, 9),
                   budget=budget)
      info[f"{method}/p={p}/model_accuracy"] = r["model_accuracy"]
      rows += _rows(r, dict(base, split="id", ood_reading=None))
      _add_curve(curves, (method, p, "id"), r)
      if method == "multi_l2d":
        continue  # fixed experts: N/A for OOD experts.
      r = evaluate(model, data, a_ood, key=jax.random.fold_in(mkey, 10),
                   budget=budget)
      rows += _rows(r, dict(base, split="ood",
                            ood_reading="train_id_eval_ood"))
      _add_curve(curves, (method, p, "train_id_eval_ood"), r)
      model = train(method, data, a_ood, key=jax.random.fold_in(mkey, 11),
                    budget=budget, progress=progress,
                    desc=f"{method} p={p} OOD")
      info[f"{method}/p={p}/train_ood"] = {"best_step": model.best_step,
                                           "val_aursac": model.val_aursac}
      r = evaluate(model, data, a_id, key=jax.random.fold_in(mkey, 12),
                   budget=budget)
      rows += _rows(r, dict(base, split="ood",
                            ood_reading="train_ood_eval_id"))
      _add_curve(curves, (method, p, "train_ood_eval_id"), r)
  return rows, curves, info


def run_rq2(data: Data, *, seed: int, overlaps, budget, progress=True):
  """Number of expertise classes: one ID and one OOD expert per cohort."""
  k = data.num_classes
  ids, oods = id_ood_classes(k)
  rows, curves, info = [], {}, {}
  top = min(budget.max_expertise, ids.size, oods.size)
  for oi, p in enumerate(overlaps):
    for e in range(1, top + 1):
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), oi),
                               100 + e)
      mask = np.concatenate([
          experts.sample_expertise(jax.random.fold_in(key, 0), ids,
                                   num_experts=1, classes_per_expert=e,
                                   num_classes=k),
          experts.sample_expertise(jax.random.fold_in(key, 1), oods,
                                   num_experts=1, classes_per_expert=e,
                                   num_classes=k)])
      answers = np.asarray(experts.overlap_experts(
          jax.random.fold_in(key, 2), jnp.asarray(data.y), num_classes=k,
          expertise=jnp.asarray(mask), overlap=p))
      for method in ("ea_l2d", "l2d_pop", "pop_avg"):
        mkey = jax.random.fold_in(key, 3 + config.METHODS.index(method))
        model = train(method, data, answers[:, :1], key=mkey, budget=budget,
                      progress=progress, desc=f"{method} p={p} E={e}")
        base = {"method": method, "overlap": p, "seed": seed,
                "classes_per_expert": e,
                "expertise": {"id": np.flatnonzero(mask[0]).tolist(),
                              "ood": np.flatnonzero(mask[1]).tolist()}}
        for j, split in ((0, "id"), (1, "ood")):
          r = evaluate(model, data, answers[:, j:j + 1],
                       key=jax.random.fold_in(mkey, 20 + j), budget=budget)
          rows += _rows(r, dict(base, split=split,
                                ood_reading=None if j == 0
                                else "train_id_eval_ood"))
          _add_curve(curves, (method, p, split, e), r)
  return rows, curves, info


def run_rq3(data: Data, *, seed: int, overlaps, budget, progress=True):
  """Prior x context size for one test expert (expertise ``RQ3_CLASS``)."""
  k = data.num_classes
  ids, _ = id_ood_classes(k)
  rows, curves, info = [], {}, {}
  p = overlaps[0]
  key = jax.random.key(seed)
  train_mask = experts.expertise_mask(ids, num_classes=k)
  train_answers = np.asarray(experts.overlap_experts(
      jax.random.fold_in(key, 0), jnp.asarray(data.y), num_classes=k,
      expertise=jnp.asarray(train_mask), overlap=p))
  model = train("ea_l2d", data, train_answers, key=jax.random.fold_in(key, 1),
                budget=budget, progress=progress, desc="ea_l2d RQ3")
  info["best_step"] = model.best_step
  test_mask = experts.expertise_mask([config.RQ3_CLASS % k], num_classes=k)
  test_answers = np.asarray(experts.overlap_experts(
      jax.random.fold_in(key, 2), jnp.asarray(data.y), num_classes=k,
      expertise=jnp.asarray(test_mask), overlap=p))
  acc = experts.true_accuracy(test_mask, overlap=p)
  sizes = [s for s in config.RQ3_CONTEXT_SIZES
           if s <= data.splits["test_ctx"].size]
  for kind in experts.PRIOR_KINDS:
    prior = experts.self_assessed_prior(
        kind, acc, strength=config.RQ3_STRENGTH,
        wrong_class=config.RQ3_WRONG_CLASS)
    for s in sizes:
      r = evaluate(model, data, test_answers,
                   key=jax.random.fold_in(key, 3), budget=budget,
                   prior=prior, size=s, capacity=max([1, *sizes]))
      rows += _rows(r, {"method": "ea_l2d", "overlap": p, "seed": seed,
                        "split": "id", "ood_reading": None, "prior": kind,
                        "context_size": s})
  return rows, curves, info


def run_lcb(data: Data, *, seed: int, overlaps, budget, progress=True):
  """LCB ablation: five expert types, four loss variants."""
  del overlaps
  k = data.num_classes
  names = list(experts.LCB_EXPERT_TYPES)
  per = config.LCB_EXPERTS_PER_TYPE
  key = jax.random.key(seed)

  def population(sub):
    cls = np.asarray(jax.random.randint(jax.random.fold_in(key, sub),
                                        (len(names) * per,), 0, k))
    types = [experts.LCB_EXPERT_TYPES[n] for n in names for _ in range(per)]
    answers = np.asarray(experts.per_class_accuracy_experts(
        jax.random.fold_in(key, sub + 1), jnp.asarray(data.y),
        num_classes=k, expertise_class=cls,
        accuracy_expertise=np.array([t.accuracy_expertise for t in types]),
        accuracy_other=np.array([t.accuracy_other for t in types])))
    counts = np.concatenate([experts.type_counts([c], t, num_classes=k)
                             for c, t in zip(cls, types)])
    return answers, counts

  a_train, c_train = population(10)
  a_test, c_test = population(20)
  rows, curves, info = [], {}, {}
  for variant, weighting in config.LCB_VARIANTS.items():
    mkey = jax.random.fold_in(key, 30 + list(config.LCB_VARIANTS).index(
        variant))
    model = train("ea_l2d", data, a_train, key=mkey, budget=budget,
                  weighting=weighting, counts=c_train, progress=progress,
                  desc=f"ea_l2d {variant}")
    r = evaluate(model, data, a_test, key=jax.random.fold_in(mkey, 1),
                 budget=budget, counts=c_test)
    by_type = {n: float(np.mean(r["per_expert_aurdac"][i * per:(i + 1) *
                                                       per]))
               for i, n in enumerate(names)}
    rows += _rows(r, {"method": "ea_l2d", "variant": variant,
                      "weighting": weighting, "overlap": None, "seed": seed,
                      "split": "id", "ood_reading": None,
                      "aurdac_by_type": by_type})
    _add_curve(curves, (variant,), r)
  return rows, curves, info


STUDIES = {"rq1": run_rq1, "rq2": run_rq2, "rq3": run_rq3,
           "lcb-ablation": run_lcb}


def run(data: Data, *, study: str, seeds, overlaps, budget,
        progress: bool = True, **kwargs) -> dict[str, Any]:
  """Every seed of ``study``: ``{"rows", "curves", "info"}``.

  ``curves`` maps a setting to ``[(SysAcc, ExpAcc), ...]`` per seed on
  ``CURVE_GRID``. In a multi-process job (``l2d_jax.distributed``) the
  seeds are shared out: process ``p`` of ``N`` runs seeds ``p, p + N, ...``
  and the results are gathered in seed order
  (``distributed.map_sharded``), so every process returns what one process
  would.
  """
  seeds = list(seeds)
  bar = tqdm(total=len(distributed.shard_items(seeds)),
             desc=f"{study} seeds", disable=not progress)

  def one(seed):
    out = STUDIES[study](data, seed=seed, overlaps=tuple(overlaps),
                         budget=budget, progress=progress, **kwargs)
    bar.update()
    return out

  with bar:
    per_seed = distributed.map_sharded(one, seeds)
  rows, curves, info = [], {}, {}
  for seed, (r, c, i) in zip(seeds, per_seed):
    rows += r
    for name, v in c.items():
      curves.setdefault(name, []).extend(v)
    info[str(seed)] = i
  return {"rows": rows, "curves": curves, "info": info}
