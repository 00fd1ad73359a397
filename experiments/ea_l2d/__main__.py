"""Command line of the EA-L2D experiment.

  python -m experiments.ea_l2d --dataset digits --study rq1 \\
      --overlap 0.2,0.5,0.8 --config cpu --seeds 3 \\
      --out results/ea_l2d_digits_rq1_cpu

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
from experiments.ea_l2d import config
from experiments.ea_l2d import report

PROG = "python -m experiments.ea_l2d"
DESCRIPTION = """\
Expert-agnostic learning to defer (EA-L2D) against L2D-Pop (NP+Attention),
Pop-Avg and multi-expert softmax L2D on simulated experts.

Studies: rq1 (Table 5.1: AURSAC/AURDAC for ID experts and both readings of
OOD experts, per overlap p), rq2 (number of expertise classes), rq3 (self-
assessed prior x context size), lcb-ablation (five expert types, four loss
variants). Writes results.json, details.json, table.md and the study's PNGs
(ea_*.png) into --out (entries of --out that a run does not write are
kept)."""

MAIN_OUTPUTS = ("results.json", "details.json", "table.md", "ea_*.png")


def build_parser() -> argparse.ArgumentParser:
  """The experiment's parser (every option with help text and default)."""
  d = config.DEFAULT
  p = _cli.make_parser(PROG, DESCRIPTION)
  p.add_argument("--dataset", choices=config.DATASETS, default=d.dataset,
                 help="digits runs anywhere (scikit-learn); cifar10 reads "
                 "the shared data's CIFAR-10 images; the MedMNIST sets need "
                 "their .npz archives under --data-dir.")
  _cli.add_data_dir_argument(p, default=d.data_dir,
                             help="folder of the data (unused for digits).")
  p.add_argument("--overlap", type=_cli.float_list(0.0, 1.0),
                 default=",".join(f"{v:g}" for v in d.overlap),
                 help="comma-separated overlap probabilities p in [0, 1] "
                 "(rq3 uses the first).")
  p.add_argument("--study", choices=config.STUDIES, default=d.study,
                 help="which research question to run.")
  _cli.add_config_argument(
      p, choices=config.CONFIGS, default=d.config,
      help="training budget: cpu (minutes on digits) or gpu (the paper's "
      "rejector, longer training).")
  _cli.add_seeds_arguments(
      p, default=d.seeds, first_seed=d.first_seed,
      help="number of seeds (experts, contexts, models).")
  p.add_argument("--steps", type=_cli.positive_int, default=None,
                 help="training steps of every model (default: the "
                 "--config budget's, 400 for cpu and 20000 for gpu).")
  _cli.add_cache_dir_argument(
      p, default=d.cache_dir, help="CIFAR-10: folder of the cached frozen "
      "embedding (shared with experiments.population_l2d).")
  _cli.add_out_argument(p, default=d.out)
  _cli.add_progress_argument(p)
  return p


def check_args(args: argparse.Namespace):
  """Checks the seeds, data files and output folder before any work."""
  _cli.seed_range(args)
  if args.dataset != "digits":
    from experiments.ea_l2d import run as run_lib  # pylint: disable=g-import-not-at-top
    _cli.check_data_dir(args.data_dir, lambda data_dir:
                        run_lib.check_dataset_files(args.dataset, data_dir))
  return _cli.check_output_dir(args.out)


def execute(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
  """Runs the experiment described by ``args``; returns results.json."""
  out = check_args(args)
  from experiments.ea_l2d import run as run_lib  # pylint: disable=g-import-not-at-top
  budget = config.BUDGETS[args.config]
  if args.steps is not None:
    budget = dataclasses.replace(budget, steps=args.steps)
  from l2d_jax import distributed  # pylint: disable=g-import-not-at-top
  # Several processes: each runs its share of the seeds (process p: seeds
  # p, p + N, ...); process 0 shows progress and writes the outputs.
  progress = not args.no_progress and distributed.is_main_process()
  command = _cli.command_line(PROG, argv)
  t0 = time.perf_counter()

  def load():
    return run_lib.load_data(args.dataset, data_dir=args.data_dir,
                             budget=budget, cache_dir=args.cache_dir,
                             progress=progress)

  # Process 0 fills the caches (CIFAR-10's frozen embedding) before the
  # others read them, so no process reads a file another is writing.
  data = load() if distributed.is_main_process() else None
  distributed.barrier("ea_l2d: data loaded by process 0")
  if data is None:
    data = load()
  seeds = _cli.seed_range(args)
  out_run = run_lib.run(data, study=args.study, seeds=seeds,
                        overlaps=args.overlap, budget=budget,
                        progress=progress)
  return write(out, data, out_run, args=args, budget=budget, command=command,
               seconds=time.perf_counter() - t0)


def write(out, data, out_run, *, args, budget, command, seconds):
  """Writes the output set; returns results.json."""
  rows = out_run["rows"]
  res = report.results(rows, dataset=data.dataset, study=args.study,
                       config_name=args.config)
  details = {
      **_cli.run_details(args, command=command, seconds=seconds),
      "budget": dataclasses.asdict(budget), "model": data.model,
      "splits": {k: int(v.size) for k, v in data.splits.items()},
      "num_classes": data.num_classes, "training": out_run["info"],
  }
  text = report.table(args.study, rows, command=command)
  with _io.OutputSet(out, owns=MAIN_OUTPUTS) as outputs:
    outputs.write_json("results.json", res)
    outputs.write_json("details.json", details)
    outputs.write_text("table.md", text)
    plots = report.plot(args.study, rows, out_run["curves"],
                        outputs.save_figure, dataset=data.dataset,
                        model=data.model)
  print(text)
  print(f"wrote {out}: results.json, details.json, table.md, "
        f"{', '.join(plots)} ({seconds:.1f} s)")
  return res


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit code (2 on a bad argument)."""
  return _cli.experiment_main(build_parser, execute, argv,
                              module="experiments.ea_l2d")


if __name__ == "__main__":
  sys.exit(main())
