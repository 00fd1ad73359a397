"""Speed of Top-k(x) inference and of the Top-k surrogate step (issue 10).

Measures, in one run, interleaved (JAX, then the reference, repeat; medians);
the surrogate step runs first (after the 1M-query arrays it ran 3-4x slower)
and is interleaved in blocks (``--block`` JAX steps, then as many PyTorch
steps, repeated): alternating single sub-millisecond calls slowed both sides,
each framework's threads still running after its call when the other's call
starts (on one pinned core at load ~17: a JAX step right after a PyTorch step
4-6 ms, right after a JAX step 0.25 ms; a PyTorch step 0.76 ms alternating,
0.28 ms in blocks; a training loop runs one framework's steps back to back).
The two parts:
  1. rejector-set + selector inference for 1,000,000 queries x 16 agents:
     ``deferral.top_kx_agents`` (the rejector's ranking of all agents, the
     selector's k(x) = 1 + argmax, agents after position k(x) set to -1),
     jitted, against the same computation in numpy (stable argsort of the
     negated scores: ties to the lower index, as the library) on the same
     inputs; outputs checked equal;
  2. one forward + backward step of the Top-k surrogate
     ``losses.topk_deferral_surrogate`` (ν = 1, mean over the batch, gradient
     with respect to the rejector scores) at batch 4096 x 16 agents, jitted,
     against PyTorch (CPU, ``torch.set_num_threads(1)``) computing
     Σ_j τ_j·(−log_softmax(r)_j) with autograd on the same inputs; values and
     gradients checked close.

JAX runs with its default CPU threading; PyTorch with one thread. Times are
wall-clock medians after a warm-up (compilation excluded). The machine may be
shared: the load average is printed. Without PyTorch (``pip install
'l2d_jax[bench]'`` or ``pip install torch==2.13.0``) the script says so and
still times the rest (``torch_step_ms=nan``).

The last line reads ``topk_infer_ms=<f> numpy_infer_ms=<f>
surrogate_step_ms=<f> torch_step_ms=<f> ratio_vs_torch=<f>`` with
``ratio_vs_torch = torch_step_ms / surrogate_step_ms`` (> 1: JAX faster).

Usage: python benchmarks/topk.py [--queries 1000000] [--agents 16]
  [--batch 4096] [--repeats 7] [--block 10]
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

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2d_jax import deferral  # noqa: E402
from l2d_jax import losses  # noqa: E402


def numpy_top_kx(rejector_scores: np.ndarray, selector_scores: np.ndarray):
  """numpy reference of ``deferral.top_kx_agents``."""
  ranked = np.argsort(-rejector_scores, axis=-1, kind="stable")
  k = np.argmax(selector_scores, axis=-1) + 1
  keep = np.arange(rejector_scores.shape[-1]) < k[:, None]
  return np.where(keep, ranked, -1).astype(np.int32), k.astype(np.int32)


def _time(fn) -> float:
  t = time.perf_counter()
  fn()
  return (time.perf_counter() - t) * 1e3


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--queries", type=int, default=1_000_000,
                 help="queries for the inference benchmark")
  p.add_argument("--agents", type=int, default=16, help="agents A")
  p.add_argument("--batch", type=int, default=4096,
                 help="batch of the surrogate step")
  p.add_argument("--repeats", type=int, default=7,
                 help="timed repetitions of each (after one warm-up)")
  p.add_argument("--block", type=int, default=10,
                 help="surrogate steps per framework per interleaved block "
                 "(10 blocks at least)")
  args = p.parse_args(argv)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(1)
  except ImportError:
    torch = None
    print("PyTorch is not installed: pip install torch==2.13.0 (the bench "
          "extra: pip install -e '.[bench]'); timing the rest.")

  rng = np.random.default_rng(0)
  n, a, b = args.queries, args.agents, args.batch
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"torch {torch.__version__ if torch else 'absent'} (1 thread); "
        f"load average {os.getloadavg()}")

  # 1. Surrogate forward + backward (first: the 1M-query arrays of the
  # inference part slowed the small step 3-4x when they came before it).
  scores = rng.normal(size=(b, a)).astype(np.float32)
  costs = (rng.random(size=(b, a)) + np.linspace(0, 0.25, a)).astype(
      np.float32)
  s_d, c_d = jnp.asarray(scores), jnp.asarray(costs)
  step = jax.jit(jax.value_and_grad(
      lambda s, c: jnp.mean(losses.topk_deferral_surrogate(s, c, nu=1.0))))
  value, grad = jax.block_until_ready(step(s_d, c_d))

  if torch is not None:
    s_t, c_t = torch.from_numpy(scores), torch.from_numpy(costs)

    def torch_step():
      s = s_t.clone().requires_grad_(True)
      tau = c_t.sum(-1, keepdim=True) - c_t
      loss = (tau * -torch.log_softmax(s, dim=-1)).sum(-1).mean()
      loss.backward()
      return loss.detach(), s.grad

    tv, tg = torch_step()
    np.testing.assert_allclose(float(value), float(tv), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), tg.numpy(), rtol=1e-4,
                               atol=1e-7)
  jax_step_ms, torch_ms = [], []
  for _ in range(max(args.repeats, 10)):
    for _ in range(args.block):
      jax_step_ms.append(_time(lambda: jax.block_until_ready(step(s_d, c_d))))
    for _ in range(args.block if torch is not None else 0):
      torch_ms.append(_time(torch_step))
  step_ms = statistics.median(jax_step_ms)
  torch_step_ms = statistics.median(torch_ms) if torch_ms else float("nan")
  ratio = torch_step_ms / step_ms
  print(f"surrogate step {b} x {a}: jax {step_ms:.3f} ms, torch "
        f"{torch_step_ms:.3f} ms ({len(jax_step_ms)} steps each, in blocks "
        f"of {args.block})")

  # 2. Inference.
  rej = rng.normal(size=(n, a)).astype(np.float32)
  sel = rng.normal(size=(n, a)).astype(np.float32)
  rej_d, sel_d = jnp.asarray(rej), jnp.asarray(sel)
  infer = jax.jit(deferral.top_kx_agents)
  got = jax.block_until_ready(infer(rej_d, sel_d))
  want = numpy_top_kx(rej, sel)
  np.testing.assert_array_equal(np.asarray(got[0]), want[0])
  np.testing.assert_array_equal(np.asarray(got[1]), want[1])
  jax_ms, np_ms = [], []
  for _ in range(args.repeats):
    jax_ms.append(_time(lambda: jax.block_until_ready(infer(rej_d, sel_d))))
    np_ms.append(_time(lambda: numpy_top_kx(rej, sel)))
  infer_ms, numpy_ms = statistics.median(jax_ms), statistics.median(np_ms)
  print(f"inference {n:,} x {a}: jax {infer_ms:.2f} ms, numpy {numpy_ms:.2f} "
        f"ms ({numpy_ms / infer_ms:.2f}x)")

  print(f"load average after: {os.getloadavg()}")
  print(f"topk_infer_ms={infer_ms:.3f} numpy_infer_ms={numpy_ms:.3f} "
        f"surrogate_step_ms={step_ms:.4f} torch_step_ms={torch_step_ms:.4f} "
        f"ratio_vs_torch={ratio:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
