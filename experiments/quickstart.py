"""Quickstart: conformal deferral on the embedded simulated pool.

Runs the full conformal-deferral pipeline (LAC/APS/RAPS sets, segregativity
and the naive strategies, baselines, significance tests, Table 1, plots) on a
pool simulated in-package (``l2d_jax.data.synthetic_pool``: 2,000 images,
100 annotators): no download and no ``../shared`` data needed. The numbers are
a check that the machinery works, not a result about real people.

  python -m experiments.quickstart [--out results/quickstart] [--splits 10]
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from experiments import conformal_deferral


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
      prog="python -m experiments.quickstart",
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--out", default="results/quickstart")
  p.add_argument("--splits", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-progress", action="store_true")
  args = p.parse_args(argv)
  forwarded = ["--dataset", "synthetic", "--score", "all", "--splits",
               str(args.splits), "--cal-size", "500", "--alpha-grid", "paper",
               "--seed", str(args.seed), "--out", args.out]
  if args.no_progress:
    forwarded.append("--no-progress")
  return conformal_deferral.main(forwarded)


if __name__ == "__main__":
  sys.exit(main())
