"""Top-k and Top-k(x) two-stage learning to defer to a set of agents.

Reproduces the protocol of "Top-k and Top-k(x) two-stage L2D" (METHODS.md §4,
issue 10). The package follows the flax examples' layout:

- ``__main__``: the command line (``python -m experiments.topk_l2d --help``);
  ``main(argv)`` runs it in-process and returns the exit code.
- ``config``: the documented runs (paper, command, expected shape), the
  training budgets and the conventions (splits, regions, costs, metrics).
- ``run``: builds the pool of agents, trains rejector and selectors, and
  evaluates Top-k, Top-k(x), Top-1 L2D, random allocation and the oracle.
- ``report``: ``results.json``, the table and the budget–performance plot.
"""

import importlib

from experiments.topk_l2d.config import DATASETS
from experiments.topk_l2d.config import METHODS
from experiments.topk_l2d.report import results
from experiments.topk_l2d.report import table


def __getattr__(name):
  """``Pool``, ``load_pool``, ``run_seed``, ...: the names of ``run``."""
  if name.startswith("__") or name == "run":
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  run = importlib.import_module(f"{__name__}.run")
  try:
    return getattr(run, name)
  except AttributeError:
    raise AttributeError(
        f"module {__name__!r} has no attribute {name!r}") from None


def main(argv=None) -> int:
  """Runs the command line with ``argv``; returns the exit code."""
  from experiments.topk_l2d import __main__ as cli  # pylint: disable=g-import-not-at-top
  return cli.main(argv)
