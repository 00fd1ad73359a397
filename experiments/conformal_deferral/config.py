"""Configurations of the conformal-deferral experiment: paper, commands, results.

Paper: "Conformal prediction for deferral to human experts: segregativity"
(METHODS.md §1). For many calibration/test splits and a grid of miscoverage
levels α, a fixed model builds LAC/APS/RAPS prediction sets; the model answers
when its set is a singleton, otherwise one annotator of the image answers,
chosen by segregativity (how well the annotator separates the labels of the
set) or by a naive rule (most accurate, random).

Conventions (the ones the sets were checked against MAPIE, TorchCP, puncc and
crepes with):

- Quantile: q̂ is the exact ⌈(n + 1)(1 − α)⌉-th smallest of the n calibration
  scores (an order statistic, not an interpolated quantile); +inf when that
  rank exceeds n, so the set is every label.
- Ties at q̂: a label whose score equals q̂ is in the set (score <= q̂).
- Crossing label: APS and RAPS keep the label whose cumulative score first
  crosses q̂ (``include_crossing=True``, non-randomised, never empty), in
  probability order (a tie in probability is broken by label index); LAC does
  not need one.
- RAPS: (k_reg, λ) tuned per α on ``RAPS_TUNE_FRACTION`` of each calibration
  draw, calibrated on the rest (so ``--cal-size`` >= ``MIN_CAL_SIZE['raps']``).
- Splits: a stratified calibration draw per split (largest-remainder class
  counts); on CIFAR-10S the calibration images are CIFAR-10 test images outside
  CIFAR-10S and the test set is the 1,000 CIFAR-10S images.
- α_opt: the α with the best mean accuracy over the splits, chosen on the
  same splits it is scored on (the paper's figure, optimistic); the
  cross-fitted figure chooses α on one half of each split's annotated test
  points and scores it on the other half.
- ± in tables and shaded bands in plots: one standard deviation over splits
  (ddof=1), not a confidence interval.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from l2d_jax import deferral

DATASETS = ("cifar10s", "cifar10h-raw", "imagenet16h", "synthetic", "byo")
DATASETS_WITH_DATA_DIR = ("cifar10s", "cifar10h-raw", "imagenet16h")
MODELS = ("densenet-bc-L190-k40", "preresnet-110", "resnet-110")
SCORES = ("lac", "aps", "raps")
STRATEGIES = deferral.STRATEGIES  # the order of the library sweep's outputs
STRATEGY_NAMES = {"segregativity": "Segregativity-Based",
                  "naive_most_accurate": "Naive Most Accurate",
                  "naive_random": "Naive Random",
                  "segregativity_lcb": "Segregativity-LCB"}
TIE_BREAKS = deferral.TIE_BREAKS
ABLATIONS = ("f_kept", "n_shots")
F_KEPT_GRID = tuple(float(v) for v in np.round(np.arange(1.0, 0.2, -0.05), 2))
N_SHOTS_GRID = (5, 10, 15, 20)
RAPS_TUNE_FRACTION = 0.3
# RAPS tunes on max(2, round(0.3 n)) points and calibrates on the rest (>= 1).
MIN_CAL_SIZE = {"lac": 1, "aps": 1, "raps": 3}
SYNTHETIC_DATASETS = ("synthetic",)


@dataclasses.dataclass(frozen=True)
class Config:
  """The options of one run (the CLI's defaults; see ``--help``)."""

  dataset: str = "synthetic"
  data_dir: str = "../shared/data"
  model: str = MODELS[0]
  score: str = "all"
  splits: int = 20
  cal_size: int = 1000
  alphas: tuple[float, ...] | None = None
  alpha_grid: str = "paper"
  f_kept: float | None = None
  n_shots: int | None = None
  ablation: str | None = None
  ablation_grid: str | None = None
  tie_break: str = "random"
  costs: str | None = None
  lcb_lambda: float = 1.0
  lcb_prior_a: float = 1.0
  lcb_prior_b: float = 1.0
  raw_csv: str | None = None
  human_csv: str | None = None
  byo_dir: str | None = None
  seed: int = 0
  out: str = "results/conformal_deferral"


DEFAULT = Config()


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A documented run: its command and what it should reproduce.

  Attributes:
    description: what the run is.
    command: the shell command, run from the repository root.
    expected: the published numbers it reproduces (accuracy at α_opt in %,
      mean ± std over splits, by score and strategy), or ``{}``.
    tolerance: how far a rerun may move a mean (points of %): another
      ``--seed`` draws other splits.
  """

  description: str
  command: str
  expected: dict = dataclasses.field(default_factory=dict)
  tolerance: float = 0.5


_C10S = ("python -m experiments.conformal_deferral --dataset cifar10s "
         "--data-dir ../shared/data")

EXPERIMENTS = {
    "cifar10s_densenet": Experiment(
        description="CIFAR-10S real annotators, DenseNet-BC-L190-k40 "
        "probabilities (Kerrigan et al. 2021), 20 splits, paper α grid "
        "(README Table 1).",
        command=_C10S + " --model densenet-bc-L190-k40 --score all "
        "--splits 20 --alpha-grid paper "
        "--out results/cifar10s_densenet-bc-L190-k40",
        expected={
            "model_accuracy": 90.60, "best_expert_accuracy": 92.85,
            "random_expert_accuracy": 83.76,
            "accuracy_at_opt": {
                "lac": {"naive_random": (93.40, 0.50),
                        "naive_most_accurate": (93.64, 0.22),
                        "segregativity": (93.50, 0.22)},
                "aps": {"naive_random": (93.42, 0.51),
                        "naive_most_accurate": (93.64, 0.19),
                        "segregativity": (93.44, 0.37)},
                "raps": {"naive_random": (93.38, 0.49),
                         "naive_most_accurate": (93.61, 0.22),
                         "segregativity": (93.37, 0.42)}},
            "alpha_opt": {"lac": {"segregativity": 0.093},
                          "aps": {"segregativity": 0.933},
                          "raps": {"segregativity": 0.943}},
        }),
    "cifar10s_preresnet": Experiment(
        description="As cifar10s_densenet with PreResNet-110 (model 88.1%).",
        command=_C10S + " --model preresnet-110 --score all --splits 20 "
        "--alpha-grid paper --out results/cifar10s_preresnet-110",
        expected={"accuracy_at_opt": {
            "lac": {"segregativity": (91.89, 0.25)},
            "aps": {"naive_most_accurate": (91.92, 0.28)},
            "raps": {"naive_most_accurate": (91.89, 0.28)}}}),
    "cifar10s_resnet": Experiment(
        description="As cifar10s_densenet with ResNet-110 (model 85.5%).",
        command=_C10S + " --model resnet-110 --score all --splits 20 "
        "--alpha-grid paper --out results/cifar10s_resnet-110",
        expected={"accuracy_at_opt": {
            "lac": {"segregativity": (90.61, 0.43)},
            "aps": {"naive_most_accurate": (90.78, 0.30)}}}),
    "cifar10s_ablation_f_kept": Experiment(
        description="Keep only the least accurate fraction of annotators "
        "(APS, DenseNet); the sweep stops at f_kept = 0.6, where test images "
        "lose their last annotator.",
        command=_C10S + " --score aps --splits 20 --ablation f_kept "
        "--out results/cifar10s_ablation",
        expected={"segregativity_at_f_kept": {1.0: 93.44, 0.9: 93.10,
                                              0.8: 92.81, 0.65: 92.69}}),
    "cifar10s_ablation_n_shots": Experiment(
        description="Know each annotator from n answers per true label (APS, "
        "DenseNet).",
        command=_C10S + " --score aps --splits 20 --ablation n_shots "
        "--ablation-grid 1,2,3,5,10 --out results/cifar10s_ablation",
        expected={"segregativity_at_n_shots": {1: 93.24, 3: 93.25, 5: 93.33,
                                               10: 93.44}}),
    "quickstart": Experiment(
        description="The in-package simulated pool (no data needed); a check "
        "that the machinery runs, not a result about people.",
        command="python -m experiments.quickstart --out results/quickstart"),
}


def min_cal_size(scores) -> int:
  """The smallest ``--cal-size`` the given scores can work with."""
  return max(MIN_CAL_SIZE[s] for s in scores)
