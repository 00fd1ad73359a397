"""The label generator of limited demonstrations (FixMatch) and pseudo labels.

``train_label_generator`` trains the expert-correctness predictor on the L
labelled points and FixMatch on the unlabelled ones; ``pseudo_answers``
turns its predictions into pseudo expert labels (eq. 5);
``correctness_accuracy`` scores it on seen and unseen experts.
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
from experiments.population_l2d.embedding import _strong
from experiments.population_l2d.embedding import _weak
from l2d_jax import experts
from l2d_jax import losses
from l2d_jax import models


def _gen_apply(graphdef, params, feats, ctx):
  """``[B, 2]`` logits of queries ``feats`` sharing one context ``[C, D]``.

  The context is passed with a leading axis of 1: encoded once for all
  queries (the encoder's shared-context path).
  """
  return nnx.merge(graphdef, params)(feats, jax.tree.map(lambda a: a[None],
                                                         ctx))


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "phi_def", "tx", "steps", "batch", "mu", "ctx_size", "tau",
    "lambda_u", "ema", "dataset", "num_classes"))
def _gen_chunk(params, opt, ema_params, key, phi_params, images, feats,
               labels, answers, lab_idx, n_lab, unl_idx, n_unl, weak_views,
               strong_views, *, graphdef,
               phi_def, tx, steps, batch, mu, ctx_size, tau, lambda_u, ema,
               dataset, num_classes):
  phi = nnx.merge(phi_def, phi_params)
  lab_mask = jnp.arange(lab_idx.shape[0]) < n_lab
  pool_f, pool_y = feats[lab_idx], labels[lab_idx]
  pool_a = answers[lab_idx]  # [Lmax, E]
  num_experts = answers.shape[1]

  def step(c, k):
    p, o, ep = c
    ks = jax.random.split(k, 6)
    li = lab_idx[jax.random.randint(ks[0], (batch,), 0, n_lab)]
    ui = unl_idx[jax.random.randint(ks[1], (mu * batch,), 0, n_unl)]
    if weak_views is None:
      f_l = phi.features(_weak(ks[2], images[li], dataset))
      xu = images[ui]
      f_w = phi.features(_weak(ks[3], xu, dataset))
      f_s = phi.features(_strong(ks[4], xu, dataset))
    else:  # Cached views [V, N, D]: one drawn per point.
      def view(kk, ix, vs):
        return vs[jax.random.randint(kk, ix.shape, 0, vs.shape[0]), ix]
      f_l = view(ks[2], li, weak_views)
      f_w = view(ks[3], ui, weak_views)
      f_s = view(ks[4], ui, strong_views)
    target = (answers[li] == labels[li][:, None]).astype(jnp.int32)  # [b, E]
    ctxs = jax.vmap(lambda kk, a: experts.sample_context(
        kk, pool_f, pool_y, a, size=ctx_size, capacity=ctx_size,
        num_classes=num_classes, where=lab_mask))(
            jax.random.split(ks[5], num_experts), pool_a.T)

    def obj(p):
      def one(ctx, t):
        ce = optax.softmax_cross_entropy_with_integer_labels(
            _gen_apply(graphdef, p, f_l, ctx), t).mean()
        lu, mask = losses.fixmatch_consistency(
            _gen_apply(graphdef, p, f_w, ctx),
            _gen_apply(graphdef, p, f_s, ctx), threshold=tau)
        return ce + lambda_u * lu.mean(), mask.mean()
      per, masked = jax.vmap(one)(ctxs, target.T)
      return per.mean(), masked.mean()
    (loss, conf), g = jax.value_and_grad(obj, has_aux=True)(p)
    u, o = tx.update(g, o, p)
    p = optax.apply_updates(p, u)
    ep = optax.incremental_update(p, ep, 1.0 - ema) if ema > 0 else p
    return (p, o, ep), jnp.stack([loss, conf])

  (params, opt, ema_params), hist = jax.lax.scan(
      step, (params, opt, ema_params), jax.random.split(key, steps))
  return params, opt, ema_params, hist.mean(0)


@functools.partial(jax.jit, static_argnames=("graphdef", "ctx_size",
                                             "num_classes"))
def _gen_predict(params, key, q_feats, pool_f, pool_y, pool_a, pool_mask, *,
                 graphdef, ctx_size, num_classes):
  """``[Q]`` P(expert right) for queries, a fresh context draw per query."""
  def one(k, f):
    ctx = experts.sample_context(k, pool_f, pool_y, pool_a, size=ctx_size,
                                 capacity=ctx_size, num_classes=num_classes,
                                 where=pool_mask)
    return jax.nn.softmax(_gen_apply(graphdef, params, f[None], ctx))[0, 1]
  return jax.vmap(one)(jax.random.split(key, q_feats.shape[0]), q_feats)


def train_label_generator(data: Data, phi, answers_seen: np.ndarray,
                          lab: np.ndarray, *, seed: int,
                          budget: config.Budget, ema: float = 0.0,
                          max_labelled: int | None = None, views=None,
                          progress: bool = True):
  """Trains the expert-correctness predictor on ``lab`` + FixMatch.

  Args:
    data: the data.
    phi: ``(graphdef, params, features [N, D])`` of the frozen embedding.
    answers_seen: ``[N, S]`` true answers of the seen experts.
    lab: indices of the labelled points (each with every seen expert's
      answer).
    seed: the seed.
    budget: steps, batch sizes, τ, λ_u, μ.
    ema: EMA decay of the weights (0: none); the EMA weights are returned.
    max_labelled: pad ``lab`` to this length (one compiled program for
      every budget).
    views: ``None`` (φ applied to augmented images at every step) or the
      cached ``(weak, strong)`` views of ``feature_views`` (no image read).
    progress: show a progress bar.

  Returns:
    ``(graphdef, params, history)``, history ``[chunks, 2]`` (loss, share of
    confident unlabelled examples).
  """
  phi_def, phi_params, feats = phi
  k_ctx = 2 * data.num_classes
  key = jax.random.fold_in(jax.random.key(seed), 21 + lab.size)
  model = models.ExpertCorrectnessPredictor(
      feats.shape[1], data.num_classes, encoder_kind="attention",
      embed_dim=budget.embed_dim, hidden_dim=budget.hidden_dim,
      rngs=nnx.Rngs(params=key))
  graphdef, params = nnx.split(model)
  tx = optax.adam(budget.gen_lr)
  opt = tx.init(params)
  ema_params = params
  size = max(max_labelled or lab.size, lab.size, k_ctx)
  lab_idx = np.concatenate([lab, np.full(size - lab.size, lab[0])])
  unl = np.setdiff1d(data.splits["train"], lab)
  n_unl = unl.size  # Padded to the training split: one shape for every L.
  unl = np.concatenate([unl, np.full(data.splits["train"].size - n_unl,
                                     unl[0])])
  chunks = -(-budget.gen_steps // budget.eval_every)  # ceil
  chunk = -(-budget.gen_steps // chunks)
  hist = []
  weak_v, strong_v = (None, None) if views is None else (
      jnp.asarray(views[0]), jnp.asarray(views[1]))
  args = (phi_params, None if views is not None else jnp.asarray(data.images),
          jnp.asarray(feats), jnp.asarray(data.labels),
          jnp.asarray(answers_seen), jnp.asarray(lab_idx),
          jnp.asarray(lab.size), jnp.asarray(unl), jnp.asarray(n_unl),
          weak_v, strong_v)
  for i in tqdm(range(chunks), desc=f"label generator L={lab.size}",
                disable=not progress, leave=False):
    params, opt, ema_params, h = _gen_chunk(
        params, opt, ema_params, jax.random.fold_in(key, i), *args,
        graphdef=graphdef, phi_def=phi_def, tx=tx, steps=chunk,
        batch=budget.gen_batch, mu=budget.mu, ctx_size=k_ctx, tau=budget.tau,
        lambda_u=budget.lambda_u, ema=float(ema), dataset=data.dataset,
        num_classes=data.num_classes)
    hist.append(np.asarray(h))
  return graphdef, (ema_params if ema > 0 else params), np.stack(hist)


def predict_correctness(gen, feats, data: Data, query: np.ndarray,
                        pool: np.ndarray, pool_answers: np.ndarray, *,
                        key, pad_to: int = 0) -> np.ndarray:
  """``[Q]`` P(the expert is right) with contexts of ``2·K`` pool points.

  The pool is padded (masked) to ``pad_to`` points, so pools of different
  sizes can share one compiled program.
  """
  graphdef, params = gen
  k_ctx = 2 * data.num_classes
  pad = max(0, k_ctx - pool.size, pad_to - pool.size)
  mask = np.arange(pool.size + pad) < pool.size
  pool = np.concatenate([pool, np.full(pad, pool[0])])
  pool_answers = np.concatenate([pool_answers,
                                 np.full(pad, pool_answers[0])])
  return np.asarray(_gen_predict(
      params, key, jnp.asarray(feats[query]), jnp.asarray(feats[pool]),
      jnp.asarray(data.labels[pool]), jnp.asarray(pool_answers),
      jnp.asarray(mask), graphdef=graphdef, ctx_size=k_ctx,
      num_classes=data.num_classes))


def pseudo_answers(gen, feats, data: Data, answers_seen: np.ndarray,
                   lab: np.ndarray, *, seed: int, wrong: str,
                   pad_to: int = 0) -> tuple[np.ndarray, dict[str, float]]:
  """``[N, S]`` pseudo answers of the seen experts on train and validation.

  Each point's correctness is predicted with a fresh context of ``2·K``
  labelled points; pseudo labels follow eq. 5 (``experts.pseudo_expert_labels``
  with ``wrong``); the labelled points keep their true answers. Test points
  are left as -1 (never used).

  Returns:
    ``(answers, info)``, info with the pseudo labels' agreement with the true
    answers and the predicted-correctness accuracy on the training split.
  """
  key = jax.random.fold_in(jax.random.key(seed), 31 + lab.size)
  pts = np.concatenate([data.splits["train"], data.splits["val_ctx"],
                        data.splits["val_query"]])
  out = np.full(answers_seen.shape, -1, np.int32)
  agree, corr = [], []
  for e in range(answers_seen.shape[1]):
    ke = jax.random.fold_in(key, e)
    p = predict_correctness(gen, feats, data, pts, lab, answers_seen[lab, e],
                            key=jax.random.fold_in(ke, 0), pad_to=pad_to)
    pseudo = np.asarray(experts.pseudo_expert_labels(
        jax.random.fold_in(ke, 1), data.labels[pts], jnp.asarray(p),
        num_classes=data.num_classes, wrong=wrong))
    out[pts, e] = pseudo
    out[lab, e] = answers_seen[lab, e]
    true = answers_seen[pts, e]
    agree.append(np.mean(out[pts, e] == true))
    corr.append(np.mean((p > 0.5) == (true == data.labels[pts])))
  return out, {"pseudo_label_agreement": float(np.mean(agree)),
               "train_correctness_accuracy": float(np.mean(corr))}


def correctness_accuracy(gen, feats, data: Data, answers: np.ndarray, *,
                         seed: int) -> dict[str, float]:
  """Predicted-correctness accuracy on test queries, seen vs unseen experts."""
  key = jax.random.fold_in(jax.random.key(seed), 41)
  q, pool = data.splits["test_query"], data.splits["test_ctx"]
  acc = []
  for e in range(config.NUM_EXPERTS):
    p = predict_correctness(gen, feats, data, q, pool, answers[pool, e],
                            key=jax.random.fold_in(key, e))
    acc.append(np.mean((p > 0.5) == (answers[q, e] == data.labels[q])))
  acc = np.asarray(acc)
  return {"seen": float(acc[:config.NUM_SEEN].mean()),
          "unseen": float(acc[config.NUM_SEEN:].mean())}
