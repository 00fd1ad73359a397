"""Expert-agnostic learning to defer (EA-L2D) on simulated experts.

Reproduces the protocol of the EA-L2D paper (METHODS.md §2, issue 9) against
L2D-Pop (NP+Attention), Pop-Avg and multi-expert softmax L2D. The package
follows the flax examples' layout:

- ``__main__``: the command line (``python -m experiments.ea_l2d --help``);
  ``main(argv)`` runs it in-process and returns the exit code.
- ``config``: the documented runs (paper, command, expected shape), the
  training budgets and the conventions (inputs, splits, experts, methods,
  metrics, OOD readings).
- ``run``: the studies rq1, rq2, rq3 and the LCB ablation (simulated
  experts, which method is trained and scored on whom); it re-exports the
  public names of the modules below.
- ``data``: input vectors and splits (digits, CIFAR-10's cached frozen
  embedding, MedMNIST).
- ``nets``: the models of every method on a shared MLP backbone.
- ``training``: jitted training (contexts redrawn every step) and
  evaluation on test experts.
- ``scoring``: AURSAC / AURDAC, routed and per expert, and the curves.
- ``report``: ``results.json``, the tables and the PNG curves.
"""

from experiments import _cli
from experiments.ea_l2d.config import DATASETS
from experiments.ea_l2d.config import METHODS
from experiments.ea_l2d.config import STUDIES
from experiments.ea_l2d.report import results
from experiments.ea_l2d.report import table


# Names of `run` reached lazily, and the command line.
__getattr__, main = _cli.package_entry_points(__name__)
