"""Command line of the conformal-deferral experiment.

  python -m experiments.conformal_deferral --dataset cifar10s \\
      --data-dir ../shared/data --score all --splits 20 --alpha-grid paper \\
      --out results/cifar10s_densenet-bc-L190-k40

Every argument and the output folder are checked before any work; a bad one
ends with one line naming the option (exit code 2; ``--debug`` shows the
traceback). Documented runs and their expected results: ``config.EXPERIMENTS``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from experiments import _cli
from experiments import _io
from experiments.conformal_deferral import config
from experiments.conformal_deferral import report
from experiments.conformal_deferral import run as run_lib
from l2d_jax import conformal

PROG = "python -m experiments.conformal_deferral"
DESCRIPTION = """\
Training-free conformal deferral to annotators by segregativity.

For many calibration/test splits and a grid of miscoverage levels α, a fixed
model builds LAC/APS/RAPS sets; it answers when its set is a singleton,
otherwise an annotator of the image chosen by segregativity (or a naive rule)
answers. Writes results.json, details.json, table1.md and
accuracy_vs_alpha_<score>.png / workload_vs_alpha_<score>.png into --out;
--ablation writes ablation_<name>.json/.md/.png instead. Entries of --out that
a run does not write are kept."""

MAIN_OUTPUTS = ("results.json", "details.json", "table1.md",
                "accuracy_vs_alpha_*.png", "workload_vs_alpha_*.png")


def build_parser() -> argparse.ArgumentParser:
  """The experiment's parser (every option with help text and default)."""
  d = config.DEFAULT
  p = _cli.make_parser(PROG, DESCRIPTION)
  p.add_argument("--dataset", choices=config.DATASETS, default=d.dataset,
                 help="cifar10s: real per-annotator answers on 1,000 CIFAR-10 "
                 "test images; cifar10h-raw: needs cifar10h-raw.csv "
                 "(--raw-csv); imagenet16h: needs --human-csv; synthetic: "
                 "in-package simulated pool; byo: your own data (--byo-dir).")
  _cli.add_data_dir_argument(
      p, default=d.data_dir, help="folder of the shared data (used by "
      "cifar10s, cifar10h-raw and imagenet16h).")
  p.add_argument("--model", choices=config.MODELS, default=d.model,
                 help="CIFAR-10 model whose probabilities are used "
                 "(Kerrigan et al. 2021).")
  p.add_argument("--score", choices=config.SCORES + ("all",), default=d.score,
                 help="conformal score(s); with --ablation, 'all' means aps.")
  p.add_argument("--splits", type=_cli.positive_int, default=d.splits,
                 help="number of random calibration/test splits.")
  p.add_argument("--cal-size", type=_cli.positive_int, default=d.cal_size,
                 help="calibration points per split (stratified draw); >= 3 "
                 "with RAPS, which tunes on 30%% of them.")
  p.add_argument("--alphas", type=_cli.alpha_list, default=d.alphas,
                 help="comma-separated miscoverage levels in (0, 1), no "
                 "repeats; overrides --alpha-grid (default: the --alpha-grid "
                 "grid).")
  p.add_argument("--alpha-grid", choices=("paper",), default=d.alpha_grid,
                 help="α grid when --alphas is not given: the paper's (fine "
                 "up to 1 - model accuracy, then coarse to 0.99).")
  p.add_argument("--f-kept", type=_cli.fraction(0.0, 1.0), default=d.f_kept,
                 help="keep only this least accurate fraction of the "
                 "annotators, in (0, 1] (default: keep all).")
  p.add_argument("--n-shots", type=_cli.positive_int, default=d.n_shots,
                 help="know each annotator from this many answers per true "
                 "label (default: all answers, leave-one-out confusions).")
  p.add_argument("--ablation", choices=config.ABLATIONS, default=d.ablation,
                 help="sweep the paper's ablation over --ablation-grid (one "
                 "score) instead of the main run (default: the main run).")
  p.add_argument("--ablation-grid", default=d.ablation_grid,
                 help="comma-separated values for --ablation (default: "
                 "f_kept 1.0,0.95,...,0.25; n_shots 5,10,15,20).")
  p.add_argument("--tie-break", choices=config.TIE_BREAKS,
                 default=d.tie_break,
                 help="how annotators tied on the strategy's score are "
                 "chosen: at random, or by lower cost (--costs) then at "
                 "random.")
  p.add_argument("--costs", default=d.costs,
                 help="a .npy of J per-annotator costs, for --tie-break cost "
                 "(default: none).")
  p.add_argument("--lcb-lambda", type=_cli.fraction(0.0, math.inf,
                                                     low_open=False,
                                                     high_open=True),
                 default=d.lcb_lambda,
                 help="Segregativity-LCB (Bayesian segregativity) ranks "
                 "annotators by the Beta posterior of their accuracy inside "
                 "the set: mean minus this many standard deviations (0: the "
                 "posterior mean).")
  p.add_argument("--lcb-prior-a", type=_cli.fraction(0.0, math.inf,
                                                      high_open=True),
                 default=d.lcb_prior_a,
                 help="Beta prior a0 > 0 of Segregativity-LCB (pseudo-counts "
                 "of right answers).")
  p.add_argument("--lcb-prior-b", type=_cli.fraction(0.0, math.inf,
                                                      high_open=True),
                 default=d.lcb_prior_b,
                 help="Beta prior b0 > 0 of Segregativity-LCB (pseudo-counts "
                 "of wrong answers).")
  p.add_argument("--raw-csv", default=d.raw_csv,
                 help="CIFAR-10H per-annotator file cifar10h-raw.csv (default: "
                 "DATA_DIR/cifar10h/cifar10h-raw.csv).")
  p.add_argument("--human-csv", default=d.human_csv,
                 help="ImageNet-16H human-annotation CSV (original schema; "
                 "required with --dataset imagenet16h) (default: none).")
  p.add_argument("--byo-dir", default=d.byo_dir,
                 help="your own data: labels.npy, annotations.csv, probs.npy "
                 "(see the README; required with --dataset byo) (default: "
                 "none).")
  p.add_argument("--seed", type=_cli.seed, default=d.seed,
                 help="seed of the splits and tie-breaks, in [0, 2**32).")
  _cli.add_out_argument(
      p, default=d.out, help="output folder (created; its owned files are "
      "replaced as one set at the end of the run).")
  _cli.add_progress_argument(p)
  return p


def check_args(args: argparse.Namespace) -> dict[str, Any]:
  """Checks the options together, before any data is read.

  Returns:
    ``scores`` (the scores to sweep), ``grid`` (the ablation values or None)
    and ``out`` (the resolved output folder, checked writable).

  Raises:
    CliError: naming the option.
  """
  if args.ablation:
    if args.f_kept is not None or args.n_shots is not None:
      raise _cli.CliError(
          f"--ablation {args.ablation} sweeps its own values; drop --f-kept "
          "and --n-shots")
    scores = ["aps" if args.score == "all" else args.score]
    if args.ablation_grid is None:
      grid = (config.F_KEPT_GRID if args.ablation == "f_kept"
              else config.N_SHOTS_GRID)
    else:
      parse = (_cli.float_list(0.0, 1.0, low_open=True)
               if args.ablation == "f_kept" else _cli.int_list(1))
      try:
        grid = parse(args.ablation_grid)
      except argparse.ArgumentTypeError as e:
        raise _cli.CliError(f"--ablation-grid {e} for --ablation "
                            f"{args.ablation}") from None
  else:
    if args.ablation_grid is not None:
      raise _cli.CliError("--ablation-grid needs --ablation")
    scores = list(config.SCORES) if args.score == "all" else [args.score]
    grid = None
  need = config.min_cal_size(scores)
  if args.cal_size < need:
    raise _cli.CliError(
        f"--cal-size must be >= {need} with RAPS (it tunes k_reg and λ on "
        f"{config.RAPS_TUNE_FRACTION:.0%} of the calibration points, at least "
        f"2, and calibrates on the rest), got {args.cal_size}")
  if args.tie_break == "cost" and not args.costs:
    raise _cli.CliError("--tie-break cost needs --costs (a .npy of J costs)")
  if args.costs and args.tie_break != "cost":
    raise _cli.CliError("--costs is only used with --tie-break cost")
  if args.costs:
    _cli.require_file(args.costs, "--costs")
  if args.dataset in config.DATASETS_WITH_DATA_DIR:
    data_dir = _cli.check_data_dir(args.data_dir)
    if args.dataset == "cifar10h-raw":
      if args.raw_csv:
        _cli.require_file(args.raw_csv, "--raw-csv")
      elif not (data_dir / "cifar10h" / "cifar10h-raw.csv").is_file():
        raise _cli.CliError(
            f"--raw-csv: {data_dir / 'cifar10h' / 'cifar10h-raw.csv'} does "
            "not exist; download cifar10h-raw.csv from "
            "github.com/jcpeterson/cifar-10h and pass --raw-csv")
    if args.dataset == "imagenet16h":
      if not args.human_csv:
        raise _cli.CliError(
            "--human-csv is required with --dataset imagenet16h (the original "
            "Steyvers et al. 2022 CSV; not part of the offline data)")
      _cli.require_file(args.human_csv, "--human-csv")
  if args.dataset == "byo":
    if not args.byo_dir:
      raise _cli.CliError("--dataset byo needs --byo-dir (labels.npy, "
                          "annotations.csv, probs.npy; see the README)")
    _cli.require_dir(args.byo_dir, "--byo-dir")
  out = _cli.check_output_dir(args.out)
  return {"scores": scores, "grid": grid, "out": out}


def _check_with_pool(args, pool, scores) -> tuple[np.ndarray, Any]:
  """Checks what depends on the data; returns the alphas and the costs."""
  n_cand = pool.cal_candidates.size
  most = n_cand if pool.test_fixed is not None else n_cand - 1
  if args.cal_size > most:
    raise _cli.CliError(
        f"--cal-size must be <= {most} for --dataset {args.dataset} ("
        f"{n_cand} calibration candidates"
        + ("" if pool.test_fixed is not None else ", at least one left to "
           "test") + f"), got {args.cal_size}")
  costs = None
  if args.costs:
    costs = np.load(args.costs, allow_pickle=False)
    j = pool.annotations.num_experts
    if costs.shape != (j,) or not np.issubdtype(costs.dtype, np.number):
      raise _cli.CliError(f"--costs must hold [J]=[{j}] numbers, got "
                          f"{costs.dtype} of shape {costs.shape}")
    costs = costs.astype(np.float32)
    if not np.all(np.isfinite(costs)):
      raise _cli.CliError("--costs holds NaN or inf")
  if args.alphas is not None:
    alphas = np.sort(np.asarray(args.alphas, np.float64))
  else:
    model_acc = float((pool.probs.argmax(1) == pool.labels).mean())
    alphas = conformal.paper_alpha_grid(model_acc)
  return alphas, costs


def execute(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
  """Runs the experiment described by ``args``; returns what it wrote."""
  checked = check_args(args)
  scores, out = checked["scores"], checked["out"]
  pool = run_lib.load_pool(args.dataset, data_dir=args.data_dir,
                           model=args.model, seed=args.seed,
                           raw_csv=args.raw_csv, human_csv=args.human_csv,
                           byo_dir=args.byo_dir)
  alphas, costs = _check_with_pool(args, pool, scores)
  command = _cli.command_line(PROG, argv)
  common = dict(alphas=alphas, n_splits=args.splits, cal_size=args.cal_size,
                seed=args.seed, tie_break=args.tie_break, costs=costs,
                lcb=(args.lcb_lambda, args.lcb_prior_a, args.lcb_prior_b),
                progress=not args.no_progress)
  t0 = time.perf_counter()
  if args.ablation:
    return _ablation(args, pool, scores[0], checked["grid"], common, out,
                     command, t0)
  per = run_lib.sweep(pool, scores=scores, f_kept=args.f_kept,
                      n_shots=args.n_shots, **common)
  results, details = report.summarise(per, pool=pool, alphas=alphas,
                                      scores=scores)
  details.update({**_cli.run_details(args, command=command,
                                     seconds=time.perf_counter() - t0),
                  "f_kept": args.f_kept, "n_shots": args.n_shots,
                  "seed": args.seed, "tie_break": args.tie_break,
                  "lcb": {"lambda": args.lcb_lambda,
                          "prior_a": args.lcb_prior_a,
                          "prior_b": args.lcb_prior_b},
                  "model_accuracy_pool": per["model_accuracy_pool"]})
  table = report.table1(results, details)
  with _io.OutputSet(out, owns=MAIN_OUTPUTS) as outputs:
    outputs.write_json("results.json", results)
    outputs.write_json("details.json", details)
    outputs.write_text("table1.md", table)
    plots = report.plot(results, outputs.save_figure)
  print(table)
  print(f"wrote {out}: results.json, details.json, table1.md, "
        f"{', '.join(plots)} ({details['seconds']:.1f} s)")
  return results


def _ablation(args, pool, score, grid, common, out, command, t0):
  name = args.ablation
  rows, stopped = [], None
  for v in tqdm(grid, desc=name, disable=args.no_progress):
    try:
      per = run_lib.sweep(pool, scores=[score], **common, **{name: v})
    except ValueError as e:
      if name == "f_kept" and "no usable annotator" in str(e):
        stopped = (f"Stopped at f_kept = {v:g}: {' '.join(str(e).split())}")
        break
      raise
    res, det = report.summarise(per, pool=pool, alphas=common["alphas"],
                                scores=[score])
    rows.append({"value": v, "results": res,
                 "strongest_baseline": det["strongest_baseline"]})
  if not rows:
    raise _cli.CliError(f"--ablation-grid: no value could be run ({stopped})")
  ablation = {"dataset": pool.dataset, "model": pool.model, "ablation": name,
              "score": score, "rows": rows, "stopped": stopped,
              "seconds": time.perf_counter() - t0, "command": command,
              "args": dict(vars(args))}
  table = report.ablation_table(ablation)
  with _io.OutputSet(out, owns=(f"ablation_{name}.json", f"ablation_{name}.md",
                                f"ablation_{name}.png")) as outputs:
    outputs.write_json(f"ablation_{name}.json", ablation)
    outputs.write_text(f"ablation_{name}.md", table)
    report.plot_ablation(ablation, outputs.save_figure)
  print(table)
  print(f"wrote {out}: ablation_{name}.json, .md and .png "
        f"({ablation['seconds']:.1f} s)")
  return ablation


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit code (2 on a bad argument)."""
  return _cli.experiment_main(build_parser, execute, argv,
                              module="experiments.conformal_deferral")


if __name__ == "__main__":
  sys.exit(main())
