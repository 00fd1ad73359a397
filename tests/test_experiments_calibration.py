"""Smoke tests of the multi-expert calibration experiment on tiny settings."""

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from experiments import multi_expert_calibration as exp
from experiments.configs import multi_expert_calibration as configs
from l2d_jax import data

TINY_MOG = ["--dataset", "mog", "--set", "num_samples=600", "--epochs", "1",
            "--batch-size", "64", "--seeds", "1", "--no-progress"]
PNGS = ("ece.png", "system_accuracy.png", "reliability.png")


def _check_schema(out, dataset, experiment, keys, num_experts):
  res = json.loads((out / "results.json").read_text())
  assert list(res) == ["dataset", "experiment", "results"]
  assert res["dataset"] == dataset and res["experiment"] == experiment
  assert {(r["parameterisation"], r["setting"], r["seed"])
          for r in res["results"]} == keys
  for r in res["results"]:
    assert list(r) == list(exp.RESULT_KEYS)
    assert r["parameterisation"] in ("softmax", "ova")
    assert isinstance(r["seed"], int)
    j = num_experts(r["setting"])
    assert len(r["ece_per_expert"]) == j
    assert all(0.0 <= e <= 1.0 for e in r["ece_per_expert"])
    assert r["ece_mean"] == pytest.approx(np.mean(r["ece_per_expert"]))
    assert 0.0 <= r["system_accuracy"] <= 1.0
  for name in PNGS:
    assert (out / name).stat().st_size > 1000, name
  assert "ECE mean" in (out / "table.md").read_text()
  return res


def test_mog_increasing_experts_schema_and_resume(tmp_path, capsys):
  out = tmp_path / "inc"
  argv = TINY_MOG + ["--experiment", "increasing-experts", "--settings",
                     "1,2", "--out", str(out)]
  # A "killed" sweep: only the softmax runs were recorded.
  exp.main(argv + ["--parameterisation", "softmax"])
  first = json.loads((out / "results.json").read_text())["results"]
  assert len(first) == 2
  assert not (out / "checkpoints" / "softmax_1_seed0").exists()
  capsys.readouterr()
  exp.main(argv + ["--parameterisation", "both", "--keep-checkpoints"])
  assert "2 runs to do, 2 already recorded" in capsys.readouterr().out
  res = _check_schema(out, "mog", "increasing-experts",
                      {(p, s, 0) for p in ("softmax", "ova") for s in (1, 2)},
                      lambda s: s)
  # Finished runs are skipped, not retrained: their numbers are unchanged.
  assert [r for r in res["results"] if r["parameterisation"] == "softmax"
          ] == first
  assert (out / "checkpoints" / "ova_2_seed0" / "metrics.jsonl").exists()
  details = json.loads((out / "details.json").read_text())
  assert details["config"]["epochs"] == 1 and len(details["runs"]) == 4
  # Rerunning a finished sweep trains nothing.
  exp.main(argv)
  assert "0 runs to do, 4 already recorded" in capsys.readouterr().out
  # Another configuration in the same folder is refused.
  other = list(argv)
  other[other.index("--epochs") + 1] = "3"
  with pytest.raises(ValueError, match="different configuration.*epochs"):
    exp.main(other)


def test_expert_knowledge_definitions():
  inc = exp.expert_knowledge("mog", "increasing-experts", 3, 4)
  np.testing.assert_array_equal(inc, [[0, 0, 1, 1]] * 3)
  dep = exp.expert_knowledge("cifar10", "expert-dependence", 0.8, 10)
  assert dep.shape == (4, 10)
  np.testing.assert_array_equal(dep[0], 0)
  np.testing.assert_allclose(dep[1:, :5], 0.8)
  np.testing.assert_array_equal(dep[1:, 5:], 0)
  spec = exp.expert_knowledge("cifar10", "specialised", 5, 10)
  np.testing.assert_array_equal(spec.sum(0), 1)  # disjoint, covers all
  np.testing.assert_array_equal(spec[2], [0, 0, 0, 0, 1, 1, 0, 0, 0, 0])


def test_experts_are_paired_across_settings(rng):
  split = exp.Split(np.zeros((500, 2), np.float32),
                    np.arange(500, dtype=np.int32) % 4,
                    np.arange(500, dtype=np.int32) % 4)
  two = exp.simulate_experts(rng, split, exp.expert_knowledge(
      "mog", "increasing-experts", 2, 4), 4)
  eight = exp.simulate_experts(rng, split, exp.expert_knowledge(
      "mog", "increasing-experts", 8, 4), 4)
  np.testing.assert_array_equal(two, eight[:, :2])
  oracle = split.groups >= 2
  np.testing.assert_array_equal(eight[oracle], split.labels[oracle, None]
                                .repeat(8, 1))


def _fake_cifar(root, n_train=60, n_test=20):
  """Random JPEGs in the layout of ``<data_dir>/cifar10_images``."""
  rng = np.random.default_rng(0)
  folder = root / "cifar10_images"
  folder.mkdir(parents=True)
  for split, n in (("train", n_train), ("test", n_test)):
    rows = []
    with zipfile.ZipFile(folder / f"cifar10_{split}_jpg.zip", "w") as zf:
      for i in range(n):
        y = i % 10
        path = f"{split}/{data.CIFAR10_CLASSES[y]}/{i:04d}.jpg"
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(
            buf, format="JPEG")
        zf.writestr(path, buf.getvalue())
        rows.append((i, y, data.CIFAR10_CLASSES[y], path))
    with (folder / f"{split}_index.csv").open("w", newline="") as f:
      w = csv.writer(f)
      w.writerow((f"{split}_idx", "label", "class", "path"))
      w.writerows(rows)


def test_cifar10_expert_dependence_on_fake_images(tmp_path):
  """The image path (uint8 batches, SmallCNN) and §5.3's four experts."""
  _fake_cifar(tmp_path / "data")
  out = tmp_path / "c10"
  exp.main(["--dataset", "cifar10", "--experiment", "expert-dependence",
            "--settings", "0.95", "--parameterisation", "ova", "--seeds", "1",
            "--epochs", "1", "--batch-size", "8", "--set", "train_size=null",
            "--data-dir", str(tmp_path / "data"), "--cache-dir",
            str(tmp_path / "cache"), "--out", str(out), "--no-progress"])
  _check_schema(out, "cifar10", "expert-dependence", {("ova", 0.95, 0)},
                lambda s: 4)
  assert "ECE random expert" in (out / "table.md").read_text()


def test_help_exits_zero():
  with pytest.raises(SystemExit) as e:
    exp.main(["--help"])
  assert e.value.code == 0


def test_configs_are_documented():
  for (dataset, name), fn in configs.CONFIGS.items():
    assert "Command" in fn.__doc__ and "Expected" in fn.__doc__, fn.__name__
    cfg = configs.get_config(dataset, name)
    assert {"epochs", "patience", "monitor", "batch_size", "lr"} <= set(cfg)
  with pytest.raises(ValueError, match="no config"):
    configs.get_config("mnist", "cpu")


@pytest.mark.parametrize("argv, err, match", [
    (["--seeds", "0"], ValueError, "--seeds"),
    (["--settings", "1,x"], ValueError, "--settings"),
    (["--settings", "0.5"], ValueError, "integers >= 1"),
    (["--experiment", "expert-dependence", "--settings", "1.5"], ValueError,
     "probabilities"),
    (["--settings", "2,2"], ValueError, "duplicates"),
    (["--epochs", "0"], ValueError, "--epochs"),
    (["--set", "hidden"], ValueError, "KEY=VALUE"),
    (["--set", "depth=3"], ValueError, "unknown config key"),
    (["--num-bins", "0"], ValueError, "--num-bins"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"],
     FileNotFoundError, "--data-dir"),
])
def test_bad_arguments_raise_clear_errors(tmp_path, argv, err, match):
  with pytest.raises(err, match=match):
    exp.main(argv + ["--out", str(tmp_path), "--no-progress"])


@pytest.mark.parametrize("argv", [["--dataset", "mnist"],
                                  ["--parameterisation", "sigmoid"],
                                  ["--seeds", "three"]])
def test_bad_choices_exit_with_usage(argv):
  with pytest.raises(SystemExit) as e:
    exp.main(argv)
  assert e.value.code == 2
