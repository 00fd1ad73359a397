"""Smoke tests of the conformal-deferral experiment on tiny inputs."""

import csv
import json

import numpy as np
import pytest

from experiments import conformal_deferral as exp
from experiments import quickstart
from l2d_jax import data

STRATEGY_KEYS = {"accuracy_mean", "accuracy_std", "queries_mean",
                 "max_queries_per_expert_mean",
                 "avg_queries_per_queried_expert_mean", "alpha_opt",
                 "accuracy_at_opt", "p_value_vs_strongest_baseline"}


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
    assert set(e["strategies"]) == {"segregativity", "naive_most_accurate",
                                    "naive_random"}
    for t in e["strategies"].values():
      assert set(t) == STRATEGY_KEYS
      assert len(t["accuracy_mean"]) == n_alphas
      assert t["alpha_opt"] in e["alphas"]
      assert 0.0 <= t["p_value_vs_strongest_baseline"] <= 1.0
  assert (out / "table1.md").read_text().count("Segregativity-Based") == len(
      scores)
  for s in scores:
    assert (out / f"accuracy_vs_alpha_{s}.png").stat().st_size > 1000
    assert (out / f"workload_vs_alpha_{s}.png").stat().st_size > 1000
  return res


def test_synthetic_run_writes_schema(tmp_path):
  out = tmp_path / "syn"
  exp.main(["--dataset", "synthetic", "--splits", "3", "--cal-size", "300",
            "--alphas", "0.02,0.1,0.3", "--out", str(out), "--no-progress"])
  res = _check_results(out, ["lac", "aps", "raps"], 3)
  assert res["n_splits"] == 3 and res["n_test"] == 1700


def test_quickstart_help_and_parser():
  with pytest.raises(SystemExit) as e:
    quickstart.main(["--help"])
  assert e.value.code == 0
  with pytest.raises(SystemExit) as e:
    exp.main(["--help"])
  assert e.value.code == 0


def test_ablation_f_kept_and_n_shots(tmp_path):
  out = tmp_path / "abl"
  for name, grid in (("f_kept", "1.0,0.6"), ("n_shots", "2,5")):
    exp.main(["--dataset", "synthetic", "--splits", "2", "--cal-size", "300",
              "--alphas", "0.05,0.2", "--score", "lac", "--ablation", name,
              "--ablation-grid", grid, "--out", str(out), "--no-progress"])
    abl = json.loads((out / f"ablation_{name}.json").read_text())
    assert [r["value"] for r in abl["rows"]] == [float(v) if name == "f_kept"
                                                 else int(v)
                                                 for v in grid.split(",")]
    assert (out / f"ablation_{name}.png").exists()


def test_byo_roundtrip_and_cost_tie_break(tmp_path):
  ds = data.synthetic_pool(1, num_images=600, num_experts=30,
                           answers_per_expert=60)
  data.save_byo(ds, tmp_path / "byo")
  costs = tmp_path / "costs.npy"
  np.save(costs, np.arange(30, dtype=np.float32))
  out = tmp_path / "out"
  exp.main(["--dataset", "byo", "--byo-dir", str(tmp_path / "byo"),
            "--splits", "2", "--cal-size", "200", "--alphas", "0.1,0.3",
            "--score", "lac", "--tie-break", "cost", "--costs", str(costs),
            "--out", str(out), "--no-progress"])
  _check_results(out, ["lac"], 2)
  with pytest.raises(ValueError, match="--costs"):
    exp.main(["--dataset", "synthetic", "--tie-break", "cost", "--alphas",
              "0.1", "--out", str(out), "--no-progress"])


@pytest.mark.parametrize("argv, err, match", [
    (["--alphas", "0.1,1.5"], ValueError, "alphas"),
    (["--alphas", "0.1,x"], ValueError, "alphas"),
    (["--cal-size", "5000"], ValueError, "cal-size"),
    (["--splits", "0"], ValueError, "splits"),
    (["--dataset", "imagenet16h"], FileNotFoundError, "human"),
    (["--dataset", "cifar10h-raw", "--data-dir", "/nonexistent"],
     FileNotFoundError, "cifar10h-raw.csv"),
])
def test_bad_arguments_raise_clear_errors(tmp_path, argv, err, match):
  with pytest.raises(err, match=match):
    exp.main(argv + ["--out", str(tmp_path), "--no-progress"])


def test_f_kept_too_small_raises(tmp_path):
  with pytest.raises(ValueError, match="no usable annotator"):
    exp.main(["--dataset", "synthetic", "--f-kept", "0.02", "--alphas", "0.1",
              "--splits", "1", "--out", str(tmp_path), "--no-progress"])


def test_cifar10s_real_data(data_dir, tmp_path):
  out = tmp_path / "c10s"
  exp.main(["--dataset", "cifar10s", "--data-dir", str(data_dir), "--splits",
            "2", "--alphas", "0.01,0.05,0.5", "--out", str(out),
            "--no-progress"])
  res = _check_results(out, ["lac", "aps", "raps"], 3)
  assert res["n_test"] == 1000
  assert res["model_accuracy"]["mean"] == pytest.approx(0.906, abs=1e-3)
  assert res["random_expert_accuracy"]["mean"] == pytest.approx(0.844,
                                                                abs=0.03)


def test_cifar10h_raw_schema_file_end_to_end(data_dir, tmp_path):
  """A small file in the original cifar10h-raw.csv schema + real model probs."""
  probs, labels, _ = data.load_model_probs(data_dir, "resnet-110")
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
  exp.main(["--dataset", "cifar10h-raw", "--data-dir", str(data_dir),
            "--raw-csv", str(path), "--model", "resnet-110", "--splits", "2",
            "--cal-size", "100", "--alphas", "0.05,0.2", "--out", str(out),
            "--no-progress"])
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
    for i, (name, y) in enumerate(zip(names, labels)):
      for worker in rng.choice(40, 6, replace=False):
        ans = y if rng.random() < 0.86 else int(rng.integers(0, 16))
        w.writerow((row_id, f"w{worker}", 100 + worker, name, classes[y], 95,
                    classes[ans], "high", int(ans == y), 1234))
        row_id += 1
  out = tmp_path / "h16"
  exp.main(["--dataset", "imagenet16h", "--data-dir", str(data_dir),
            "--human-csv", str(path), "--splits", "2", "--cal-size", "1000",
            "--alphas", "0.05,0.2", "--score", "aps", "--out", str(out),
            "--no-progress"])
  res = _check_results(out, ["aps"], 2)
  assert res["n_test"] == 200
