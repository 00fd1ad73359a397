"""Smoke and CLI tests of the conformal-deferral experiment on tiny inputs."""

import csv
import json
import pathlib
import re
import shlex
import subprocess
import sys
import types

import numpy as np
import pytest

from experiments import conformal_deferral as exp
from experiments import quickstart
from experiments.conformal_deferral import __main__ as cli
from experiments.conformal_deferral import config
from experiments.conformal_deferral import report
from experiments.conformal_deferral import run as run_lib
from tests import cli_checks
from l2d_jax import data

REPO = pathlib.Path(__file__).resolve().parents[1]
STRATEGY_KEYS = {"accuracy_mean", "accuracy_std", "queries_mean",
                 "max_queries_per_expert_mean",
                 "avg_queries_per_queried_expert_mean", "alpha_opt",
                 "accuracy_at_opt", "p_value_vs_strongest_baseline"}
CROSS = "accuracy_cross_fitted"


def _check_results(out, scores, n_alphas):
  res = json.loads((out / "results.json").read_text())
  assert set(res) == {"dataset", "model", "n_test", "n_splits",
                      "model_accuracy", "random_expert_accuracy",
                      "best_expert_accuracy", "scores"}
  for b in ("model_accuracy", "random_expert_accuracy",
            "best_expert_accuracy"):
    assert set(res[b]) == {"mean", "std"}
  assert set(res["scores"]) == set(scores)
  for s in scores:
    e = res["scores"][s]
    assert set(e) == {"alphas", "coverage", "mean_set_size", "strategies"}
    assert len(e["alphas"]) == len(e["coverage"]) == n_alphas
    assert set(e["strategies"]) == set(config.STRATEGIES)
    for t in e["strategies"].values():
      assert set(t) == STRATEGY_KEYS | {CROSS}
      assert set(t[CROSS]) == {"mean", "std"}
      assert 0.0 <= t[CROSS]["mean"] <= 1.0
      assert len(t["accuracy_mean"]) == n_alphas
      assert t["alpha_opt"] in e["alphas"]
      assert 0.0 <= t["p_value_vs_strongest_baseline"] <= 1.0
  table = (out / "table1.md").read_text()
  assert table.count("| Segregativity-Based |") == len(scores)
  assert table.count("| Segregativity-LCB |") == len(scores)
  assert "Acc. cross-fitted [%]" in table and "  |" not in table
  for line in table.splitlines():
    if "| Segregativity-Based |" in line:  # A number in the cross-fitted column.
      assert re.match(r"\d+\.\d\d ± \d+\.\d\d$", line.split("|")[5].strip())
  for s in scores:
    assert (out / f"accuracy_vs_alpha_{s}.png").stat().st_size > 1000
    assert (out / f"workload_vs_alpha_{s}.png").stat().st_size > 1000
  details = json.loads((out / "details.json").read_text())
  assert details["command"].startswith(
      "python -m experiments.conformal_deferral ")
  assert [p for p in out.parent.iterdir() if p.name.startswith(".")] == []
  return res


def test_synthetic_run_writes_schema(tmp_path, capsys):
  out = tmp_path / "syn"
  argv = ["--dataset", "synthetic", "--splits", "3", "--cal-size", "300",
          "--alphas", "0.1,0.02,0.3", "--out", str(out), "--no-progress"]
  assert exp.main(argv) == 0
  res = _check_results(out, ["lac", "aps", "raps"], 3)
  assert res["n_splits"] == 3 and res["n_test"] == 1700
  assert res["scores"]["lac"]["alphas"] == [0.02, 0.1, 0.3]
  details = json.loads((out / "details.json").read_text())
  assert details["command"] == ("python -m experiments.conformal_deferral "
                                + shlex.join(argv))
  assert details["args"]["cal_size"] == 300
  assert details["lcb"] == {"lambda": 1.0, "prior_a": 1.0, "prior_b": 1.0}
  for sc in ("lac", "aps", "raps"):
    vs = details["scores"][sc]["lcb_vs"]
    assert set(vs) == {"segregativity", "naive_most_accurate"}
    for d in vs.values():
      assert 0.0 <= d["p_value"] <= 1.0 and abs(d["mean_difference"]) < 1
  printed = capsys.readouterr().out
  assert "Segregativity-LCB vs each strategy" in printed
  assert "| LAC | Segregativity-Based |" in printed and "wrote" in printed
  # No float noise such as 0.9059999999999999: at most 12 significant digits.
  floats = _floats(json.loads((out / "results.json").read_text()))
  assert floats and all(x == float(f"{x:.12g}") for x in floats)


def _floats(obj):
  if isinstance(obj, dict):
    return [x for v in obj.values() for x in _floats(v)]
  if isinstance(obj, list):
    return [x for v in obj for x in _floats(v)]
  return [obj] if isinstance(obj, float) else []


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  """A small pool in the bring-your-own format (quick to sweep)."""
  path = tmp_path_factory.mktemp("small") / "byo"
  data.save_byo(data.synthetic_pool(1, num_images=600, num_experts=30,
                                    answers_per_expert=60), path)
  return ["--dataset", "byo", "--byo-dir", str(path), "--splits", "2",
          "--cal-size", "200", "--alphas", "0.05,0.2", "--no-progress"]


def test_rerun_replaces_the_owned_set_and_keeps_the_rest(tmp_path, small):
  out = tmp_path / "out"
  assert exp.main(small + ["--score", "aps", "--out", str(out)]) == 0
  assert (out / "accuracy_vs_alpha_aps.png").exists()
  (out / "notes.txt").write_text("mine")
  assert exp.main(small + ["--score", "lac", "--out", str(out)]) == 0
  assert not (out / "accuracy_vs_alpha_aps.png").exists()  # stale plot gone
  assert (out / "notes.txt").read_text() == "mine"
  _check_results(out, ["lac"], 2)


def test_quickstart_help_and_parser(capsys):
  for main in (quickstart.main, exp.main):
    with pytest.raises(SystemExit) as e:
      main(["--help"])
    assert e.value.code == 0
  assert quickstart.main(["--splits", "0"]) == 2
  assert capsys.readouterr().err == "error: --splits must be >= 1, got 0\n"


def test_ablation_f_kept_and_n_shots(tmp_path, capsys, small):
  out = tmp_path / "abl"
  for name, grid in (("f_kept", "1.0,0.8"), ("n_shots", "2,5")):
    assert exp.main(small + ["--score", "lac", "--ablation", name,
                            "--ablation-grid", grid, "--out", str(out)]) == 0
    abl = json.loads((out / f"ablation_{name}.json").read_text())
    assert [r["value"] for r in abl["rows"]] == [float(v) if name == "f_kept"
                                                 else int(v)
                                                 for v in grid.split(",")]
    assert (out / f"ablation_{name}.png").stat().st_size > 1000
    table = (out / f"ablation_{name}.md").read_text()
    assert capsys.readouterr().out.startswith(table)  # Printed like Table 1.
    assert f"| {name} | Segregativity-LCB | Segregativity-Based |" in table
    assert abl["command"].startswith("python -m experiments.conformal_deferral")
  assert (out / "ablation_f_kept.json").exists()  # Kept by the second run.


def test_byo_roundtrip_and_cost_tie_break(tmp_path, capsys):
  ds = data.synthetic_pool(1, num_images=600, num_experts=30,
                           answers_per_expert=60)
  data.save_byo(ds, tmp_path / "byo")
  costs = tmp_path / "costs.npy"
  np.save(costs, np.arange(30, dtype=np.float32))
  out = tmp_path / "out"
  assert exp.main(["--dataset", "byo", "--byo-dir", str(tmp_path / "byo"),
                   "--splits", "2", "--cal-size", "200", "--alphas", "0.1,0.3",
                   "--score", "lac", "--tie-break", "cost", "--costs",
                   str(costs), "--out", str(out), "--no-progress"]) == 0
  _check_results(out, ["lac"], 2)
  np.save(costs, np.arange(29, dtype=np.float32))
  assert exp.main(["--dataset", "byo", "--byo-dir", str(tmp_path / "byo"),
                   "--tie-break", "cost", "--costs", str(costs), "--score",
                   "lac", "--cal-size", "200", "--out", str(out)]) == 2
  assert capsys.readouterr().err.startswith(
      "error: --costs must hold [J]=[30] numbers, got float32 of shape (29,)")


def _bad_cases(tmp_path):
  (tmp_path / "file").write_text("x")
  return [
      (["--f-kept", "1.5"], "--f-kept must lie in (0, 1], got 1.5"),
      (["--f-kept", "nan"], "--f-kept must lie in (0, 1], got nan"),
      (["--alphas", ""], "--alphas must be a non-empty comma-separated list"),
      (["--alphas", "0.1,0.2,0.1"], "--alphas must not repeat a value"),
      (["--alphas", "0.1,1.5"], "--alphas must hold numbers in (0, 1), got 1.5"),
      (["--alphas", "0.1,x"], "--alphas must be a number, got 'x'"),
      (["--seed", "-1"], "--seed must be an integer in [0, 2**32), got -1"),
      (["--seed", str(2**70)], "--seed must be an integer in [0, 2**32)"),
      (["--cal-size", "1"], "--cal-size must be >= 3 with RAPS"),
      (["--cal-size", "0", "--score", "lac"], "--cal-size must be >= 1"),
      (["--cal-size", "5000"], "--cal-size must be <= 1999 for --dataset "
       "synthetic"),
      (["--splits", "0"], "--splits must be >= 1, got 0"),
      (["--lcb-lambda", "-1"], "--lcb-lambda must lie in [0, inf), got -1"),
      (["--lcb-prior-a", "0"], "--lcb-prior-a must lie in (0, inf), got 0"),
      (["--lcb-prior-b", "nan"], "--lcb-prior-b must lie in (0, inf)"),
      (["--n-shots", "1.5"], "--n-shots must be an integer, got '1.5'"),
      (["--dataset", "nope"], "--dataset: invalid choice: 'nope'"),
      (["--ablation", "f_kept", "--ablation-grid", "1.0,1.5"],
       "--ablation-grid must hold numbers in (0, 1], got 1.5"),
      (["--ablation", "n_shots", "--ablation-grid", "5,5"],
       "--ablation-grid must not repeat a value"),
      (["--ablation-grid", "1,2"], "--ablation-grid needs --ablation"),
      (["--ablation", "f_kept", "--f-kept", "0.5"],
       "--ablation f_kept sweeps its own values"),
      (["--tie-break", "cost"], "--tie-break cost needs --costs"),
      (["--costs", str(tmp_path / "c.npy")], "--costs is only used with"),
      (["--dataset", "cifar10s", "--data-dir", str(tmp_path / "nodata")],
       f"--data-dir: {tmp_path / 'nodata'} does not exist"),
      (["--dataset", "imagenet16h", "--data-dir", str(tmp_path)],
       "--human-csv is required with --dataset imagenet16h"),
      (["--dataset", "cifar10h-raw", "--data-dir", str(tmp_path)],
       f"--raw-csv: {tmp_path / 'cifar10h' / 'cifar10h-raw.csv'} does not "
       "exist; download"),
      (["--dataset", "byo"], "--dataset byo needs --byo-dir"),
      (["--out", str(tmp_path / "file" / "out")],
       f"--out: cannot create or write to {tmp_path / 'file'}"),
      (["--out", str(tmp_path / "file")], "--out: "),
  ]


def test_every_bad_argument_is_one_line_naming_the_option(tmp_path, capsys,
                                                           monkeypatch):
  def no_work(*args, **kwargs):
    raise AssertionError("the sweep ran before the arguments were checked")

  monkeypatch.setattr(run_lib, "sweep", no_work)
  cli_checks.assert_bad_arguments_are_one_line(exp.main, _bad_cases(tmp_path),
                                               tmp_path / "o", capsys)


def test_debug_shows_the_traceback(tmp_path, capsys):
  code = exp.main(["--f-kept", "0.02", "--alphas", "0.1", "--splits", "1",
                   "--score", "lac", "--out", str(tmp_path), "--no-progress"])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1 and "no usable annotator" in err
  code = exp.main(["--f-kept", "0.02", "--alphas", "0.1", "--splits", "1",
                   "--score", "lac", "--out", str(tmp_path), "--no-progress",
                   "--debug"])
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" in err and "no usable annotator" in err


def test_help_subprocess_documents_every_option():
  cli_checks.assert_help_documents_every_option(
      "experiments.conformal_deferral", cli.build_parser())

def test_module_entry_point_errors_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.conformal_deferral", "--dataset",
       "cifar10s", "--data-dir", str(tmp_path / "nodata"), "--out",
       str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2
  assert proc.stderr == (f"error: --data-dir: {tmp_path / 'nodata'} does not "
                         "exist; pass the data directory with --data-dir "
                         "PATH\n")


def test_documented_commands_parse():
  parser = cli.build_parser()
  for name, e in config.EXPERIMENTS.items():
    words = shlex.split(e.command)
    assert words[:3] == ["python", "-m", f"experiments.{words[2].split('.')[-1]}"]
    if words[2] == "experiments.conformal_deferral":
      args = parser.parse_args(words[3:])
      assert args.dataset in config.DATASETS, name
  # The expected numbers the config documents are the ones the README
  # publishes (Table 1 of the CIFAR-10S DenseNet run).
  readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
  dense = config.EXPERIMENTS["cifar10s_densenet"].expected
  for score, strategies in dense["accuracy_at_opt"].items():
    for strategy, (mean, std) in strategies.items():
      assert f"{mean:.2f} ± {std:.2f}" in readme, (score, strategy)


def _fake_per(n_splits, n_alphas, cross=True):
  rng = np.random.default_rng(0)
  fields = ("accuracy", "queries", "max_queries_per_expert",
            "avg_queries_per_queried_expert")
  strat = {}
  for t in config.STRATEGIES:
    strat[t] = {f: [rng.random(n_alphas) for _ in range(n_splits)]
                for f in fields}
    if cross:
      strat[t][CROSS] = [0.9, 0.92, 0.94][:n_splits]
  return {"coverage": {"lac": [np.full(n_alphas, 0.9)] * n_splits},
          "mean_set_size": {"lac": [np.ones(n_alphas)] * n_splits},
          "raps_params": [],
          "strategies": {"lac": strat},
          "baselines": {b: [[0.9, 1.0, 2.0, 3.0]] * n_splits
                        for b in ("model", "random_expert", "best_expert")},
          "n_test": 10, "model_accuracy_pool": 0.9}


def _names(dataset, model):
  return types.SimpleNamespace(dataset=dataset, model=model)


def test_report_reads_the_cross_fitted_accuracy():
  per = _fake_per(3, 4)
  res, det = report.summarise(per, pool=_names("cifar10s", "m"),
                              alphas=np.array([0.01, 0.1, 0.2, 0.3]),
                              scores=["lac"])
  for t in config.STRATEGIES:
    r = res["scores"]["lac"]["strategies"][t]
    assert r[CROSS]["mean"] == pytest.approx(0.92)
    assert r[CROSS]["std"] == pytest.approx(0.02)
    acc = np.array(per["strategies"]["lac"][t]["accuracy"])
    assert r["alpha_opt"] == [0.01, 0.1, 0.2, 0.3][acc.mean(0).argmax()]
  table = report.table1(res, det)
  assert table.count("92.00 ± 2.00") == len(config.STRATEGIES)
  res2, _ = report.summarise(_fake_per(3, 4, cross=False),
                             pool=_names("c", "m"), alphas=np.arange(1, 5) / 10,
                             scores=["lac"])
  assert CROSS not in res2["scores"]["lac"]["strategies"]["segregativity"]


@pytest.mark.parametrize("dataset, simulated", [("synthetic", True),
                                                ("cifar10s", False)])
def test_plots_can_be_read_alone(dataset, simulated):
  per = _fake_per(3, 4)
  # Two strategies with the same workload curve: the legend must say so.
  same = per["strategies"]["lac"]
  same["segregativity"]["queries"] = same["naive_random"]["queries"]
  res, _ = report.summarise(per, pool=_names(dataset, "densenet"),
                            alphas=np.array([0.01, 0.1, 0.2, 0.3]),
                            scores=["lac"])
  figs = {}
  report.plot(res, lambda fig, name: figs.setdefault(name, fig))
  assert set(figs) == {"accuracy_vs_alpha_lac.png", "workload_vs_alpha_lac.png"}
  for name, fig in figs.items():
    heading = " ".join([ax.get_title() for ax in fig.axes]
                       + [fig._suptitle.get_text() if fig._suptitle else ""])  # pylint: disable=protected-access
    assert dataset in heading and "densenet" in heading and "LAC" in heading
    assert ("simulated" in heading) == simulated
    for ax in fig.axes:
      assert ax.get_ylabel() and ax.get_xlabel()
  acc_ax = figs["accuracy_vs_alpha_lac.png"].axes[0]
  legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
  assert any("α_opt" in t for t in legend)
  assert any("± 1 std over 3 splits" in t for t in legend)
  stars = [ln for ln in acc_ax.get_lines() if ln.get_marker() == "*"
           and len(ln.get_xdata())]
  assert len(stars) == len(config.STRATEGIES)
  queries_ax = figs["workload_vs_alpha_lac.png"].axes[0]
  legend = [t.get_text() for t in queries_ax.get_legend().get_texts()]
  assert "Segregativity-Based (same as Naive Random)" in legend


def test_ablation_plot_and_table_can_be_read_alone():
  rows = []
  for v in (1.0, 0.8):
    res, det = report.summarise(_fake_per(3, 4), pool=_names("synthetic", "m"),
                                alphas=np.array([0.01, 0.1, 0.2, 0.3]),
                                scores=["lac"])
    rows.append({"value": v, "results": res,
                 "strongest_baseline": det["strongest_baseline"]})
  ablation = {"dataset": "synthetic", "model": "m", "ablation": "f_kept",
              "score": "lac", "rows": rows, "stopped": None}
  figs = {}
  assert report.plot_ablation(
      ablation, lambda fig, name: figs.setdefault(name, fig)) == [
          "ablation_f_kept.png"]
  fig = figs["ablation_f_kept.png"]
  heading = fig._suptitle.get_text()  # pylint: disable=protected-access
  assert "simulated" in heading and "LAC" in heading and "f_kept" in heading
  assert [ax.get_ylabel() for ax in fig.axes] == [
      "system accuracy at α_opt [%]", "α_opt"]
  legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert "± 1 std over 3 splits" in legend
  table = report.ablation_table(ablation)
  assert table.splitlines()[2] == (
      "| f_kept | Segregativity-LCB | Segregativity-Based | Naive Most "
      "Accurate | Naive Random | Best Expert | Model |")
  assert table.splitlines()[4].startswith("| 1 | ")
  assert "(92.00 ± 2.00)" in table  # cross-fitted beside the hindsight figure


def test_f_kept_too_small_ends_the_ablation_with_a_note(tmp_path, capsys,
                                                        small):
  out = tmp_path / "abl"
  assert exp.main(small + ["--score", "lac", "--ablation", "f_kept",
                          "--ablation-grid", "1.0,0.02", "--out",
                          str(out)]) == 0
  abl = json.loads((out / "ablation_f_kept.json").read_text())
  assert [r["value"] for r in abl["rows"]] == [1.0]
  assert abl["stopped"].startswith("Stopped at f_kept = 0.02")
  assert "Stopped at f_kept = 0.02" in capsys.readouterr().out


def test_cifar10s_real_data(data_dir, tmp_path):
  out = tmp_path / "c10s"
  assert exp.main(["--dataset", "cifar10s", "--data-dir", str(data_dir),
                   "--splits", "2", "--alphas", "0.01,0.05,0.5", "--out",
                   str(out), "--no-progress"]) == 0
  res = _check_results(out, ["lac", "aps", "raps"], 3)
  assert res["n_test"] == 1000
  assert res["model_accuracy"]["mean"] == 0.906  # 906 of 1,000, no float noise
  assert res["random_expert_accuracy"]["mean"] == pytest.approx(0.844,
                                                                abs=0.03)


def test_cifar10h_raw_schema_file_end_to_end(data_dir, tmp_path):
  """A small file in the original cifar10h-raw.csv schema + real model probs."""
  probs, labels, _ = data.load_model_probs(data_dir, "resnet-110")
  del probs
  rng = np.random.default_rng(0)
  header = ("annotator_id", "trial_index", "is_attn_check", "image_filename",
            "cifar10_test_test_idx", "true_category", "true_label",
            "chosen_category", "chosen_label", "correct_guess",
            "reaction_time", "time_elapsed", "subcategory")
  images = np.arange(400)
  path = tmp_path / "cifar10h-raw.csv"
  with path.open("w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for a in range(40):
      for t, i in enumerate(rng.choice(images, 60, replace=False)):
        y = int(labels[i])
        m = y if rng.random() < 0.9 else int(rng.integers(0, 10))
        w.writerow((a, t, 0, f"{i}.png", i, "c", y, "c", m, int(m == y), 500,
                    t * 1000, "s"))
      w.writerow((a, 99, 1, "attn.png", -99999, "c", 0, "c", 0, 1, 500, 0, "s"))
  out = tmp_path / "c10h"
  assert exp.main(["--dataset", "cifar10h-raw", "--data-dir", str(data_dir),
                   "--raw-csv", str(path), "--model", "resnet-110", "--splits",
                   "2", "--cal-size", "100", "--alphas", "0.05,0.2", "--out",
                   str(out), "--no-progress"]) == 0
  res = _check_results(out, ["lac", "aps", "raps"], 2)
  annotated = len({int(i) for i in images} & set(_annotated(path)))
  assert res["n_test"] == annotated - 100


def _annotated(path):
  with path.open() as f:
    return [int(r["cifar10_test_test_idx"]) for r in csv.DictReader(f)
            if r["is_attn_check"] == "0"]


def test_imagenet16h_schema_file_end_to_end(data_dir, tmp_path):
  """A small human CSV in the original ImageNet-16H schema + real VGG-19 preds."""
  names, _, labels, classes = data.load_imagenet16h_model_preds(data_dir)
  rng = np.random.default_rng(0)
  header = ("id", "worker_id", "participant_id", "image_name",
            "image_category", "noise_level", "participant_classification",
            "confidence", "correct", "classification_time")
  path = tmp_path / "human_only_classification_6per_img_export.csv"
  row_id = 0
  with path.open("w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for name, y in zip(names, labels):
      for worker in rng.choice(40, 6, replace=False):
        ans = y if rng.random() < 0.86 else int(rng.integers(0, 16))
        w.writerow((row_id, f"w{worker}", 100 + worker, name, classes[y], 95,
                    classes[ans], "high", int(ans == y), 1234))
        row_id += 1
  out = tmp_path / "h16"
  assert exp.main(["--dataset", "imagenet16h", "--data-dir", str(data_dir),
                   "--human-csv", str(path), "--splits", "2", "--cal-size",
                   "1000", "--alphas", "0.05,0.2", "--score", "aps", "--out",
                   str(out), "--no-progress"]) == 0
  res = _check_results(out, ["aps"], 2)
  assert res["n_test"] == 200
