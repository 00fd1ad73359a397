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

from experiments import _cli
from experiments.topk_l2d.config import DATASETS
from experiments.topk_l2d.config import METHODS
from experiments.topk_l2d.report import results
from experiments.topk_l2d.report import table


# Names of `run` reached lazily, and the command line.
__getattr__, main = _cli.package_entry_points(__name__)
