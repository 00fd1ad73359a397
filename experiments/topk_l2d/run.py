"""Rejector, selectors and evaluation of the Top-k / Top-k(x) experiment.

``run_seed`` trains one rejector and the selectors of every λ for one seed on
a fixed pool of agents (``pools.load_pool``) and evaluates Top-k, Top-k(x),
Top-1 L2D, random allocation and the oracle; ``run`` does every seed. Every
deferral quantity (costs, surrogates, rejector sets, cardinality losses,
aggregation metrics, budgets) comes from ``l2d_jax``; this module only trains
small MLPs (``pools.fit``, ``jax.vmap`` over λ) and bookkeeps; with several
processes ``run`` shares the seeds out over them. The conventions are those
of ``config``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from experiments.topk_l2d import config
from experiments.topk_l2d import pools
from experiments.topk_l2d.pools import SPLITS
from experiments.topk_l2d.pools import Pool
from l2d_jax import deferral
from l2d_jax import distributed
from l2d_jax import losses


# Result metric name -> the library's set metric.
SET_METRIC = {"best_agent_rmse": "best_agent",
              "weighted_average_rmse": "weighted_average",
              "uniform_average_rmse": "uniform_average",
              "topk_accuracy": "top_k",
              "majority_vote_accuracy": "majority_vote",
              "weighted_vote_accuracy": "weighted_vote"}


def agent_costs(pool: Pool, split: str) -> jax.Array:
  """``[N, A]`` costs c_j = α_j·ℓ(m_j(x), y) + β_j of ``split``."""
  return losses.agent_costs(pool.predictions[split], pool.targets[split],
                            alpha=pool.alpha, beta=pool.beta, loss=pool.loss)


def _score(losses_per_point: jax.Array, task: str) -> float:
  """RMSE of squared errors, or accuracy of 0-1 losses."""
  m = float(jnp.mean(losses_per_point))
  return math.sqrt(m) if task == "regression" else 1.0 - m


def set_losses(pool: Pool, split: str, scores: jax.Array
               ) -> dict[str, jax.Array]:
  """Metric name -> ``[N, A]`` per-point losses of the sets ``A_1..A_A``."""
  return {name: deferral.set_losses(pool.predictions[split],
                                    pool.targets[split], scores,
                                    metric=SET_METRIC[name])
          for name in pool.metrics}


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "loss_fn", "epochs", "batch_size", "lr", "total_steps",
    "per_lambda"))
def _fit_mlp(params, train, val, key, *, graphdef, loss_fn, epochs,
             batch_size, lr, total_steps, per_lambda):
  """``fit`` with Adam + cosine; ``per_lambda`` vmaps over the costs' axis 0.

  Jitted with every option static, so seeds and metrics of the same shapes
  reuse one compiled program.
  """
  tx = pools.adam_cosine(lr, total_steps)

  def one(tr, va):
    return pools.fit(graphdef, params, loss_fn, tr, va, key, epochs=epochs,
               batch_size=batch_size, tx=tx)

  if per_lambda:
    one = jax.vmap(one, in_axes=({"x": None, "c": 0}, {"x": None, "c": 0}))
  return one(train, val)


def _train_mlp(pool: Pool, loss_fn, train, val, key, *, epochs, budget,
               out_features, per_lambda=False):
  graphdef, params = nnx.split(
      pools.mlp_maker(pool.features["train"].shape[1], budget.hidden,
                 out_features)(nnx.Rngs(params=key)))
  n = pool.features["train"].shape[0]
  steps = epochs * max(1, n // min(budget.batch, n))
  best, history = _fit_mlp(
      params, train, val, jax.random.fold_in(key, 1), graphdef=graphdef,
      loss_fn=loss_fn, epochs=epochs, batch_size=budget.batch, lr=budget.lr,
      total_steps=steps, per_lambda=per_lambda)
  return graphdef, best, history


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _predict(params, x, *, graphdef):
  return pools.apply_model(graphdef, params, x)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _predict_stacked(params, x, *, graphdef):
  return jax.vmap(lambda p: pools.apply_model(graphdef, p, x))(params)


def _rejector_loss(out, batch):
  return losses.topk_deferral_surrogate(out, batch["c"], nu=config.NU)


def _selector_loss_scaled(out, batch):
  # The costs arrive divided by S_λ: scale=1 is scale=S_λ.
  return losses.cardinality_surrogate(out, batch["c"], nu=config.NU,
                                      scale=1.0)


def _selector_loss_minmax(out, batch):
  return losses.cardinality_surrogate(out, batch["c"], nu=config.NU,
                                      scale=None)


def train_rejector(pool: Pool, *, seed: int, budget: config.Budget):
  """Trains the rejector with the τ-weighted comp-sum surrogate.

  Returns:
    ``(scores, history)``: split -> ``[N, A]`` rejector scores of the epoch
    with the lowest validation surrogate, and ``[epochs, 2]`` losses.
  """
  data = {s: {"x": pool.features[s], "c": agent_costs(pool, s)}
          for s in ("train", "val")}
  graphdef, best, history = _train_mlp(
      pool, _rejector_loss, data["train"], data["val"], jax.random.key(seed),
      epochs=budget.rejector_epochs, budget=budget,
      out_features=pool.num_agents)
  return ({s: _predict(best, pool.features[s], graphdef=graphdef)
           for s in SPLITS}, np.asarray(history))


def train_selectors(pool: Pool, rejector_scores: dict[str, jax.Array], *,
                    metric: str, lambdas, seed: int, budget: config.Budget,
                    selector_scale: str = "quantile"):
  """Trains one selector per λ (vmapped) for ``metric`` on the frozen rejector.

  Every λ starts from the same initialisation and batch order, so the sweep
  shows the effect of λ alone. ``selector_scale``: ``"quantile"`` normalises
  the cardinality loss by the global scale S_λ of ``config``, ``"minmax"``
  per example (the library's ``scale=None``).

  Returns:
    ``(k_test, history)``: ``[L, N_test]`` int32 cardinalities k(x) on the
    test split per λ, and ``[L, epochs, 2]`` losses.
  """
  lams = jnp.asarray(lambdas, jnp.float32)

  def card_costs(split):
    d = deferral.set_losses(pool.predictions[split], pool.targets[split],
                            rejector_scores[split], metric=SET_METRIC[metric])
    return losses.cardinality_loss(d, rejector_scores[split], beta=pool.beta,
                                   lam=lams[:, None])  # [L, N, A]

  train_c, val_c = card_costs("train"), card_costs("val")
  # Global scale S_λ per λ (config.SELECTOR_SCALE_QUANTILE of the training
  # cardinality costs); passing c / S_λ with scale=1 equals scale=S_λ and lets
  # the λ sweep be one vmapped program.
  scale = jnp.quantile(train_c.reshape(len(lambdas), -1),
                       config.SELECTOR_SCALE_QUANTILE, axis=1)
  scale = jnp.maximum(scale, 1e-6)[:, None, None]
  if selector_scale not in config.SELECTOR_SCALES:
    raise ValueError(f"--selector-scale must be one of "
                     f"{config.SELECTOR_SCALES}, got {selector_scale!r}")
  minmax = selector_scale == "minmax"
  if minmax:  # Min-max per example does not depend on a common factor.
    scale = jnp.ones_like(scale)
  loss_fn = _selector_loss_minmax if minmax else _selector_loss_scaled

  train = {"x": pool.features["train"], "c": train_c / scale}
  val = {"x": pool.features["val"], "c": val_c / scale}
  key = jax.random.fold_in(jax.random.key(seed), 1 + list(SET_METRIC).index(
      metric))
  graphdef, best, history = _train_mlp(
      pool, loss_fn, train, val, key, epochs=budget.selector_epochs,
      budget=budget, out_features=pool.num_agents,
      per_lambda=True)
  k = deferral.select_cardinality(
      _predict_stacked(best, pool.features["test"], graphdef=graphdef),
      num_agents=pool.num_agents)
  return np.asarray(k), np.asarray(history)


def _entry(method, seed, metrics, budget, expected_k, deferral_loss, **extra):
  return {"method": method, **extra, "seed": seed,
          "expected_budget": float(budget), "expected_k": float(expected_k),
          "metrics": {m: float(v) for m, v in metrics.items()},
          "topk_deferral_loss": float(deferral_loss)}


def _per_k_entries(pool, method, seed, scores, costs, *, ks=None):
  """Entries of the prefix sets of ``scores`` for each k."""
  per = set_losses(pool, "test", scores)
  budgets = deferral.set_budgets(scores, pool.beta)
  out = []
  for k in ks or range(1, pool.num_agents + 1):
    out.append(_entry(
        method, seed,
        {m: _score(v[:, k - 1], pool.task) for m, v in per.items()},
        jnp.mean(budgets[:, k - 1]), k,
        jnp.mean(losses.topk_deferral_loss(scores, costs, k=k)), k=k))
  return out


def random_entries(pool: Pool, scores: jax.Array, costs: jax.Array, *,
                   seed: int, draws: int = config.RANDOM_DRAWS) -> list[dict]:
  """Random allocation: for each k, ``draws`` uniform k-sets per query.

  A drawn set S is placed first by adding ``spread + 1`` to the rejector
  scores of its agents (``spread`` the row's score range): the set's order
  and softmax weights are the rejector's own, only the choice of agents is
  random. Metrics and budgets are the means over the draws.
  """
  per = np.asarray(_random_draws(
      jax.random.fold_in(jax.random.key(seed), 1000), jnp.asarray(scores),
      pool.predictions["test"], pool.targets["test"], costs,
      jnp.asarray(pool.beta),
      metrics=tuple(SET_METRIC[m] for m in pool.metrics),
      draws=draws))  # [draws, A, metrics + 2]
  out = []
  for k in range(1, pool.num_agents + 1):
    vals = {m: float(np.mean([_score(per[d, k - 1, i], pool.task)
                              for d in range(draws)]))
            for i, m in enumerate(pool.metrics)}
    out.append(_entry("random", seed, vals, per[:, k - 1, -2].mean(), k,
                      per[:, k - 1, -1].mean(), k=k))
  return out


@functools.partial(jax.jit, static_argnames=("metrics", "draws"))
def _random_draws(key, scores, preds, targets, costs, beta, *, metrics, draws):
  """``[draws, A, len(metrics) + 2]``: mean set losses, budget, deferral loss."""
  n, a = scores.shape
  spread = (jnp.max(scores, -1, keepdims=True)
            - jnp.min(scores, -1, keepdims=True) + 1.0)

  def one_draw(dkey):
    rank = jax.vmap(lambda kk: jnp.argsort(jax.random.permutation(kk, a)))(
        jax.random.split(dkey, n))  # [N, A]: each agent's random position
    rows = []
    for k in range(1, a + 1):
      shifted = scores + jnp.where(rank < k, spread, 0.0)
      per = [jnp.mean(deferral.set_losses(preds, targets, shifted,
                                          metric=m)[:, k - 1])
             for m in metrics]
      b = jnp.mean(deferral.set_budgets(shifted, beta)[:, k - 1])
      dl = jnp.mean(losses.topk_deferral_loss(shifted, costs, k=k))
      rows.append(jnp.stack(per + [b, dl]))
    return jnp.stack(rows)

  return jax.vmap(one_draw)(jax.random.split(key, draws))


def run_seed(pool: Pool, *, seed: int, budget: config.Budget,
             lambdas=config.LAMBDAS, selector_scale: str = "quantile",
             progress: bool = True) -> dict[str, Any]:
  """Trains the rejector and the selectors of one seed and evaluates them.

  Returns:
    ``{"entries": [...], "rejector_history", "selector_history"}``; each
    entry has ``method``, ``k`` or ``lambda`` (and ``selector_metric`` for
    Top-k(x)), ``seed``, ``expected_budget``, ``expected_k``, ``metrics``
    and the mean top-k deferral loss ``topk_deferral_loss`` (Σ of the costs
    of the consulted agents; for Top-k(x) at k(x)).
  """
  scores, rej_hist = train_rejector(pool, seed=seed, budget=budget)
  s = scores["test"]
  costs = agent_costs(pool, "test")
  entries = _per_k_entries(pool, "topk", seed, s, costs)
  entries += _per_k_entries(pool, "top1", seed, s, costs, ks=[1])
  entries += _per_k_entries(pool, "oracle", seed, -costs, costs)
  entries += random_entries(pool, s, costs, seed=seed)
  per = set_losses(pool, "test", s)
  cum_costs = jnp.stack([losses.topk_deferral_loss(s, costs, k=k)
                         for k in range(1, pool.num_agents + 1)], -1)
  sel_hist = {}
  for metric in tqdm(pool.metrics, desc=f"seed {seed} selectors",
                     disable=not progress, leave=False):
    ks, sel_hist[metric] = train_selectors(
        pool, scores, metric=metric, lambdas=lambdas, seed=seed,
        budget=budget, selector_scale=selector_scale)
    for lam, kx in zip(lambdas, ks):
      kx = jnp.asarray(kx)
      entries.append(_entry(
          "topkx", seed,
          {m: _score(deferral.at_cardinality(v, kx), pool.task)
           for m, v in per.items()},
          deferral.expected_budget(s, pool.beta, k=kx),
          deferral.expected_cardinality(kx),
          jnp.mean(deferral.at_cardinality(cum_costs, kx)),
          **{"lambda": float(lam)}, selector_metric=metric))
  return {"entries": entries, "rejector_history": rej_hist,
          "selector_history": sel_hist}


def run(pool: Pool, *, seeds, budget: config.Budget, lambdas=config.LAMBDAS,
        selector_scale: str = "quantile", progress: bool = True
        ) -> dict[str, Any]:
  """``run_seed`` for every seed; entries concatenated in seed order.

  In a multi-process job (``l2d_jax.distributed``) the seeds are shared out:
  process ``p`` of ``N`` runs seeds ``p, p + N, ...`` of the list and the
  results are gathered (``distributed.map_sharded``), so every process
  returns what one process would (a seed's run depends on its seed only).
  """
  seeds = list(seeds)
  bar = tqdm(total=len(distributed.shard_items(seeds)), desc="seeds",
             disable=not progress)

  def one(seed):
    r = run_seed(pool, seed=seed, budget=budget, lambdas=lambdas,
                 selector_scale=selector_scale, progress=progress)
    bar.update()
    return r

  with bar:
    per_seed = distributed.map_sharded(one, seeds)
  entries, histories = [], {}
  for seed, r in zip(seeds, per_seed):
    entries += r["entries"]
    histories[seed] = {"rejector": r["rejector_history"],
                       "selectors": r["selector_history"]}
  return {"entries": entries, "histories": histories}
