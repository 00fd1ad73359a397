"""Training-loop speed on the MoG calibration config: JAX trainers vs PyTorch.

One full run of the multi-expert calibration experiment's MoG config
(``experiments/multi_expert_calibration/config.py``: 4-layer MLP
2-32-16-8-(K+J), K = 4 classes, J = 8 simulated experts of the
increasing-experts setting, SGD Nesterov momentum 0.9, weight decay 5e-4,
cosine schedule, batch 1024, 20,000 training and 20,000 validation points,
the config's 200 epochs), each epoch followed by the validation loss and a
copy of the best model, the softmax surrogate. Timed, one after another in
one process:

* ``jax``: ``training.Trainer`` with ``training.DeviceEpochs`` (each epoch
  one compiled ``lax.scan``; validation through ``Trainer.evaluate``), one
  seed per run, 5 seeds one after another. Each run builds its model and
  trainer; the first compiles the programs, the others reuse them from the
  trainer's process-wide program cache (same architecture, optimiser object
  and loss function: the experiment's ``build_optimizer`` and ``make_fns``
  return the same objects for the same settings), as the experiment's
  ``--sequential`` path does. ``--cold`` empties that cache and JAX's before
  every run, so every run compiles (the behaviour before the cache);
* ``vmap``: ``training.SeedTrainer``, the same 5 seeds in one program;
* ``torch``: an idiomatic PyTorch loop (``torch.randperm`` per epoch,
  ``torch.optim.SGD(nesterov=True, weight_decay=...)`` with
  ``CosineAnnealingLR``, validation under ``no_grad``, ``state_dict`` copy
  of the best model) on the same data, epochs and batch size, pinned to one
  thread.

Wall times include building the model and compiling where a run compiles
(a run is what a user waits for); the first run's time (with compilation) is
printed beside the median. Early stopping is off so
every contestant runs all epochs. ``--compilation-cache DIR`` times
reruns instead: sequential runs after the first (same programs) load
them from JAX's persistent cache, as reruns of the calibration CLI do.
The last line is machine-readable:

  jax_run_s=<float> torch_run_s=<float> ratio_vs_torch=<float>
  vmap5_speedup=<float>

``jax_run_s``: median of the 5 sequential JAX runs (without ``--cold``: a
run that reuses the first run's programs); ``ratio_vs_torch`` = torch s /
jax s for one seed (above 1: JAX is faster); ``vmap5_speedup`` = the 5
sequential JAX runs (the first compiling, without ``--cold``) / the one
vmapped 5-seed run (which compiles its own program). The line
``cold: ...`` before them gives the first run alone (with its
compilation) against torch. The line before it
(``cpu: ...``) gives the same quantities in CPU seconds of the process
(``time.process_time``), which other jobs on a shared machine move far less
than wall times.

Usage (from the repository root):
  .venv/bin/python benchmarks/train_loop.py
  .venv/bin/python benchmarks/train_loop.py --epochs 50 --seeds 3
  .venv/bin/python benchmarks/train_loop.py --cold   # every run compiles

PyTorch is not an l2d_jax dependency; without it the JAX side is still
timed. Install it with ``pip install -e '.[bench]'`` (or ``pip install
torch==2.13.0``, the CPU build the README numbers were measured with).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from experiments.multi_expert_calibration import config as configs  # noqa: E402
from experiments.multi_expert_calibration import run as run_lib  # noqa: E402
from l2d_jax import training  # noqa: E402
from l2d_jax.training import _programs  # noqa: E402  pylint: disable=protected-access

K = run_lib.NUM_CLASSES["mog"]


def _load(cfg, seeds, num_experts):
  knowledge = run_lib.expert_knowledge("mog", "increasing-experts",
                                       num_experts, 4)
  out = {}
  for seed in seeds:
    ds = run_lib.load_mog(cfg, seed)
    preds = run_lib.expert_predictions(ds, knowledge, seed)
    out[seed] = {split: {"x": getattr(ds, split).inputs,
                         "label": getattr(ds, split).labels,
                         "experts": preds[split]}
                 for split in ("train", "val")}
  return out


def jax_run(cfg, data, seed, num_experts
            ) -> tuple[float, float, float, float]:
  """One Trainer run; returns (s, final val loss, first-epoch s, CPU s)."""
  t0, c0 = time.perf_counter(), time.process_time()
  model = run_lib.build_model(cfg, K, num_experts, seed)
  steps = data["train"]["label"].size // cfg["batch_size"]
  tx = run_lib.build_optimizer(cfg, steps * cfg["epochs"])
  loss_fn, val_fn, _ = run_lib.make_fns("softmax", num_experts)
  first = []
  trainer = training.Trainer(model, tx, loss_fn, progress=False)
  history = trainer.fit(
      training.DeviceEpochs(data["train"], cfg["batch_size"],
                            key=run_lib.order_key(seed)),
      cfg["epochs"], eval_fn=lambda: trainer.evaluate([data["val"]], val_fn),
      monitor="loss", mode="min",
      on_epoch_end=lambda r: first.append(time.perf_counter() - t0))
  return (time.perf_counter() - t0, history[-1]["eval/loss"], first[0],
          time.process_time() - c0)


def vmap_run(cfg, data, seeds, num_experts
             ) -> tuple[float, list[float], float]:
  """One SeedTrainer run of all seeds; returns (s, final val losses, CPU s)."""
  t0, c0 = time.perf_counter(), time.process_time()
  models = [run_lib.build_model(cfg, K, num_experts, s) for s in seeds]
  steps = data[seeds[0]]["train"]["label"].size // cfg["batch_size"]
  tx = run_lib.build_optimizer(cfg, steps * cfg["epochs"])
  loss_fn, val_fn, _ = run_lib.make_fns("softmax", num_experts)
  stack = lambda split: {k: np.stack([data[s][split][k] for s in seeds])
                         for k in data[seeds[0]][split]}
  trainer = training.SeedTrainer(models, tx, loss_fn)
  n_val = data[seeds[0]]["val"]["label"].size
  histories = trainer.fit(
      stack("train"), cfg["epochs"], batch_size=cfg["batch_size"],
      keys=jnp.stack([run_lib.order_key(s) for s in seeds]),
      val=stack("val"), metrics_fn=val_fn,
      eval_batch_size=run_lib._eval_chunk(cfg, n_val),  # noqa  pylint: disable=protected-access
      monitor="loss", mode="min")
  jax.block_until_ready(trainer._state)  # pylint: disable=protected-access
  return (time.perf_counter() - t0, [h[-1]["eval/loss"] for h in histories],
          time.process_time() - c0)


def torch_run(cfg, data, seed, num_experts) -> tuple[float, float, float]:
  """The same run in PyTorch; returns (seconds, final val loss, CPU s)."""
  import copy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import _torch_models  # pylint: disable=g-import-not-at-top
  t0, c0 = time.perf_counter(), time.process_time()
  torch.manual_seed(seed)
  x = torch.from_numpy(data["train"]["x"])
  y = torch.from_numpy(data["train"]["label"].astype(np.int64))
  e = torch.from_numpy(data["train"]["experts"].astype(np.int64))
  vx = torch.from_numpy(data["val"]["x"])
  vy = torch.from_numpy(data["val"]["label"].astype(np.int64))
  ve = torch.from_numpy(data["val"]["experts"].astype(np.int64))
  net = _torch_models.TorchMLP(2, cfg["hidden"], K + num_experts)
  bs = cfg["batch_size"]
  steps = y.numel() // bs
  opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"],
                        momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                        weight_decay=cfg["weight_decay"])
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt,
                                                     steps * cfg["epochs"])
  best, best_state, val = float("inf"), None, float("nan")
  for _ in range(cfg["epochs"]):
    net.train()
    perm = torch.randperm(y.numel())
    for i in range(steps):
      idx = perm[i * bs:(i + 1) * bs]
      opt.zero_grad(set_to_none=True)
      loss = _torch_models.multi_expert_softmax_loss(
          net(x[idx]), y[idx], e[idx]).mean()
      loss.backward()
      opt.step()
      sched.step()
    net.eval()
    with torch.no_grad():
      val = _torch_models.multi_expert_softmax_loss(
          net(vx), vy, ve).mean().item()
    if val < best:
      best, best_state = val, copy.deepcopy(net.state_dict())
  net.load_state_dict(best_state)
  return time.perf_counter() - t0, val, time.process_time() - c0


def main(argv=None) -> str:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--epochs", type=int, default=None,
                 help="epochs per run (default: the config's).")
  p.add_argument("--seeds", type=int, default=5,
                 help="seeds run one after another and vmapped.")
  p.add_argument("--num-experts", type=int, default=8,
                 help="J (the largest increasing-experts setting).")
  p.add_argument("--torch-threads", type=int, default=1,
                 help="torch.set_num_threads.")
  p.add_argument("--cold", action="store_true",
                 help="empty the trainer's program cache and JAX's caches "
                 "before every sequential run, so that every run compiles.")
  p.add_argument("--compilation-cache", default=None, metavar="DIR",
                 help="JAX persistent compilation cache folder (as the "
                 "calibration CLI uses in <cache-dir>/jax); off by default. "
                 "With it, JAX runs after the first load their programs "
                 "instead of compiling them.")
  args = p.parse_args(argv)
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  cfg = configs.get_config("mog", "cpu")
  if args.epochs:
    cfg["epochs"] = args.epochs
  cfg["patience"] = None  # every contestant runs every epoch
  seeds = list(range(args.seeds))
  print(f"load average before: {os.getloadavg()}; jax {jax.__version__}, "
        f"devices {jax.devices()}")
  data = _load(cfg, seeds, args.num_experts)
  print(f"MoG: {data[0]['train']['label'].size} train / "
        f"{data[0]['val']['label'].size} val points, J={args.num_experts}, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}")

  seq, firsts, seq_cpu = [], [], []
  for seed in seeds:
    if args.cold:
      _programs.PROGRAMS.clear()
      jax.clear_caches()
    s, val, first, cpu = jax_run(cfg, data[seed], seed, args.num_experts)
    seq.append(s)
    firsts.append(first)
    seq_cpu.append(cpu)
    print(f"jax Trainer+DeviceEpochs seed {seed}: {s:.2f} s, {cpu:.2f} s "
          f"CPU (first epoch: {first:.2f} s), final val loss {val:.4f}")
  vmap_s, vals, vmap_cpu = vmap_run(cfg, data, seeds, args.num_experts)
  print(f"jax SeedTrainer {len(seeds)} seeds at once: {vmap_s:.2f} s, "
        f"{vmap_cpu:.2f} s CPU, final val losses "
        f"{np.round(vals, 4).tolist()}")
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(args.torch_threads)
    torch_s, tval, torch_cpu = torch_run(cfg, data[0], 0, args.num_experts)
    print(f"torch {torch.__version__} ({args.torch_threads} thread) seed 0: "
          f"{torch_s:.2f} s, final val loss {tval:.4f}")
  except ImportError:
    torch_s = torch_cpu = float("nan")
    print("PyTorch is not installed: the torch column is skipped. Install it "
          "with `pip install -e '.[bench]'` (torch==2.13.0, CPU build).")
  jax_s = statistics.median(seq)
  steady = statistics.median(
      (t - f) / (cfg["epochs"] - 1) for t, f in zip(seq, firsts)
  ) if cfg["epochs"] > 1 else float("nan")
  print(f"jax after compilation: {1e3 * steady:.1f} ms per epoch; torch "
        f"{1e3 * torch_s / cfg['epochs']:.1f} ms per epoch "
        f"(ratio {torch_s / cfg['epochs'] / steady:.2f})")
  print(f"load average after: {os.getloadavg()}")
  # CPU seconds of this process (all its threads; the run is pinned to one
  # core or not): unlike wall times, barely moved by other jobs' load.
  print(f"cpu: jax_cpu_s={statistics.median(seq_cpu):.3f} "
        f"torch_cpu_s={torch_cpu:.3f} vmap_cpu_s={vmap_cpu:.3f} "
        f"ratio_vs_torch_cpu={torch_cpu / statistics.median(seq_cpu):.2f} "
        f"vmap5_speedup_cpu={sum(seq_cpu) / vmap_cpu:.2f}")
  print(f"cold: jax_first_run_s={seq[0]:.3f} jax_first_run_cpu_s="
        f"{seq_cpu[0]:.3f} ratio_vs_torch_first_run={torch_s / seq[0]:.2f} "
        f"ratio_vs_torch_first_run_cpu={torch_cpu / seq_cpu[0]:.2f}")
  line = (f"jax_run_s={jax_s:.3f} torch_run_s={torch_s:.3f} "
          f"ratio_vs_torch={torch_s / jax_s:.2f} "
          f"vmap5_speedup={sum(seq) / vmap_s:.2f}")
  print(line)
  return line


if __name__ == "__main__":
  main()
