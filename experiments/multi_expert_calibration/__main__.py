"""Command line of the multi-expert calibration experiment.

  python -m experiments.multi_expert_calibration --dataset mog \\
      --experiment increasing-experts --seeds 5 \\
      --out results/multi_expert_calibration/mog_increasing-experts

``--num-processes N`` runs the sweep as N local processes (``--cluster``:
across hosts) in the same --out, which process 0 alone writes: runs
trained together (MLP configs) are shared out by group (setting x
surrogate), runs trained one at a time are trained by all processes
together (``training.Trainer``, data parallel).

Every option is checked before any training; a bad one ends with one line
naming it (exit code 2; ``--debug`` shows the traceback). Documented runs
and their expected results: ``config.py``.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
from typing import Sequence

from experiments import _cli
from experiments.multi_expert_calibration import config
from experiments.multi_expert_calibration import run as run_lib

PROG = "python -m experiments.multi_expert_calibration"
DESCRIPTION = """\
Calibration of multi-expert learning to defer: softmax vs one-vs-all
(Verma, Barrejón & Nalisnick, AISTATS 2023, §5.2-5.4).

For every (parameterisation, setting, seed) a model with K + J outputs is
trained on the softmax or the one-vs-all surrogate with simulated experts;
the ECE of each expert's correctness estimate and the system accuracy are
measured on the test split. Writes results.json, details.json, table.md,
ece.png, system_accuracy.png and reliability.png into --out;
progress.json records finished runs, so rerunning the command resumes."""


def build_parser() -> argparse.ArgumentParser:
  """The experiment's parser (every option with help text and default)."""
  p = _cli.make_parser(PROG, DESCRIPTION)
  p.add_argument("--dataset", choices=config.DATASETS, default="mog",
                 help="mog: simulated 4-cluster mixture of Gaussians; "
                 "cifar10: the CIFAR-10 JPEGs under --data-dir.")
  p.add_argument("--experiment", choices=run_lib.EXPERIMENTS,
                 default="increasing-experts",
                 help="§5.2 increasing-experts, §5.3 expert-dependence, "
                 "§5.4 specialised.")
  p.add_argument("--parameterisation",
                 choices=run_lib.PARAMETERISATIONS + ("both",),
                 default="both", help="surrogate(s) to train.")
  _cli.add_seeds_arguments(p, default=3)
  p.add_argument("--settings", type=_cli.float_list(), default=None,
                 help="comma-separated x-axis values: numbers of experts, or "
                 "p for expert-dependence (default: the config's SETTINGS).")
  _cli.add_config_argument(
      p, choices=config.CONFIG_NAMES, default="cpu",
      help="cpu: small models that run on a CPU; gpu: the paper's (WRN-28-10 "
      "on CIFAR-10). See experiments/multi_expert_calibration/config.py.")
  p.add_argument("--epochs", type=_cli.positive_int, default=None,
                 help="maximum number of epochs (default: the config's).")
  p.add_argument("--patience", type=_cli.non_negative_int, default=None,
                 help="early-stopping look-ahead in epochs, 0 for none "
                 "(default: the config's).")
  p.add_argument("--batch-size", type=_cli.positive_int, default=None,
                 help="training batch size (default: the config's).")
  p.add_argument("--lr", type=_cli.fraction(0.0, math.inf, high_open=True),
                 default=None, help="peak learning rate (default: the "
                 "config's).")
  p.add_argument("--monitor", choices=("loss", "system_accuracy"),
                 default=None, help="early-stopping metric on the "
                 "validation split (default: the config's).")
  p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                 help="override any config key (JSON value), repeatable, "
                 "e.g. --set hidden=[64,64,64] --set num_samples=6000.")
  p.add_argument("--num-bins", type=_cli.positive_int, default=15,
                 help="equal-width ECE bins.")
  _cli.add_data_dir_argument(
      p, default="../shared/data",
      help="shared data root holding cifar10_images/ (cifar10 only).")
  _cli.add_cache_dir_argument(
      p, default="results/.cache", help="cache folder: the decoded CIFAR-10 "
      "images (.npz) and JAX's persistent compilation cache (jax/), reused "
      "by reruns.")
  _cli.add_out_argument(
      p, default=None, help="output folder (default: results/multi_expert_"
      "calibration/<dataset>_<experiment>).")
  p.add_argument("--restart", action="store_true",
                 help="discard recorded runs and checkpoints in --out.")
  p.add_argument("--sequential", action="store_true",
                 help="train one run at a time with training.Trainer and "
                 "per-run checkpoints (default for CNN configs), instead of "
                 "the seeds of a setting and surrogate at once (MLP "
                 "configs).")
  p.add_argument("--workers", type=int, default=None,
                 help="groups (setting x surrogate, all seeds) trained at "
                 "the same time, one per thread (MLP configs); default: "
                 "the CPU cores this process may use (taskset). Results do "
                 "not depend on it.")
  p.add_argument("--keep-checkpoints", action="store_true",
                 help="keep each finished run's checkpoint folder (runs "
                 "trained one at a time only).")
  p.add_argument("--epoch-progress", action="store_true",
                 help="also show the trainer's per-epoch progress bars.")
  _cli.add_progress_argument(p)
  return p


def options_from_args(args: argparse.Namespace,
                      argv: Sequence[str] | None = None) -> run_lib.Options:
  """Checks the arguments together (before any work) and builds Options."""
  out = args.out or (f"results/multi_expert_calibration/"
                     f"{args.dataset}_{args.experiment}")
  seeds = tuple(_cli.seed_range(args))
  if args.dataset == "cifar10":
    data_dir = _cli.check_data_dir(args.data_dir)
    if not (data_dir / "cifar10_images").is_dir() and not any(
        data_dir.glob("cifar10_*_jpg.zip")):
      raise _cli.CliError(
          f"--data-dir: no CIFAR-10 JPEG zips under {data_dir}/"
          "cifar10_images; pass the shared data root with --data-dir PATH")
  if args.workers is not None and args.workers < 1:
    raise _cli.CliError(f"--workers must be >= 1, got {args.workers}")
  out = _cli.check_output_dir(out, "--out")
  argv = sys.argv[1:] if argv is None else list(argv)
  options = run_lib.Options(
      dataset=args.dataset, experiment=args.experiment,
      parameterisations=(run_lib.PARAMETERISATIONS
                         if args.parameterisation == "both"
                         else (args.parameterisation,)),
      seeds=seeds,
      settings=args.settings, config_name=args.config,
      overrides={name: getattr(args, name) for name in run_lib.OVERRIDES},
      sets=tuple(args.set), num_bins=args.num_bins, data_dir=args.data_dir,
      cache_dir=args.cache_dir, out=pathlib.Path(out), restart=args.restart,
      keep_checkpoints=args.keep_checkpoints, sequential=args.sequential,
      workers=args.workers, progress=not args.no_progress, epoch_progress=(
          args.epoch_progress and not args.no_progress),
      command=_cli.command_line(PROG, argv))
  run_lib.resolve(options)  # bad settings or --set values fail here
  return options


def execute(args: argparse.Namespace, argv: Sequence[str]) -> None:
  """Runs (or resumes) the sweep described by ``args``."""
  run_lib.run(options_from_args(args, argv))


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit code (0, or 2 on an error)."""
  # Every process works in the same --out (process 0 alone writes there):
  # it holds the progress of a resumed sweep and the shared checkpoints.
  return _cli.experiment_main(
      build_parser, execute, argv,
      module="experiments.multi_expert_calibration", private_options=())


if __name__ == "__main__":
  sys.exit(main())
