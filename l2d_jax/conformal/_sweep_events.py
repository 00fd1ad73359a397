"""Reading every alpha of a sweep from run events (``deferral_sweep``).

A test point keeps one prefix size over a run of consecutive sorted alphas
(at most ``K + 1`` runs for LAC/APS, whose sizes only shrink as alpha
grows). Who answers and whether the answer is right change only where a run
starts, so each run contributes one telescoped event per column (the value
of the new run minus the previous one), and summing the events along the
alphas gives every alpha's per-expert histogram and counts with
``points x runs`` updates instead of ``points x alphas``. RAPS sizes go up
and down along the alphas (its ``k_reg`` and ``lam`` change with alpha): its
run starts are listed point after point (``_change_codes``) and read in
chunks (``_change_events``).

Two tables hold the events of a split: per-expert histograms in
``[C, S, A + 1, J]`` layout (alpha before expert, so that the events of one
score and strategy land in one block of a few MB that stays in cache while
they are added), and the counts that need no expert (right answers per
group, set size, coverage) in a small ``[A + 1, C, S * G + H]`` table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _change_codes(sizes, pad):
  """Every run start of sizes ``[n, A]`` in one list: ``(codes, total)``.

  A run of point i starts at alpha a where ``a = 0`` or its size changes
  (RAPS sizes go up and down along the alphas). ``codes`` ``[n * A + pad]``
  int32 holds ``i * A + a`` for the ``total`` run starts (point by point,
  runs in alpha order), then -1; ``pad`` extra entries keep every slice of
  ``pad`` entries from a position below ``total`` in range. The starts land
  with one scatter at positions counted by a scan along the alphas that
  starts each point at its offset (the runs of the points before it): no
  sort.
  """
  n, num_a = sizes.shape
  change = jnp.concatenate(
      [jnp.ones((n, 1), bool), sizes[:, 1:] != sizes[:, :-1]], axis=1)
  runs = change.sum(axis=1, dtype=jnp.int32)
  out = n * num_a + pad

  def step(c, row):
    c = c + row.astype(jnp.int32)
    return c, jnp.where(row, c, out)
  pos = jax.lax.scan(step, _exclusive_cumsum(runs) - 1, change.T)[1]
  code = (jnp.arange(n, dtype=jnp.int32)[None, :] * num_a
          + jnp.arange(num_a, dtype=jnp.int32)[:, None])  # [A, n]
  codes = jnp.full(out, -1, jnp.int32).at[pos.ravel()].set(
      code.ravel(), mode="drop")
  return codes, runs.sum()


def _exclusive_cumsum(x, block=128):
  """``cumsum(x) - x`` of int ``[n]`` by two small triangular products.

  Sums within blocks of ``block`` entries and over the block totals as
  integer matrix products (exact; a few kernels, where XLA's cumsum takes a
  chain of reduce-windows).
  """
  n = x.shape[0]
  num_b = -(-n // block)
  x2 = jnp.pad(x, (0, num_b * block - n)).reshape(num_b, block)
  before = lambda m: (jnp.arange(m)[:, None] < jnp.arange(m)[None, :]).astype(
      x.dtype)
  within = jnp.dot(x2, before(block), preferred_element_type=x.dtype)
  offset = jnp.dot(x2.sum(axis=1), before(num_b),
                   preferred_element_type=x.dtype)
  return (within + offset[:, None]).reshape(-1)[:n]


def _change_events(code, sizes, agent, rows, *, score_index, num_scores,
                   num_experts, fixed=(), fixed_col=None):
  """Telescoped events of the run starts ``code`` (``_change_codes``).

  Runs are contiguous along the alphas, so at the start ``a`` of a run of
  point i its contribution changes from its value at ``a - 1`` to its new
  one (from nothing at ``a = 0``): one event per run and column (two for
  the expert histogram of the strategies outside ``fixed``), in the layout
  of ``_run_events`` (entries ``code < 0`` land in the unread row A).

  Args:
    code: ``[R]`` int32 ``i * A + a`` run starts, -1 for none.
    sizes: ``[n, A]`` set sizes.
    agent: ``[S, n, K + 1]`` who answers at each size (0 model, -1 nobody).
    rows: ``[n, K + 1, S * G + H]`` counts-table rows (``_count_rows``).
    score_index: this score's position ``c`` in the tables.
    num_scores: C.
    num_experts: J.
    fixed: static positions (along S) of strategies whose expert, wherever
      an expert answers, is ``fixed_col`` at every size.
    fixed_col: ``[len(fixed), n]`` int 0-based expert of each fixed
      strategy and point.
  """
  num_s = agent.shape[0]
  n, num_a = sizes.shape
  ok = code >= 0
  safe = jnp.where(ok, code, 0)
  i = safe // num_a
  a = jnp.where(ok, safe % num_a, num_a)
  has_prev = a >= 1
  flat = sizes.reshape(-1)
  both = jnp.stack([flat[safe], flat[jnp.maximum(safe - 1, 0)]],
                   axis=-1)  # [R, 2]: the new size and the one before
  who = agent[:, i[:, None], both]  # [S, R, 2]
  cnt = rows[i[:, None], both]  # [R, 2, W]
  is_e = ((who >= 1) & (who <= num_experts)
          & jnp.stack([ok, has_prev], axis=-1))
  col = jnp.where(is_e, who - 1, 0)
  moving = [t for t in range(num_s) if t not in fixed]

  def base(strategies):  # [s, R] row offsets in [C, S, A + 1, J]
    block = score_index * num_s + jnp.array(strategies, jnp.int32)
    return (block[:, None] * (num_a + 1) + a) * num_experts

  idx, val = [], []
  if moving:
    e, c = _pick(is_e, moving).astype(jnp.int32), _pick(col, moving)
    row = base(moving)
    idx += [row + c[..., 0], row + c[..., 1]]
    val += [e[..., 0], -e[..., 1]]
  if fixed:
    e = _pick(is_e, fixed).astype(jnp.int32)
    idx.append(base(fixed) + fixed_col[:, i])
    val.append(e[..., 0] - e[..., 1])
  # Every histogram event of the chunk in one scatter.
  hist = [(jnp.concatenate(idx), jnp.concatenate(val))]
  prev_cnt = jnp.where(has_prev[:, None], cnt[:, 1], 0)
  counts = (a * num_scores + score_index,
            (cnt[:, 0] - prev_cnt).astype(jnp.int32))
  return hist, counts


def _count_rows(weights, shared):
  """``[n, K + 1, S * G + H]`` counts-table row of each point and set size.

  ``weights`` ``[S, n, K + 1, G]`` and ``shared`` ``[n, K + 1, H]`` side by
  side, in the column order of the counts table (``_new_tables``).
  """
  num_s, n, num_k1, num_g = weights.shape
  return jnp.concatenate(
      [jnp.moveaxis(weights, 0, 2).reshape(n, num_k1, num_s * num_g),
       shared], axis=-1)


def _prev(x, axis):
  """``x`` shifted by one along ``axis``: the previous run's values.

  Zeros before the first run.
  """
  first = jnp.zeros_like(jax.lax.slice_in_dim(x, 0, 1, axis=axis))
  return jnp.concatenate(
      [first, jax.lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)],
      axis=axis)


def _pick(x, rows, axis=0):
  """``x`` at the static positions ``rows`` of ``axis`` (slices, no gather)."""
  return jnp.concatenate(
      [jax.lax.slice_in_dim(x, r, r + 1, axis=axis) for r in rows], axis=axis)


def _run_events(start, who, cnt, *, score_index, num_scores, num_alphas,
                num_experts, fixed=(), fixed_col=None, fixed_runs=None):
  """Telescoped events of one score's runs: ``(hist, counts)``.

  Runs are contiguous along the alphas, so at ``start[i, r]`` point i's
  contribution changes from run r - 1's to run r's: one event per run and
  column (two for the expert histogram, whose value moves between columns,
  except for the ``fixed`` strategies, whose expert is the same at every
  size: one). ``hist`` is a list of ``(index, value)`` arrays into the
  histogram table of ``_new_tables``; ``counts`` one ``(row [n, R], value
  [n, R, S * G + H])`` pair of whole rows of the counts table (added by
  ``_add_events``).

  Args:
    start: ``[n, R]`` non-decreasing run starts (A = no run).
    who: ``[S, n, R]`` who answers in each run (0 model, -1 nobody).
    cnt: ``[n, R, S * G + H]`` int counts-table row of each run
      (``_count_rows``: each strategy's counts, then the shared ones).
    score_index: this score's position ``c`` in the tables.
    num_scores: C.
    num_alphas: A.
    num_experts: J.
    fixed: static positions (along S) of strategies whose expert, wherever
      an expert answers, is ``fixed_col`` at every run (the naive ones: one
      expert per point, the model at size 1).
    fixed_col: ``[len(fixed), n]`` int 0-based expert of each fixed
      strategy and point (any value where no expert ever answers).
    fixed_runs: static run positions outside which the fixed strategies'
      values do not change (their events are zero there and are left out);
      None: every run.
  """
  num_s = who.shape[0]
  is_e = (who >= 1) & (who <= num_experts)
  col = jnp.where(is_e, who - 1, 0)
  moving = [t for t in range(num_s) if t not in fixed]

  def rows(strategies, st):  # [s, n, R] row offsets in [C, S, A + 1, J]
    block = (score_index * num_s + jnp.array(strategies, jnp.int32))
    return (block[:, None, None] * (num_alphas + 1) + st) * num_experts

  hist = []
  if moving:
    e, c = _pick(is_e, moving), _pick(col, moving)
    row = rows(moving, start)
    # The new expert's +1 and the previous one's -1, stacked: one scatter.
    prev_e = _prev(e, 2).astype(jnp.int32)
    hist.append((jnp.stack([row + c, row + _prev(c, 2)]),
                 jnp.stack([e.astype(jnp.int32), -prev_e])))
  if fixed:
    e = _pick(is_e, fixed).astype(jnp.int32)
    val = e - _prev(e, 2)
    st = start
    if fixed_runs is not None:
      val, st = _pick(val, fixed_runs, 2), _pick(start, fixed_runs, 1)
    hist.append((rows(fixed, st) + fixed_col[:, :, None], val))
  # Counts table [A + 1, C, S * G + H]: one row of S * G + H columns per
  # run (one windowed update, not one per column).
  counts = (start * num_scores + score_index,
            (cnt - _prev(cnt, 1)).astype(jnp.int32))
  return hist, counts


def _new_tables(*, num_a, num_c, num_s, num_experts, num_g, num_h,
                hist_dtype=jnp.int32):
  """Empty ``(hist, counts)`` event tables (flat)."""
  return (jnp.zeros(num_c * num_s * (num_a + 1) * num_experts, hist_dtype),
          jnp.zeros((num_a + 1) * num_c * (num_s * num_g + num_h), jnp.int32))


def _add_events(tables, events):
  """Adds ``_run_events`` output to the tables, in place (no concatenation).

  The histogram table is the large one: with ``hist_dtype`` int16 (when
  every count fits, ``|count| <= n < 2**15``) the random adds touch half the
  memory.
  """
  table, small = tables
  for idx, val in events[0]:
    table = table.at[idx.ravel()].add(val.ravel().astype(table.dtype),
                                      mode="drop")
  row, val = events[1]
  width = val.shape[-1]
  dnums = jax.lax.ScatterDimensionNumbers(
      update_window_dims=(val.ndim - 1,), inserted_window_dims=(0,),
      scatter_dims_to_operand_dims=(0,))
  small = jax.lax.scatter_add(
      small.reshape(-1, width), row[..., None], val, dnums,
      mode=jax.lax.GatherScatterMode.FILL_OR_DROP).reshape(-1)
  return table, small


def _read_events(tables, *, num_a, num_c, num_s, num_experts, num_g, num_h):
  """Sums the events up along the alphas; per-alpha metrics per score.

  Args:
    tables: ``(hist, counts)`` filled by ``_add_events``.
    num_a, num_c, num_s, num_experts, num_g, num_h: A, C, S, J, G, H.

  Returns:
    ``(queries, n_queried, max_queries, counts, shared)`` with shapes
    ``[A, C, S]`` (x3), ``[A, C, S, G]`` and ``[A, C, H]``; the per-expert
    histograms live only one alpha at a time (in the scan carry).
  """
  num_j = num_experts
  width = num_s * num_g + num_h
  table = tables[0].reshape(num_c * num_s, num_a + 1, num_j)
  small = tables[1].reshape(num_a + 1, num_c * width)[:num_a]

  def step(carry, xs):
    h, c = carry
    a, d = xs
    h = h + jax.lax.dynamic_index_in_dim(table, a, axis=1,
                                         keepdims=False).astype(jnp.int32)
    c = c + d
    per_s = jnp.stack([h.sum(axis=-1), (h > 0).sum(axis=-1, dtype=jnp.int32),
                       h.max(axis=-1)], axis=-1)  # [C * S, 3]
    return (h, c), (per_s, c)
  init = (jnp.zeros((num_c * num_s, num_j), jnp.int32),
          jnp.zeros(num_c * width, jnp.int32))
  per_s, cum = jax.lax.scan(step, init, (jnp.arange(num_a), small))[1]
  per_s = per_s.reshape(num_a, num_c, num_s, 3)
  cum = cum.reshape(num_a, num_c, width)
  counts_out = cum[..., :num_s * num_g].reshape(num_a, num_c, num_s, num_g)
  return (per_s[..., 0], per_s[..., 1], per_s[..., 2], counts_out,
          cum[..., num_s * num_g:])
