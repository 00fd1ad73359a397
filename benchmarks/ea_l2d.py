"""Speed of EA-L2D against L2D-Pop (NP+Attention) as contexts grow (issue 9).

Both methods score (query, expert) pairs given the expert's context set of
n_c points; the script measures, for n_c in {15, 60, 150, 600} by default:

  1. inference cost per query: one jitted call that takes a batch of queries
     ``x [B, D]`` and each expert's context set (already sampled) and
     returns who answers (``deferral.expert_priorities`` then
     ``deferral.defer_by_priority``), divided by ``B``;
  2. one training step: sample each expert's context subset of size n_c from
     its pool inside the jitted step (``experts.sample_context``, vmapped over
     experts), forward, loss, backward and an Adam update.

EA-L2D uses the public library only: ``experts.class_counts`` ->
``experts.beta_posterior`` (vmapped over experts, recomputed inside every
call from the context) -> ``experts.ea_rejector_features`` ->
``models.EARejector`` (paper size: five hidden layers of 256) and
``losses.ea_lce_loss``. Its inference call also recomputes the posterior from
the context each time (a deployment would cache it per expert).

L2D-Pop is ``models.PopulationL2D(encoder_kind='attention')`` (one
self-attention block, 4 heads, embedding 64, the library defaults) with
``losses.population_l2d_loss``; the expert's context points are raw inputs
passed through the shared backbone. It is timed on two call paths with the
same parameters (checked equal, deferral logits and first loss, at every
n_c before timing):

  * *per row* (``Pop``): every (query, expert) row carries its expert's
    whole context set (``[J * B, C, D]``), so the backbone, the point MLP
    and the self-attention over the set run once per row: the cost grows
    with n_c, quadratically in the self-attention, times B;
  * *shared context* (``PopShared``): expert j's set is passed once with a
    leading axis of 1 (``[1, C, D]``, vmapped over the J experts), so the
    backbone, the point MLP and the self-attention run once per expert and
    call; only the cross-attention from each query to the n_c points runs
    per row. This is how the L2D-Pop baselines of the experiments call it.

Both methods share the backbone architecture (``Linear(D, D)`` then ReLU on
``D``-dimensional inputs, e.g. a frozen embedding) and a linear class head;
the classifier is trained jointly in every step. L2D-Pop also needs each
expert's answer on every training query; EA-L2D does not.

Timing: jitted, warm (one call per program before timing, so compilation is
excluded), the six programs interleaved in blocks (``--block`` calls of EA
inference, then of Pop inference, PopShared inference, EA step, Pop step,
PopShared step, repeat until ``--repeats``), medians over the repetitions,
one run. Blocks rather than single calls: on a shared, loaded machine a
short call right after a long one is descheduled more often (the scheduler
charges the long one), which inflated the short EA-L2D calls up to 20x in
single-call alternation. The fastest call of each is printed too. JAX uses
its default CPU threading: pin the process (``taskset -c 1``) for one core.
The load average is printed before and after.

The last two lines, at n_c = 60 (``--summary-size``), median wall times:

  ``pop_shared_query_us=<f> pop_shared_over_ea=<f> pop_shared_step_ms=<f>``
  ``ea_query_us=<f> pop_query_us=<f> pop_over_ea=<f> ea_step_ms=<f>
  pop_step_ms=<f>`` (one line; the issue's line, its meaning unchanged)

  * ``ea_query_us``: EA-L2D inference per query (µs): per-expert counts and
    Beta posterior from the context, classifier, the six features, the
    rejector, priorities and the decision, for B queries x J experts,
    divided by B (the context sampling is not included);
  * ``pop_query_us``: the same for L2D-Pop on the per-row path (backbone
    and encoder of the whole context per row, cross-attention, deferral
    head, priorities, decision), divided by B;
  * ``pop_over_ea``: ``pop_query_us / ea_query_us`` (> 1: EA-L2D cheaper);
  * ``ea_step_ms`` / ``pop_step_ms``: one training step (ms) of B queries x
    J experts, context sampling included, L2D-Pop on the per-row path;
  * ``pop_shared_query_us`` / ``pop_shared_step_ms``: L2D-Pop on the
    shared-context path, same inclusions;
    ``pop_shared_over_ea = pop_shared_query_us / ea_query_us``.

Usage: python benchmarks/ea_l2d.py [--batch 64] [--experts 1]
  [--sizes 15,60,150,600] [--repeats 15] [--block 5]
  [--plot docs/ea_l2d_scaling.png]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2d_jax import io as l2d_io  # noqa: E402
from l2d_jax import deferral  # noqa: E402
from l2d_jax import experts  # noqa: E402
from l2d_jax import losses  # noqa: E402
from l2d_jax import models  # noqa: E402


METHODS = ("EA-L2D", "L2D-Pop (NP+Attention)",
           "L2D-Pop (NP+Attention), shared context")


def _sizes(text: str) -> tuple[int, ...]:
  try:
    sizes = tuple(int(s) for s in text.split(",") if s.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"sizes must be comma-separated integers, got {text!r}") from None
  if not sizes or min(sizes) < 1:
    raise argparse.ArgumentTypeError("sizes must be positive integers")
  return sizes


def _positive(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(
        f"expected a positive integer, got {value}")
  return value


class Backbone(nnx.Module):
  """``φ(x) = relu(W x + b)``, shared architecture of both methods."""

  def __init__(self, in_dim: int, feature_dim: int, *, rngs: nnx.Rngs):
    self.linear = nnx.Linear(in_dim, feature_dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.linear(x))


class EAModel(nnx.Module):
  """Classifier (backbone + linear head) and the expert-agnostic rejector."""

  def __init__(self, in_dim: int, feature_dim: int, num_classes: int, *,
               hidden_sizes: tuple[int, ...], rngs: nnx.Rngs):
    self.backbone = Backbone(in_dim, feature_dim, rngs=rngs)
    self.head = nnx.Linear(feature_dim, num_classes, rngs=rngs)
    self.rejector = models.EARejector(hidden_sizes=hidden_sizes, rngs=rngs)

  def __call__(self, x: jax.Array, mean: jax.Array, var: jax.Array,
               key: jax.Array):
    """Class logits ``[B, K]`` and deferral logits ``[J, B]``.

    ``mean``/``var`` are the experts' profiles ``[J, 1, K]``.
    """
    logits = self.head(self.backbone(x))
    z = experts.ea_rejector_features(jax.nn.softmax(logits), mean, var,
                                     key=key)
    return logits, self.rejector(z)


def _posterior(ctx: experts.Context, num_classes: int):
  """Per-expert Beta posterior ``[J, K]`` of a ``[J, C]`` context."""
  def one(c):
    correct, total = experts.class_counts(c, num_classes=num_classes)
    return experts.beta_posterior(correct, total)
  return jax.vmap(one)(ctx)


def _sample(key, pool_x, pool_y, pool_answers, size, num_classes):
  """One context of ``size`` points per expert: ``Context [J, size, ...]``."""
  keys = jax.random.split(key, pool_answers.shape[0])
  return jax.vmap(lambda k, a: experts.sample_context(
      k, pool_x, pool_y, a, size=size, capacity=size,
      num_classes=num_classes))(keys, pool_answers)


def _rows(ctx: experts.Context, batch: int) -> experts.Context:
  """``[J, C, ...]`` -> ``[J * B, C, ...]``: every query row of expert j
  carries expert j's context (L2D-Pop's call shape)."""
  def tile(a):
    a = jnp.broadcast_to(a[:, None], (a.shape[0], batch) + a.shape[1:])
    return a.reshape((-1,) + a.shape[2:])
  return experts.Context(*(tile(a) for a in ctx))


def build(args, rng: np.random.Generator):
  """Models, optimiser states, pools, data and the four jitted programs."""
  d, k, j, b = args.input_dim, args.num_classes, args.experts, args.batch
  n = max(args.pool, max(args.sizes))
  tx = optax.adam(1e-3)

  ea = EAModel(d, args.feature_dim, k,
               hidden_sizes=(args.ea_hidden,) * args.ea_layers,
               rngs=nnx.Rngs(0))
  pop = models.PopulationL2D(Backbone(d, args.feature_dim, rngs=nnx.Rngs(1)),
                             args.feature_dim, k, encoder_kind="attention",
                             rngs=nnx.Rngs(2))
  ea_def, ea_params = nnx.split(ea, nnx.Param)
  pop_def, pop_params = nnx.split(pop, nnx.Param)

  pool_x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  pool_y = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  # Expert j is right on class j % K, else right with probability 0.5,
  # else a uniform guess (the Tailor et al. simulator, overlap p = 0.5).
  def answers(labels, m):
    own = labels == (np.arange(j)[:, None] % k)
    right = own | (rng.random((j, m)) < 0.5)
    return np.where(right, labels, rng.integers(0, k, (j, m))).astype(
        np.int32)
  pool_answers = jnp.asarray(answers(np.asarray(pool_y), n))
  x = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
  y_np = rng.integers(0, k, b)
  y = jnp.asarray(y_np, jnp.int32)
  query_answers = jnp.asarray(answers(y_np, b))  # [J, B], L2D-Pop only
  pool = (pool_x, pool_y, pool_answers)

  def ea_infer(params, x, ctx, key):
    post = _posterior(ctx, k)
    logits, g_def = nnx.merge(ea_def, params)(
        x, post.mean[:, None], post.var[:, None], key)
    prio = deferral.expert_priorities(logits, g_def.T)
    return deferral.defer_by_priority(prio), jnp.argmax(logits, -1)

  def pop_infer(params, x, ctx):
    model = nnx.merge(pop_def, params)
    out = model(jnp.tile(x, (j, 1)), _rows(ctx, x.shape[0]))  # [J*B, K+1]
    logits = out[:b, :k]  # class logits do not depend on the context
    g_def = out[:, k].reshape(j, -1).T  # [B, J]
    prio = deferral.expert_priorities(logits, g_def)
    return deferral.defer_by_priority(prio), jnp.argmax(logits, -1)

  def ea_step(params, opt_state, key, x, y, pool, size):
    key_ctx, key_tie = jax.random.split(key)
    post = _posterior(_sample(key_ctx, *pool, size, k), k)
    mean = jnp.broadcast_to(post.mean[:, None], (j, b, k))
    var = jnp.broadcast_to(post.var[:, None], (j, b, k))

    def loss_fn(p):
      logits, g_def = nnx.merge(ea_def, p)(x, mean, var, key_tie)
      loss = losses.ea_lce_loss(jnp.broadcast_to(logits, (j, b, k)), g_def,
                                jnp.broadcast_to(y, (j, b)), mean,
                                jnp.sqrt(var), key=key_tie)
      return jnp.mean(loss)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def pop_step(params, opt_state, key, x, y, query_answers, pool, size):
    ctx = _rows(_sample(key, *pool, size, k), b)

    def loss_fn(p):
      out = nnx.merge(pop_def, p)(jnp.tile(x, (j, 1)), ctx)
      loss = losses.population_l2d_loss(out, jnp.tile(y, j),
                                        query_answers.reshape(-1))
      return jnp.mean(loss)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def pop_shared_out(model, x, ctx):
    """``[J, B, K+1]``: expert j's set passed once with a leading axis of 1
    (the shared-context path), vmapped over the J experts."""
    return jax.vmap(lambda c: model(x, jax.tree.map(lambda a: a[None], c)))(
        ctx)

  def pop_shared_infer(params, x, ctx):
    out = pop_shared_out(nnx.merge(pop_def, params), x, ctx)
    logits = out[0, :, :k]
    prio = deferral.expert_priorities(logits, out[:, :, k].T)
    return deferral.defer_by_priority(prio), jnp.argmax(logits, -1)

  def pop_shared_step(params, opt_state, key, x, y, query_answers, pool,
                      size):
    ctx = _sample(key, *pool, size, k)

    def loss_fn(p):
      out = pop_shared_out(nnx.merge(pop_def, p), x, ctx)  # [J, B, K+1]
      loss = losses.population_l2d_loss(out, jnp.broadcast_to(y, (j, b)),
                                        query_answers)
      return jnp.mean(loss)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def pop_paths(params, x, ctx):
    """Deferral logits ``[J, B]`` of both L2D-Pop paths (a check)."""
    model = nnx.merge(pop_def, params)
    rows = model(jnp.tile(x, (j, 1)), _rows(ctx, x.shape[0]))[:, k]
    return rows.reshape(j, -1), pop_shared_out(model, x, ctx)[:, :, k]

  programs = dict(
      ea_infer=jax.jit(ea_infer),
      pop_infer=jax.jit(pop_infer),
      pop_shared_infer=jax.jit(pop_shared_infer),
      ea_step=jax.jit(ea_step, static_argnames="size"),
      pop_step=jax.jit(pop_step, static_argnames="size"),
      pop_shared_step=jax.jit(pop_shared_step, static_argnames="size"),
      pop_paths=jax.jit(pop_paths))
  state = dict(ea=[ea_params, tx.init(ea_params)],
               pop=[pop_params, tx.init(pop_params)],
               pop_shared=[pop_params, tx.init(pop_params)])
  data = dict(x=x, y=y, query_answers=query_answers, pool=pool)
  return programs, state, data, (models.count_params(ea),
                                 models.count_params(pop))


def _time(fn) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn())
  return (time.perf_counter() - t) * 1e3


def _write_plot(path: pathlib.Path, sizes, curves: dict, title: str) -> None:
  """Two panels (inference µs/query, step ms) against n_c; atomic write.

  Solid/dashed lines are medians, thin dotted lines the fastest call (the
  cost with the least interference from other processes).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for ax, (panel, ylabel) in zip(axes, (("query_us", "inference µs per query"),
                                        ("step_ms", "train step ms"))):
    for method, style, color in zip(METHODS, ("-o", "--s", "-.^"),
                                    ("C0", "C1", "C2")):
      ax.plot(sizes, curves[method][panel], style, color=color,
              label=f"{method}, median")
      ax.plot(sizes, curves[method][panel + "_min"], ":", color=color,
              linewidth=1, label=f"{method}, fastest call")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("context size n_c (points per expert)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  try:
    l2d_io.atomic_write(path, lambda f: fig.savefig(f, format="png",
                                                    dpi=120))
  finally:
    plt.close(fig)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--batch", type=_positive, default=64,
                 help="queries B per call (inference and step)")
  p.add_argument("--experts", type=_positive, default=1,
                 help="experts J scored per query (each with its own "
                 "context); per-query costs cover all J")
  p.add_argument("--input-dim", type=_positive, default=64,
                 help="D of the inputs (e.g. a frozen embedding)")
  p.add_argument("--feature-dim", type=_positive, default=64,
                 help="D of φ(x)")
  p.add_argument("--num-classes", type=_positive, default=10,
                 help="classes K")
  p.add_argument("--pool", type=_positive, default=2048,
                 help="pool points per expert to draw contexts from (at "
                 "least the largest size)")
  p.add_argument("--ea-hidden", type=_positive, default=256,
                 help="width of the EA-L2D rejector's hidden layers")
  p.add_argument("--ea-layers", type=_positive, default=5,
                 help="hidden layers of the EA-L2D rejector (paper: 5 + "
                 "the output layer)")
  p.add_argument("--sizes", type=_sizes, default=(15, 60, 150, 600),
                 help="context sizes n_c, comma-separated")
  p.add_argument("--summary-size", type=_positive, default=60,
                 help="n_c of the last line (must be one of --sizes)")
  p.add_argument("--repeats", type=_positive, default=15,
                 help="timed repetitions of each call (after one warm-up)")
  p.add_argument("--block", type=_positive, default=5,
                 help="calls of one program in a row before switching to "
                 "the next (interleaving granularity)")
  p.add_argument("--plot", type=pathlib.Path, default=None,
                 help="write the scaling plot (PNG) here")
  args = p.parse_args(argv)
  if args.summary_size not in args.sizes:
    p.error(f"--summary-size {args.summary_size} is not one of --sizes "
            f"{','.join(map(str, args.sizes))}")
  if args.plot is not None and args.plot.suffix.lower() != ".png":
    p.error(f"--plot must end in .png, got {str(args.plot)!r}")

  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; CPU affinity "
        f"{sorted(os.sched_getaffinity(0))}; load average before "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
  rng = np.random.default_rng(0)
  programs, state, data, (ea_n, pop_n) = build(args, rng)
  b, j, k = args.batch, args.experts, args.num_classes
  print(f"B={b} queries x J={j} experts, K={k}; parameters: EA-L2D {ea_n:,}, "
        f"L2D-Pop {pop_n:,}")

  curves = {method: {"query_us": [], "step_ms": [], "query_us_min": [],
                     "step_ms_min": []}
            for method in METHODS}
  base = jax.random.key(1)
  for size in args.sizes:
    ctx = _sample(jax.random.fold_in(base, size), *data["pool"], size, k)
    ctx = jax.block_until_ready(ctx)
    x, y = data["x"], data["y"]
    tie = jax.random.key(2)
    keys = [jax.random.fold_in(base, 10_000 * size + r)
            for r in range(args.repeats + 1)]

    def ea_infer():
      return programs["ea_infer"](state["ea"][0], x, ctx, tie)

    def pop_infer():
      return programs["pop_infer"](state["pop"][0], x, ctx)

    def ea_step(r):
      params, opt, loss = programs["ea_step"](
          *state["ea"], keys[r], x, y, data["pool"], size=size)
      state["ea"] = [params, opt]
      return loss

    def pop_step(r):
      params, opt, loss = programs["pop_step"](
          *state["pop"], keys[r], x, y, data["query_answers"], data["pool"],
          size=size)
      state["pop"] = [params, opt]
      return loss

    def pop_shared_infer():
      return programs["pop_shared_infer"](state["pop_shared"][0], x, ctx)

    def pop_shared_step(r):
      params, opt, loss = programs["pop_shared_step"](
          *state["pop_shared"], keys[r], x, y, data["query_answers"],
          data["pool"], size=size)
      state["pop_shared"] = [params, opt]
      return loss

    # Warm-up (compilation) and a sanity check of both programs.
    # Both L2D-Pop paths start from the same parameters at every size.
    rows_g, shared_g = programs["pop_paths"](state["pop"][0], x, ctx)
    gap = float(jnp.max(jnp.abs(rows_g - shared_g)))
    if not gap <= 1e-4 * (1.0 + float(jnp.max(jnp.abs(rows_g)))):
      raise SystemExit(f"n_c={size}: L2D-Pop's shared-context path differs "
                       f"from the per-row path by {gap:.3g}")
    state["pop_shared"] = list(state["pop"])
    t0 = time.perf_counter()
    decisions = [jax.block_until_ready(ea_infer()),
                 jax.block_until_ready(pop_infer()),
                 jax.block_until_ready(pop_shared_infer())]
    losses_ = [float(ea_step(0)), float(pop_step(0)),
               float(pop_shared_step(0))]
    compile_s = time.perf_counter() - t0
    for name, (dec, _) in zip(("EA-L2D", "L2D-Pop", "L2D-Pop shared"),
                              decisions):
      if not np.isin(np.asarray(dec), np.arange(j + 1)).all():
        raise SystemExit(f"{name} n_c={size}: decisions outside [0, J]")
    if not np.isfinite(losses_).all():
      raise SystemExit(f"n_c={size}: non-finite loss {losses_}")
    if not abs(losses_[1] - losses_[2]) <= 1e-4 * (1.0 + abs(losses_[1])):
      raise SystemExit(f"n_c={size}: L2D-Pop losses of the two paths differ "
                       f"({losses_[1]} vs {losses_[2]})")
    calls = {"ea_q": lambda r: ea_infer(), "pop_q": lambda r: pop_infer(),
             "pops_q": lambda r: pop_shared_infer(),
             "ea_s": ea_step, "pop_s": pop_step, "pops_s": pop_shared_step}
    times = {name: [] for name in calls}
    r = 0
    while r < args.repeats:
      block = range(r + 1, min(r + args.block, args.repeats) + 1)
      for name, call in calls.items():
        times[name].extend(_time(lambda i=i, c=call: c(i)) for i in block)
      r += len(block)
    med = {name: statistics.median(v) for name, v in times.items()}
    best = {name: min(v) for name, v in times.items()}
    for method, tag in zip(METHODS, ("ea", "pop", "pops")):
      c = curves[method]
      c["query_us"].append(med[f"{tag}_q"] * 1e3 / b)
      c["step_ms"].append(med[f"{tag}_s"])
      c["query_us_min"].append(best[f"{tag}_q"] * 1e3 / b)
      c["step_ms_min"].append(best[f"{tag}_s"])
    ea, pop, pops = (curves[m] for m in METHODS)
    print(f"n_c={size:4d}: inference µs/query EA {ea['query_us'][-1]:9.3f} "
          f"Pop {pop['query_us'][-1]:10.3f} "
          f"(x{pop['query_us'][-1] / ea['query_us'][-1]:.1f}) "
          f"PopShared {pops['query_us'][-1]:9.3f} "
          f"(x{pops['query_us'][-1] / ea['query_us'][-1]:.1f}); "
          f"step ms EA {med['ea_s']:8.3f} Pop {med['pop_s']:9.3f} "
          f"(x{med['pop_s'] / med['ea_s']:.1f}) PopShared "
          f"{med['pops_s']:8.3f} (x{med['pops_s'] / med['ea_s']:.1f}); "
          f"warm-up {compile_s:.1f} s; first losses EA {losses_[0]:.4f} "
          f"Pop {losses_[1]:.4f} PopShared {losses_[2]:.4f}")
    print(f"          fastest call: inference µs/query EA "
          f"{best['ea_q'] * 1e3 / b:9.3f} Pop {best['pop_q'] * 1e3 / b:10.3f} "
          f"PopShared {best['pops_q'] * 1e3 / b:9.3f}; step ms EA "
          f"{best['ea_s']:8.3f} Pop {best['pop_s']:9.3f} PopShared "
          f"{best['pops_s']:8.3f}")

  if args.plot is not None:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    _write_plot(args.plot, args.sizes, curves,
                f"EA-L2D vs L2D-Pop (NP+Attention): B={b}, J={j}, K={k}, "
                f"jit, CPU {sorted(os.sched_getaffinity(0))}, load {load}")
    print(f"plot: {args.plot}")
  print(f"load average after {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
  i = list(args.sizes).index(args.summary_size)
  ea, pop, pops = (curves[m] for m in METHODS)
  print(f"pop_shared_query_us={pops['query_us'][i]:.4f} pop_shared_over_ea="
        f"{pops['query_us'][i] / ea['query_us'][i]:.4f} pop_shared_step_ms="
        f"{pops['step_ms'][i]:.4f}")
  print(f"ea_query_us={ea['query_us'][i]:.4f} pop_query_us="
        f"{pop['query_us'][i]:.4f} pop_over_ea="
        f"{pop['query_us'][i] / ea['query_us'][i]:.4f} ea_step_ms="
        f"{ea['step_ms'][i]:.4f} pop_step_ms={pop['step_ms'][i]:.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
