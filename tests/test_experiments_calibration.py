"""Tests of the multi-expert calibration experiment on tiny settings."""

import csv
import io
import json
import re
import shlex
import zipfile

import numpy as np
import pytest
from PIL import Image

from experiments import _cli
from experiments import multi_expert_calibration as exp
from experiments.multi_expert_calibration import __main__ as cli
from experiments.multi_expert_calibration import config as configs
from experiments.multi_expert_calibration import run as run_lib
from l2d_jax import data

TINY_MOG = ["--dataset", "mog", "--set", "num_samples=600", "--epochs", "2",
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


def test_mog_schema_resume_and_both_training_paths(tmp_path, capsys):
  out = tmp_path / "inc"
  argv = TINY_MOG + ["--experiment", "increasing-experts", "--settings",
                     "1,2", "--out", str(out)]
  # A "killed" sweep: only the softmax runs were recorded (trained together).
  assert exp.main(argv + ["--parameterisation", "softmax"]) == 0
  first = json.loads((out / "results.json").read_text())["results"]
  assert len(first) == 2
  capsys.readouterr()
  # Resumed one run at a time, with checkpoints kept.
  assert exp.main(argv + ["--parameterisation", "both", "--sequential",
                          "--keep-checkpoints"]) == 0
  assert "2 runs to do, 2 already recorded" in capsys.readouterr().out
  res = _check_schema(out, "mog", "increasing-experts",
                      {(p, s, 0) for p in ("softmax", "ova") for s in (1, 2)},
                      lambda s: s)
  # Finished runs are skipped, not retrained: their numbers are unchanged.
  assert [r for r in res["results"] if r["parameterisation"] == "softmax"
          ] == first
  assert (out / "checkpoints" / "ova_2_seed0" / "metrics.jsonl").exists()
  details = json.loads((out / "details.json").read_text())
  assert details["config"]["epochs"] == 2 and len(details["runs"]) == 4
  assert details["command"] == cli.PROG + " " + " ".join(
      shlex.quote(a) for a in argv + ["--parameterisation", "both",
                                      "--sequential", "--keep-checkpoints"])
  # Rerunning a finished sweep trains nothing.
  assert exp.main(argv) == 0
  assert "0 runs to do, 4 already recorded" in capsys.readouterr().out
  # Another configuration in the same folder is refused in one line.
  other = list(argv)
  other[other.index("--epochs") + 1] = "3"
  assert exp.main(other) == 2
  err = capsys.readouterr().err
  assert re.search(r"^error: .*different configuration.*epochs", err)
  assert len(err.strip().splitlines()) == 1


def test_groups_on_several_threads_give_the_same_numbers(tmp_path, capsys):
  results = []
  for workers in ("1", "3"):
    out = tmp_path / f"w{workers}"
    assert exp.main(TINY_MOG + ["--experiment", "specialised", "--settings",
                                "1,2", "--out", str(out), "--workers",
                                workers]) == 0
    results.append(json.loads((out / "results.json").read_text()))
  capsys.readouterr()
  assert len(results[0]["results"]) == 4
  assert results[0] == results[1]


def test_runs_trained_together_match_runs_trained_alone():
  cfg = run_lib.apply_overrides(configs.get_config("mog", "cpu"), {
      "epochs": 6, "batch_size": 64, "patience": 2},
                                ["num_samples=900"])
  datasets = {s: run_lib.load_mog(cfg, s) for s in (0, 1)}
  knowledge = exp.expert_knowledge("mog", "increasing-experts", 2, 4)
  for p in ("softmax", "ova"):
    together = exp.train_together(datasets, parameterisation=p,
                                  knowledge=knowledge, cfg=cfg, num_bins=15)
    for seed, (res, diag) in together.items():
      alone, alone_diag = exp.train_and_evaluate(
          datasets[seed], parameterisation=p, knowledge=knowledge, seed=seed,
          cfg=cfg, num_bins=15, checkpoint_dir=None, progress=False)
      assert diag["epochs"] == alone_diag["epochs"]
      assert diag["best_epoch"] == alone_diag["best_epoch"]
      assert diag["best_val"] == pytest.approx(alone_diag["best_val"],
                                               rel=1e-5)
      # Parameters agree to ~1e-6; an estimate may cross an ECE bin edge.
      assert res["system_accuracy"] == pytest.approx(
          alone["system_accuracy"], abs=2 / 300)
      np.testing.assert_allclose(res["ece_per_expert"],
                                 alone["ece_per_expert"], atol=2e-3)


def test_models_built_together_equal_models_built_alone():
  from experiments.multi_expert_calibration import train as train_lib  # noqa: E501  pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  cfg = configs.get_config("mog", "cpu")
  for num_experts in (1, 3):
    together = train_lib.build_models(cfg, 4, num_experts, (0, 7))
    for seed, model in zip((0, 7), together):
      alone = jax.tree.leaves(nnx.state(train_lib.build_model(
          cfg, 4, num_experts, seed)))
      got = jax.tree.leaves(nnx.state(model))
      assert len(got) == len(alone) == 8  # 4 layers x (kernel, bias)
      for a, b in zip(got, alone):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  # Different seeds, different parameters.
  assert not np.array_equal(nnx.state(together[0])["head"]["kernel"][...],
                            nnx.state(together[1])["head"]["kernel"][...])


def test_evaluate_logits_by_hand():
  # K = 2 classes, J = 1 expert; OvA estimate = sigmoid(g_⊥).
  logits = np.array([[2.0, 0.0, -2.0],   # model keeps, predicts 0 (right)
                     [0.0, 1.0, 3.0],    # defers; expert right
                     [0.0, 1.0, -1.0],   # model keeps, predicts 1 (wrong)
                     [1.0, 0.0, 2.0]],   # defers; expert wrong
                    np.float32)
  labels = np.array([0, 1, 0, 1])
  preds = np.array([[1], [1], [0], [0]])
  res, diag = exp.evaluate_logits(logits, labels, preds, "ova", num_bins=2)
  conf = 1 / (1 + np.exp(-logits[:, 2]))
  correct = np.array([0.0, 1.0, 1.0, 0.0])
  low, high = conf < 0.5, conf >= 0.5  # examples 0, 2 | 1, 3
  ece = sum(m.mean() * abs(conf[m].mean() - correct[m].mean())
            for m in (low, high))
  assert res["ece_per_expert"][0] == pytest.approx(ece, abs=1e-6)
  assert res["ece_mean"] == pytest.approx(ece, abs=1e-6)
  assert res["system_accuracy"] == 0.5
  assert diag["coverage"] == 0.5 and diag["classifier_accuracy"] == 0.5
  np.testing.assert_allclose(diag["deferral_rates"], [0.5])
  np.testing.assert_allclose(diag["mean_estimate"], [conf.mean()], rtol=1e-6)
  np.testing.assert_allclose(diag["expert_accuracy"], [0.5])
  assert list(diag["reliability"][0]["counts"]) == [2, 2]
  # Softmax: q_⊥ / (1 - q_⊥), capped at 1 (examples 1, 3 exceed 1 before).
  res, diag = exp.evaluate_logits(logits, labels, preds, "softmax",
                                  num_bins=2)
  q = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  raw = q[:, 2] / (1 - q[:, 2])
  assert (raw > 1).tolist() == [False, True, False, True]
  assert diag["softmax_estimate_above_one"][0] == 0.5
  conf = np.minimum(raw, 1.0)
  low, high = conf < 0.5, conf >= 0.5
  ece = sum(m.mean() * abs(conf[m].mean() - correct[m].mean())
            for m in (low, high) if m.any())
  assert res["ece_mean"] == pytest.approx(ece, abs=1e-6)


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
  assert exp.main([
      "--dataset", "cifar10", "--experiment", "expert-dependence",
      "--settings", "0.95", "--parameterisation", "ova", "--seeds", "1",
      "--epochs", "1", "--batch-size", "8", "--set", "train_size=null",
      "--data-dir", str(tmp_path / "data"), "--cache-dir",
      str(tmp_path / "cache"), "--out", str(out), "--no-progress"]) == 0
  _check_schema(out, "cifar10", "expert-dependence", {("ova", 0.95, 0)},
                lambda s: 4)
  assert "ECE random expert" in (out / "table.md").read_text()


def test_help_shows_every_option_with_help(capsys):
  with pytest.raises(SystemExit) as e:
    exp.main(["--help"])
  assert e.value.code == 0
  assert "(default: 3)" in capsys.readouterr().out  # --seeds
  assert _cli.options_without_help(cli.build_parser()) == []


def _documented_commands(fn):
  doc = fn.__doc__
  block = doc[doc.index("Command::"):].split("\n\n")[1]
  return shlex.split(block.replace("\\\n", " "))


@pytest.mark.parametrize("key", sorted(configs.CONFIGS))
def test_documented_commands_run_the_documented_config(key):
  """Each config's command selects it, and the numbers its text states hold."""
  dataset, name = key
  fn = configs.CONFIGS[key]
  argv = _documented_commands(fn)
  assert argv[:3] == ["python", "-m", "experiments.multi_expert_calibration"]
  args = cli.build_parser().parse_args(argv[3:])
  assert (args.dataset, args.config) == key
  cfg = configs.get_config(dataset, name)
  assert "Expected" in fn.__doc__, f"{fn.__name__} states no expected result"
  recipe = fn
  if "identical to :func:`mog_paper`" in " ".join(fn.__doc__.split()):
    assert cfg == configs.mog_paper()
    recipe = configs.mog_paper
  doc = " ".join(recipe.__doc__.split())
  stated = {"batch_size": re.findall(r"batch (\d+)", doc),
            "epochs": re.findall(r"(?:at most|and) (\d+) epochs", doc),
            "patience": re.findall(r"look-ahead of (\d+) epochs", doc),
            "lr": re.findall(r"\blr (?:here is )?(\d[0-9.e-]*\d)", doc)[:1]}
  assert stated["batch_size"] and stated["epochs"] and stated["lr"], stated
  for k, values in stated.items():
    for v in values:
      assert float(v) == cfg[k], (recipe.__name__, k, v)


def test_unknown_config_is_refused():
  with pytest.raises(ValueError, match="no config"):
    configs.get_config("mnist", "cpu")


@pytest.mark.parametrize("argv, match", [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--settings", "1,x"], "--settings must"),
    (["--settings", "0.5"], "integers >= 1"),
    (["--experiment", "expert-dependence", "--settings", "1.5"],
     "probabilities"),
    (["--settings", "2,2"], "must not repeat"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--set", "hidden"], "KEY=VALUE"),
    (["--set", "depth=3"], "unknown config key"),
    (["--num-bins", "0"], "--num-bins must be >= 1"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"],
     "--data-dir: /nonexistent does not exist; pass the data directory with "
     "--data-dir PATH"),
    (["--dataset", "mnist"], "--dataset"),
    (["--parameterisation", "sigmoid"], "--parameterisation"),
    (["--seeds", "three"], "--seeds must be an integer"),
])
def test_bad_arguments_end_with_one_line(tmp_path, capsys, argv, match):
  assert exp.main(argv + ["--out", str(tmp_path / "o"), "--no-progress"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("error: "), err
  assert match in err
  assert not (tmp_path / "o").exists()  # nothing was written


class _FakeConfig:
  """Stands in for ``jax.config``: no global cache set by the test."""

  def __init__(self, cache_dir):
    self.jax_compilation_cache_dir = cache_dir
    self.updates = {}

  def update(self, name, value):
    self.updates[name] = value


def test_use_compilation_cache(tmp_path, monkeypatch):
  fake = _FakeConfig(None)
  monkeypatch.setattr(run_lib.jax, "config", fake)
  path = run_lib.use_compilation_cache(str(tmp_path / "cache"))
  assert path == tmp_path / "cache" / "jax" and path.is_dir()
  assert fake.updates == {
      "jax_compilation_cache_dir": str(path),
      "jax_persistent_cache_min_compile_time_secs": 0.2}
  assert run_lib.use_compilation_cache(None) is None
  preset = _FakeConfig(str(tmp_path / "elsewhere"))
  monkeypatch.setattr(run_lib.jax, "config", preset)
  assert run_lib.use_compilation_cache(str(tmp_path / "cache")) == (
      tmp_path / "elsewhere")
  assert not preset.updates
