"""Configurations of the L2D-Pop / limited-demonstrations experiment.

Paper: "Learning to Defer to a Population with Limited Demonstrations"
(Ramgolam, Carneiro & Chen 2025; METHODS.md §3, issue 8), on top of L2D-Pop
(Tailor et al., AISTATS 2024). A label generator learns, from a budget of
``L = K·k`` labelled points per seen expert, whether an expert answers a query
correctly given a few of its demonstrations (its context set); its pseudo
expert labels then train the downstream L2D-Pop, which is compared with an
oracle trained on the true expert labels.

Command (digits, minutes on two shared CPU cores)::

  python -m experiments.population_l2d --dataset digits --config cpu \\
      --seeds 2 --budget-k 2,10,50 --variant all --labels both \\
      --out results/population_digits_cpu

Expected shape (paper, CIFAR-10, H = 8, L = 100): classifier alone 76.3%,
expert alone 82.0%, NP+Attention 88.8%, NP 89.1%, Finetune and Single 85.8%;
pseudo labels within a few points of the oracle; the L2D-Pop variants ahead
of Single/Finetune on unseen experts. Digits are not in the paper; what we
measure is in ``EXPERIMENTS[...].measured``.

Conventions (the choices the paper leaves open, stated once):

- Splits. digits (1,797 images): a fixed permutation (``DATA_SEED``) cut
  into 55% training, 15% validation, 30% test. CIFAR-10: the official
  training set cut 90/10 into training and validation, the official test
  set for testing (the cpu config subsamples them, ``Budget``). Validation
  and test are each halved into a *context pool* (where context sets are
  drawn from) and *queries*, so a query is never in its own context set.
- Experts. 10 synthetic experts (``experts.population_answers``), expert e
  knows the ``H`` classes of its oracle set (``--oracle-sets cyclic``: e, e+1,
  ..., e+H-1 mod K) and answers uniformly over the wrong labels elsewhere
  (``--wrong-answers other``; ``all`` draws over all K, true label included).
  The even experts 0, 2, ..., 8 are *seen* (their labels train the label
  generator and the downstream models), the odd ones *unseen* (only met at
  test time). With cyclic sets and H = 8 the seen experts are weak on the
  class pairs {8, 9}, {0, 1}, ..., {6, 7} and the unseen ones on {9, 0},
  {1, 2}, ...: every class has a seen expert weak on it, but each unseen
  expert's pair is new, so it must be read from the context. (Taking experts
  0-4 as seen would leave the unseen experts weak on classes 4-7, on which no
  seen expert ever errs; a first try that way gave NP 79% system accuracy on
  unseen experts, below Single.) Each seed draws new answers (the key of the
  population is the seed's).
- Frozen embedding φ of the label generator: digits, an MLP (64 → 64 → 32,
  ReLU) on the 8x8 pixels; CIFAR-10, a small CNN (two conv blocks of
  ``embed_width`` and twice as many channels, the last map flattened into a
  linear layer to ``feature_dim``: ``embed_head="flatten"`` in the cpu
  config, a global mean pool in the gpu one); trained with cross-entropy on
  the ground truth of the training split (weak augmentation, best
  validation epoch), frozen, its features of the un-augmented images cached
  (CIFAR-10: ``.npy`` under ``--cache-dir``, in a folder keyed by every
  setting φ depends on, ``run.embedding_spec``).
- Label generator: ``models.ExpertCorrectnessPredictor`` (attention encoder),
  every seen expert in every batch, a fresh context draw of ``B = 2·K``
  points from the expert's labelled points per step. Supervised CE on a batch
  of labelled points (weak augmentation: random crop, flips only for natural
  images) + λ_u·FixMatch on μ = 7 times as many unlabelled points (strong
  augmentation: RandAugment-style ops + cutout), τ = 0.95, λ_u = 1; optional
  EMA of the weights (``--ema``). Fixed number of steps (there are no extra
  labels to early-stop on). Pseudo expert labels: y where predicted correct,
  else uniform over the other classes (``--wrong-answers``); on the L
  labelled points the true answers are kept (they are known).
  ``correctness_accuracy``: accuracy of the predicted correctness on the test
  queries, each with a context of ``2·K`` test-pool points and true answers,
  for seen and unseen experts.
- Downstream models. ``models.PopulationL2D`` on a deliberately fallible
  backbone (the paper: "a small, fallible CNN"): digits, the 8x8 image
  average-pooled to 4x4 and an MLP (16 → 32 → 32 features), ~86% alone;
  CIFAR-10, a small CNN. Variants: ``np_attention`` (attention encoder),
  ``np`` (mean-pool encoder), ``single`` (no context: Single-L2D, pooled
  experts), ``finetune`` (Single-L2D fine-tuned on each expert's context set
  at test time). Trained with ``losses.population_l2d_loss`` on every seen
  expert in every batch, each with a fresh context draw from the training
  split of size uniform in ``[CONTEXT_MIN, 50]``; queries weakly augmented;
  the best step on validation system accuracy (seen experts, labels of the
  same kind as training: pseudo or true) is kept. The downstream encoders
  are trained from scratch (not shared with the label generator, whose
  encoder reads φ features; the paper reuses it): pseudo and oracle runs are
  alike in this.
- Downstream inputs (``Budget.downstream_inputs``). ``"images"`` (digits
  cpu, every gpu config: the paper's protocol, a fallible backbone on the
  pixels of queries and context points). ``"features"`` (the CIFAR-10 cpu
  config, issue 8's "frozen small CNN embedding cached once to .npy"): every
  downstream model (NP, NP+Attention, Single, Finetune and the classifier
  alone) reads the cached frozen φ features ``[N, D]`` of the un-augmented
  images, for the queries AND the context points, through a small ReLU MLP
  backbone (D → hidden → hidden); queries are not augmented (there is no
  pixel to augment). The label generator's queries also read cached
  features: FixMatch's weak and strong views are ``FEATURE_VIEWS`` weak and
  strong augmentations of every training image pushed once through φ and
  cached (``weak_views.npy``, ``strong_views.npy``), a step drawing one view
  per point. The downstream models thus start from the same frozen φ as the
  label generator (closer to the paper's reuse of it), and φ's errors are
  the classifier's: the downstream "fallible" backbone is φ + an MLP. Why:
  a step of L2D-Pop on images pushes 5 experts x up to 50 context images
  through the CNN (3.5 s CPU per step, ~8.7 CPU-hours per seed).
- Finetune. Every parameter of the trained Single-L2D is fine-tuned with Adam
  on the 50 context points (full batch). Steps and learning rate come from
  ``FINETUNE_STEPS`` x ``FINETUNE_LRS``, chosen on validation *context* data
  only: for each seen expert, fine-tune on a 50-point context drawn from the
  validation context pool and score system accuracy on the validation
  queries (labels as in training). The official code chooses them with the
  true labels of the evaluation set, which leaks; we do not.
- Evaluation. Each expert (seen and unseen) is evaluated with
  ``EVAL_DRAWS`` context sets of 50 points from the test context pool (true
  answers); the test queries are split into ``EVAL_DRAWS`` chunks, chunk r
  answered with draw r (Finetune fine-tunes one model per draw). Decision
  rule ``deferral.argmax_deferral`` (defer iff g_⊥ > max_k g_k). System
  accuracy, deferral rate and expert accuracy on the deferred points are
  pooled over the (expert, query) pairs of the seen experts, the unseen ones,
  and all ten (``null`` when nothing was deferred).
- Baselines. ``classifier_alone``: the fallible backbone + linear head
  trained with cross-entropy on the ground truth (mean over seeds);
  ``expert_alone``: mean accuracy of the ten experts on the test queries
  (mean over seeds).
- Oracle runs do not depend on the budget L: they are trained once per seed
  and written under every budget (the dashed lines of Figure 2 are flat).
- ``--expert-strength`` takes a list: one H writes ``results.json`` into
  ``--out``; several (``2,5,8``) write each H into ``--out/h<H>/`` and the
  expert-strength table ``expert_strength.md`` into ``--out``.
- ± in tables and bands in plots: one standard deviation over seeds (ddof=1).
"""

from __future__ import annotations

import dataclasses

DATASETS = ("digits", "cifar10", "fashion_mnist", "gtsrb")
CONFIGS = ("cpu", "gpu")
VARIANTS = ("np_attention", "np", "finetune", "single")
LABELS = ("pseudo", "oracle")
ORACLE_SETS = ("cyclic", "lexicographic")
WRONG_ANSWERS = ("other", "all")
GROUPS = ("seen", "unseen", "all")

NUM_EXPERTS = 10
NUM_SEEN = 5
# Expert ids in column order: seen first (even ids), then unseen (odd ids).
SEEN_EXPERTS = (0, 2, 4, 6, 8)
UNSEEN_EXPERTS = (1, 3, 5, 7, 9)
EVAL_CONTEXT = 50
CONTEXT_MIN = 5
EVAL_DRAWS = 4
DATA_SEED = 0
DIGITS_SPLIT = {"train": 0.55, "val": 0.15, "test": 0.30}
CIFAR_VAL_FRACTION = 0.1
# Paper budgets k (labelled points per class); digits have ~98 training
# points per class, so k = 250 does not fit there.
PAPER_BUDGET_K = (2, 4, 6, 10, 20, 50, 250)
DEFAULT_BUDGET_K = {"digits": (2, 4, 6, 10, 20, 50)}
# H of the paper: 8 of 10 classes (34 of 43 for GTSRB).
DEFAULT_STRENGTH = {"gtsrb": 34}
PAPER_STRENGTH = 8
FINETUNE_STEPS = (0, 10, 30, 100)
FINETUNE_LRS = (1e-4, 1e-3, 3e-3)

# Augmentations per data set: weak (crop padding, flips), strong (cutout).
AUGMENT = {
    "digits": {"pad": 1, "flip": False, "cutout": 0.25},
    "cifar10": {"pad": 4, "flip": True, "cutout": 0.5},
    "fashion_mnist": {"pad": 2, "flip": True, "cutout": 0.5},
    "gtsrb": {"pad": 2, "flip": False, "cutout": 0.5},
}


@dataclasses.dataclass(frozen=True)
class Budget:
  """The training budget of one ``--config``.

  Attributes:
    embed_epochs: epochs of the frozen embedding φ (CE on ground truth).
    embed_batch: its batch size.
    embed_width: channels of the first conv block of the CNN φ (each next
      block has twice as many); unused by digits' MLP φ.
    embed_blocks: conv blocks of the CNN φ (each halves the map).
    embed_head: ``"mean"`` (global mean pool of the last map into φ's
      linear layer) or ``"flatten"`` (the last map flattened into it).
    feature_dim: size of φ (MLP embedding; the CNN gives 64).
    gen_steps: optimisation steps of the label generator (run in chunks of
      about ``eval_every``; the total is rounded up to whole chunks).
    gen_batch: labelled queries per step (per expert); unlabelled: μ x this.
    mu: unlabelled-to-labelled ratio μ.
    tau: FixMatch confidence threshold τ.
    lambda_u: weight λ_u of the consistency term.
    gen_lr: Adam learning rate of the label generator.
    down_steps: optimisation steps of each downstream model.
    down_batch: queries per step (per seen expert).
    down_lr: Adam learning rate of the downstream models.
    eval_every: steps between validation checks (early stopping).
    embed_dim: size of ψ (encoders) in both models.
    hidden_dim: hidden width of encoders and heads.
    train_images: cap on training images (``None``: all); CIFAR-10 cpu.
    test_images: cap on test images (``None``: all).
    downstream_inputs: ``"images"`` (pixels of queries and context points
      through the fallible backbone) or ``"features"`` (the cached frozen φ
      features, an MLP backbone; see Conventions).
  """

  embed_epochs: int = 30
  embed_batch: int = 64
  embed_width: int = 32
  embed_blocks: int = 2
  embed_head: str = "mean"
  feature_dim: int = 32
  gen_steps: int = 1500
  gen_batch: int = 32
  mu: int = 7
  tau: float = 0.95
  lambda_u: float = 1.0
  gen_lr: float = 1e-3
  down_steps: int = 3000
  down_batch: int = 32
  down_lr: float = 2e-3
  eval_every: int = 500
  embed_dim: int = 32
  hidden_dim: int = 32
  train_images: int | None = None
  test_images: int | None = None
  downstream_inputs: str = "images"


# Heads of the CNN φ (``Budget.embed_head``).
EMBED_HEADS = ("mean", "flatten")
# Part of the key of φ's cache folder: bump it when the code of φ changes.
EMBED_CACHE_VERSION = 2

# Cached augmented views per training image of the "features" path.
FEATURE_VIEWS = 2
DOWNSTREAM_INPUTS = ("images", "features")

BUDGETS = {
    # Minutes for the digits sweep on two shared CPU cores. (500 label
    # generator and 1500 downstream steps left every model still improving
    # at its last step; the shared-context encoder path made 2-3x more steps
    # affordable.)
    "cpu": Budget(),
    # Longer training (the paper trains 100 epochs on a GPU).
    "gpu": Budget(embed_epochs=100, gen_steps=5000, gen_batch=64,
                  down_steps=10000, down_batch=128, eval_every=1000,
                  embed_dim=64, hidden_dim=64),
}
# CIFAR-10 on the CPU: the frozen small CNN φ (width 16: a width-32 step of
# 64 images costs 1.8 s CPU here, width 16 0.55 s; the last 8x8x32 map
# flattened into the linear layer: after 1 epoch 39.4% validation accuracy
# against 24.6% with a global mean pool, and 37.5% with a third conv block
# at ~1.8x the step cost) is trained once (3 epochs on 18,000 images) and
# cached; the label generator and every downstream model then read its
# cached features (``downstream_inputs="features"``), so their steps cost
# about as much as digits' MLP steps.
CIFAR_CPU = dataclasses.replace(BUDGETS["cpu"], embed_epochs=3, embed_width=16,
                                embed_head="flatten",
                                gen_steps=1000,
                                down_steps=2000, eval_every=500,
                                train_images=20000, test_images=4000,
                                downstream_inputs="features")


def budget_for(dataset: str, config_name: str) -> Budget:
  """The ``Budget`` of ``--config`` for ``dataset``."""
  if config_name == "cpu" and dataset != "digits":
    return CIFAR_CPU
  return BUDGETS[config_name]


@dataclasses.dataclass(frozen=True)
class Config:
  """The options of one run (the CLI's defaults; see ``--help``)."""

  dataset: str = "digits"
  data_dir: str = "../shared/data"
  budget_k: tuple[int, ...] | None = None
  variant: str = "all"
  labels: str = "both"
  expert_strength: tuple[int, ...] | None = None
  oracle_sets: str = "cyclic"
  wrong_answers: str = "other"
  config: str = "cpu"
  seeds: int = 2
  first_seed: int = 0
  ema: float = 0.0
  cache_dir: str = "results/.cache/population_l2d"
  out: str = "results/population_l2d"


DEFAULT = Config()


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A documented run: its command, the expected shape, what we measured."""

  description: str
  command: str
  expected: str = ""
  measured: str = ""


EXPERIMENTS = {
    "digits_cpu": Experiment(
        description="digits, H = 8 cyclic, wrong answers over the other "
        "classes; every variant, pseudo and oracle labels, 2 seeds.",
        command="python -m experiments.population_l2d --dataset digits "
        "--config cpu --seeds 2 --budget-k 2,10,50 --variant all "
        "--labels both --out results/population_digits_cpu",
        expected="system accuracy above classifier alone and expert alone; "
        "pseudo approaching oracle as L grows; L2D-Pop variants ahead of "
        "Single/Finetune on unseen experts.",
        measured="46.5 min wall (2 shared cores, load 12-22; 12.0 min "
        "with 500/1500 steps at load ~2 before). Classifier alone 77.8, "
        "expert alone 80.0. Label generator correctness accuracy "
        "seen/unseen: k=2 77.8/75.8, k=10 89.1/78.8, k=50 88.9/78.5 (the "
        "always-right rate is 80). System accuracy all (seen/unseen), mean "
        "± std over 2 seeds: oracle NP+Att 90.4 ± 0.4 (92.3/88.6), NP "
        "90.9 ± 0.4 (91.8/90.0), Finetune 92.6 ± 1.6 (92.4/92.7), Single "
        "87.7 ± 1.9; pseudo k=2/10/50: NP+Att 88.6/90.5/90.2, NP "
        "89.7/91.1/90.4, Finetune 92.6/92.3/92.2, Single 87.9/88.2/87.7. "
        "Pseudo reaches the oracle from k=10; L2D-Pop ahead of Single on "
        "unseen experts (oracle 88.6/90.0 vs 87.7), Finetune best "
        "everywhere. Best step = last (3000) for 8 of 16 L2D-Pop and 1 of 8 "
        "Single trainings."),
    "digits_strength_cpu": Experiment(
        description="digits, H ∈ {2, 5, 8}: the expert-strength table.",
        command="python -m experiments.population_l2d --dataset digits "
        "--config cpu --seeds 2 --budget-k 10 --expert-strength 2,5,8 "
        "--variant all --labels both --out results/population_digits_strength",
        measured="Run as one process per H (--expert-strength 2 / 5 / 8, "
        "15.8 / 16.0 / 4.9 min, load 3-13). System accuracy all, mean ± std "
        "over 2 seeds, oracle (pseudo) labels, H = 2 / 5 / 8: NP+Att 82.9 "
        "(82.1) / 84.1 (84.2) / 90.7 (89.5); NP 84.4 (84.1) / 85.7 (85.4) / "
        "90.9 (90.5); Finetune 84.9 (84.2) / 86.5 (86.4) / 92.6 (92.6); "
        "Single 83.0 (83.4) / 82.8 (80.8) / 87.7 (87.8); expert alone 20 / "
        "50 / 80, classifier alone 77.8. The context pays off as experts get "
        "stronger (NP - Single: 1.4 / 2.9 / 3.2); Finetune best at every H."),
    "cifar10_cpu": Experiment(
        description="CIFAR-10 at two budgets: a frozen width-16 CNN φ "
        "(last map flattened into its linear layer, 3 epochs) cached once "
        "to .npy; the label generator and every downstream model read its "
        "cached features (queries and context points, "
        "downstream_inputs='features'), 1 seed.",
        command="python -m experiments.population_l2d --dataset cifar10 "
        "--data-dir ../shared/data --config cpu --seeds 1 --budget-k 2,10 "
        "--variant all --labels both --out results/population_cifar10_cpu",
        expected="paper at L = 100: classifier 76.3, expert 82.0, NP+Att "
        "88.8, NP 89.1, Finetune/Single 85.8 (system accuracy, %).",
        measured="24.7 min wall (882 s user CPU, 60% of a core; 2 shared "
        "cores, load 9.5-17.5): φ 16.1 min (3 epochs), cached views 0.6 "
        "min, ~13-16 s per 500 downstream steps with validation, ~5 s per "
        "500 label-generator steps. φ 48.5% validation accuracy (27.6% "
        "with the mean-pool head before). With --seeds 2 (24.9 min, 1245 s "
        "CPU, load 8-11, seed 0's φ from the cache): classifier alone 49.5, "
        "expert alone 80.0; system accuracy all, mean ± std over 2 seeds, "
        "oracle: NP+Att 81.4 ± 0.4 (seen/unseen 82.4/80.4), Finetune 81.3 "
        "± 0.2 (81.3/81.3), NP 80.6 ± 0.1 (81.0/80.3), Single 80.1 ± 0.5; "
        "pseudo k=2 / k=10: NP+Att 79.0 / 80.6, NP 78.8 / 80.5, Finetune "
        "81.0 / 80.8, Single 80.1 / 80.4. Deferral rate 0.81-0.93; expert "
        "accuracy on deferred 80.0 (Single) to 83.5 (NP+Att oracle). Label "
        "generator seen/unseen: k=2 70.2/69.2, k=10 79.3/78.4, below the "
        "always-right rate (80). Not degenerate any more, but every system "
        "is within 1.5 points of the expert alone: φ is still weak (the "
        "paper's classifier: 76.3). Same-seed reruns differ by up to 2 "
        "points where an attention encoder is trained (the encoder's code "
        "changed between the runs; NP, Single, Finetune oracle identical)."),
}
