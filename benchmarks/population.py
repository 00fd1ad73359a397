"""Speed of the L2D-Pop context encoders (issue 8).

Measures, in one run:
  1. the forward cost per query of ``models.ContextEncoder`` with
     ``kind='np'`` (masked mean of the point embeddings) and
     ``kind='attention'`` (self-attention blocks, then cross-attention from
     the query) against the context size C in {10, 25, 50, 100, 200}, at a
     batch of 128 queries each with its own context set: jitted, warm
     (compilation excluded), median over repetitions, divided by the batch;
  2. one forward + backward step of the attention encoder at C = 50, batch
     128 (gradient of ``mean(ψ · target)`` with respect to every parameter),
     jitted, against the same encoder written in PyTorch (CPU,
     ``torch.set_num_threads(1)``) with the same weights, timed interleaved
     (JAX, then each PyTorch formulation, repeat; medians of wall and CPU
     time, and minor page faults per step). PyTorch runs in two
     formulations of the same function: ``torch_fused`` (one query/key/value
     projection for the self-attention and the point MLP's first layer as
     table gathers, as the JAX encoder computes it) and ``torch_layers``
     (the layers one by one); the faster of the two sets the ratio. Before
     timing, each twin's outputs must agree with JAX's within 1e-5 and its
     gradients within 1e-4 (relative) / 1e-5 (absolute). The JAX step's XLA
     scratch size is printed: XLA:CPU allocates it at every call, and above
     glibc's 32 MiB mmap threshold each of its pages is a page fault.

Between the two, the forward cost per query when all B queries share one
context set of C = 50 points (``features [1, C, D]``: embedded and
self-attended once, only the cross-attention per query), checked equal to the
per-query path with the set repeated B times (JAX only; not in the ratio).

The PyTorch twin copies the architecture exactly: padding zeroed, point
embedding ``MLP([φ(x_c), Emb_y(y_c), Emb_m(m_c)])`` (two layers, ReLU),
post-LayerNorm self-attention blocks (eps 1e-6, as Flax), then cross-attention
with query φ(x), keys φ(x_c) and values the self-attended point embeddings;
masked keys get zero weight (``F.scaled_dot_product_attention`` with a boolean
mask) and a query whose context is empty gets the learned ``no_context``
vector. Each query has 1..C valid context points (the rest padding).

JAX runs with its default CPU threading; PyTorch with one thread (pin the
process to one core, e.g. ``taskset -c 0``, for a like-for-like comparison).
The machine may be shared: the load average is printed. Without PyTorch
(``pip install torch==2.13.0``, the bench extra ``pip install -e
'.[bench]'``) the script says so and still times the JAX side
(``attn_ratio_vs_torch=nan``).

The last line reads ``np_query_us=<f> attn_query_us=<f>
attn_ratio_vs_torch=<f> attn_c200_over_c50=<f>``: the forward cost per query
(µs) of each encoder at C = 50, the wall step-time ratio ``torch ms / jax ms``
(> 1: JAX faster; the line before it also gives the CPU-time ratio, steadier
on a shared machine) and the attention encoder's per-query cost at C = 200
over C = 50.

Usage: python benchmarks/population.py [--batch 128] [--feature-dim 64]
  [--sizes 10,25,50,100,200] [--repeats 30] [--plot scaling.png]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2d_jax import io as l2d_io  # noqa: E402
from l2d_jax import experts  # noqa: E402
from l2d_jax import models  # noqa: E402

STEP_CONTEXT = 50


def _sizes(text: str) -> tuple[int, ...]:
  sizes = tuple(int(s) for s in text.split(",") if s.strip())
  if not sizes or min(sizes) < 1:
    raise argparse.ArgumentTypeError("sizes must be positive integers")
  return sizes


def make_batch(rng: np.random.Generator, batch: int, size: int,
               feature_dim: int, num_classes: int):
  """Queries ``[B, D]`` and a context of ``size`` slots, 1..size valid each."""
  query = rng.normal(size=(batch, feature_dim)).astype(np.float32)
  features = rng.normal(size=(batch, size, feature_dim)).astype(np.float32)
  labels = rng.integers(0, num_classes, (batch, size)).astype(np.int32)
  answers = rng.integers(0, num_classes, (batch, size)).astype(np.int32)
  valid = rng.integers(1, size + 1, (batch,))
  mask = np.arange(size)[None, :] < valid[:, None]
  # Padding holds junk the encoder must ignore.
  features[~mask] = 1e3
  labels[~mask] = -1
  answers[~mask] = -1
  return query, (features, labels, answers, mask)


def _context(arrays) -> experts.Context:
  return experts.Context(*(jnp.asarray(a) for a in arrays))


def _time(fn) -> float:
  t = time.perf_counter()
  fn()
  return (time.perf_counter() - t) * 1e3


def _write_plot(path: pathlib.Path, sizes, per_query: dict) -> None:
  """Per-query forward cost against C, one line per encoder; atomic write."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, values in per_query.items():
    ax.plot(sizes, values, marker="o", label=name,
            linestyle="--" if "PyTorch" in name else "-")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xticks(sizes, [str(s) for s in sizes])
  ax.set_xlabel("context size C")
  ax.set_ylabel("forward µs per query")
  ax.set_title("L2D-Pop context encoders (jit, CPU)")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  try:
    l2d_io.atomic_write(path, lambda f: fig.savefig(f, format="png",
                                                    dpi=120))
  finally:
    plt.close(fig)


# ---------------------------------------------------------------------------
# The PyTorch twin.


def torch_twin(encoder: models.ContextEncoder, *, fused: bool = True):
  """A PyTorch module computing ``encoder``'s function with its weights.

  With ``fused`` (default) it is written like the JAX encoder: one
  ``[E, 3E]`` GEMM for the self-attention's query/key/value (as
  ``nn.MultiheadAttention``'s ``in_proj``) and the point MLP's first layer
  as ``x W_x + (Emb_y W_y)[y] + (Emb_m W_m)[m]``; without, the layers are
  applied one by one (three projections, a concatenation). Same function
  and gradients either way.
  """
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  from torch.nn import functional as F  # pylint: disable=import-outside-toplevel

  def tensor(param):
    return torch.from_numpy(np.array(param[...], dtype=np.float32))

  def linear(layer):
    kernel = np.asarray(layer.kernel[...])
    out = nn.Linear(kernel.shape[0], kernel.shape[1])
    with torch.no_grad():
      out.weight.copy_(torch.from_numpy(np.array(kernel.T)))
      out.bias.copy_(tensor(layer.bias))
    return out

  def embed(layer):
    return nn.Embedding.from_pretrained(tensor(layer.embedding),
                                        freeze=False)

  def layer_norm(layer):
    out = nn.LayerNorm(layer.scale[...].shape[0], eps=layer.epsilon)
    with torch.no_grad():
      out.weight.copy_(tensor(layer.scale))
      out.bias.copy_(tensor(layer.bias))
    return out

  class Attention(nn.Module):
    """Masked multi-head attention (zero output where no key is valid)."""

    def __init__(self, source):
      super().__init__()
      self.heads = source.num_heads
      self.query, self.key = linear(source.query), linear(source.key)
      self.value, self.out = linear(source.value), linear(source.out)

    def _split(self, x):  # [B, T, E] -> [B, H, T, E / H]
      return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, q, k, v, mask, any_valid):
      # A row without a valid key attends to every key (finite, no NaN);
      # the caller replaces its output, as the JAX encoder does.
      attend = (mask | ~any_valid[:, None])[:, None, None, :]
      if fused and q is k and k is v:  # Self-attention: one projection.
        layers = (self.query, self.key, self.value)
        q, k, v = F.linear(q, torch.cat([m.weight for m in layers]),
                           torch.cat([m.bias for m in layers])).chunk(3, -1)
      else:
        q, k, v = self.query(q), self.key(k), self.value(v)
      out = F.scaled_dot_product_attention(
          self._split(q), self._split(k), self._split(v), attn_mask=attend)
      out = out.transpose(1, 2).flatten(-2)
      return self.out(torch.where(any_valid[:, None, None], out, 0.0))

  class Block(nn.Module):
    """Post-LayerNorm residual block: attention then a two-layer MLP."""

    def __init__(self, source):
      super().__init__()
      self.attention = Attention(source.attention)
      self.norm1, self.norm2 = layer_norm(source.norm1), layer_norm(
          source.norm2)
      self.mlp1, self.mlp2 = linear(source.mlp1), linear(source.mlp2)

    def forward(self, h, mask, any_valid):
      h = self.norm1(h + self.attention(h, h, h, mask, any_valid))
      return self.norm2(h + self.mlp2(F.relu(self.mlp1(h))))

  class Encoder(nn.Module):
    """``models.ContextEncoder`` in PyTorch."""

    def __init__(self):
      super().__init__()
      self.kind = encoder.kind
      self.num_classes = encoder.num_classes
      self.label_embed = embed(encoder.label_embed)
      self.answer_embed = embed(encoder.answer_embed)
      self.point1, self.point2 = linear(encoder.point1), linear(
          encoder.point2)
      self.no_context = nn.Parameter(tensor(encoder.no_context))
      self.blocks = nn.ModuleList([Block(b) for b in encoder.blocks])
      self.cross = (Attention(encoder.cross) if encoder.kind == "attention"
                    else None)

    def forward(self, query, features, labels, answers, mask):
      k = self.num_classes
      mask = mask & (labels >= 0) & (labels < k) & (answers >= 0) & (
          answers < k)
      features = torch.where(mask[..., None], features, 0.0)
      labels = torch.where(mask, labels, 0)
      answers = torch.where(mask, answers, 0)
      if fused:
        d, width = features.shape[-1], self.label_embed.weight.shape[1]
        weight = self.point1.weight  # [hidden, D + 2L]
        label_table = self.label_embed.weight @ weight[:, d:d + width].T
        answer_table = self.answer_embed.weight @ weight[:, d + width:].T
        pre = (F.linear(features, weight[:, :d], self.point1.bias)
               + label_table[labels] + answer_table[answers])
      else:
        pre = self.point1(torch.cat([features, self.label_embed(labels),
                                     self.answer_embed(answers)], -1))
      h = self.point2(F.relu(pre))
      any_valid = mask.any(-1)
      if self.kind == "np":
        count = mask.sum(-1, keepdim=True).clamp(min=1).to(h.dtype)
        psi = torch.where(mask[..., None], h, 0.0).sum(-2) / count
      else:
        for block in self.blocks:
          h = block(h, mask, any_valid)
        psi = self.cross(query[:, None, :], features, h, mask,
                         any_valid)[:, 0]
      return torch.where(any_valid[:, None], psi, self.no_context)

  return Encoder()


def torch_param_grads(twin, encoder: models.ContextEncoder) -> dict:
  """The twin's gradients keyed like ``nnx.state(encoder, nnx.Param)``."""
  grads = {}

  def put(path, param, transpose=False):
    g = param.grad.numpy()
    grads[path] = g.T if transpose else g

  def linear(path, layer):
    put(path + ("kernel",), layer.weight, transpose=True)
    put(path + ("bias",), layer.bias)

  def norm(path, layer):
    put(path + ("scale",), layer.weight)
    put(path + ("bias",), layer.bias)

  def attention(path, att):
    for name in ("query", "key", "value", "out"):
      linear(path + (name,), getattr(att, name))

  put(("label_embed", "embedding"), twin.label_embed.weight)
  put(("answer_embed", "embedding"), twin.answer_embed.weight)
  linear(("point1",), twin.point1)
  linear(("point2",), twin.point2)
  put(("no_context",), twin.no_context)
  for i, block in enumerate(twin.blocks):
    attention(("blocks", i, "attention"), block.attention)
    norm(("blocks", i, "norm1"), block.norm1)
    norm(("blocks", i, "norm2"), block.norm2)
    linear(("blocks", i, "mlp1"), block.mlp1)
    linear(("blocks", i, "mlp2"), block.mlp2)
  if twin.cross is not None:
    attention(("cross",), twin.cross)
  return grads


# ---------------------------------------------------------------------------


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--batch", type=int, default=128, help="queries per call")
  p.add_argument("--feature-dim", type=int, default=64, help="D of φ(x)")
  p.add_argument("--num-classes", type=int, default=10, help="classes K")
  p.add_argument("--embed-dim", type=int, default=64, help="E of ψ")
  p.add_argument("--num-heads", type=int, default=4, help="attention heads")
  p.add_argument("--num-layers", type=int, default=1,
                 help="self-attention blocks")
  p.add_argument("--sizes", type=_sizes, default=(10, 25, 50, 100, 200),
                 help="context sizes C, comma-separated (must include 50 "
                 "and 200 for the summary)")
  p.add_argument("--repeats", type=int, default=30,
                 help="timed repetitions of each (after one warm-up)")
  p.add_argument("--plot", type=pathlib.Path, default=None,
                 help="write the per-query cost against C as a PNG here")
  p.add_argument("--xla-flags", default="",
                 help="appended to XLA_FLAGS before JAX starts, e.g. "
                 "'--xla_cpu_use_xnnpack=false'")
  args = p.parse_args(argv)
  if args.xla_flags:
    # Read when the backend starts (first device use), not at import.
    os.environ["XLA_FLAGS"] = " ".join(
        f for f in (os.environ.get("XLA_FLAGS", ""), args.xla_flags) if f)
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(1)
  except ImportError:
    torch = None
    print("PyTorch is not installed: pip install torch==2.13.0 (the bench "
          "extra: pip install -e '.[bench]'); timing the JAX side only.")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch "
        f"{torch.__version__ if torch else 'absent'} (1 thread); CPU affinity "
        f"{sorted(os.sched_getaffinity(0))}; XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}; load average "
        f"{os.getloadavg()}")

  b, d, k = args.batch, args.feature_dim, args.num_classes
  options = dict(embed_dim=args.embed_dim, num_heads=args.num_heads,
                 num_layers=args.num_layers)
  rng = np.random.default_rng(0)
  encoders = {kind: models.ContextEncoder(d, k, kind=kind, rngs=nnx.Rngs(i),
                                          **options)
              for i, kind in enumerate(("np", "attention"))}
  # Give no_context a value so that the twin's copy of it is checked.
  for enc in encoders.values():
    enc.no_context[...] = jnp.linspace(-1.0, 1.0, args.embed_dim)

  # 1. Forward cost per query against C (PyTorch twin interleaved).
  per_query = {kind: [] for kind in encoders}
  torch_query = {kind: [] for kind in encoders}
  for kind, enc in encoders.items():
    graphdef, state = nnx.split(enc)
    forward = jax.jit(lambda s, q, c, g=graphdef: nnx.merge(g, s)(q, c))
    twin = torch_twin(enc) if torch is not None else None
    for size in args.sizes:
      query, arrays = make_batch(rng, b, size, d, k)
      q, ctx = jnp.asarray(query), _context(arrays)
      psi = jax.block_until_ready(forward(state, q, ctx))
      jax_ms, twin_ms = [], []
      if twin is not None:
        t_in = [torch.from_numpy(query)] + [torch.from_numpy(np.asarray(a))
                                            for a in arrays]
        with torch.no_grad():
          err = float(np.max(np.abs(twin(*t_in).numpy() - np.asarray(psi))))
        if err > 1e-5:
          raise SystemExit(f"{kind} C={size}: the PyTorch twin differs from "
                           f"the JAX encoder by {err:.2e} > 1e-5")
      for _ in range(args.repeats):
        jax_ms.append(_time(
            lambda: jax.block_until_ready(forward(state, q, ctx))))
        if twin is not None:
          with torch.no_grad():
            twin_ms.append(_time(lambda: twin(*t_in)))
      ms = statistics.median(jax_ms)
      t_ms = statistics.median(twin_ms) if twin_ms else float("nan")
      per_query[kind].append(ms * 1e3 / b)
      torch_query[kind].append(t_ms * 1e3 / b)
      print(f"{kind:9s} C={size:4d}: jax {ms:8.3f} ms per batch of {b} = "
            f"{ms * 1e3 / b:8.3f} µs per query; torch {t_ms * 1e3 / b:8.3f} "
            "µs per query")

  # 1b. One context set shared by every query (the encoder's shared path:
  # embedded and self-attended once, cross-attention per query), against
  # the same set repeated per query. JAX only (no twin: not in the ratio).
  for kind, enc in encoders.items():
    graphdef, state = nnx.split(enc)
    forward = jax.jit(lambda s, q, c, g=graphdef: nnx.merge(g, s)(q, c))
    _, arrays = make_batch(rng, 1, STEP_CONTEXT, d, k)
    q = jnp.asarray(rng.normal(size=(b, d)).astype(np.float32))
    one, repeated = _context(arrays), experts.Context(
        *(jnp.repeat(jnp.asarray(a), b, axis=0) for a in arrays))
    got = jax.block_until_ready(forward(state, q, one))
    want = jax.block_until_ready(forward(state, q, repeated))
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    if err > 1e-5:
      raise SystemExit(f"{kind}: the shared-context path differs from the "
                       f"per-query path by {err:.2e} > 1e-5")
    times = {}
    for name, ctx in (("shared", one), ("repeated", repeated)):
      times[name] = statistics.median(
          _time(lambda c=ctx: jax.block_until_ready(forward(state, q, c)))
          for _ in range(args.repeats)) * 1e3 / b
    print(f"{kind:9s} C={STEP_CONTEXT:4d}, one context shared by {b} "
          f"queries: jax {times['shared']:8.3f} µs per query (the set "
          f"repeated per query: {times['repeated']:8.3f})")

  # 2. Forward + backward of the attention encoder, JAX against PyTorch.
  enc = encoders["attention"]
  graphdef, params, rest = nnx.split(enc, nnx.Param, ...)
  query, arrays = make_batch(rng, b, STEP_CONTEXT, d, k)
  target = rng.normal(size=(b, args.embed_dim)).astype(np.float32)
  q, ctx, tgt = jnp.asarray(query), _context(arrays), jnp.asarray(target)

  def loss_fn(p_, q_, c_, t_):
    psi = nnx.merge(graphdef, p_, rest)(q_, c_)
    return jnp.mean(psi * t_), psi

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  compiled = step.lower(params, q, ctx, tgt).compile()
  (loss, psi), grads = jax.block_until_ready(step(params, q, ctx, tgt))
  steps = {"jax": lambda: jax.block_until_ready(step(params, q, ctx, tgt))}
  if torch is not None:
    t_in = [torch.from_numpy(query)] + [torch.from_numpy(np.asarray(a))
                                        for a in arrays]
    t_tgt = torch.from_numpy(target)
    flat = dict(nnx.to_flat_state(grads))
    # Both PyTorch formulations (fused projections and table gathers like
    # the JAX encoder, or the layers one by one); the faster sets the ratio.
    for fused in (True, False):
      twin = torch_twin(enc, fused=fused)

      def torch_step(twin=twin):
        twin.zero_grad(set_to_none=True)
        out = twin(*t_in)
        value = (out * t_tgt).mean()
        value.backward()
        return value.detach(), out.detach()

      name = "torch_fused" if fused else "torch_layers"
      t_loss, t_psi = torch_step()
      out_err = float(np.max(np.abs(t_psi.numpy() - np.asarray(psi))))
      print(f"twin check ({name}): max |ψ_torch - ψ_jax| = {out_err:.2e}, "
            f"loss {float(loss):.6f} vs {float(t_loss):.6f}")
      if out_err > 1e-5:
        raise SystemExit(f"the PyTorch twin differs from the JAX encoder by "
                         f"{out_err:.2e} > 1e-5")
      t_grads = torch_param_grads(twin, enc)
      if set(flat) != set(t_grads):
        raise SystemExit(f"parameter sets differ: "
                         f"{sorted(set(flat) ^ set(t_grads))}")
      worst = 0.0
      for path, g in flat.items():
        np.testing.assert_allclose(t_grads[path], np.asarray(g[...]),
                                   rtol=1e-4, atol=1e-5, err_msg=str(path))
        worst = max(worst, float(np.max(np.abs(t_grads[path]
                                               - np.asarray(g[...])))))
      print(f"twin check ({name}): {len(flat)} gradient arrays agree (max "
            f"abs diff {worst:.2e})")
      steps[name] = torch_step
  # Interleaved: each repetition times every step once (wall and CPU).
  wall = {name: [] for name in steps}
  cpu = {name: [] for name in steps}
  faults = {name: 0 for name in steps}
  repeats = max(args.repeats, 30)
  for _ in range(repeats):
    for name, fn in steps.items():
      f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      c0, t0 = time.process_time(), time.perf_counter()
      fn()
      wall[name].append((time.perf_counter() - t0) * 1e3)
      cpu[name].append((time.process_time() - c0) * 1e3)
      faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
  for name in steps:
    print(f"attention fwd+bwd step, C={STEP_CONTEXT}, batch {b}, {name:12s}: "
          f"wall {statistics.median(wall[name]):8.3f} ms, CPU "
          f"{statistics.median(cpu[name]):8.3f} ms, "
          f"{faults[name] / repeats:7.0f} minor page faults per step")
  scratch = compiled.memory_analysis()
  if scratch is not None:
    print(f"jax step scratch (XLA temp buffer): "
          f"{scratch.temp_size_in_bytes / 2**20:.1f} MiB")
  step_ms = statistics.median(wall["jax"])
  torch_names = [n for n in steps if n != "jax"]
  torch_step_ms = (min(statistics.median(wall[n]) for n in torch_names)
                   if torch_names else float("nan"))
  torch_cpu = (min(statistics.median(cpu[n]) for n in torch_names)
               if torch_names else float("nan"))
  print(f"attention fwd+bwd step: jax {step_ms:.3f} ms wall "
        f"({statistics.median(cpu['jax']):.3f} CPU), torch (faster "
        f"formulation) {torch_step_ms:.3f} ms wall ({torch_cpu:.3f} CPU); "
        f"CPU-time ratio {torch_cpu / statistics.median(cpu['jax']):.4f}")

  if args.plot is not None:
    curves = {f"{kind} (JAX)": v for kind, v in per_query.items()}
    if torch is not None:
      curves.update({f"{kind} (PyTorch, 1 thread)": v
                     for kind, v in torch_query.items()})
    _write_plot(args.plot, args.sizes, curves)
    print(f"plot: {args.plot}")
  sizes = list(args.sizes)

  def at(kind, size):
    return per_query[kind][sizes.index(size)] if size in sizes else float(
        "nan")

  print(f"load average after: {os.getloadavg()}")
  print(f"np_query_us={at('np', 50):.4f} attn_query_us="
        f"{at('attention', 50):.4f} attn_ratio_vs_torch="
        f"{torch_step_ms / step_ms:.4f} attn_c200_over_c50="
        f"{at('attention', 200) / at('attention', 50):.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
