"""Training and evaluation of one method on simulated experts (jitted).

``train`` runs Adam in jitted chunks (``lax.scan`` over steps), redrawing
every training expert's context set at every step, and keeps the parameters
with the best validation AURSAC; ``evaluate`` scores a trained model on the
test experts with contexts from the test context pool. Every L2D quantity
(context sets, Beta profiles, rejector features, losses, priorities) comes
from ``l2d_jax``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from experiments.ea_l2d import config
from experiments.ea_l2d.data import Data
from experiments.ea_l2d.nets import make_model
from experiments.ea_l2d.nets import pop_logits
from experiments.ea_l2d.scoring import score
from l2d_jax import deferral
from l2d_jax import experts
from l2d_jax import losses


def _contexts(key, x, y, answers, pool, pool_valid, size, counts, *,
              capacity, num_classes, by_counts):
  """One context per expert (``answers [N, J]``): a ``Context`` ``[J, C]``.

  ``pool [P]`` indexes the context pool, ``pool_valid [P]`` marks its real
  entries (the rest is padding, see ``_padded``; never drawn). Per-class
  counts (``by_counts``) take unpadded pools only.
  """
  num_experts = answers.shape[1]
  keys = jax.random.split(key, num_experts)
  px, py, pa = x[pool], y[pool], answers[pool].T
  if by_counts:
    return jax.vmap(lambda k, a, c: experts.sample_class_context(
        k, px, py, a, counts=c, capacity=capacity,
        num_classes=num_classes))(keys, pa, counts)
  return jax.vmap(lambda k, a: experts.sample_context(
      k, px, py, a, size=size, capacity=capacity, num_classes=num_classes,
      where=pool_valid))(keys, pa)


def _eval_pool(data: Data, split: str, by_counts: bool):
  """``(pool, valid)`` of validation (``train``) or test (``test_ctx``)
  contexts; padded to one length unless ``by_counts``."""
  idx = data.splits[split]
  length = idx.size if by_counts else max(data.splits["train"].size,
                                          data.splits["test_ctx"].size)
  return _padded(idx, length)


def _padded(idx: np.ndarray, length: int) -> tuple[jax.Array, jax.Array]:
  """``(pool [length], valid [length])``: ``idx`` padded at the end.

  The validation and test context pools are padded to one length so that
  they share one compiled ``_priorities``. The contexts do not change: the
  samplers draw one uniform number per pool entry, and with JAX's
  partitionable threefry (the default) a prefix of a draw equals the
  shorter draw, so the real entries keep their numbers and the padding,
  never drawn, is ranked after them (``tests/test_experiments_ea_l2d.py``
  compares with the unpadded pool).
  """
  idx = np.asarray(idx)
  pad = length - idx.size
  valid = np.arange(length) < idx.size
  return (jnp.asarray(np.concatenate([idx, np.full(pad, idx[0])]), jnp.int32),
          jnp.asarray(valid))


def _profiles(ctx, prior_a, prior_b, num_classes):
  correct, total = experts.class_counts(ctx, num_classes=num_classes)
  post = experts.beta_posterior(correct, total, prior_a=prior_a,
                                prior_b=prior_b)
  return post.mean, post.var


@functools.lru_cache(maxsize=None)
def _adam(lr: float):
  return optax.adam(lr)


STATIC = ("graphdef", "tx", "steps", "batch", "capacity", "num_classes",
          "method", "weighting", "by_counts", "noise")


@functools.partial(jax.jit, static_argnames=STATIC)
def _train_chunk(params, opt, key, x, y, answers, mode, train_idx, counts,
                 prior_a, prior_b, size, *, graphdef, tx, steps, batch,
                 capacity, num_classes, method, weighting, by_counts, noise):
  """``steps`` Adam steps of ``method`` on the training experts ``answers``."""

  def step(carry, k):
    p, o = carry
    ks = jax.random.split(k, 4)
    qi = train_idx[jax.random.randint(ks[0], (batch,), 0,
                                      train_idx.shape[0])]
    xq = x[qi] + noise * jax.random.normal(ks[1], (batch, x.shape[1]))
    yq = y[qi]
    if method in ("ea_l2d", "l2d_pop"):
      ctx = _contexts(ks[2], x, y, answers, train_idx,
                      jnp.ones(train_idx.shape, bool), size, counts,
                      capacity=capacity, num_classes=num_classes,
                      by_counts=by_counts)

    def objective(p):
      m = nnx.merge(graphdef, p)
      if method == "ea_l2d":
        mean, var = _profiles(ctx, prior_a, prior_b, num_classes)
        logits = m(xq)
        g = m.defer_logits(logits, mean, var, ks[3])  # [J, B]
        shape = g.shape + (num_classes,)
        mean_b = jnp.broadcast_to(mean[:, None], shape)
        loss = losses.ea_lce_loss(
            jnp.broadcast_to(logits, shape), g,
            jnp.broadcast_to(yq, g.shape), mean_b,
            jnp.sqrt(jnp.broadcast_to(var[:, None], shape)),
            weighting=weighting, key=ks[3])
        return loss.mean()
      if method == "l2d_pop":
        def one(c, a):
          return losses.population_l2d_loss(pop_logits(m, xq, c), yq,
                                            a).mean()
        return jax.vmap(one)(ctx, answers[qi].T).mean()
      if method == "pop_avg":
        return losses.population_l2d_loss(m(xq), yq, mode[qi]).mean()
      return losses.multi_expert_softmax_loss(m(xq), yq, answers[qi]).mean()

    loss, g = jax.value_and_grad(objective)(p)
    u, o = tx.update(g, o, p)
    return (optax.apply_updates(p, u), o), loss

  (params, opt), hist = jax.lax.scan(step, (params, opt),
                                     jax.random.split(key, steps))
  return params, opt, hist.mean()


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "capacity", "num_classes", "method", "by_counts"))
def _priorities(params, key, x, y, answers, pool, pool_valid, query, counts,
                prior_a, prior_b, size, *, graphdef, capacity, num_classes,
                method, by_counts):
  """``(P [Q, J], class_logits [Q, K])`` for the experts ``answers [N, J]``."""
  m = nnx.merge(graphdef, params)
  xq = x[query]
  num_experts = answers.shape[1]
  k_ctx, k_tie = jax.random.split(key)
  if method == "ea_l2d":
    ctx = _contexts(k_ctx, x, y, answers, pool, pool_valid, size, counts,
                    capacity=capacity, num_classes=num_classes,
                    by_counts=by_counts)
    mean, var = _profiles(ctx, prior_a, prior_b, num_classes)
    logits = m(xq)
    g = m.defer_logits(logits, mean, var, k_tie)
    return deferral.expert_priorities(logits, g.T), logits
  if method == "l2d_pop":
    ctx = _contexts(k_ctx, x, y, answers, pool, pool_valid, size, counts,
                    capacity=capacity, num_classes=num_classes,
                    by_counts=by_counts)
    out = jax.lax.map(lambda c: pop_logits(m, xq, c), ctx)  # [J, Q, K+1]
    return (jax.vmap(deferral.deferral_priority)(out).T,
            out[0, :, :num_classes])
  out = m(xq)
  if method == "pop_avg":
    pr = deferral.deferral_priority(out)
    return (jnp.broadcast_to(pr[:, None], (xq.shape[0], num_experts)),
            out[:, :num_classes])
  return (deferral.expert_priorities(out[:, :num_classes],
                                     out[:, num_classes:]),
          out[:, :num_classes])


@dataclasses.dataclass
class Trained:
  """A trained model: NNX graph, the kept parameters, bookkeeping."""

  method: str
  graphdef: Any
  params: Any
  best_step: int
  val_aursac: float


def _mode(answers: np.ndarray, num_classes: int) -> np.ndarray:
  """Mode of each row of ``answers [N, J]`` (ties: the lowest class id)."""
  counts = np.zeros((answers.shape[0], num_classes), np.int32)
  for j in range(answers.shape[1]):
    counts[np.arange(answers.shape[0]), answers[:, j]] += 1
  return counts.argmax(1).astype(np.int32)


def _prior(prior, num_experts, num_classes):
  if prior is None:
    return (jnp.ones((num_experts, num_classes)),) * 2
  return tuple(jnp.broadcast_to(jnp.asarray(p, jnp.float32),
                                (num_experts, num_classes)) for p in prior)


def train(method: str, data: Data, answers: np.ndarray, *, key,
          budget: config.Budget, weighting: str = "lcb", counts=None,
          progress: bool = False, desc: str = "") -> Trained:
  """Trains ``method`` on the training experts ``answers [N, J]``.

  Args:
    method: one of ``config.METHODS``.
    data: the data set.
    answers: ``[N, J]`` answers of the training experts on every image.
    key: the ``jax.random`` key of this model.
    budget: steps, batch, widths.
    weighting: EA-L2D's loss weighting (the LCB ablation).
    counts: ``[J, K]`` per-class context counts (LCB ablation) instead of
      ``budget.context_size`` uniform points.
    progress: show a progress bar.
    desc: its label.
  """
  num_experts = answers.shape[1]
  k = data.num_classes
  model = make_model(method, data, budget, jax.random.fold_in(key, 0),
                     num_experts)
  graphdef, params = nnx.split(model)
  tx = _adam(budget.lr)
  opt = tx.init(params)
  by_counts = counts is not None
  capacity = (int(np.asarray(counts).sum(1).max()) if by_counts
              else budget.context_size)
  capacity = min(capacity, data.splits["train"].size)
  cnt = jnp.asarray(counts if by_counts else np.zeros((num_experts, k)),
                    jnp.int32)
  prior_a, prior_b = _prior(None, num_experts, k)
  x, y, a = jnp.asarray(data.x), jnp.asarray(data.y), jnp.asarray(answers)
  mode = jnp.asarray(_mode(answers, k))
  train_idx = jnp.asarray(data.splits["train"])
  val_idx = jnp.asarray(data.splits["val"])
  val_pool = _eval_pool(data, "train", by_counts)
  size = jnp.int32(min(capacity, budget.context_size))
  chunks = max(1, math.ceil(budget.steps / budget.eval_every))
  best = (params, 0, -np.inf)
  for c in tqdm(range(chunks), desc=desc, disable=not progress, leave=False):
    params, opt, _ = _train_chunk(
        params, opt, jax.random.fold_in(key, 1000 + c), x, y, a, mode,
        train_idx, cnt, prior_a, prior_b, size, graphdef=graphdef, tx=tx,
        steps=budget.eval_every, batch=budget.batch, capacity=capacity,
        num_classes=k, method=method, weighting=weighting,
        by_counts=by_counts, noise=budget.noise)
    pr, logits = _priorities(
        params, jax.random.fold_in(key, 7), x, y, a, *val_pool, val_idx, cnt,
        prior_a, prior_b, size, graphdef=graphdef, capacity=capacity,
        num_classes=k, method=method, by_counts=by_counts)
    s = score(pr, logits, data.y[data.splits["val"]],
              answers[data.splits["val"]],
              pop_avg_key=(jax.random.fold_in(key, 8) if method == "pop_avg"
                           else None))["routed"]["aursac"]
    if s > best[2]:
      best = (params, (c + 1) * budget.eval_every, s)
  return Trained(method, graphdef, best[0], best[1], best[2])


def evaluate(model: Trained, data: Data, answers: np.ndarray, *, key,
             budget: config.Budget, counts=None, prior=None,
             size: int | None = None,
             capacity: int | None = None) -> dict[str, Any]:
  """Scores ``model`` on the test experts ``answers [N, J]``.

  Contexts come from the test context pool, queries are the test queries.
  ``prior``: optional ``(a0, b0)`` broadcast to ``[J, K]`` (EA-L2D);
  ``size``: context size (default ``budget.context_size``); ``capacity``:
  the padded context length (default: the size; a larger one leaves the
  drawn points and EA-L2D's profiles unchanged and lets several sizes share
  one compilation).
  """
  num_experts = answers.shape[1]
  k = data.num_classes
  by_counts = counts is not None
  size = budget.context_size if size is None else size
  if capacity is None:
    capacity = (int(np.asarray(counts).sum(1).max()) if by_counts
                else max(1, size))
  capacity = min(capacity, data.splits["test_ctx"].size)
  cnt = jnp.asarray(counts if by_counts else np.zeros((num_experts, k)),
                    jnp.int32)
  prior_a, prior_b = _prior(prior, num_experts, k)
  query = data.splits["test_query"]
  pr, logits = _priorities(
      model.params, jax.random.fold_in(key, 1), jnp.asarray(data.x),
      jnp.asarray(data.y), jnp.asarray(answers),
      *_eval_pool(data, "test_ctx", by_counts),
      jnp.asarray(query), cnt, prior_a, prior_b, jnp.int32(size),
      graphdef=model.graphdef, capacity=capacity,
      num_classes=k, method=model.method, by_counts=by_counts)
  return score(pr, logits, data.y[query], answers[query],
               pop_avg_key=(jax.random.fold_in(key, 2)
                            if model.method == "pop_avg" else None))
