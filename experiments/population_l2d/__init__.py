"""L2D-Pop and learning to defer to a population from limited demonstrations.

Reproduces the protocol of Ramgolam, Carneiro & Chen (2025) on top of L2D-Pop
(Tailor et al. 2024) (METHODS.md §3, issue 8). The package follows the flax
examples' layout:

- ``__main__``: the command line (``python -m experiments.population_l2d
  --help``); ``main(argv)`` runs it in-process and returns the exit code.
- ``config``: the documented runs (paper, command, expected shape), the
  training budgets and the conventions (splits, experts, variants, metrics).
- ``run``: data, the synthetic population, the frozen embedding, the label
  generator (FixMatch), the downstream variants and their evaluation.
- ``report``: ``results.json``, the tables and the Figure 2 plots.
"""

import importlib

from experiments.population_l2d.config import DATASETS
from experiments.population_l2d.config import VARIANTS
from experiments.population_l2d.report import results
from experiments.population_l2d.report import table


def __getattr__(name):
  """``Data``, ``load_data``, ``run_seed``, ...: the names of ``run``."""
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
  from experiments.population_l2d import __main__ as cli  # pylint: disable=g-import-not-at-top
  return cli.main(argv)
