"""Speed of the conformal-deferral sweep (``conformal.deferral_sweep``).

Measures, in one run:
  1. the full sweep (paper alpha grid, 20 splits, LAC/APS/RAPS, the four
     strategies of ``deferral.STRATEGIES`` and the baselines: one call of
     ``conformal.deferral_sweep``)
     on CIFAR-10S (real annotators, DenseNet-BC probabilities;
     1,000 calibration points drawn from the 9,000 unannotated CIFAR-10 test
     images, the 1,000 annotated ones as test points; skipped with a message
     when --data-dir is absent);
  2. the same sweep on a CIFAR10-H-sized simulated pool (10,000 images,
     2,571 annotators x 200 answers, ~51 answers per image; 1,000 calibration
     and 9,000 test points);
  3. the plain per-alpha, per-point numpy loop (the reference that
     ``tests/test_sweep.py`` checks the sweep against, run in a subprocess so
     that this script does not import the tests) on the same CIFAR10-H-sized
     inputs, timed on a subset of the alpha grid for one split, one score and
     one strategy, then scaled linearly to the sweep's work (alphas x splits x
     scores x strategies);
  4. the process's peak resident memory;
  5. only with ``--compilation-cache DIR``: the CIFAR10-H-sized sweep in a
     fresh process that finds its program in JAX's persistent compilation
     cache (``jax_compilation_cache_dir``; a first child process fills it),
     printed on its own line before the last. The headline figures stay cold
     first calls that compile.

RAPS tunes ``k_reg``/``lam`` on 30% of each calibration draw and calibrates
on the rest, as the experiment does. The last line reads
``cifar10s_sweep_s=<f> cifar10h_sized_sweep_s=<f> ratio_vs_loop=<f> peak_rss_gib=<f>``.
Sweep times include JIT compilation (first call in the process); the CPU
time of the process is printed beside each wall time (a truer figure on a
loaded machine).

Usage: python benchmarks/conformal_sweep.py [--data-dir ../shared/data]
       [--compilation-cache DIR]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2d_jax import conformal  # noqa: E402
from l2d_jax import data  # noqa: E402
from l2d_jax import deferral  # noqa: E402
from l2d_jax import experts  # noqa: E402

SCORES = ("lac", "aps", "raps")
STRATEGIES = deferral.STRATEGIES

_LOOP_DRIVER = """
import sys, time
import numpy as np
from tests import conformal_reference as ref
d = np.load(sys.argv[1])
t = time.perf_counter()
ref.deferral_loop(d["pc"], d["yc"], d["pt"], d["yt"], d["a"], d["m"], d["v"],
                  d["conf"], d["alphas"], score="lac", costs=d["costs"])
print(time.perf_counter() - t)
"""


def _draw_splits(rng, cal_candidates, test_fixed, *, splits, cal_size,
                 tune_fraction=0.3):
  """``(cal, test, raps_cal, raps_tune)`` index matrices, one row per split."""
  cal, test, rcal, rtune = [], [], [], []
  n_tune = max(2, int(round(tune_fraction * cal_size)))
  for _ in range(splits):
    c = np.sort(rng.choice(cal_candidates, cal_size, replace=False))
    t = test_fixed if test_fixed is not None else np.setdiff1d(
        cal_candidates, c)
    perm = rng.permutation(c)
    cal.append(c)
    test.append(t)
    rtune.append(perm[:n_tune])
    rcal.append(perm[n_tune:])
  return tuple(np.stack(x) for x in (cal, test, rcal, rtune))


def _sweep_seconds(probs, labels, annotations, cal_candidates, test_fixed, *,
                   splits, cal_size, seed=0):
  acc = float((probs.argmax(1) == labels).mean())
  alphas = conformal.paper_alpha_grid(acc)
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  t = time.perf_counter()
  c = time.process_time()
  cal, test, rcal, rtune = _draw_splits(rng, cal_candidates, test_fixed,
                                        splits=splits, cal_size=cal_size)
  del cal  # LAC/APS calibrate on rcal and rtune together (= cal)
  out = conformal.deferral_sweep(probs, labels, annotations, rcal, test,
                                 alphas, key=key, scores=SCORES,
                                 tune_idx=rtune)
  jax.block_until_ready(out)
  return (time.perf_counter() - t, time.process_time() - c, alphas,
          test.shape[1])


def _h_sized_pool():
  ds = data.synthetic_pool(0, num_images=10_000, num_classes=10,
                           num_experts=2571, answers_per_expert=200)
  has = np.flatnonzero(np.asarray(ds.annotations.mask).any(1))
  return ds, has


def _cached_child(cache_dir: str, splits: int) -> int:
  """Child process of ``--compilation-cache``: one cached H-sized sweep."""
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  ds, has = _h_sized_pool()
  wall, cpu, _, _ = _sweep_seconds(ds.probs, ds.labels, ds.annotations, has,
                                   None, splits=splits, cal_size=1000)
  print(f"cached_sweep wall={wall:.3f} cpu={cpu:.3f}")
  return 0


def _cached_seconds(cache_dir: str, splits: int) -> tuple[float, float]:
  """Wall and CPU s of the H-sized sweep with a warm persistent cache."""
  cmd = [sys.executable, str(pathlib.Path(__file__).resolve()),
         "--cached-child", cache_dir, "--splits", str(splits)]
  for _ in range(2):  # the first run fills the cache (if it is empty)
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         check=True)
  fields = dict(f.split("=") for f in
                res.stdout.strip().splitlines()[-1].split()[1:])
  return float(fields["wall"]), float(fields["cpu"])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--data-dir", default="../shared/data",
                 help="data root holding cifar10s/ and cifar10h_model_probs/.")
  p.add_argument("--splits", type=int, default=20,
                 help="calibration/test splits per sweep.")
  p.add_argument("--loop-alphas", type=int, default=3,
                 help="alphas of the grid the numpy loop is timed on.")
  p.add_argument("--compilation-cache", metavar="DIR", default=None,
                 help="also time the CIFAR10-H-sized sweep in a fresh process "
                 "with JAX's persistent compilation cache in DIR (filled by "
                 "a first child run); printed before the last line, which "
                 "keeps the cold, compiling figures.")
  p.add_argument("--cached-child", metavar="DIR", default=None,
                 help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.cached_child:
    return _cached_child(args.cached_child, args.splits)

  cifar10s_s = float("nan")
  if (pathlib.Path(args.data_dir) / "cifar10s").exists():
    probs, labels, _ = data.load_model_probs(args.data_dir,
                                             "densenet-bc-L190-k40")
    ds = data.load_cifar10s(args.data_dir, labels=labels)
    has = np.asarray(ds.annotations.mask).any(axis=1)
    cifar10s_s, cpu_s, a10s, n_test = _sweep_seconds(
        np.asarray(probs, np.float32), np.asarray(labels, np.int32),
        ds.annotations, np.flatnonzero(~has), np.flatnonzero(has),
        splits=args.splits, cal_size=1000)
    print(f"CIFAR-10S sweep: {cifar10s_s:.2f} s, CPU {cpu_s:.2f} s "
          f"({len(a10s)} alphas x {args.splits} splits x 3 scores x "
          f"{len(STRATEGIES)} strategies, {n_test:,} test points)")
  else:
    print(f"CIFAR-10S skipped: no data at {args.data_dir}")

  ds, has = _h_sized_pool()
  n_ans = int(np.asarray(ds.annotations.mask).sum())
  big_s, big_cpu, alphas, n_test = _sweep_seconds(
      ds.probs, ds.labels, ds.annotations, has, None, splits=args.splits,
      cal_size=1000)
  print(f"CIFAR10-H-sized sweep: {big_s:.2f} s, CPU {big_cpu:.2f} s (10,000 "
        f"images, {n_ans:,} answers from 2,571 annotators, {n_test:,} test "
        f"points; {len(alphas)} alphas x {args.splits} splits x 3 scores x "
        f"{len(STRATEGIES)} strategies)")

  # The numpy loop on one split of the same pool, a few alphas, LAC.
  rng = np.random.default_rng(0)
  cal = np.sort(rng.choice(has, 1000, replace=False))
  test = np.setdiff1d(has, cal)
  ann = ds.annotations
  conf = np.asarray(experts.confusion_matrices(ann, ds.labels))
  sub = np.linspace(0, len(alphas) - 1, args.loop_alphas).astype(int)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "loop_inputs.npz")
    np.savez(path, pc=ds.probs[cal], yc=ds.labels[cal], pt=ds.probs[test],
             yt=ds.labels[test], a=np.asarray(ann.annotator)[test],
             m=np.asarray(ann.answer)[test], v=np.asarray(ann.mask)[test],
             conf=conf, alphas=alphas[sub], costs=np.zeros(ann.num_experts))
    res = subprocess.run([sys.executable, "-c", _LOOP_DRIVER, path],
                         cwd=REPO, capture_output=True, text=True, check=True)
  loop_s = float(res.stdout.strip().splitlines()[-1])
  scale = (len(alphas) / len(sub)) * args.splits * 3 * len(STRATEGIES)
  loop_full = loop_s * scale
  ratio = loop_full / big_s
  print(f"numpy loop (tests/conformal_reference.py, subprocess): {loop_s:.2f} "
        f"s for {len(sub)} alphas x 1 split x 1 score x 1 strategy; scaled "
        f"linearly x{scale:.0f} to the sweep's work = {loop_full:.0f} s (an "
        "estimate, not a measured full run)")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  if args.compilation_cache:
    c_wall, c_cpu = _cached_seconds(args.compilation_cache, args.splits)
    print(f"CIFAR10-H-sized sweep with a warm persistent compilation cache "
          f"({args.compilation_cache}; fresh process, program loaded, not "
          f"compiled): {c_wall:.2f} s, CPU {c_cpu:.2f} s "
          f"(cached_cifar10h_sized_sweep_s={c_wall:.3f})")
  print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  print(f"cifar10s_sweep_s={cifar10s_s:.3f} cifar10h_sized_sweep_s={big_s:.3f} "
        f"ratio_vs_loop={ratio:.1f} peak_rss_gib={peak:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
