"""One process vs two: the conformal sweep and SmallCNN training steps.

Measures, in one run, each case in fresh worker processes (so every case
pays its own imports and compilation):

  1. the CIFAR10-H-sized sweep (the pool of ``benchmarks/conformal_sweep.py``:
     10,000 simulated images, 2,571 annotators x 200 answers; 20 splits of
     1,000 calibration and 9,000 test points, the paper's alpha grid, LAC,
     APS and RAPS) with ``l2d_jax.distributed.deferral_sweep``: 1 process
     computes every split; 2 processes share the splits out (process p:
     splits p, p+2, ...; the default ``shard='splits'``) and all-gather the
     results;
     The sweep is timed twice: the first call (with compilation: the time
     reported) and a second, compiled call;
  2. a fixed number of ``Trainer`` steps of the SmallCNN (CIFAR-sized
     32x32x3 inputs, 10 classes + 2 experts, SGD with momentum, global batch
     128): 1 process on 1 device, and 2 processes of 1 forced CPU device each
     (the same global batch, 64 rows fed by each process, gradients
     all-reduced by gloo over loopback). The timed steps come after one
     warm-up epoch that compiles the step; a params-sized all-reduce alone
     is timed too (median of 20).

Two processes are started with ``l2d_jax.distributed.spawn`` (127.0.0.1, a
free port, gloo CPU collectives, one forced device each); the single-process
cases run the same worker without ``jax.distributed``. Times are measured
inside the workers (process 0; after a barrier for two processes), so they
leave out Python start-up and imports; the launcher's wall time per case is
printed too. The last line reads

  sweep_1p_s=<f> sweep_2p_s=<f> train_1p_s=<f> train_2p_s=<f>
  sweep_speedup=<f> train_speedup=<f>

(on one line; speedup = 1-process seconds / 2-process seconds).

Usage: python benchmarks/multiprocess.py [--splits 20] [--train-steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRAIN_BATCH = 128
TRAIN_EXAMPLES = 2560  # 20 steps per epoch
NUM_CLASSES, NUM_EXPERTS = 10, 2


# ------------------------------------------------------------- the worker --


def _worker_sweep(args, report):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from l2d_jax import conformal  # pylint: disable=import-outside-toplevel
  from l2d_jax import data  # pylint: disable=import-outside-toplevel
  from l2d_jax import distributed  # pylint: disable=import-outside-toplevel

  ds = data.synthetic_pool(0, num_images=10_000, num_classes=10,
                           num_experts=2571, answers_per_expert=200)
  has = np.flatnonzero(np.asarray(ds.annotations.mask).any(1))
  rng = np.random.default_rng(0)
  test, rcal, rtune = [], [], []
  for _ in range(args.splits):
    c = np.sort(rng.choice(has, 1000, replace=False))
    perm = rng.permutation(c)
    test.append(np.setdiff1d(has, c))
    rtune.append(perm[:300])
    rcal.append(perm[300:])
  test, rcal, rtune = (np.stack(x) for x in (test, rcal, rtune))
  alphas = conformal.paper_alpha_grid(
      float((ds.probs.argmax(1) == ds.labels).mean()))
  distributed.barrier("bench_sweep_start")
  t = time.perf_counter()
  out = distributed.deferral_sweep(
      ds.probs, ds.labels, ds.annotations, rcal, test, alphas,
      key=jax.random.key(0), scores=("lac", "aps", "raps"), tune_idx=rtune)
  jax.block_until_ready(out)
  report["seconds"] = time.perf_counter() - t
  # Again, compiled: what is left is arithmetic and the all-gather.
  distributed.barrier("bench_sweep_warm")
  t = time.perf_counter()
  jax.block_until_ready(distributed.deferral_sweep(
      ds.probs, ds.labels, ds.annotations, rcal, test, alphas,
      key=jax.random.key(0), scores=("lac", "aps", "raps"), tune_idx=rtune))
  report["warm_seconds"] = time.perf_counter() - t
  report["splits_here"] = len(range(jax.process_index(), len(test),
                                     jax.process_count()))
  report["checksum"] = float(np.nansum(np.asarray(out.strategies.accuracy)))


def _worker_train(args, report):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from l2d_jax import distributed  # pylint: disable=import-outside-toplevel
  from l2d_jax.models import SmallCNN  # pylint: disable=import-outside-toplevel
  from l2d_jax.training import EpochBatches  # pylint: disable=import-outside-toplevel
  from l2d_jax.training import Trainer  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  arrays = {"x": rng.normal(size=(TRAIN_EXAMPLES, 32, 32, 3)).astype(
      np.float32), "y": rng.integers(0, NUM_CLASSES, TRAIN_EXAMPLES).astype(
          np.int32)}

  def loss_fn(model, batch):
    logits = model(batch["x"])[:, :NUM_CLASSES]
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean(logits.argmax(-1) == batch["y"])}

  model = SmallCNN(NUM_CLASSES, num_experts=NUM_EXPERTS, rngs=nnx.Rngs(0))
  trainer = Trainer(model, optax.sgd(0.01, momentum=0.9), loss_fn,
                    progress=False, check_inputs=False)
  per_epoch = TRAIN_EXAMPLES // TRAIN_BATCH
  epochs = -(-args.train_steps // per_epoch)
  batches = lambda e: EpochBatches(arrays, TRAIN_BATCH, seed=0, epoch=e)
  t = time.perf_counter()
  trainer.fit(batches, 1)  # compiles the step
  report["warmup_epoch_s"] = time.perf_counter() - t
  distributed.barrier("bench_train_start")
  t = time.perf_counter()
  history = trainer.fit(batches, 1 + epochs)
  report["seconds"] = time.perf_counter() - t
  report["steps"] = epochs * per_epoch
  report["devices"] = trainer.mesh.size
  report["final_loss"] = history[-1]["train/loss"]
  # The gradient all-reduce alone: a params-sized sum over the devices.
  from jax.sharding import NamedSharding  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from l2d_jax.training import _mesh  # pylint: disable=import-outside-toplevel
  size = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  mesh = trainer.mesh
  grads = _mesh.shard_batch(
      {"g": np.ones((mesh.size, size), np.float32)}, mesh)["g"]
  total = jax.jit(lambda g: g.sum(0),
                  out_shardings=NamedSharding(mesh, P()))
  jax.block_until_ready(total(grads))
  times = []
  for _ in range(20):
    t = time.perf_counter()
    jax.block_until_ready(total(grads))
    times.append(time.perf_counter() - t)
  report["allreduce_ms"] = 1e3 * float(np.median(times))
  report["num_params"] = int(size)


def worker_main(argv) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--worker", choices=("sweep", "train"), required=True)
  p.add_argument("--report", required=True)
  p.add_argument("--splits", type=int, default=20)
  p.add_argument("--train-steps", type=int, default=40)
  args = p.parse_args(argv)
  from l2d_jax import distributed  # pylint: disable=import-outside-toplevel
  if os.environ.get("L2D_NUM_PROCESSES"):
    distributed.initialize()  # from the environment spawn sets
  import jax  # pylint: disable=import-outside-toplevel
  report = {"process": jax.process_index(), "processes": jax.process_count()}
  (_worker_sweep if args.worker == "sweep" else _worker_train)(args, report)
  path = pathlib.Path(args.report) / f"{args.worker}_{jax.process_index()}.json"
  path.write_text(json.dumps(report))
  return 0


# --------------------------------------------------------------- launcher --


def _case(kind, num_processes, args, tmp) -> dict:
  from l2d_jax import distributed  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(tmp) / f"{kind}_{num_processes}p"
  out.mkdir()
  argv = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker",
          kind, "--report", str(out), "--splits", str(args.splits),
          "--train-steps", str(args.train_steps)]
  env = distributed.worker_env(0, 1, "127.0.0.1:1", devices_per_process=1)
  for name in ("L2D_COORDINATOR_ADDRESS", "L2D_NUM_PROCESSES",
               "L2D_PROCESS_ID"):
    env.pop(name)  # a plain process: no jax.distributed
  env["JAX_PLATFORMS"] = "cpu"
  t = time.perf_counter()
  if num_processes == 1:
    subprocess.run(argv, cwd=REPO, env=env, check=True)
  else:
    distributed.spawn(argv, num_processes, devices_per_process=1,
                      timeout_s=args.timeout, cwd=REPO, env={
                          "JAX_PLATFORMS": "cpu"})
  wall = time.perf_counter() - t
  reports = [json.loads((out / f"{kind}_{i}.json").read_text())
             for i in range(num_processes)]
  return {"wall_s": wall, "reports": reports,
          "seconds": max(r["seconds"] for r in reports)}


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if "--worker" in argv:
    return worker_main(argv)
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--splits", type=int, default=20,
                 help="calibration/test splits of the sweep.")
  p.add_argument("--train-steps", type=int, default=40,
                 help="timed SmallCNN steps (rounded up to whole epochs of "
                 f"{TRAIN_EXAMPLES // TRAIN_BATCH} steps).")
  p.add_argument("--timeout", type=float, default=900,
                 help="seconds allowed to each two-process case.")
  args = p.parse_args(argv)
  print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        f" on {os.cpu_count()} cores")
  res = {}
  with tempfile.TemporaryDirectory(prefix="l2d_bench_mp_") as tmp:
    for kind in ("sweep", "train"):
      for n in (1, 2):
        res[kind, n] = r = _case(kind, n, args, tmp)
        detail = "; ".join(
            f"process {x['process']}: {x['seconds']:.2f} s"
            + (f" ({x['splits_here']} splits; a second,"
               f" compiled call {x['warm_seconds']:.2f} s)"
               if kind == "sweep" else
               f" ({x['steps']} steps on a {x['devices']}-device mesh, "
               f"{1e3 * x['seconds'] / x['steps']:.1f} ms/step; warm-up "
               f"epoch with compilation {x['warmup_epoch_s']:.2f} s; one "
               f"all-reduce of the {x['num_params']:,} gradient numbers "
               f"{x['allreduce_ms']:.2f} ms; final loss "
               f"{x['final_loss']:.4f})")
            for x in r["reports"])
        print(f"{kind} {n}p: {r['seconds']:.2f} s [{detail}]; launcher wall "
              f"time with start-up {r['wall_s']:.2f} s", flush=True)
  same = (res["sweep", 1]["reports"][0]["checksum"]
          == res["sweep", 2]["reports"][0]["checksum"])
  print(f"sweep results equal in 1 and 2 processes (sum of accuracies): "
        f"{same}")
  print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  s1, s2 = res["sweep", 1]["seconds"], res["sweep", 2]["seconds"]
  t1, t2 = res["train", 1]["seconds"], res["train", 2]["seconds"]
  print(f"sweep_1p_s={s1:.3f} sweep_2p_s={s2:.3f} train_1p_s={t1:.3f} "
        f"train_2p_s={t2:.3f} sweep_speedup={s1 / s2:.3f} "
        f"train_speedup={t1 / t2:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
