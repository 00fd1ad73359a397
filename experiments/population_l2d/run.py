"""Runs the experiment: one seed, then every seed.

``run_seed`` trains, for one seed, the frozen embedding φ, the
classifier-alone baseline, the label generator of every budget (pseudo
expert labels) and the downstream variants on pseudo and true expert labels,
and evaluates them on seen and unseen experts; ``run`` does every seed.
Every L2D quantity (population, context sets, encoders, losses, FixMatch,
augmentation, decision rule) comes from ``l2d_jax``; the experiment's parts
live in ``data`` (data, splits, experts), ``embedding`` (φ and backbones),
``label_generator`` (FixMatch, pseudo labels) and ``downstream`` (L2D-Pop
variants and their evaluation), every name of which is re-exported here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from experiments.population_l2d import config
from experiments.population_l2d.data import check_dataset_files
from experiments.population_l2d.data import Data
from experiments.population_l2d.data import labelled_indices
from experiments.population_l2d.data import load_data
from experiments.population_l2d.data import make_data
from experiments.population_l2d.data import population
from experiments.population_l2d.data import SPLITS
from experiments.population_l2d.downstream import ENCODER
from experiments.population_l2d.downstream import evaluate
from experiments.population_l2d.downstream import evaluate_finetune
from experiments.population_l2d.downstream import group_metrics
from experiments.population_l2d.downstream import make_downstream
from experiments.population_l2d.downstream import select_finetune
from experiments.population_l2d.downstream import train_downstream
from experiments.population_l2d.embedding import Classifier
from experiments.population_l2d.embedding import ConvBackbone
from experiments.population_l2d.embedding import embedding_backbone
from experiments.population_l2d.embedding import embedding_cache_path
from experiments.population_l2d.embedding import embedding_spec
from experiments.population_l2d.embedding import fallible_backbone
from experiments.population_l2d.embedding import feature_views
from experiments.population_l2d.embedding import FeatureBackbone
from experiments.population_l2d.embedding import MLPBackbone
from experiments.population_l2d.embedding import train_classifier
from experiments.population_l2d.embedding import train_embedding
from experiments.population_l2d.label_generator import correctness_accuracy
from experiments.population_l2d.label_generator import predict_correctness
from experiments.population_l2d.label_generator import pseudo_answers
from experiments.population_l2d.label_generator import train_label_generator
from experiments.population_l2d.embedding import _predict
from l2d_jax import distributed

__all__ = [
    # Data, splits and experts (data.py).
    "SPLITS",
    "Data",
    "make_data",
    "check_dataset_files",
    "load_data",
    "population",
    "labelled_indices",
    # The frozen embedding φ and the backbones (embedding.py).
    "MLPBackbone",
    "FeatureBackbone",
    "ConvBackbone",
    "Classifier",
    "embedding_backbone",
    "fallible_backbone",
    "train_classifier",
    "embedding_spec",
    "embedding_cache_path",
    "train_embedding",
    "feature_views",
    # The label generator (label_generator.py).
    "train_label_generator",
    "predict_correctness",
    "pseudo_answers",
    "correctness_accuracy",
    # Downstream variants and evaluation (downstream.py).
    "ENCODER",
    "make_downstream",
    "train_downstream",
    "select_finetune",
    "evaluate",
    "evaluate_finetune",
    "group_metrics",
    # One seed, every seed (this module).
    "classifier_alone",
    "run_seed",
    "run",
]


def classifier_alone(data: Data, budget: config.Budget, *, seed: int,
                     progress: bool = True) -> float:
  """Test accuracy of the fallible backbone + linear head trained with CE."""
  key = jax.random.fold_in(jax.random.key(seed), 71)
  model = Classifier(fallible_backbone(data, budget, nnx.Rngs(params=key)),
                     budget.hidden_dim, data.num_classes,
                     rngs=nnx.Rngs(params=jax.random.fold_in(key, 1)))
  graphdef, params, _ = train_classifier(
      model, data, jax.random.fold_in(key, 2), epochs=budget.embed_epochs,
      batch=budget.embed_batch, desc="classifier alone", progress=progress)
  q = data.splits["test_query"]
  return float(np.mean(_predict(graphdef, params, data.images[q]).argmax(1)
                       == data.labels[q]))


def _downstream_entries(data, answers_all, answers_train, *, variants,
                        labels_kind, seed, budget, eval_context, tag,
                        progress):
  """Trains the variants on ``answers_train`` and evaluates them on test."""
  entries, info = [], {}
  key = jax.random.fold_in(jax.random.key(seed), 81)
  trained = {}
  need = {v if v != "finetune" else "single" for v in variants}
  for v in [v for v in ("np_attention", "np", "single") if v in need]:
    trained[v], info[v] = train_downstream(
        data, v, answers_train, seed=seed, budget=budget,
        eval_context=eval_context, desc=f"{v} ({tag})", progress=progress)
  for v in variants:
    if v == "finetune":
      steps, lr, scores = select_finetune(trained["single"], data,
                                          answers_train, seed=seed,
                                          eval_context=eval_context)
      info["finetune"] = {"steps": steps, "lr": lr, "validation_scores": [
          {"steps": s, "lr": l, "val_system_accuracy": a}
          for (s, l), a in scores.items()]}
      out = evaluate_finetune(trained["single"], data, answers_all, key=key,
                              lr=lr, steps=steps, eval_context=eval_context)
    else:
      out = evaluate(trained[v], data, answers_all, key=key,
                     eval_context=eval_context)
    entries.append({"variant": v, "labels": labels_kind,
                    **group_metrics(out)})
  return entries, info


def run_seed(data: Data, *, seed: int, budget: config.Budget, budgets_k,
             variants, labels, size_h: int, oracle_sets: str = "cyclic",
             wrong: str = "other", ema: float = 0.0, cache_dir=None,
             eval_context: int = config.EVAL_CONTEXT,
             progress: bool = True) -> dict[str, Any]:
  """Everything of one seed.

  Returns:
    ``{"results": [...], "label_generator": [...], "baselines": {...},
    "info": {...}}`` with the entries of results.json (``budget_k`` and
    ``seed`` filled in; oracle entries repeated under every budget).
  """
  answers = population(data, seed=seed, size_h=size_h, order=oracle_sets,
                       wrong=wrong)
  results, gen_rows = [], []
  info = {"downstream_inputs": budget.downstream_inputs, "budgets": {}}
  on_features = budget.downstream_inputs == "features"
  views = None
  if "pseudo" in labels or on_features:
    phi_def, phi_params, feats, phi_acc = train_embedding(
        data, budget, seed=seed, cache_dir=cache_dir, progress=progress)
    info["embedding_val_accuracy"] = phi_acc
    max_lab = data.num_classes * max(budgets_k)
  down = data  # What the downstream models (and classifier alone) read.
  if on_features:
    down = dataclasses.replace(data, images=feats)
    info["downstream_inputs"] = (
        "features: the cached frozen φ features [N, D] of the un-augmented "
        "images for queries and context points, an MLP backbone")
    if "pseudo" in labels:
      views = feature_views((phi_def, phi_params, feats), data, budget,
                            seed=seed, cache_dir=cache_dir, progress=progress)
  q = data.splits["test_query"]
  base = {"classifier_alone": classifier_alone(down, budget, seed=seed,
                                               progress=progress),
          "expert_alone": float(np.mean(answers[q] == data.labels[q][:, None]))}
  seen = answers[:, :config.NUM_SEEN]
  if "oracle" in labels:
    oracle, info["oracle"] = _downstream_entries(
        down, answers, seen, variants=variants, labels_kind="oracle",
        seed=seed, budget=budget, eval_context=eval_context, tag="oracle",
        progress=progress)
  else:
    oracle = []
  for k in budgets_k:
    lab = labelled_indices(data, k, seed=seed)
    rows = [dict(e) for e in oracle]
    if "pseudo" in labels:
      g_def, g_params, hist = train_label_generator(
          data, (phi_def, phi_params, feats), seen, lab, seed=seed,
          budget=budget, ema=ema, max_labelled=max_lab, views=views,
          progress=progress)
      gen = (g_def, g_params)
      gen_rows.append({"budget_k": k, "seed": seed,
                       "correctness_accuracy": correctness_accuracy(
                           gen, feats, data, answers, seed=seed)})
      pseudo, p_info = pseudo_answers(gen, feats, data, seen, lab, seed=seed,
                                      wrong=wrong, pad_to=max_lab)
      p_info["final_loss"], p_info["final_confident_share"] = (
          float(hist[-1, 0]), float(hist[-1, 1]))
      entries, d_info = _downstream_entries(
          down, answers, pseudo, variants=variants, labels_kind="pseudo",
          seed=seed, budget=budget, eval_context=eval_context,
          tag=f"pseudo, k={k}", progress=progress)
      rows = entries + rows
      info["budgets"][k] = {"label_generator": p_info, "downstream": d_info}
    for r in rows:
      results.append({"variant": r["variant"], "labels": r["labels"],
                      "budget_k": k, "seed": seed,
                      **{m: r[m] for m in ("system_accuracy", "deferral_rate",
                                           "expert_accuracy_on_deferred")}})
  return {"results": results, "label_generator": gen_rows, "baselines": base,
          "info": info}


def run(data: Data, *, seeds, progress: bool = True, **kwargs
        ) -> dict[str, Any]:
  """``run_seed`` for every seed; baselines are the means over seeds.

  In a multi-process job (``l2d_jax.distributed``) the seeds are shared
  out: process ``p`` of ``N`` runs seeds ``p, p + N, ...`` and the results
  are gathered in seed order (``distributed.map_sharded``), so every
  process returns what one process would.
  """
  seeds = list(seeds)
  bar = tqdm(total=len(distributed.shard_items(seeds)), desc="seeds",
             disable=not progress)

  def one(seed):
    r = run_seed(data, seed=seed, progress=progress, **kwargs)
    bar.update()
    return r

  with bar:
    per_seed = distributed.map_sharded(one, seeds)
  results, gen, base, info = [], [], [], {}
  for seed, r in zip(seeds, per_seed):
    results += r["results"]
    gen += r["label_generator"]
    base.append(r["baselines"])
    info[seed] = {**r["info"], "baselines": r["baselines"]}
  baselines = {b: float(np.mean([x[b] for x in base]))
               for b in ("classifier_alone", "expert_alone")}
  return {"results": results, "label_generator": gen, "baselines": baselines,
          "info": info}
