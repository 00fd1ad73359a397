"""Configurations of the Top-k / Top-k(x) experiment: paper, commands, results.

Paper: "Top-k and Top-k(x) two-stage learning to defer to a set of agents"
(METHODS.md §4, issue 10). A pool of A = 6 fixed agents (agent 0 the main
model) has consultation costs β; a rejector r (an MLP with A outputs) is
trained once with the k-independent surrogate Σ_j τ_j·Φ^ν(r, j),
τ_j = Σ_{i≠j} c_i, and read as Top-k (the k highest-scoring agents) for
k = 1..A; a selector over cardinalities is then trained on the frozen
rejector for each λ of a sweep (Top-k(x)).

Conventions (the choices the paper leaves open, stated here once):

- Splits. California Housing (20,640 blocks): a fixed permutation
  (``AGENT_SEED``) cut into 40% agent training, 30% deferral training
  (rejector and selector), 10% deferral validation and 20% test. The agents
  never see the deferral or test points, so the costs the rejector learns
  from are out-of-sample. Features are standardised with the agent-training
  mean/std and clipped to ±5 (a few blocks lie more than 100 standard
  deviations out, e.g. AveOccup up to 1,243, where an MLP extrapolates to
  squared errors in the thousands that would dominate every RMSE); the target is the median house value in units of $100,000 (the
  paper's unit), not standardised.
- Regions. The agent-training points are ranked by ``latitude - longitude``
  (north-west to south-east along the coast). Agent j trains on the points
  with rank quantile in ``[0.14·j, 0.14·j + 0.30]``: six bands of 30% each,
  neighbours sharing 16% of the points, no agent seeing all of California.
  Each agent keeps 10% of its band for model selection (the epoch with the
  lowest RMSE on it, as in the paper).
- Agents. MLP regressors (8 → 64 → 64 → 1, ReLU), 30 epochs, batch 256,
  Adam 1e-3, squared error. One fixed pool (``AGENT_SEED``) for every seed:
  ``--seeds`` varies the rejector, the selectors and the random baseline (the
  paper: "a fixed agent distribution").
- Costs. c_j = α_j·ℓ(m_j(x), y) + β_j with α = 1, β = (0, .05, .10, .15,
  .20, .25) (agent 0, the main model, is free); ℓ is the squared error on
  the $100,000 scale (regression) or the 0-1 loss (classification).
- Rejector. MLP (D → 64 → 64 → A), comp-sum ν = 1 (logistic, the paper's
  "log-softmax") inside the τ-weighted surrogate, Adam with a cosine
  schedule, batch 256; the epoch with the lowest surrogate on the
  validation split is kept.
- Top-1 two-stage L2D (``top1``). The two-stage multi-expert surrogate of
  Mao et al. (2024) is the same τ-weighted comp-sum surrogate (it does not
  depend on k), so the Top-1 baseline is the rejector's argmax: the same
  rejector read at k = 1, reported as its own method.
- Top-k(x). For each selector metric d and each λ of ``LAMBDAS`` a selector
  (same MLP architecture, A outputs: cardinalities 1..A) is trained on the
  frozen rejector with the library's normalised cost-sensitive comp-sum
  surrogate of the cardinality loss d(A_k(x), y) + λ·Σ_{i≤k} β_{r(i)}
  (ξ linear), normalised to [0, 1] by a global scale:
  c̄_k = min(c_k / S_λ, 1), S_λ the 99th percentile of the training
  cardinality costs for that λ and metric (the library's ``scale=``; a
  global scale keeps the surrogate's minimiser at argmin_k E[c_k | x] for
  costs below S_λ and moves k(x) smoothly with λ; the top 1% are clipped so
  that rare huge squared errors do not flatten every other weight).
  ``--selector-scale minmax`` normalises per example instead (min-max).
  The selectors of all λ are trained at once (``jax.vmap`` over λ).
- Metrics. Regression: RMSE of the best agent of the set (lowest squared
  error, as the library defines it), of the softmax(rejector score)-weighted
  average over the selected agents, and of the uniform average.
  Classification: top-k accuracy (y among the answers), majority vote and
  softmax(rejector score)-weighted vote over the selected agents (tie rules:
  the library's docstrings).
- Budget. E[Σ_{i≤k(x)} β_{r(i)}] over the test points, β₀ included (it is
  0 here); E[k(x)].
- Random allocation: per k, ``RANDOM_DRAWS`` = 50 draws of k distinct agents
  uniformly per query (ordered by the rejector's scores, which also weight
  the weighted metrics); results are the mean over the draws.
- Oracle: per k, the k agents with the lowest cost in hindsight (ordered and
  weighted by −cost).
- CIFAR-10. Agent 0 is a SmallCNN trained on CIFAR-10 training images; the
  five experts are simulated (``experts.noisy_experts``, expert j keyed by
  ``fold_in(key, j)``): correct with probability ``EXPERT_P_CORRECT`` on 40%
  of the classes (4 of CIFAR-10's, neighbours sharing 2) and uniform guesses
  elsewhere. The
  rejector and selector run on the 10,000 CIFAR-10 test images (50% deferral
  training, 10% validation, 40% test) and read frozen features: the main
  model's 10 class logits. The paper's selector uses CLIP features, which
  cannot be downloaded here: we use our own frozen features and say so.
- SVHN and CIFAR-100: loaders exist but the data is not in ../shared/data;
  the command names the missing path and --data-dir.
- ± in tables and error bars in plots: one standard deviation over seeds
  (ddof=1), not a confidence interval.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DATASETS = ("california_housing", "cifar10", "svhn", "cifar100")
REGRESSION = ("california_housing",)
CONFIGS = ("cpu", "gpu")
METHODS = ("topk", "topkx", "top1", "random", "oracle")
REGRESSION_METRICS = ("best_agent_rmse", "weighted_average_rmse",
                      "uniform_average_rmse")
CLASSIFICATION_METRICS = ("topk_accuracy", "majority_vote_accuracy",
                          "weighted_vote_accuracy")
NUM_AGENTS = 6
BETA = tuple(float(b) for b in np.round(np.arange(NUM_AGENTS) * 0.05, 2))
ALPHA = (1.0,) * NUM_AGENTS
LAMBDAS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
RANDOM_DRAWS = 50
AGENT_SEED = 0
NU = 1.0
# The selector's surrogate normalises the cardinality loss by a global scale
# S_λ: this quantile of the training cardinality costs (per λ and metric),
# clipped at 1 above it (``losses.cardinality_surrogate(scale=S_λ)``).
SELECTOR_SCALE_QUANTILE = 0.99
SELECTOR_SCALES = ("quantile", "minmax")

# California Housing: the splits and regions documented above.
CAL_SPLIT = {"agents": 0.4, "train": 0.3, "val": 0.1, "test": 0.2}
FEATURE_CLIP = 5.0
REGION_WIDTH = 0.30
REGION_STEP = 0.14
AGENT_VAL_FRACTION = 0.1

# CIFAR-10: simulated experts.
EXPERT_P_CORRECT = 0.95
EXPERT_CLASS_FRACTION = 0.4
CIFAR_SPLIT = {"train": 0.5, "val": 0.1, "test": 0.4}


@dataclasses.dataclass(frozen=True)
class Budget:
  """The training budget of one ``--config``.

  Attributes:
    agent_epochs: epochs of each regression agent (the paper: 30).
    agent_batch: batch size of the agents (the paper: 256).
    agent_lr: Adam learning rate of the agents.
    rejector_epochs: epochs of the rejector (the paper: 100).
    selector_epochs: epochs of each selector (the paper: 100).
    batch: batch size of rejector and selector (the paper: 256).
    lr: peak learning rate of rejector and selector (Adam, cosine).
    hidden: hidden widths of agents, rejector and selector MLPs.
    cnn_epochs: epochs of the CIFAR-10 main model (SmallCNN).
    cnn_train_images: CIFAR-10 training images the main model sees
      (``None``: all 50,000).
    cnn_batch: its batch size.
  """

  agent_epochs: int = 30
  agent_batch: int = 256
  agent_lr: float = 1e-3
  rejector_epochs: int = 100
  selector_epochs: int = 100
  batch: int = 256
  lr: float = 1e-3
  hidden: tuple[int, ...] = (64, 64)
  cnn_epochs: int = 10
  cnn_train_images: int | None = None
  cnn_batch: int = 128


BUDGETS = {
    # Minutes on two shared CPU cores.
    "cpu": Budget(rejector_epochs=40, selector_epochs=30, cnn_epochs=3,
                  cnn_train_images=20000),
    # The paper's epochs (California Housing) and a longer main model.
    "gpu": Budget(),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """The options of one run (the CLI's defaults; see ``--help``)."""

  dataset: str = "california_housing"
  data_dir: str = "../shared/data"
  config: str = "cpu"
  seeds: int = 3
  first_seed: int = 0
  lambdas: tuple[float, ...] = LAMBDAS
  selector_scale: str = "quantile"
  out: str = "results/topk_l2d"
  cache_dir: str | None = None


DEFAULT = Config()


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A documented run: its command and the shape it should reproduce.

  Attributes:
    description: what the run is.
    command: the shell command, run from the repository root.
    expected: the paper's qualitative claims (its numbers were lost in the
      text extraction), by metric.
    measured: what a run of ``command`` here gave (test RMSE in $100k or
      accuracy, mean ± std over seeds; B = expected budget), by metric.
  """

  description: str
  command: str
  expected: dict = dataclasses.field(default_factory=dict)
  measured: dict = dataclasses.field(default_factory=dict)


EXPERIMENTS = {
    "california_housing_cpu": Experiment(
        description="California Housing, 6 regional MLP agents, β = 0, .05, "
        "…, .25, squared-error costs; CPU budget, 3 seeds.",
        command="python -m experiments.topk_l2d --dataset california_housing "
        "--data-dir ../shared/data --config cpu --seeds 3 "
        "--out results/topk_california_housing_cpu",
        expected={
            "best_agent_rmse": "Top-k(x) reaches Top-k's best RMSE at a lower "
            "expected budget; Top-1 L2D worse than both.",
            "uniform_average_rmse": "more agents can hurt (not monotone in "
            "k); Top-k(x) beats every fixed k.",
            "weighted_average_rmse": "as uniform; weighting by rejector "
            "scores beats the uniform average.",
        },
        measured={
            "best_agent_rmse": "Top-1 0.6485 ± 0.0058 (B 0.098); Top-k "
            "falls monotonically to 0.3802 at k = 6 (B 0.75); Top-k(x) lies "
            "on or just below the Top-k curve, best 0.4093 ± 0.0041 at "
            "λ = 0 (B 0.552, E[k] 4.64): never matches k = 6.",
            "weighted_average_rmse": "Top-k best k = 2: 0.6373 ± 0.0028 "
            "(B 0.206), k = 6 0.7694; Top-k(x) 0.6400 ± 0.0043 at λ = 1 "
            "(B 0.143, E[k] 1.49), best 0.6340 ± 0.0077 at λ = 0 (B 0.332).",
            "uniform_average_rmse": "Top-k best k = 2: 0.6379 ± 0.0029 "
            "(B 0.206), k = 6 0.8341 (worse than k = 1); Top-k(x) 0.6401 ± "
            "0.0052 at λ = 0.5 (B 0.193), best 0.6371 ± 0.0068 at λ = 0.",
        }),
    "california_housing_gpu": Experiment(
        description="As california_housing_cpu with the paper's 100 "
        "rejector/selector epochs.",
        command="python -m experiments.topk_l2d --dataset california_housing "
        "--data-dir ../shared/data --config gpu --seeds 4 "
        "--out results/topk_california_housing_gpu"),
    "cifar10_cpu": Experiment(
        description="CIFAR-10: SmallCNN main model + 5 simulated experts "
        "(p = 0.95 on 4 classes each); rejector/selector on the main model's "
        "logits (our frozen features, not CLIP).",
        command="python -m experiments.topk_l2d --dataset cifar10 "
        "--data-dir ../shared/data --config cpu --seeds 2 "
        "--out results/topk_cifar10_cpu",
        expected={
            "topk_accuracy": "increases with k; Top-k(x) reaches it at a "
            "lower budget.",
            "majority_vote_accuracy": "not monotone in k; Top-k(x) best.",
            "weighted_vote_accuracy": "above majority vote.",
        },
        measured={
            "topk_accuracy": "main model alone 0.466, experts 0.43-0.45; "
            "Top-1 0.7105 ± 0.0081, Top-k 0.8635 (k = 2) to 0.9995 (k = 6); "
            "Top-k(x) on the Top-k curve, 0.9915 at λ = 0 (B 0.582).",
            "majority_vote_accuracy": "monotone here: Top-k 0.7105 (k = 1, "
            "2) to 0.8806 ± 0.0009 (k = 6, B 0.75); Top-k(x) 0.7514 ± "
            "0.0034 at B 0.208 (Top-k k = 2: 0.7105 at B 0.211), 0.8764 at "
            "λ = 0 (B 0.628).",
            "weighted_vote_accuracy": "Top-k k = 6 0.8887 ± 0.0018; Top-k(x) "
            "above the Top-k curve at budgets 0.2-0.4 (0.7437 ± 0.0042 at B "
            "0.204 vs 0.7105 for k = 2 at B 0.211), best 0.8801 at λ = 0.",
        }),
}
