"""Command line of the L2D-Pop / limited-demonstrations experiment.

  python -m experiments.population_l2d --dataset digits --config cpu \\
      --seeds 2 --budget-k 2,10,50 --variant all --labels both \\
      --out results/population_digits_cpu

``--num-processes N`` shares the seeds out over N local processes (process
p runs seeds p, p + N, ...) and process 0 writes the outputs, identical to
one process's; ``--cluster`` does the same across hosts.

Every argument, the data files and the output folder are checked before any
work; a bad one ends with one line naming the option (exit code 2;
``--debug`` shows the traceback). Documented runs: ``config.EXPERIMENTS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any, Sequence

from experiments import _cli
from experiments import _io
from experiments.population_l2d import config
from experiments.population_l2d import report

PROG = "python -m experiments.population_l2d"
DESCRIPTION = """\
L2D-Pop and learning to defer to a population from limited demonstrations.

10 synthetic experts (5 seen, 5 unseen at test) know H classes each. For each
budget L = K·k labelled points per seen expert, a label generator (context
encoder + expert-correctness head on a frozen embedding, FixMatch on the
unlabelled points) predicts when the seen experts are right; its pseudo
expert labels train the downstream L2D-Pop variants (NP+Attention, NP),
Single-L2D and Finetune, compared with an oracle trained on the true expert
labels. Writes results.json, details.json, table.md and figure2.png into
--out (several --expert-strength values: one folder h<H>/ each, plus
expert_strength.md). Entries of --out that a run does not write are kept."""

MAIN_OUTPUTS = ("results.json", "details.json", "table.md", "figure2.png",
                "expert_strength.md", "h[0-9]*")


def build_parser() -> argparse.ArgumentParser:
  """The experiment's parser (every option with help text and default)."""
  d = config.DEFAULT
  p = _cli.make_parser(PROG, DESCRIPTION)
  p.add_argument("--dataset", choices=config.DATASETS, default=d.dataset,
                 help="digits: scikit-learn's bundled 8x8 digits (no "
                 "download); cifar10: the shared CIFAR-10 images; "
                 "fashion_mnist and gtsrb need their original files under "
                 "--data-dir.")
  _cli.add_data_dir_argument(
      p, default=d.data_dir,
      help="folder of the shared data (unused for digits).")
  p.add_argument("--budget-k", type=_cli.int_list(1), default=None,
                 help="comma-separated labelled points per class k (L = K·k "
                 "per seen expert) (default: 2,4,6,10,20,50 for digits, "
                 "2,4,6,10,20,50,250 otherwise).")
  p.add_argument("--variant", choices=config.VARIANTS + ("all",),
                 default=d.variant, help="downstream model(s) to train.")
  p.add_argument("--labels", choices=config.LABELS + ("both",),
                 default=d.labels,
                 help="expert labels of the downstream training: pseudo "
                 "(label generator), oracle (true answers) or both.")
  p.add_argument("--expert-strength", type=_cli.int_list(1), default=None,
                 help="comma-separated oracle-set sizes H in [1, K]; several "
                 "values write one folder h<H>/ each and the table "
                 "expert_strength.md (default: 8, 34 for gtsrb).")
  p.add_argument("--oracle-sets", choices=config.ORACLE_SETS,
                 default=d.oracle_sets,
                 help="cyclic (the paper: e, e+1, ..., e+H-1 mod K) or "
                 "lexicographic (the official code's combinations order).")
  p.add_argument("--wrong-answers", choices=config.WRONG_ANSWERS,
                 default=d.wrong_answers,
                 help="experts' (and pseudo labels') wrong answers: uniform "
                 "over the other classes (the paper) or over all K (the "
                 "official code; gives 82%% expert accuracy at H = 8).")
  _cli.add_config_argument(
      p, choices=config.CONFIGS, default=d.config,
      help="training budget: cpu (minutes for digits) or gpu.")
  _cli.add_seeds_arguments(
      p, default=d.seeds, first_seed=d.first_seed,
      help="number of seeds (experts' answers, labelled sets, models).")
  p.add_argument("--ema", type=_cli.fraction(0.0, 1.0, low_open=False,
                                              high_open=True),
                 default=d.ema,
                 help="EMA decay of the label generator's weights (0: no "
                 "EMA; the paper's option: 0.999).")
  _cli.add_cache_dir_argument(
      p, default=d.cache_dir, help="folder for decoded images and the "
      "cached frozen embedding (.npy).")
  _cli.add_out_argument(p, default=d.out)
  _cli.add_progress_argument(p)
  return p


def _num_classes(dataset: str) -> int:
  return 43 if dataset == "gtsrb" else 10


def resolve(args: argparse.Namespace) -> argparse.Namespace:
  """Fills the dataset-dependent defaults and checks values across options."""
  k_classes = _num_classes(args.dataset)
  if args.budget_k is None:
    args.budget_k = config.DEFAULT_BUDGET_K.get(args.dataset,
                                                config.PAPER_BUDGET_K)
  if args.expert_strength is None:
    args.expert_strength = (config.DEFAULT_STRENGTH.get(
        args.dataset, config.PAPER_STRENGTH),)
  bad = [h for h in args.expert_strength if not 1 <= h <= k_classes]
  if bad:
    raise _cli.CliError(f"--expert-strength must hold H in [1, K={k_classes}]"
                        f" for {args.dataset}, got {bad[0]}")
  if args.oracle_sets == "lexicographic":
    import math  # pylint: disable=import-outside-toplevel
    for h in args.expert_strength:
      if math.comb(k_classes, h) < config.NUM_EXPERTS:
        raise _cli.CliError(
            f"--expert-strength H={h} gives only C({k_classes}, {h}) < "
            f"{config.NUM_EXPERTS} lexicographic oracle sets; use "
            "--oracle-sets cyclic")
  _cli.seed_range(args)
  return args


def check_args(args: argparse.Namespace):
  """Checks values, data files and the output folder before any work."""
  resolve(args)
  from experiments.population_l2d import run as run_lib  # pylint: disable=g-import-not-at-top
  if args.dataset != "digits":
    _cli.check_data_dir(args.data_dir, lambda data_dir:
                        run_lib.check_dataset_files(args.dataset, data_dir))
  return _cli.check_output_dir(args.out)


def _selection(value: str, choices: tuple[str, ...]) -> tuple[str, ...]:
  return choices if value in ("all", "both") else (value,)


def execute(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
  """Runs the experiment described by ``args``; returns the last results."""
  out = check_args(args)
  from experiments.population_l2d import run as run_lib  # pylint: disable=g-import-not-at-top
  budget = config.budget_for(args.dataset, args.config)
  from l2d_jax import distributed  # pylint: disable=g-import-not-at-top
  # Several processes: each runs its share of the seeds (process p: seeds
  # p, p + N, ...); process 0 shows progress and writes the outputs.
  progress = not args.no_progress and distributed.is_main_process()
  command = _cli.command_line(PROG, argv)
  t0 = time.perf_counter()
  data = run_lib.load_data(args.dataset, data_dir=args.data_dir,
                           budget=budget, cache_dir=args.cache_dir)
  for k in args.budget_k:  # Fails early on a budget the data cannot hold.
    run_lib.labelled_indices(data, k, seed=args.first_seed)
  seeds = _cli.seed_range(args)
  outs = {}
  for h in args.expert_strength:
    outs[h] = run_lib.run(
        data, seeds=seeds, budget=budget, budgets_k=args.budget_k,
        variants=_selection(args.variant, config.VARIANTS),
        labels=_selection(args.labels, config.LABELS), size_h=h,
        oracle_sets=args.oracle_sets, wrong=args.wrong_answers, ema=args.ema,
        cache_dir=args.cache_dir, progress=progress)
  return write(out, data, outs, args=args, budget=budget, command=command,
               seconds=time.perf_counter() - t0)


def write(out, data, outs: dict[int, dict], *, args, budget, command,
          seconds):
  """Writes the output set; returns the results.json of the last H."""
  several = len(outs) > 1
  by_h = {}
  with _io.OutputSet(out, owns=MAIN_OUTPUTS) as outputs:
    for h, o in outs.items():
      res = report.results(
          o["results"], o["label_generator"], dataset=data.dataset,
          config_name=args.config, expert_strength=h,
          oracle_sets=args.oracle_sets, wrong_answers=args.wrong_answers,
          baselines=o["baselines"])
      by_h[h] = res
      prefix = f"h{h}/" if several else ""
      details = {
          **_cli.run_details(args, command=command, seconds=seconds),
          "budget": dataclasses.asdict(budget),
          "splits": {s: int(v.size) for s, v in data.splits.items()},
          "num_experts": config.NUM_EXPERTS, "num_seen": config.NUM_SEEN,
          "eval_context": config.EVAL_CONTEXT,
          "eval_draws": config.EVAL_DRAWS,
          "finetune_grid": {"steps": config.FINETUNE_STEPS,
                            "lr": config.FINETUNE_LRS},
          "per_seed": o["info"],
      }
      text = report.table(res, command=command)
      outputs.write_json(prefix + "results.json", res)
      outputs.write_json(prefix + "details.json", details)
      outputs.write_text(prefix + "table.md", text)
      report.plot(res, lambda fig, name, p=prefix: outputs.save_figure(
          fig, p + name))
      print(text)
    if several:
      outputs.write_text("expert_strength.md",
                         report.strength_table(by_h, command=command))
  print(f"wrote {out} ({seconds:.1f} s)")
  return by_h[list(outs)[-1]]


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit code (2 on a bad argument)."""
  return _cli.experiment_main(build_parser, execute, argv,
                              module="experiments.population_l2d")


if __name__ == "__main__":
  sys.exit(main())
