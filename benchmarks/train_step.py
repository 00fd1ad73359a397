"""Train-step speed of l2d_jax on CPU against the same model and loss in PyTorch.

Times, interleaved (A B A B ...) in one process, the jitted train step (forward,
multi-expert softmax surrogate, gradient, SGD-momentum update) of

* the SmallCNN (LeNet-5: conv5x5-6, pool, conv5x5-16, pool, fc120, fc84,
  fc K+J) on ``[128, 32, 32, 3]`` images with K=10 classes and J=4 experts, in
  several formulations of the same network (``--cnn-variants``) and XLA
  compile options, and
* an MLP 64 -> 256 -> 256 -> K+J on ``[128, 64]`` features,

each against a PyTorch twin holding the same weights (``_torch_models.py``);
the CNN in PyTorch runs both NCHW-contiguous and ``channels_last``, and
``torch_step_ms`` is the faster of the two.
Every JAX step is built like ``l2d_jax.training.Trainer``'s: ``jax.jit`` over
``nnx.split``/``nnx.merge`` of (model, ``nnx.Optimizer``), replicated state,
batch sharded over a ``('data',)`` mesh, donated state. Before timing, a
correctness check runs two steps of every contestant from identical weights
and batch (losses must agree within 1e-4; parameter differences are printed)
and two ``Trainer.fit`` steps of the library SmallCNN (the library's own
compiled step must give the same losses).

It also measures data-parallel throughput on 1 vs 4 forced CPU devices
(alternating subprocesses with ``--xla_force_host_platform_device_count`` 1
and 4, since the device count is fixed when JAX starts; same global batch,
batch transfer included) and the images/s of the CIFAR-10 input
pipeline (``iterate_batches`` with crop/flip augmentation), on the JPEGs of
``--data-dir`` when present, else on synthetic uint8 images.

CNN variants (all compute the same function; only the formulation differs;
defined in ``_cnn_variants.py``):
  library     l2d_jax.models.SmallCNN as is. Its blocks run space-to-depth:
              each 5x5 VALID conv + 2x2 max-pool becomes a 3x3 conv on 2x2
              pixel blocks (4x the channels) whose 4 output groups are the 4
              positions of each pool window; the pool is then a max over
              channel groups (this was the ``s2d`` variant before it moved
              into the library).
  plain       nnx.Conv + nnx.max_pool, the library's formulation before.
  slice_pool  same convs; 2x2 max-pool as the max of four strided slices
              (no reduce_window/select_and_scatter), pool before ReLU.
  nchw        convs in NCHW dimension numbers, slice pool.
  cnhw        convs in CNHW dimension numbers (batch next to spatial), slice pool.
  im2col      convs as patches (25 concatenated slices) @ kernel matrix.
Each variant is compiled with XLA's default CPU options and with ``+no_ynn_conv``:
``compiler_options={"xla_cpu_experimental_ynn_fusion_type":
"LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}``, i.e. XLA's
default YNNPACK fusion list minus individual convolutions (YNNPACK's
convolutions are slow for these small-channel weight gradients; Eigen's are
several times faster).

The last line is machine-readable:
  jax_step_ms=... torch_step_ms=... ratio_vs_torch=... mlp_ratio_vs_torch=...
  dp4_speedup=... pipeline_img_per_s=...
(ratios are PyTorch ms / JAX ms: above 1 means JAX is faster). ``jax_step_ms``
is the ``--headline`` CNN variant.

By default the step comparison is pinned to one core with one thread per
framework (``--threads 1``): on a small shared machine PyTorch's OpenMP
threads stall whenever another process holds a core, which says more about
the neighbours than about either framework. ``--threads 0`` runs unpinned with
each framework's default threading.

Usage:
  .venv/bin/python benchmarks/train_step.py                      # defaults
  .venv/bin/python benchmarks/train_step.py --threads 0 --repeats 60
  .venv/bin/python benchmarks/train_step.py --cnn-variants all   # every option

Needs PyTorch in the environment (not an l2d_jax dependency):
  .venv/bin/pip install torch
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import flax
import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks._cnn_variants import CNN_CLASSES  # noqa: E402
from l2d_jax import data as l2d_data  # noqa: E402
from l2d_jax.losses import multi_expert_softmax_loss  # noqa: E402
from l2d_jax.models import MLP, SmallCNN  # noqa: E402
from l2d_jax.training import Trainer, data_mesh, shard_batch  # noqa: E402

# PyTorch (`benchmarks._torch_models`) is imported in main() only, with a clear message
# when missing. `--threads` pins the process before the XLA backend starts
# (first device use), which is when XLA sizes its thread pool.

NUM_CLASSES = 10
LEARNING_RATE = 0.01
MOMENTUM = 0.9
LOSS_TOL = 1e-4
ARCHS = tuple(CNN_CLASSES)
# XLA's default YNNPACK fusion list on CPU (jaxlib 0.10) is INDIVIDUAL_DOT,
# INDIVIDUAL_CONVOLUTION and REDUCE; this drops the convolutions only.
NO_YNN_CONV = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
ORIGINAL_CPUS = frozenset(os.sched_getaffinity(0))
DEFAULT_VARIANTS = "library,library+no_ynn_conv,plain,plain+no_ynn_conv"
HEADLINE = "library+no_ynn_conv"  # what Trainer compiles on CPU by default


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------


def _loss_fn(model, batch):
  logits = model(batch["inputs"])
  loss = multi_expert_softmax_loss(logits, batch["label"], batch["experts"])
  return loss.mean(), {}


def make_jax_step(model, mesh, compiler_options=None):
  """The Trainer's train step, same construction.

  Returns:
    ``(jitted_step, graphdef, state, batch_sharding)``; the step maps
    ``(state, batch) -> (state, loss)`` and donates ``state``.
  """
  optimizer = nnx.Optimizer(model, optax.sgd(LEARNING_RATE, momentum=MOMENTUM),
                            wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P("data"))
  state = jax.device_put(state, replicated, may_alias=False)

  def step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    (loss, _), grads = nnx.value_and_grad(
        lambda m: _loss_fn(m, batch), has_aux=True)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss

  jitted = jax.jit(step, in_shardings=(replicated, sharded),
                   out_shardings=(replicated, replicated), donate_argnums=0,
                   compiler_options=compiler_options)
  return jitted, graphdef, state, sharded


def _make_batches(batch_size: int, num_experts: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
  # Experts right 60 % of the time, else a random class.
  right = rng.random((batch_size, num_experts)) < 0.6
  experts = np.where(right, labels[:, None], rng.integers(
      0, NUM_CLASSES, (batch_size, num_experts))).astype(np.int32)
  cnn = {"inputs": rng.standard_normal((batch_size, 32, 32, 3)).astype(np.float32),
         "label": labels, "experts": experts}
  mlp = {"inputs": rng.standard_normal((batch_size, 64)).astype(np.float32),
         "label": labels, "experts": experts}
  return cnn, mlp


class JaxContestant:
  """A compiled JAX step with its (donated) state and device batch."""

  def __init__(self, name, model, host_batch, mesh, compiler_options=None):
    """Builds and compiles the step for ``model`` on ``host_batch``."""
    self.name = name
    self.step, self.graphdef, self.state, sharding = make_jax_step(
        model, mesh, compiler_options)
    self.batch = jax.device_put(dict(host_batch), sharding)
    t0 = time.perf_counter()
    self.compiled = self.step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0

  def run(self) -> float:
    """One step; returns the loss (blocks until the step is done)."""
    self.state, loss = self.compiled(self.state, self.batch)
    return float(loss)

  def params(self, loader):
    """Current parameters in PyTorch naming and layout."""
    from benchmarks._torch_models import state_arrays  # noqa: PLC0415
    model, _ = nnx.merge(self.graphdef, self.state)
    return state_arrays(loader(model))


class TorchContestant:
  """A PyTorch train step on a fixed batch."""

  def __init__(self, name, net, host_batch, nchw, channels_last=False):
    """Wraps ``net`` with SGD momentum; the batch is converted once."""
    import torch  # noqa: PLC0415
    from benchmarks._torch_models import make_train_step  # noqa: PLC0415
    from benchmarks._torch_models import to_torch_batch  # noqa: PLC0415
    self.name = name
    if channels_last:
      net = net.to(memory_format=torch.channels_last)
    self.net = net
    self.step = make_train_step(net, learning_rate=LEARNING_RATE,
                                momentum=MOMENTUM)
    self.batch = to_torch_batch(host_batch, nchw=nchw, channels_last=channels_last)
    self.compile_s = 0.0

  def run(self) -> float:
    """One step; returns the loss."""
    return float(self.step(self.batch))

  def params(self, loader):
    """Current parameters as numpy arrays."""
    from benchmarks._torch_models import state_arrays  # noqa: PLC0415
    del loader
    return state_arrays(self.net)


def _check(contestants, reference, loader, label) -> tuple[bool, list[float]]:
  """Two steps of each contestant: losses (and params) against ``reference``."""
  ref = [reference.run(), reference.run()]
  ok = True
  print(f"\ncorrectness ({label}): PyTorch losses step1={ref[0]:.6f} "
        f"step2={ref[1]:.6f}")
  for c in contestants:
    got = [c.run(), c.run()]
    diff = max(abs(g - r) for g, r in zip(got, ref))
    a, b = reference.params(loader), c.params(loader)
    pdiff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    good = diff <= LOSS_TOL
    ok &= good
    print(f"  {c.name:26s} step1={got[0]:.6f} step2={got[1]:.6f} "
          f"max|dloss|={diff:.2e} max|dparam|={pdiff:.2e} "
          f"{'OK' if good else 'MISMATCH'}")
  return ok, ref


def _check_trainer(batch, num_experts, mesh, reference_losses) -> bool:
  """Two ``Trainer.fit`` steps of the library SmallCNN give the same losses."""
  model = SmallCNN(NUM_CLASSES, num_experts=num_experts, rngs=nnx.Rngs(0))
  trainer = Trainer(model, optax.sgd(LEARNING_RATE, momentum=MOMENTUM),
                    _loss_fn, mesh=mesh, progress=False, check_inputs=False)
  history = trainer.fit(lambda epoch: [dict(batch)], 2)
  got = [r["train/loss"] for r in history]
  diff = max(abs(g - r) for g, r in zip(got, reference_losses))
  good = diff <= LOSS_TOL
  print(f"  {'Trainer.fit (library)':26s} step1={got[0]:.6f} step2={got[1]:.6f} "
        f"max|dloss|={diff:.2e} {'OK' if good else 'MISMATCH'}")
  return good


def _time_interleaved(contestants, repeats, warmup):
  """Round-robin timing: one step of each contestant per round."""
  for _ in range(warmup):
    for c in contestants:
      c.run()
  times = {c.name: [] for c in contestants}
  for _ in range(repeats):
    for c in contestants:
      t0 = time.perf_counter()
      c.run()
      times[c.name].append(time.perf_counter() - t0)
  return times


def _summary(times):
  ms = sorted(t * 1e3 for t in times)
  q = statistics.quantiles(ms, n=4) if len(ms) >= 4 else [ms[0], ms[0], ms[-1]]
  return {"median": statistics.median(ms), "min": ms[0], "p25": q[0], "p75": q[2]}


def _print_table(title, times, reference_names):
  ref = min(statistics.median(times[n]) for n in reference_names) * 1e3
  print(f"\n{title}")
  print(f"  {'contestant':26s} {'median ms':>10s} {'min':>8s} {'p25-p75':>15s}"
        f" {'torch/jax':>10s}")
  rows = {}
  for name, t in times.items():
    s = _summary(t)
    rows[name] = s
    ratio = ref / s["median"]
    print(f"  {name:26s} {s['median']:10.2f} {s['min']:8.2f} "
          f"{s['p25']:7.2f}-{s['p75']:<7.2f} {ratio:10.3f}")
  return rows


# --------------------------------------------------------------------------
# Data parallelism (subprocess) and input pipeline
# --------------------------------------------------------------------------


def _dp_worker(args) -> None:
  """Runs in a subprocess with N host devices; prints one JSON line of times."""
  arch, opts = _parse_variant(args.headline)
  host, _ = _make_batches(args.batch_size, args.num_experts)
  mesh = data_mesh()
  model = CNN_CLASSES[arch](NUM_CLASSES, num_experts=args.num_experts,
                               rngs=nnx.Rngs(0))
  step, _, state, _ = make_jax_step(model, mesh, NO_YNN_CONV if opts else None)
  times = []
  for i in range(args.warmup + args.dp_repeats):
    t0 = time.perf_counter()
    state, loss = step(state, shard_batch(host, mesh))
    loss.block_until_ready()
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
  print(json.dumps({"devices": len(jax.devices()),
                    "cores": len(os.sched_getaffinity(0)), "times_s": times}))


def _run_dp(args) -> dict | None:
  """Alternates 1-device and N-device subprocesses; median step time of each."""
  times: dict[int, list[float]] = {1: [], args.dp_devices: []}
  cores = 0
  for _ in range(args.dp_rounds):
    for n in times:
      env = dict(os.environ)
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                          f" --xla_force_host_platform_device_count={n}")
      # The child starts from the affinity this process had before `--threads`.
      cpus = sorted(ORIGINAL_CPUS)[:args.dp_threads or None]
      cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--_dp-worker",
             "--_cpus", ",".join(map(str, cpus)), "--headline", args.headline,
             "--batch-size", str(args.batch_size), "--num-experts",
             str(args.num_experts), "--warmup", str(args.warmup),
             "--dp-repeats", str(args.dp_repeats)]
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                            check=False)
      if proc.returncode != 0:
        print(f"data-parallel subprocess failed:\n{proc.stderr[-2000:]}")
        return None
      result = json.loads(proc.stdout.strip().splitlines()[-1])
      if result["devices"] != n:
        print(f"data-parallel subprocess saw {result['devices']} devices, not {n}.")
        return None
      times[n] += result["times_s"]
      cores = result["cores"]
  return {"cores": cores, "median_s": {n: statistics.median(t) for n, t in times.items()}}


def _pipeline(args, num_experts: int) -> tuple[float, str]:
  """Images/s of ``iterate_batches`` with augmentation; and the data source."""
  folder = pathlib.Path(args.data_dir) / "cifar10_images"
  if (folder / f"cifar10_{args.pipeline_split}_jpg.zip").is_file():
    t0 = time.perf_counter()
    images, labels = l2d_data.load_cifar10_images(args.data_dir,
                                                  split=args.pipeline_split)
    source = (f"real CIFAR-10 JPEGs ({args.pipeline_split} split, "
              f"{len(images)} images decoded in {time.perf_counter() - t0:.1f} s)")
  else:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, 10000).astype(np.int32)
    source = f"synthetic uint8 images ({folder} not found)"
  experts = np.random.default_rng(1).integers(
      0, NUM_CLASSES, (len(images), num_experts)).astype(np.int32)
  kwargs = dict(batch_size=args.batch_size, seed=0, augment=True,
                extra={"experts": experts})
  for _ in zip(range(3), l2d_data.iterate_batches(images, labels, epoch=99, **kwargs)):
    pass
  n, epoch = 0, 0
  t0 = time.perf_counter()
  while n < args.pipeline_images:
    for batch in l2d_data.iterate_batches(images, labels, epoch=epoch, **kwargs):
      n += batch["image"].shape[0]
    epoch += 1
  return n / (time.perf_counter() - t0), source


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _parse_variant(name: str) -> tuple[str, bool]:
  arch, _, opt = name.partition("+")
  if arch not in ARCHS or opt not in ("", "no_ynn_conv"):
    raise ValueError(f"unknown CNN variant {name!r}: use ARCH or "
                     f"ARCH+no_ynn_conv with ARCH in {ARCHS}.")
  return arch, bool(opt)


def _parse_args(argv):
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      epilog="CNN variants: " + ", ".join(ARCHS) + " (each also +no_ynn_conv).",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=40,
                 help="timed rounds (one step of every contestant each; default %(default)s)")
  p.add_argument("--mlp-repeats", type=int, default=200,
                 help="timed rounds for the (~1 ms) MLP step (default %(default)s)")
  p.add_argument("--warmup", type=int, default=5,
                 help="untimed rounds after the correctness check (default %(default)s)")
  p.add_argument("--batch-size", type=int, default=128, help="default %(default)s")
  p.add_argument("--num-experts", type=int, default=4,
                 help="experts J (logits K + J, K = 10; default %(default)s)")
  p.add_argument("--threads", type=int, default=1,
                 help="pin the step comparison to this many cores (XLA and PyTorch "
                      "both get that many threads); 0: all available cores, "
                      "unpinned, each framework's default (default %(default)s)")
  p.add_argument("--dp-threads", type=int, default=0,
                 help="cores for the data-parallel subprocess (0: all; default "
                      "%(default)s)")
  p.add_argument("--cnn-variants", default=DEFAULT_VARIANTS,
                 help="comma-separated CNN variants to time, or 'all' "
                      "(default %(default)s)")
  p.add_argument("--headline", default=HEADLINE,
                 help="CNN variant reported as jax_step_ms (default %(default)s)")
  p.add_argument("--dp-devices", type=int, default=4,
                 help="forced host devices for the data-parallel run (default %(default)s)")
  p.add_argument("--dp-repeats", type=int, default=20,
                 help="timed steps per data-parallel subprocess (default %(default)s)")
  p.add_argument("--dp-rounds", type=int, default=2,
                 help="alternating 1-device/N-device subprocess pairs (default %(default)s)")
  p.add_argument("--skip-dp", action="store_true", help="skip the data-parallel run")
  p.add_argument("--data-dir", default="../shared/data",
                 help="root holding cifar10_images/ (default %(default)s)")
  p.add_argument("--pipeline-split", default="train", choices=("train", "test"),
                 help="CIFAR-10 split for the pipeline run (default %(default)s)")
  p.add_argument("--pipeline-images", type=int, default=20000,
                 help="images to iterate for the pipeline rate (default %(default)s)")
  p.add_argument("--skip-pipeline", action="store_true", help="skip the pipeline run")
  p.add_argument("--_dp-worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--_cpus", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.cnn_variants == "all":
    args.cnn_variants = ",".join(a + s for a in ARCHS for s in ("", "+no_ynn_conv"))
  args.variants = [v for v in args.cnn_variants.split(",") if v]
  for v in args.variants + [args.headline]:
    _parse_variant(v)
  if args.headline not in args.variants:
    args.variants.append(args.headline)
  return args


def _pin(threads: int) -> None:
  cpus = sorted(os.sched_getaffinity(0))
  if not 1 <= threads <= len(cpus):
    raise SystemExit(f"--threads must lie in [1, {len(cpus)}], got {threads}.")
  os.sched_setaffinity(0, cpus[:threads])


def main(argv: list[str] | None = None) -> str:
  """Runs the benchmark; returns (and prints last) the machine-readable line."""
  args = _parse_args(argv)
  if args._cpus:
    os.sched_setaffinity(0, [int(c) for c in args._cpus.split(",")])
  elif args.threads:
    _pin(args.threads)
  if args._dp_worker:
    _dp_worker(args)
    return ""
  try:
    from benchmarks import _torch_models as tm  # noqa: PLC0415
    import torch  # noqa: PLC0415
  except ImportError:
    raise SystemExit(
        "This benchmark compares against PyTorch, which l2d_jax does not depend "
        "on. Install the CPU wheel first: .venv/bin/pip install torch") from None

  if args.threads:
    torch.set_num_threads(args.threads)
  cpu = next((line.split(":", 1)[1].strip() for line in
              pathlib.Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")), platform.processor())
  print(f"jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__}; "
        f"{cpu}; cores used {len(os.sched_getaffinity(0))} of {len(ORIGINAL_CPUS)}, torch threads "
        f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f} "
        f"(1 min); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"batch {args.batch_size}, K={NUM_CLASSES}, J={args.num_experts}, "
        f"SGD lr={LEARNING_RATE} momentum={MOMENTUM}; {args.repeats} (MLP: "
        f"{args.mlp_repeats}) interleaved rounds after {args.warmup} warm-up rounds; "
        "times are wall-clock per step")

  mesh = data_mesh(1)
  cnn_batch, mlp_batch = _make_batches(args.batch_size, args.num_experts)
  out = NUM_CLASSES + args.num_experts

  # ---- CNN
  jax_cnn = []
  for v in args.variants:
    arch, opts = _parse_variant(v)
    model = CNN_CLASSES[arch](NUM_CLASSES, num_experts=args.num_experts, rngs=nnx.Rngs(0))
    jax_cnn.append(JaxContestant(v, model, cnn_batch, mesh,
                                 NO_YNN_CONV if opts else None))
  ref_model = SmallCNN(NUM_CLASSES, num_experts=args.num_experts,
                                 rngs=nnx.Rngs(0))
  torch_cnn = [
      TorchContestant("pytorch", tm.load_small_cnn(ref_model), cnn_batch, nchw=True),
      TorchContestant("pytorch_channels_last", tm.load_small_cnn(ref_model),
                      cnn_batch, nchw=True, channels_last=True)]
  print("compile s: " + ", ".join(f"{c.name} {c.compile_s:.1f}" for c in jax_cnn))
  ok, ref_losses = _check(jax_cnn + torch_cnn[1:], torch_cnn[0], tm.load_small_cnn,
                          "SmallCNN")
  ok &= _check_trainer(cnn_batch, args.num_experts, mesh, ref_losses)

  # ---- MLP
  mlp_model = MLP(64, (256, 256), NUM_CLASSES, num_experts=args.num_experts,
                  rngs=nnx.Rngs(0))
  torch_mlp = TorchContestant("pytorch", tm.load_mlp(mlp_model), mlp_batch, nchw=False)
  jax_mlp = [JaxContestant("library", mlp_model, mlp_batch, mesh)]
  ok &= _check(jax_mlp, torch_mlp, tm.load_mlp, "MLP")[0]
  if not ok:
    raise SystemExit("correctness check failed: the frameworks disagree.")

  torch_names = [c.name for c in torch_cnn]
  cnn_times = _time_interleaved(jax_cnn + torch_cnn, args.repeats, args.warmup)
  cnn_rows = _print_table(
      f"SmallCNN train step, batch {args.batch_size} x 32x32x3, K+J={out} "
      "(torch/jax against the faster PyTorch layout)", cnn_times, torch_names)
  mlp_times = _time_interleaved(jax_mlp + [torch_mlp], args.mlp_repeats, args.warmup)
  mlp_rows = _print_table(f"MLP 64-256-256-{out} train step, batch {args.batch_size}",
                          mlp_times, ["pytorch"])

  jax_ms = cnn_rows[args.headline]["median"]
  torch_ms = min(cnn_rows[n]["median"] for n in torch_names)
  mlp_ratio = mlp_rows["pytorch"]["median"] / mlp_rows["library"]["median"]

  dp_speedup = math.nan
  if not args.skip_dp:
    dp = _run_dp(args)
    if dp is not None:
      s, n = dp["median_s"], args.dp_devices
      thr = {k: args.batch_size / v for k, v in s.items()}
      dp_speedup = thr[n] / thr[1]
      print(f"\ndata parallel ({args.headline}, global batch {args.batch_size} split "
            f"over a ('data',) mesh, batch transfer included; {args.dp_rounds} "
            f"alternating subprocess rounds x {args.dp_repeats} steps, on "
            f"{dp['cores']} cores): 1 device {thr[1]:.0f} img/s "
            f"({s[1] * 1e3:.2f} ms/step), {n} forced host devices {thr[n]:.0f} img/s "
            f"({s[n] * 1e3:.2f} ms/step) -> speed-up {dp_speedup:.3f}")

  rate = math.nan
  if not args.skip_pipeline:
    rate, source = _pipeline(args, args.num_experts)
    demand = args.batch_size * 1e3 / jax_ms
    print(f"\ninput pipeline (iterate_batches, batch {args.batch_size}, crop+flip+"
          f"normalise, 1 thread) on {source}: {rate:.0f} img/s; the "
          f"{args.headline} step consumes {demand:.0f} img/s -> pipeline/step = "
          f"{rate / demand:.2f} ({'does not starve' if rate > demand else 'STARVES'} "
          "the step)")

  line = (f"jax_step_ms={jax_ms:.3f} torch_step_ms={torch_ms:.3f} "
          f"ratio_vs_torch={torch_ms / jax_ms:.3f} mlp_ratio_vs_torch={mlp_ratio:.3f} "
          f"dp4_speedup={dp_speedup:.3f} pipeline_img_per_s={rate:.1f}")
  print(f"\njax_step_ms is CNN variant {args.headline!r}"
        + (f"; the library SmallCNN as is: {cnn_rows['library']['median']:.3f} ms "
           f"(ratio {torch_ms / cnn_rows['library']['median']:.3f})"
           if "library" in cnn_rows else ""))
  print(line)
  return line


if __name__ == "__main__":
  main()
