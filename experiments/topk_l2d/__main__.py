"""Command line of the Top-k / Top-k(x) two-stage L2D experiment.

  python -m experiments.topk_l2d --dataset california_housing \\
      --data-dir ../shared/data --config cpu --seeds 3 \\
      --out results/topk_california_housing_cpu

``--num-processes N`` shares the seeds out over N local processes (process
p runs seeds p, p + N, ...; each builds the same pool of agents) and
process 0 writes the outputs, identical to one process's; ``--cluster``
does the same across hosts.

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
from experiments.topk_l2d import config
from experiments.topk_l2d import report

PROG = "python -m experiments.topk_l2d"
DESCRIPTION = """\
Top-k and Top-k(x) two-stage learning to defer to a set of agents.

Builds a fixed pool of 6 agents (California Housing: regional MLP
regressors; CIFAR-10: a SmallCNN main model and 5 simulated experts) with
consultation costs β = 0, .05, ..., .25, trains a rejector with the Top-k
surrogate and, for each λ, a cardinality selector (Top-k(x)); compares them
with Top-1 two-stage L2D, random allocation and the oracle. Writes
results.json, details.json, table.md and budget_performance.png into --out
(entries of --out that a run does not write are kept)."""

MAIN_OUTPUTS = ("results.json", "details.json", "table.md",
                "budget_performance.png")


def build_parser() -> argparse.ArgumentParser:
  """The experiment's parser (every option with help text and default)."""
  d = config.DEFAULT
  p = _cli.make_parser(PROG, DESCRIPTION)
  p.add_argument("--dataset", choices=config.DATASETS, default=d.dataset,
                 help="california_housing (regression) and cifar10 run on "
                 "the shared data; svhn and cifar100 need their original "
                 "files under --data-dir.")
  _cli.add_data_dir_argument(p, default=d.data_dir)
  _cli.add_config_argument(
      p, choices=config.CONFIGS, default=d.config,
      help="training budget: cpu (minutes here) or gpu (the paper's "
      "epochs).")
  _cli.add_seeds_arguments(
      p, default=d.seeds, first_seed=d.first_seed,
      help="number of seeds (rejector, selectors, random draws); the agents "
      "are one fixed pool.")
  p.add_argument("--lambdas", type=_cli.float_list(0.0),
                 default=",".join(f"{v:g}" for v in d.lambdas),
                 help="comma-separated λ >= 0 of the Top-k(x) sweep (the "
                 "budget weight in the cardinality loss).")
  p.add_argument("--selector-scale", choices=config.SELECTOR_SCALES,
                 default=d.selector_scale,
                 help="normalisation of the cardinality loss in the selector's "
                 "surrogate: a global scale per λ (the 99th percentile of the "
                 "training costs, clipped above) or min-max per example.")
  _cli.add_cache_dir_argument(
      p, default=d.cache_dir, help="folder for decoded CIFAR-10 images "
      "(default: none, decode each time).")
  _cli.add_out_argument(p, default=d.out)
  _cli.add_progress_argument(p)
  return p


def check_args(args: argparse.Namespace):
  """Checks the seeds, data files and output folder before any work."""
  _cli.seed_range(args)
  from experiments.topk_l2d import pools as pools_lib  # pylint: disable=g-import-not-at-top
  _cli.check_data_dir(args.data_dir, lambda data_dir:
                      pools_lib.check_dataset_files(args.dataset, data_dir))
  return _cli.check_output_dir(args.out)


def execute(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
  """Runs the experiment described by ``args``; returns results.json."""
  out = check_args(args)
  from experiments.topk_l2d import pools as pools_lib  # pylint: disable=g-import-not-at-top
  from experiments.topk_l2d import run as run_lib  # pylint: disable=g-import-not-at-top
  from l2d_jax import distributed  # pylint: disable=g-import-not-at-top
  budget = config.BUDGETS[args.config]
  # Several processes: each builds the pool, runs its share of the seeds
  # (process p: seeds p, p + N, ...); process 0 shows progress and writes.
  progress = not args.no_progress and distributed.is_main_process()
  command = _cli.command_line(PROG, argv)
  t0 = time.perf_counter()
  pool = pools_lib.load_pool(args.dataset, data_dir=args.data_dir,
                             budget=budget, cache_dir=args.cache_dir,
                             progress=progress)
  t_pool = time.perf_counter() - t0
  seeds = _cli.seed_range(args)
  out_run = run_lib.run(pool, seeds=seeds, budget=budget,
                        lambdas=args.lambdas,
                        selector_scale=args.selector_scale, progress=progress)
  return write(out, pool, out_run, args=args, command=command,
               seconds=time.perf_counter() - t0, pool_seconds=t_pool)


def write(out, pool, out_run, *, args, command, seconds, pool_seconds):
  """Writes the output set; returns results.json."""
  entries = out_run["entries"]
  res = report.results(entries, dataset=pool.dataset, config_name=args.config,
                       beta=pool.beta, metric_alone=pool.metric_alone())
  details = {
      **_cli.run_details(args, command=command, seconds=seconds),
      "pool_seconds": pool_seconds, "task": pool.task,
      "metric_alone": ("test RMSE ($100k)" if pool.task == "regression"
                       else "test accuracy"),
      "budget": dataclasses.asdict(config.BUDGETS[args.config]),
      "alpha": pool.alpha, "nu": config.NU, "pool": pool.info,
      "headline": {m: report.headline(entries, m) for m in pool.metrics},
      "topk_deferral_loss": [
          {k: e[k] for k in ("method", "k", "lambda", "selector_metric",
                             "seed", "topk_deferral_loss") if k in e}
          for e in entries],
      "final_rejector_val_surrogate": {
          str(s): float(h["rejector"][:, 1].min())
          for s, h in out_run["histories"].items()},
  }
  text = report.table(res, entries, pool.metrics, command=command)
  with _io.OutputSet(out, owns=MAIN_OUTPUTS) as outputs:
    outputs.write_json("results.json", res)
    outputs.write_json("details.json", details)
    outputs.write_text("table.md", text)
    plots = report.plot(res, entries, pool.metrics, outputs.save_figure)
  print(text)
  print(f"wrote {out}: results.json, details.json, table.md, "
        f"{', '.join(plots)} ({seconds:.1f} s)")
  return res


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit code (2 on a bad argument)."""
  return _cli.experiment_main(build_parser, execute, argv,
                              module="experiments.topk_l2d")


if __name__ == "__main__":
  sys.exit(main())
