"""The attention context encoder's formula as functions (L2D-Pop).

``_masked_attention`` is the multi-head attention the encoder's modules
(``_context_encoder._Attention``) call. ``_attention_encode`` computes the
whole attention encoder from its parameters as one ``jax.custom_vjp`` with a
hand-written backward pass, run over blocks of queries;
``_reference_attention_encode`` is the same formula through plain autodiff,
for the tests.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _masked_attention(q, k, v, mask):
  """Multi-head attention ``[..., Tq, H, d]`` over keys where ``mask``.

  ``mask`` is ``[..., Tk]`` (the same for every query). Masked keys get
  exactly zero weight (their logits are the dtype's lowest finite value, so
  ``exp`` underflows to 0 and nothing is NaN, also in the gradient); a query
  with no valid key gets a zero output.
  """
  # [..., T, H, d] -> [..., H, T, d]: batched matmuls over (..., H) are
  # faster on CPU than the equivalent einsum (about 10% forward at C = 50,
  # 20% at C = 200).
  q, k, v = (jnp.swapaxes(x, -2, -3) for x in (q, k, v))
  logits = _scores(q, k, mask)  # [..., H, Tq, Tk]
  weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.swapaxes(jnp.matmul(weights, v), -2, -3)
  any_valid = jnp.any(mask, axis=-1)[..., None, None, None]
  return jnp.where(any_valid, out, 0.0)


# ---------------------------------------------------------------------------
# The attention encoder as one function with a hand-written backward pass.
#
# ``ContextEncoder(kind='attention')`` computes exactly the formula of the
# modules of ``_context_encoder`` (``_Attention``, ``_SelfAttentionBlock``;
# they hold the
# parameters), but through ``_attention_encode``: a ``jax.custom_vjp`` whose
# forward saves a small set of residuals and whose backward is written out,
# both run over blocks of queries in a sequential ``lax.map``. On CPU this
# keeps the step's scratch memory a few tens of MB instead of ~60 MB at
# B = 128, C = 50: XLA allocates that scratch afresh at every call, and above
# glibc's mmap threshold (32 MB) every page of it is a page fault (14k per
# step, ~40% of the step). ``_reference_attention_encode`` is the plain
# autodiff formula, kept for the tests.

_ROWS_PER_BLOCK = 1024  # Context points (queries x C) per block of the loop.


def _split_heads(x, num_heads):
  """``[G, T, E] -> [G, H, T, E / H]``."""
  x = x.reshape(x.shape[:-1] + (num_heads, -1))
  return jnp.swapaxes(x, 1, 2)


def _merge_heads(x):
  """``[G, H, T, d] -> [G, T, H * d]``."""
  x = jnp.swapaxes(x, 1, 2)
  return x.reshape(x.shape[:-2] + (-1,))


def _scores(q, k, mask):
  """Scaled, masked attention logits ``[..., H, Tq, Tk]``.

  ``q`` and ``k`` are ``[..., H, T, d]``, ``mask`` is ``[..., Tk]``; masked
  keys get the dtype's lowest finite value.
  """
  scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
  s = jnp.matmul(q * scale, jnp.swapaxes(k, -1, -2))
  return jnp.where(mask[..., None, None, :], s, jnp.finfo(s.dtype).min)


def _softmax_attend(q, k, v, mask):
  """Masked softmax attention; returns ``(out, weights, log-sum-exp)``."""
  s = _scores(q, k, mask)
  top = jnp.max(s, axis=-1, keepdims=True)
  e = jnp.exp(s - top)
  total = jnp.sum(e, axis=-1, keepdims=True)
  p = e / total
  return jnp.matmul(p, v), p, top + jnp.log(total)


def _softmax_attend_bwd(q, k, v, p, out, d_out):
  """Gradients of ``softmax(q k^T / sqrt(d)) v`` given ``p`` and ``out``."""
  scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
  dv = jnp.matmul(jnp.swapaxes(p, -1, -2), d_out)
  dp = jnp.matmul(d_out, jnp.swapaxes(v, -1, -2))
  ds = p * (dp - jnp.sum(d_out * out, axis=-1, keepdims=True))
  dq = jnp.matmul(ds, k) * scale
  dk = jnp.matmul(jnp.swapaxes(ds, -1, -2), q * scale)
  return dq, dk, dv


def _normalize(x, epsilon):
  """Flax ``LayerNorm``'s statistics: ``((x - mean) * rsqrt(var + eps))``."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.maximum(
      0.0, jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean))
  rstd = jax.lax.rsqrt(var + epsilon)
  return (x - mean) * rstd, rstd


def _normalize_bwd(dy, n, rstd, scale):
  dn = dy * scale
  dx = rstd * (dn - jnp.mean(dn, axis=-1, keepdims=True)
               - n * jnp.mean(dn * n, axis=-1, keepdims=True))
  return dx, _col_sum(dy * n), _col_sum(dy)


def _col_sum(x):
  return jnp.sum(x.reshape(-1, x.shape[-1]), axis=0)


def _kernel_grad(x, g):
  """``x^T g`` over every leading axis: ``[..., I], [..., O] -> [I, O]``."""
  return jnp.matmul(x.reshape(-1, x.shape[-1]).T, g.reshape(-1, g.shape[-1]))


def _dense(x, p):
  return x @ p["kernel"] + p["bias"]


def _dense_grad(x, g):
  return {"kernel": _kernel_grad(x, g), "bias": _col_sum(g)}


def _qkv(p):
  """One ``[E, 3E]`` projection for the self-attention's query/key/value."""
  kernel = jnp.concatenate([p[n]["kernel"] for n in ("query", "key", "value")],
                           axis=1)
  bias = jnp.concatenate([p[n]["bias"] for n in ("query", "key", "value")])
  return kernel, bias


def _encode_forward(params, query, features, labels, answers, mask, *,
                    num_heads, epsilon):
  """ψ before the no-context replacement, and the backward's residuals.

  ``query [G, Tq, D]``, ``features [G, C, D]`` (padding zeroed), ``labels``,
  ``answers`` ``[G, C]`` (in range), ``mask [G, C]``; ``ψ [G, Tq, E]``.
  """
  d = features.shape[-1]
  kernel1 = params["point1"]["kernel"]
  width = params["label_embed"]["embedding"].shape[-1]
  # [x, Emb_y[y], Emb_m[m]] @ W1 = x @ W1_x + (Emb_y @ W1_y)[y] + ...:
  # gathers from two [K, hidden] tables instead of a [.., D + 2L] concat.
  label_table = params["label_embed"]["embedding"] @ kernel1[d:d + width]
  answer_table = params["answer_embed"]["embedding"] @ kernel1[d + width:]
  r1 = jnp.maximum(features @ kernel1[:d] + label_table[labels]
                   + answer_table[answers] + params["point1"]["bias"], 0.0)
  h = _dense(r1, params["point2"])
  any_valid = jnp.any(mask, axis=-1)[:, None, None]
  saved = {"r1": r1, "blocks": []}
  for block in params["blocks"]:
    att = block["attention"]
    kernel, bias = _qkv(att)
    q, k, v = (_split_heads(t, num_heads)
               for t in jnp.split(h @ kernel + bias, 3, axis=-1))
    out, _, lse = _softmax_attend(q, k, v, mask)
    o = jnp.where(any_valid, _merge_heads(out), 0.0)
    n1, rstd1 = _normalize(h + _dense(o, att["out"]), epsilon)
    g1 = n1 * block["norm1"]["scale"] + block["norm1"]["bias"]
    u = jnp.maximum(_dense(g1, block["mlp1"]), 0.0)
    n2, rstd2 = _normalize(g1 + _dense(u, block["mlp2"]), epsilon)
    saved["blocks"].append({"h": h, "q": q, "k": k, "v": v, "lse": lse,
                            "out": out, "n1": n1, "rstd1": rstd1, "u": u,
                            "n2": n2, "rstd2": rstd2})
    h = n2 * block["norm2"]["scale"] + block["norm2"]["bias"]
  cross = params["cross"]
  qc = _split_heads(_dense(query, cross["query"]), num_heads)
  kc = _split_heads(_dense(features, cross["key"]), num_heads)
  vc = _split_heads(_dense(h, cross["value"]), num_heads)
  out, pc, _ = _softmax_attend(qc, kc, vc, mask)
  oc = jnp.where(any_valid, _merge_heads(out), 0.0)
  saved.update(h=h, qc=qc, kc=kc, vc=vc, pc=pc, out=out, oc=oc)
  return _dense(oc, cross["out"]), saved


def _encode_backward(params, query, features, labels, answers, mask, saved,
                     d_psi, *, num_heads, num_classes):
  """Gradients of ``_encode_forward`` (params, query, features)."""
  any_valid = jnp.any(mask, axis=-1)[:, None, None]
  cross = params["cross"]
  grads = {"cross": {"out": _dense_grad(saved["oc"], d_psi)}}
  d_oc = jnp.where(any_valid, d_psi @ cross["out"]["kernel"].T, 0.0)
  dq, dk, dv = (_merge_heads(t) for t in _softmax_attend_bwd(
      saved["qc"], saved["kc"], saved["vc"], saved["pc"], saved["out"],
      _split_heads(d_oc, num_heads)))
  grads["cross"].update(query=_dense_grad(query, dq),
                        key=_dense_grad(features, dk),
                        value=_dense_grad(saved["h"], dv))
  d_query = dq @ cross["query"]["kernel"].T
  d_features = dk @ cross["key"]["kernel"].T
  dh = dv @ cross["value"]["kernel"].T
  block_grads = []
  for block, r in reversed(list(zip(params["blocks"], saved["blocks"]))):
    att = block["attention"]
    dx2, d_scale, d_bias = _normalize_bwd(dh, r["n2"], r["rstd2"],
                                          block["norm2"]["scale"])
    g = {"norm2": {"scale": d_scale, "bias": d_bias},
         "mlp2": _dense_grad(r["u"], dx2)}
    du = jnp.where(r["u"] > 0, dx2 @ block["mlp2"]["kernel"].T, 0.0)
    g1 = r["n1"] * block["norm1"]["scale"] + block["norm1"]["bias"]
    g["mlp1"] = _dense_grad(g1, du)
    dx1, d_scale, d_bias = _normalize_bwd(
        dx2 + du @ block["mlp1"]["kernel"].T, r["n1"], r["rstd1"],
        block["norm1"]["scale"])
    g["norm1"] = {"scale": d_scale, "bias": d_bias}
    o = jnp.where(any_valid, _merge_heads(r["out"]), 0.0)
    ga = {"out": _dense_grad(o, dx1)}
    d_out = jnp.where(any_valid, dx1 @ att["out"]["kernel"].T, 0.0)
    # The weights are recomputed from the saved log-sum-exp (not saved).
    p = jnp.exp(_scores(r["q"], r["k"], mask) - r["lse"])
    d_qkv = jnp.concatenate([_merge_heads(t) for t in _softmax_attend_bwd(
        r["q"], r["k"], r["v"], p, r["out"],
        _split_heads(d_out, num_heads))], axis=-1)
    d_kernel, d_bias = _kernel_grad(r["h"], d_qkv), _col_sum(d_qkv)
    e = d_kernel.shape[1] // 3
    for i, name in enumerate(("query", "key", "value")):
      ga[name] = {"kernel": d_kernel[:, i * e:(i + 1) * e],
                  "bias": d_bias[i * e:(i + 1) * e]}
    g["attention"] = ga
    kernel, _ = _qkv(att)
    dh = dx1 + d_qkv @ kernel.T
    block_grads.insert(0, g)
  grads["blocks"] = block_grads
  r1 = saved["r1"]
  grads["point2"] = _dense_grad(r1, dh)
  da1 = jnp.where(r1 > 0, dh @ params["point2"]["kernel"].T, 0.0)
  d = features.shape[-1]
  kernel1 = params["point1"]["kernel"]
  width = params["label_embed"]["embedding"].shape[-1]
  d_label_table = _kernel_grad(
      jax.nn.one_hot(labels, num_classes, dtype=da1.dtype), da1)
  d_answer_table = _kernel_grad(
      jax.nn.one_hot(answers, num_classes, dtype=da1.dtype), da1)
  grads["point1"] = {"kernel": jnp.concatenate([
      _kernel_grad(features, da1),
      params["label_embed"]["embedding"].T @ d_label_table,
      params["answer_embed"]["embedding"].T @ d_answer_table]),
                     "bias": _col_sum(da1)}
  grads["label_embed"] = {
      "embedding": d_label_table @ kernel1[d:d + width].T}
  grads["answer_embed"] = {
      "embedding": d_answer_table @ kernel1[d + width:].T}
  d_features = d_features + da1 @ kernel1[:d].T
  return grads, d_query, d_features


def _blocks(x, num):
  return x.reshape((num, x.shape[0] // num) + x.shape[1:])


def _unblock(x):
  return x.reshape((-1,) + x.shape[2:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _attention_encode(params, query, features, labels, answers, mask,
                      num_heads, num_classes, epsilon, num_blocks):
  """``_encode_forward``'s ψ, over ``num_blocks`` blocks of the first axis."""
  def one(args):
    return _encode_forward(params, *args, num_heads=num_heads,
                           epsilon=epsilon)[0]
  inputs = (query, features, labels, answers, mask)
  return _unblock(jax.lax.map(one, tuple(_blocks(a, num_blocks)
                                         for a in inputs)))


def _attention_encode_fwd(params, query, features, labels, answers, mask,
                          num_heads, num_classes, epsilon, num_blocks):
  def one(args):
    return _encode_forward(params, *args, num_heads=num_heads,
                           epsilon=epsilon)
  inputs = (query, features, labels, answers, mask)
  psi, saved = jax.lax.map(one, tuple(_blocks(a, num_blocks)
                                      for a in inputs))
  return _unblock(psi), (params, inputs, saved)


def _attention_encode_bwd(num_heads, num_classes, epsilon, num_blocks, res,
                          d_psi):
  del epsilon
  params, inputs, saved = res

  def one(args):
    *block_inputs, block_saved, block_d_psi = args
    return _encode_backward(params, *block_inputs, block_saved, block_d_psi,
                            num_heads=num_heads, num_classes=num_classes)
  grads, d_query, d_features = jax.lax.map(
      one, tuple(_blocks(a, num_blocks) for a in inputs)
      + (saved, _blocks(d_psi, num_blocks)))
  grads = jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)
  no_grad = tuple(np.zeros(jnp.shape(a), jax.dtypes.float0)
                  for a in inputs[2:])
  return (grads, _unblock(d_query), _unblock(d_features)) + no_grad


_attention_encode.defvjp(_attention_encode_fwd, _attention_encode_bwd)


def _num_blocks(groups, points):
  """Blocks of ``groups`` (a divisor of it) of about ``_ROWS_PER_BLOCK`` rows.

  One block off CPU: the loop only serves XLA:CPU's per-call scratch memory,
  and would serialise work an accelerator runs in parallel.
  """
  if jax.default_backend() != "cpu":
    return 1
  want = max(1, -(-groups * points // _ROWS_PER_BLOCK))
  for num in range(want, groups + 1):
    if groups % num == 0 and num <= 2 * want:
      return num
  return 1


def _reference_attention_encode(params, query, features, labels, answers,
                                mask, *, num_heads, epsilon):
  """The same ψ with plain autodiff (the formula; used by the tests)."""
  def layer_norm(x, p):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=-1, keepdims=True)
                      - jnp.square(mean))
    return (x - mean) * (jax.lax.rsqrt(var + epsilon) * p["scale"]) + p[
        "bias"]

  def attend(p, q, k, v):
    split = lambda x: x.reshape(x.shape[:-1] + (num_heads, -1))  # noqa: E731
    out = _masked_attention(split(_dense(q, p["query"])),
                            split(_dense(k, p["key"])),
                            split(_dense(v, p["value"])), mask)
    return _dense(out.reshape(out.shape[:-2] + (-1,)), p["out"])

  points = jnp.concatenate([features,
                            params["label_embed"]["embedding"][labels],
                            params["answer_embed"]["embedding"][answers]], -1)
  h = _dense(jnp.maximum(_dense(points, params["point1"]), 0.0),
             params["point2"])
  for block in params["blocks"]:
    h = layer_norm(h + attend(block["attention"], h, h, h), block["norm1"])
    h = layer_norm(h + _dense(jnp.maximum(_dense(h, block["mlp1"]), 0.0),
                              block["mlp2"]), block["norm2"])
  return attend(params["cross"], query, features, h)
