"""Speed of the conformal-deferral sweep against a plain numpy loop.

Measures, in one run:
  1. the full sweep (paper alpha grid, 20 splits, LAC/APS/RAPS, the three
     strategies and the baselines) on CIFAR-10S (real annotators, DenseNet-BC
     probabilities; skipped with a message when --data-dir is absent);
  2. the same sweep on a CIFAR10-H-sized simulated pool (10,000 images,
     2,571 annotators x 200 answers, ~51 answers per image; 1,000 calibration
     and 9,000 test points);
  3. the plain per-alpha, per-point numpy loop of
     ``benchmarks/conformal_reference.py`` on the same CIFAR10-H-sized inputs,
     timed on a subset of the alpha grid for one split, one score and one
     strategy, then scaled linearly to the sweep's work (alphas x splits x
     scores x strategies);
  4. the process's peak resident memory.

The last line reads
``cifar10s_sweep_s=<f> cifar10h_sized_sweep_s=<f> ratio_vs_loop=<f> peak_rss_gib=<f>``.
Sweep times include JIT compilation (first call in the process).

Usage: python benchmarks/conformal_sweep.py [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import conformal_reference as ref  # noqa: E402
from experiments import conformal_deferral as exp  # noqa: E402
from l2d_jax import conformal  # noqa: E402
from l2d_jax import data  # noqa: E402
from l2d_jax import experts  # noqa: E402


def _sweep_seconds(pool, *, splits, cal_size, seed=0):
  acc = float((pool.probs.argmax(1) == pool.labels).mean())
  alphas = conformal.paper_alpha_grid(acc)
  t = time.perf_counter()
  per = exp.sweep(pool, scores=list(exp.SCORES), alphas=alphas,
                  n_splits=splits, cal_size=cal_size, seed=seed,
                  progress=False)
  exp.summarise(per, pool=pool, alphas=alphas, scores=list(exp.SCORES))
  return time.perf_counter() - t, alphas


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data-dir", default="../shared/data")
  p.add_argument("--splits", type=int, default=20)
  p.add_argument("--loop-alphas", type=int, default=3,
                 help="alphas of the grid the numpy loop is timed on.")
  args = p.parse_args(argv)

  cifar10s_s = float("nan")
  if (pathlib.Path(args.data_dir) / "cifar10s").exists():
    pool = exp.load_pool("cifar10s", data_dir=args.data_dir,
                         model=exp.MODELS[0])
    cifar10s_s, a10s = _sweep_seconds(pool, splits=args.splits, cal_size=1000)
    print(f"CIFAR-10S sweep: {cifar10s_s:.2f} s ({len(a10s)} alphas x "
          f"{args.splits} splits x 3 scores x 3 strategies, 1,000 test points)")
  else:
    print(f"CIFAR-10S skipped: no data at {args.data_dir}")

  ds = data.synthetic_pool(0, num_images=10_000, num_classes=10,
                           num_experts=2571, answers_per_expert=200)
  has = np.asarray(ds.annotations.mask).any(1)
  big = exp.Pool(ds.probs, ds.labels, ds.annotations, np.flatnonzero(has),
                 None, "synthetic-cifar10h-sized", "synthetic")
  n_ans = int(np.asarray(ds.annotations.mask).sum())
  big_s, alphas = _sweep_seconds(big, splits=args.splits, cal_size=1000)
  print(f"CIFAR10-H-sized sweep: {big_s:.2f} s (10,000 images, {n_ans:,} "
        f"answers from 2,571 annotators; {len(alphas)} alphas x "
        f"{args.splits} splits x 3 scores x 3 strategies)")

  # The numpy loop on one split of the same pool, a few alphas, LAC.
  rng = np.random.default_rng(0)
  cal = exp.stratified_sample(rng, big.cal_candidates, big.labels, 1000)
  test = np.setdiff1d(big.cal_candidates, cal)
  ann = big.annotations
  conf = np.asarray(experts.confusion_matrices(ann, big.labels))
  sub = np.linspace(0, len(alphas) - 1, args.loop_alphas).astype(int)
  t = time.perf_counter()
  ref.deferral_loop(big.probs[cal], big.labels[cal], big.probs[test],
                    big.labels[test], np.asarray(ann.annotator)[test],
                    np.asarray(ann.answer)[test], np.asarray(ann.mask)[test],
                    conf, alphas[sub], score="lac",
                    costs=np.zeros(ann.num_experts))
  loop_s = time.perf_counter() - t
  scale = (len(alphas) / len(sub)) * args.splits * 3 * 3
  loop_full = loop_s * scale
  ratio = loop_full / big_s
  print(f"numpy loop: {loop_s:.2f} s for {len(sub)} alphas x 1 split x 1 "
        f"score x 1 strategy; scaled linearly x{scale:.0f} to the sweep's "
        f"work = {loop_full:.0f} s (an estimate, not a measured full run)")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"cifar10s_sweep_s={cifar10s_s:.3f} cifar10h_sized_sweep_s={big_s:.3f} "
        f"ratio_vs_loop={ratio:.1f} peak_rss_gib={peak:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
