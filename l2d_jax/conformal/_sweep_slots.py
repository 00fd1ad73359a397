"""Who answers in a sweep: tie-break draws, tie tables and slot picking.

Each strategy of ``l2d_jax.deferral.STRATEGIES`` and each baseline of
``deferral_sweep`` picks one annotation slot per test point (per prefix
size for the size-dependent strategies): the valid slots of highest score
tie (``_top_slots``), then the random priority of the split decides
(``_slot_picker``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from l2d_jax.conformal import _deferral
from l2d_jax.deferral import _strategies


def _split_randomness(key: jax.Array, split: ArrayLike,
                      shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """The random draws of one split: ``(priorities, n_shots_key)``.

  ``priorities`` is ``[S + 2, n_test, M]`` uniforms: rows ``0..S-1`` are
  each strategy's tie-break priorities (one per test point and annotation
  slot, shared by all set sizes and scores), row ``S`` the random-expert
  baseline's and row ``S + 1`` the best-expert baseline's. They are the rows
  of one ``uniform(fold_in(key, split), (6, n, M))`` draw: rows 0-2 the first
  three strategies, rows 3-4 the baselines, row 5 ``segregativity_lcb``
  (added last, so that adding it changed no earlier draw). ``n_shots_key``
  is ``fold_in(fold_in(key, split), 1)``. Exposed so that a reference can
  reproduce the draws (one generator call per split keeps compilation
  short).
  """
  k = jax.random.fold_in(key, split)
  u = jax.random.uniform(k, (6,) + tuple(shape))
  return u[jnp.array([0, 1, 2, 5, 3, 4])], jax.random.fold_in(k, 1)


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry_pair(key_data: jax.Array, x0: jax.Array,
                   x1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 of the counter words ``(x0, x1)`` under ``key_data``.

  The same 20 rounds as ``jax.random``'s threefry2x32, unrolled: XLA CPU
  fuses them into one kernel, where jax's rolled loop (kept small for
  compilation) writes both words to memory after every 4 rounds.
  """
  u = jnp.uint32
  rotl = lambda v, d: (v << u(d)) | (v >> u(32 - d))
  k1, k2 = key_data[0], key_data[1]
  ks = (k1, k2, k1 ^ k2 ^ u(0x1BD11BDA))
  x0 = x0 + ks[0]
  x1 = x1 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = rotl(x1, r) ^ x0
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + u(i + 1)
  return x0, x1


def _threefry_xor(key_data: jax.Array, count: jax.Array) -> jax.Array:
  """``x0 ^ x1`` of Threefry-2x32 of the counters ``(0, count)``."""
  x0, x1 = _threefry_pair(key_data, jnp.zeros_like(count), count)
  return x0 ^ x1


def _fold_in_data(key_data: jax.Array, data: jax.Array) -> jax.Array:
  """``key_data(fold_in(key, data))`` for a threefry key and uint32 ``data``.

  ``jax.random.fold_in`` hashes the counter words ``(0, data)`` (the high
  and low words of the seed) with the key: the same rounds, unrolled.
  """
  data = jnp.asarray(data, jnp.uint32)
  return jnp.stack(_threefry_pair(key_data, jnp.zeros_like(data), data))


def _fast_draws_apply(key: jax.Array, size: int) -> bool:
  """Whether ``_split_tickets`` can reproduce ``jax.random.uniform`` itself.

  True for typed threefry keys with jax's default (partitionable) counters,
  float32 uniforms and fewer than 2**32 draws.
  """
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return False
  return (str(jax.random.key_impl(key)) == "threefry2x32"
          and bool(jax.config.jax_threefry_partitionable)
          and jnp.result_type(float) == jnp.float32 and size < 2**32)


def _split_tickets(key: jax.Array, split: ArrayLike,
                   shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """``_split_randomness`` as integer tickets for ``_slot_picker``.

  Returns ``(tickets, n_shots_key)``: ``tickets`` ``[S + 2, n_test, M]``
  int32 equal to ``priorities * 2**23`` (a float32 uniform is ``m * 2**-23``
  with ``m`` the top 23 bits of its random word, exactly), computed from the
  words without the float round trip, or the float ``priorities`` themselves
  when the generator cannot be reproduced (``_fast_draws_apply``).
  """
  full = (6,) + tuple(shape)
  size = 1
  for d in full:
    size *= d
  if not _fast_draws_apply(key, size):
    return _split_randomness(key, split, shape)
  k_data = _fold_in_data(jax.random.key_data(key), split)
  count = jax.lax.iota(jnp.uint32, size).reshape(full)
  bits = _threefry_xor(k_data, count)
  tickets = (bits >> jnp.uint32(9)).astype(jnp.int32)
  k = jax.random.wrap_key_data(k_data, impl="threefry2x32")
  return tickets[jnp.array([0, 1, 2, 5, 3, 4])], jax.random.fold_in(k, 1)


def _top_slots(scores, ok, costs):
  """The slots ``[..., M]`` a ``select_expert(tie_break='cost')`` may pick.

  The valid, non-NaN slots with the highest score, then (``costs`` not None)
  the lowest cost among those; the random priority decides among what is
  left (``_slot_picker``). No slot where nothing is valid.
  """
  ok = ok & ~jnp.isnan(scores)
  s = jnp.where(ok, scores, -jnp.inf)
  tied = ok & (s == s.max(axis=-1, keepdims=True))
  if costs is not None:
    c = jnp.where(tied, costs, jnp.inf)
    tied = tied & (c == c.min(axis=-1, keepdims=True))
  return tied


def _slot_picker(priority):
  """``pick(tied [n, ..., M]) -> [n, ...]``: the tied slot of highest priority.

  Same answer as ``argmax(where(tied, priority, -1))`` (ties to the lowest
  slot) and -1 where nothing is tied. ``jax.random.uniform`` float32 draws
  are multiples of 2**-23, so priority and slot pack exactly into one int32
  key and one integer max does the work (a float argmax is several times
  slower on CPU). An int32 ``priority`` holds the tickets
  ``priority * 2**23`` themselves (``_split_tickets``). Other dtypes or more
  than 256 slots take two integer-free passes.
  """
  num_m = priority.shape[-1]
  mpad = 1 << max(0, (num_m - 1).bit_length())
  # Priorities [..., n, M] against tied [..., n, (K + 1,) M].
  extra = lambda x, t: x.reshape(x.shape[:-1] + (1,) * (t.ndim - x.ndim)
                                 + x.shape[-1:])
  if (priority.dtype in (jnp.float32, jnp.int32)) and mpad <= 256:
    slots = jnp.arange(num_m, dtype=jnp.int32)
    tickets = (priority if priority.dtype == jnp.int32
               else (priority * 2.0**23).astype(jnp.int32))
    keys = tickets * mpad + (mpad - 1 - slots)

    def pick(tied):
      best = jnp.max(jnp.where(tied, extra(keys, tied), -1), axis=-1)
      return jnp.where(best >= 0, mpad - 1 - (best & (mpad - 1)),
                       -1).astype(jnp.int32)
    return pick

  def pick_general(tied):
    p = extra(priority, tied)
    best = jnp.max(jnp.where(tied, p, -1.0), axis=-1, keepdims=True)
    slot = jnp.min(jnp.where(tied & (p == best), jnp.arange(num_m), num_m),
                   axis=-1)
    return jnp.where(slot < num_m, slot, -1).astype(jnp.int32)
  return pick_general


def _strategy_tables(correct, total, ok, valid, slot_costs, lcb):
  """Which slots each strategy may pick: ``(sized, flat)``.

  ``sized`` ``[2, n, K + 1, M]`` for segregativity and its LCB (per prefix
  size), ``flat`` ``[2, n, M]`` for naive most accurate and naive random (the
  same at every size). Ties on the score go to the lowest cost with
  ``slot_costs``, then to the random priority (``_slot_picker``).
  """
  seg = _deferral.segregativity_from_counts(correct, total, valid, ok)
  lcb_lambda, prior_a, prior_b = lcb
  post = _strategies.posterior_lcb(correct, total, lcb_lambda=lcb_lambda,
                                   prior_a=prior_a, prior_b=prior_b)
  post = jnp.where(valid[..., None], post, -jnp.inf)
  post = jnp.where((valid & ~ok)[..., None], jnp.nan, post)
  c3 = None if slot_costs is None else slot_costs[:, None, :]
  sized = jnp.stack([_top_slots(jnp.swapaxes(t, 1, 2), valid[:, None, :], c3)
                     for t in (seg, post)])
  flat = jnp.stack([_top_slots(seg[:, :, 0], valid, slot_costs),
                    _top_slots(jnp.zeros(valid.shape), valid, None)])
  return sized, flat


def _baseline_counts(slots, annotations, labels, num_experts):
  """``[B, 4]`` int (right, queries, experts queried, most queries) per row.

  Row b consults annotation slot ``slots[b, i]`` on every point i (-1:
  nobody, counted wrong and not queried).
  """
  num_b = slots.shape[0]
  ok = slots >= 0
  safe = jnp.where(ok, slots, 0)
  pick = lambda x: jnp.take_along_axis(x, safe.T, axis=1).T  # [B, n]
  agent = jnp.where(ok, pick(annotations.annotator) + 1, -1)
  right = ok & (pick(annotations.answer) == labels)
  deferred = (agent >= 1) & (agent <= num_experts)
  flat = (jnp.arange(num_b)[:, None] * num_experts
          + jnp.where(deferred, agent - 1, 0))
  hist = jnp.zeros(num_b * num_experts, jnp.int32).at[flat.ravel()].add(
      deferred.ravel().astype(jnp.int32)).reshape(num_b, num_experts)
  return jnp.stack([right.sum(axis=1, dtype=jnp.int32), hist.sum(axis=1),
                    (hist > 0).sum(axis=1, dtype=jnp.int32),
                    hist.max(axis=1)], axis=1)


