"""Training-free conformal deferral to real annotators by segregativity.

Reproduces the protocol of "Conformal prediction for deferral to human
experts: segregativity" (METHODS.md §1). The package follows the flax
examples' layout:

- ``__main__``: the command line (``python -m experiments.conformal_deferral
  --help``); ``main(argv)`` runs it in-process and returns the exit code.
- ``config``: the documented runs (paper, command, expected result) and the
  conventions (order statistic, ties at q̂, crossing label).
- ``run``: loads a pool and runs the sweep; returns per-split arrays.
- ``report``: ``results.json`` / ``details.json``, tables and plots.
"""

import importlib

__all__ = [
    # configuration
    "DATASETS",
    "MODELS",
    "SCORES",
    "STRATEGIES",
    # report
    "summarise",
    "table1",
    # command line
    "main",
    # run's names (Pool, load_pool, stratified_sample, sweep) via __getattr__
]

from experiments.conformal_deferral.config import DATASETS
from experiments.conformal_deferral.config import MODELS
from experiments.conformal_deferral.config import SCORES
from experiments.conformal_deferral.config import STRATEGIES
from experiments.conformal_deferral.report import summarise
from experiments.conformal_deferral.report import table1


def __getattr__(name):
  """``Pool``, ``load_pool``, ``sweep``, ...: the names of ``run``."""
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
  # Imported here: importing __main__ from the package would make
  # `python -m experiments.conformal_deferral` load it twice.
  from experiments.conformal_deferral import __main__ as cli  # pylint: disable=g-import-not-at-top
  return cli.main(argv)
