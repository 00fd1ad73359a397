"""L2D-Pop and learning to defer to a population from limited demonstrations.

Reproduces the protocol of Ramgolam, Carneiro & Chen (2025) on top of L2D-Pop
(Tailor et al. 2024) (METHODS.md §3, issue 8). The package follows the flax
examples' layout:

- ``__main__``: the command line (``python -m experiments.population_l2d
  --help``); ``main(argv)`` runs it in-process and returns the exit code.
- ``config``: the documented runs (paper, command, expected shape), the
  training budgets and the conventions (splits, experts, variants, metrics).
- ``run``: one seed and every seed (``run_seed``, ``run``); re-exports the
  names of the parts below.
- ``data``: data sets, splits, the synthetic population, labelled points.
- ``embedding``: the frozen embedding φ (trained once, cached), the
  backbones, the cached augmented views.
- ``label_generator``: the expert-correctness predictor (FixMatch) and the
  pseudo expert labels.
- ``downstream``: L2D-Pop (NP, NP+Attention), Single-L2D, Finetune: their
  training and evaluation.
- ``report``: ``results.json``, the tables and the Figure 2 plots.
"""

from experiments import _cli
from experiments.population_l2d.config import DATASETS
from experiments.population_l2d.config import VARIANTS
from experiments.population_l2d.report import results
from experiments.population_l2d.report import table


# Names of `run` reached lazily, and the command line.
__getattr__, main = _cli.package_entry_points(__name__)
