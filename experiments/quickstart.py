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

from experiments import _cli
from experiments import conformal_deferral


def build_parser() -> argparse.ArgumentParser:
  """The quickstart's parser (every option with help text and default)."""
  p = _cli.make_parser("python -m experiments.quickstart",
                       __doc__.split("\n\n")[0])
  p.add_argument("--out", default="results/quickstart",
                 help="output folder (see python -m "
                 "experiments.conformal_deferral --help).")
  p.add_argument("--splits", type=_cli.positive_int, default=10,
                 help="number of random calibration/test splits.")
  p.add_argument("--seed", type=_cli.seed, default=0,
                 help="seed of the pool, the splits and the tie-breaks, in "
                 "[0, 2**32).")
  p.add_argument("--no-progress", action="store_true",
                 help="hide the progress bars.")
  return p


def _run(args: argparse.Namespace) -> int:
  forwarded = ["--dataset", "synthetic", "--score", "all", "--splits",
               str(args.splits), "--cal-size", "500", "--alpha-grid", "paper",
               "--seed", str(args.seed), "--out", args.out]
  if args.no_progress:
    forwarded.append("--no-progress")
  if args.debug:
    forwarded.append("--debug")
  return conformal_deferral.main(forwarded)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the quickstart; returns the exit code (2 on a bad argument)."""
  return _cli.run_main(build_parser(), _run, argv)


if __name__ == "__main__":
  sys.exit(main())
