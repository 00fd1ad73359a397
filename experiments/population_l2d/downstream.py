"""Downstream L2D-Pop, Single-L2D and Finetune: training and evaluation.

``train_downstream`` trains one variant on (pseudo or true) seen-expert
answers with early stopping on validation; ``evaluate`` /
``evaluate_finetune`` give per (expert, query) outcomes with test context
sets; ``group_metrics`` pools them over seen, unseen and all experts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from experiments.population_l2d import config
from experiments.population_l2d.data import Data
from experiments.population_l2d.embedding import _weak
from experiments.population_l2d.embedding import fallible_backbone
from l2d_jax import deferral
from l2d_jax import experts
from l2d_jax import losses
from l2d_jax import models


ENCODER = {"np_attention": "attention", "np": "np", "single": None}


def make_downstream(data: Data, budget: config.Budget, variant: str, key):
  """``PopulationL2D`` on the fallible backbone (``single``: no context)."""
  rngs = nnx.Rngs(params=key)
  return models.PopulationL2D(
      fallible_backbone(data, budget, rngs), budget.hidden_dim,
      data.num_classes, encoder_kind=ENCODER[variant], rngs=rngs,
      embed_dim=budget.embed_dim, hidden_dim=budget.hidden_dim)


def _pop_logits(graphdef, params, x, ctx):
  """Logits ``[B, K+1]`` of queries ``x`` sharing one raw context ``[C, ...]``.

  The context is passed with a leading axis of 1: its points are embedded
  and self-attended once for all queries (the encoder's shared-context path).
  """
  m = nnx.merge(graphdef, params)
  if m.encoder is None:
    return m(x)
  return m(x, jax.tree.map(lambda a: a[None], ctx))


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "tx", "steps", "batch", "capacity", "dataset", "num_classes"))
def _down_chunk(params, opt, key, images, labels, answers, train_idx, *,
                graphdef, tx, steps, batch, capacity, dataset, num_classes):
  pool_x, pool_y = images[train_idx], labels[train_idx]
  pool_a = answers[train_idx]
  num_experts = answers.shape[1]

  def step(c, k):
    p, o = c
    ks = jax.random.split(k, 4)
    qi = train_idx[jax.random.randint(ks[0], (batch,), 0, train_idx.shape[0])]
    xq = _weak(ks[1], images[qi], dataset)
    sizes = jax.random.randint(ks[2], (num_experts,), config.CONTEXT_MIN,
                               capacity + 1)
    ctxs = jax.vmap(lambda kk, a, s: experts.sample_context(
        kk, pool_x, pool_y, a, size=s, capacity=capacity,
        num_classes=num_classes))(jax.random.split(ks[3], num_experts),
                                  pool_a.T, sizes)

    def obj(p):
      def one(ctx, a):
        logits = _pop_logits(graphdef, p, xq, ctx)
        return losses.population_l2d_loss(logits, labels[qi], a).mean()
      return jax.vmap(one)(ctxs, answers[qi].T).mean()
    loss, g = jax.value_and_grad(obj)(p)
    u, o = tx.update(g, o, p)
    return (optax.apply_updates(p, u), o), loss

  (params, opt), hist = jax.lax.scan(step, (params, opt),
                                     jax.random.split(key, steps))
  return params, opt, hist.mean()


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity", "draws",
                                             "num_classes"))
def _evaluate(params, key, images, labels, answers, pool, query, *, graphdef,
              capacity, draws, num_classes):
  """Per (expert, query): deferred?, system right?, expert right?"""
  xq, yq = images[query], labels[query]
  draw_of = jnp.arange(query.shape[0]) % draws

  def per_expert(ke, a):
    def per_draw(kd):
      ctx = experts.sample_context(kd, images[pool], labels[pool], a[pool],
                                   size=capacity, capacity=capacity,
                                   num_classes=num_classes)
      return _pop_logits(graphdef, params, xq, ctx)
    logits = jax.lax.map(per_draw, jax.random.split(ke, draws))  # [R, Q, K+1]
    logits = logits[draw_of, jnp.arange(query.shape[0])]
    return _decide(logits, yq, a[query])
  return jax.lax.map(lambda t: per_expert(*t),
                     (jax.random.split(key, answers.shape[1]), answers.T))


def _decide(logits, y, a):
  who = deferral.argmax_deferral(logits, num_experts=1)
  defer = who != deferral.MODEL
  model_right = jnp.argmax(logits[:, :-1], -1) == y
  expert_right = a == y
  return jnp.stack([defer, jnp.where(defer, expert_right, model_right),
                    expert_right])


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity", "draws",
                                             "num_classes", "max_steps"))
def _evaluate_finetune(params, key, lr, num_steps, images, labels, answers,
                       pool, query, *, graphdef, capacity, draws, num_classes,
                       max_steps):
  """As ``_evaluate`` for Single-L2D fine-tuned on each context draw."""
  xq, yq = images[query], labels[query]
  draw_of = jnp.arange(query.shape[0]) % draws
  tx = optax.adam(lr)

  def tune(ctx):
    def obj(p):
      logits = nnx.merge(graphdef, p)(ctx.features)
      return losses.population_l2d_loss(logits, ctx.labels, ctx.answers,
                                        where=ctx.mask).mean()

    def step(c, i):
      p, o = c
      g = jax.grad(obj)(p)
      u, o2 = tx.update(g, o, p)
      p2 = optax.apply_updates(p, u)
      keep = i < num_steps
      return jax.tree.map(lambda new, old: jnp.where(keep, new, old),
                          (p2, o2), (p, o)), None
    (p, _), _ = jax.lax.scan(step, (params, tx.init(params)),
                             jnp.arange(max_steps))
    return p

  def per_expert(ke, a):
    def per_draw(kd):
      ctx = experts.sample_context(kd, images[pool], labels[pool], a[pool],
                                   size=capacity, capacity=capacity,
                                   num_classes=num_classes)
      return nnx.merge(graphdef, tune(ctx))(xq)
    logits = jax.lax.map(per_draw, jax.random.split(ke, draws))
    logits = logits[draw_of, jnp.arange(query.shape[0])]
    return _decide(logits, yq, a[query])
  return jax.lax.map(lambda t: per_expert(*t),
                     (jax.random.split(key, answers.shape[1]), answers.T))


def group_metrics(out: np.ndarray, num_seen: int = config.NUM_SEEN
                  ) -> dict[str, dict[str, float | None]]:
  """System accuracy, deferral rate, expert accuracy on deferred, per group.

  Args:
    out: ``[E, 3, Q]`` (deferred, system right, expert right) per expert.
    num_seen: the first ``num_seen`` experts are the seen ones.
  """
  out = np.asarray(out, bool)
  groups = {"seen": out[:num_seen], "unseen": out[num_seen:], "all": out}
  res = {"system_accuracy": {}, "deferral_rate": {},
         "expert_accuracy_on_deferred": {}}
  for g, o in groups.items():
    if o.shape[0] == 0:
      for m in res:
        res[m][g] = None
      continue
    d, s, e = o[:, 0], o[:, 1], o[:, 2]
    res["system_accuracy"][g] = float(s.mean())
    res["deferral_rate"][g] = float(d.mean())
    res["expert_accuracy_on_deferred"][g] = (float((e & d).sum() / d.sum())
                                             if d.any() else None)
  return res


def _eval_args(data: Data, answers, pool_split, query_split):
  return (jnp.asarray(data.images), jnp.asarray(data.labels),
          jnp.asarray(answers), jnp.asarray(data.splits[pool_split]),
          jnp.asarray(data.splits[query_split]))


def _capacity(data: Data, pool_split: str, eval_context: int) -> int:
  return min(eval_context, data.splits[pool_split].size)


def evaluate(model, data: Data, answers: np.ndarray, *, key,
             pool_split="test_ctx", query_split="test_query",
             eval_context: int = config.EVAL_CONTEXT,
             draws: int = config.EVAL_DRAWS) -> np.ndarray:
  """``[E, 3, Q]`` outcomes of a trained downstream model per expert column."""
  graphdef, params = model
  return np.asarray(_evaluate(
      params, key, *_eval_args(data, answers, pool_split, query_split),
      graphdef=graphdef, capacity=_capacity(data, pool_split, eval_context),
      draws=draws, num_classes=data.num_classes))


def evaluate_finetune(model, data: Data, answers: np.ndarray, *, key, lr,
                      steps, pool_split="test_ctx", query_split="test_query",
                      eval_context: int = config.EVAL_CONTEXT,
                      draws: int = config.EVAL_DRAWS) -> np.ndarray:
  """``evaluate`` for Single-L2D fine-tuned on each context draw."""
  graphdef, params = model
  return np.asarray(_evaluate_finetune(
      params, key, jnp.float32(lr), jnp.int32(steps),
      *_eval_args(data, answers, pool_split, query_split), graphdef=graphdef,
      capacity=_capacity(data, pool_split, eval_context), draws=draws,
      num_classes=data.num_classes, max_steps=max(config.FINETUNE_STEPS)))


def train_downstream(data: Data, variant: str, answers_seen: np.ndarray, *,
                     seed: int, budget: config.Budget,
                     eval_context: int = config.EVAL_CONTEXT,
                     desc: str = "", progress: bool = True):
  """Trains one downstream model on ``answers_seen`` ``[N, S]``.

  Every seen expert is in every batch with a fresh context draw from the
  training split; every ``eval_every`` steps the validation system accuracy
  (seen experts, contexts from the validation context pool with the same
  kind of labels) is measured and the best parameters are kept.

  Returns:
    ``((graphdef, params), info)`` with the best validation accuracy and the
    step it was reached.
  """
  key = jax.random.fold_in(jax.random.key(seed), 51 + config.VARIANTS.index(
      variant))
  graphdef, params = nnx.split(make_downstream(data, budget, variant, key))
  tx = optax.adam(budget.down_lr)
  opt = tx.init(params)
  capacity = min(eval_context, data.splits["train"].size)
  args = (jnp.asarray(data.images), jnp.asarray(data.labels),
          jnp.asarray(answers_seen), jnp.asarray(data.splits["train"]))
  chunks = -(-budget.down_steps // budget.eval_every)  # ceil
  chunk = -(-budget.down_steps // chunks)
  best, best_acc, best_step = params, -1.0, 0
  for i in tqdm(range(chunks), desc=desc,
                disable=not progress, leave=False):
    params, opt, _ = _down_chunk(
        params, opt, jax.random.fold_in(key, i), *args, graphdef=graphdef,
        tx=tx, steps=chunk, batch=budget.down_batch, capacity=capacity,
        dataset=data.dataset, num_classes=data.num_classes)
    out = evaluate((graphdef, params), data, answers_seen,
                   key=jax.random.fold_in(key, 10_000), pool_split="val_ctx",
                   query_split="val_query", eval_context=eval_context)
    acc = float(out[:, 1].mean())
    if acc > best_acc:
      best, best_acc, best_step = params, acc, (i + 1) * chunk
  return (graphdef, best), {"val_system_accuracy": best_acc,
                            "best_step": best_step}


def select_finetune(single, data: Data, answers_seen: np.ndarray, *,
                    seed: int, eval_context: int = config.EVAL_CONTEXT):
  """Steps and learning rate of Finetune from validation context data only.

  Returns:
    ``(steps, lr, scores)``: the pair with the best validation system
    accuracy (ties: fewer steps, then the smaller rate) and every pair's.
  """
  key = jax.random.fold_in(jax.random.key(seed), 61)
  scores = {}
  for steps in config.FINETUNE_STEPS:
    for lr in config.FINETUNE_LRS:
      if steps == 0 and lr != config.FINETUNE_LRS[0]:
        scores[(steps, lr)] = scores[(0, config.FINETUNE_LRS[0])]
        continue
      out = evaluate_finetune(single, data, answers_seen, key=key, lr=lr,
                              steps=steps, pool_split="val_ctx",
                              query_split="val_query",
                              eval_context=eval_context)
      scores[(steps, lr)] = float(out[:, 1].mean())
  best = max(scores, key=lambda sl: (scores[sl], -sl[0], -sl[1]))
  return best[0], best[1], scores
