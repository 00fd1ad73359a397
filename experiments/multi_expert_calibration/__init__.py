"""Calibration of multi-expert learning to defer: softmax vs one-vs-all.

Reproduces §5.2-5.4 of Verma, Barrejón & Nalisnick (AISTATS 2023;
METHODS.md §5). For every (parameterisation, setting, seed) a model with
``K + J`` outputs is trained on the softmax or the one-vs-all (OvA)
surrogate, then evaluated on the test set:

* the correctness estimates P(m_j = y | x): softmax
  ``q_⊥j / (1 - Σ_j' q_⊥j')`` capped at 1, OvA ``sigmoid(g_⊥j)``;
* the ECE of each expert's estimate against the observed ``1[m_j = y]``
  (equal-width bins, 15 by default; the paper does not give the number);
* the system accuracy with the deferral rule ``argmax_j g_⊥j`` when it beats
  ``max_k g_k``.

Experiments (``--experiment``), expert ``j`` 0-based:

* ``increasing-experts`` (§5.2): setting = number of experts J; each expert
  is an oracle on MoG clusters 3-4 (ids 2, 3) / the first 5 CIFAR-10 classes
  and guesses uniformly over all K classes elsewhere.
* ``expert-dependence`` (§5.3): 4 experts; expert 0 always guesses at
  random; experts 1-3 know the label with probability p = setting on the
  same groups as above and guess elsewhere. The plotted ECE is expert 0's.
* ``specialised`` (§5.4): setting = J; expert e is an oracle on groups
  ``2e, 2e + 1`` (modulo the number of groups).

A guess may hit the true label (accuracy ``p + (1 - p) / K``), as in the
authors' simulators. The package follows the flax examples' layout:

- ``__main__``: the command line (``python -m
  experiments.multi_expert_calibration --help``).
- ``config``: the documented configs (paper, command, expected result).
- ``data``: the data splits of a seed and the simulated experts.
- ``train``: models, training (the runs of a setting at once with
  ``training.SeedTrainer``, or one at a time with ``training.Trainer``) and
  test metrics.
- ``run``: resumable sweeps (re-exports the names of ``data`` and
  ``train``).
- ``report``: ``results.json`` (exactly ``{"dataset", "experiment",
  "results": [{"parameterisation", "setting", "seed", "ece_mean",
  "ece_per_expert", "system_accuracy"}, ...]}``), ``details.json``,
  ``table.md`` and the plots.
"""

from experiments.multi_expert_calibration.config import CONFIGS
from experiments.multi_expert_calibration.config import get_config
from experiments.multi_expert_calibration.report import RESULT_KEYS
from experiments.multi_expert_calibration.report import summarise
from experiments.multi_expert_calibration.report import table
from experiments.multi_expert_calibration.data import EXPERIMENTS
from experiments.multi_expert_calibration.data import Split
from experiments.multi_expert_calibration.data import expert_knowledge
from experiments.multi_expert_calibration.data import simulate_experts
from experiments.multi_expert_calibration.train import evaluate_logits
from experiments.multi_expert_calibration.train import train_and_evaluate
from experiments.multi_expert_calibration.train import train_together


def main(argv=None) -> int:
  """Runs the command line with ``argv``; returns the exit code."""
  # Imported here: importing __main__ from the package would make
  # `python -m experiments.multi_expert_calibration` load it twice.
  from experiments.multi_expert_calibration import __main__ as cli  # noqa: E501  pylint: disable=g-import-not-at-top
  return cli.main(argv)
