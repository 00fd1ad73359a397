"""Smoke and CLI tests of the Top-k / Top-k(x) experiment (issue 10)."""

import argparse
import json
import pathlib
import shlex
import subprocess
import sys

import numpy as np
import pytest

from experiments import topk_l2d as exp
from experiments.topk_l2d import __main__ as cli
from experiments.topk_l2d import config
from experiments.topk_l2d import pools as pools_lib
from experiments.topk_l2d import report
from experiments.topk_l2d import run as run_lib
from tests import cli_checks

REPO = pathlib.Path(__file__).resolve().parents[1]

TINY = config.Budget(agent_epochs=2, agent_batch=64, rejector_epochs=2,
                     selector_epochs=2, batch=64, hidden=(8,), cnn_epochs=1,
                     cnn_train_images=64, cnn_batch=32)
LAMBDAS = (0.0, 1.0)
A = config.NUM_AGENTS
RESULT_KEYS = {"method", "seed", "expected_budget", "expected_k", "metrics"}


@pytest.fixture(scope="module")
def synthetic_run():
  x, y = pools_lib.synthetic_regression(0, 1200)
  pool = pools_lib.california_pool(x, y, budget=TINY, progress=False,
                                   dataset="synthetic_regression")
  out = run_lib.run(pool, seeds=[0, 1], budget=TINY, lambdas=LAMBDAS,
                    progress=False)
  return pool, out


def _check_schema(res, *, dataset, config_name, metrics, seeds):
  assert set(res) == {"dataset", "config", "agents", "results"}
  assert res["dataset"] == dataset and res["config"] == config_name
  assert [a["index"] for a in res["agents"]] == list(range(A))
  for a in res["agents"]:
    assert set(a) == {"index", "beta", "metric_alone"}
  assert [a["beta"] for a in res["agents"]] == list(config.BETA)
  counts = {}
  for r in res["results"]:
    m = r["method"]
    assert m in config.METHODS
    extra = ({"lambda", "selector_metric"} if m == "topkx" else {"k"})
    assert set(r) == RESULT_KEYS | extra, r
    assert set(r["metrics"]) == set(metrics), r
    assert all(np.isfinite(v) for v in r["metrics"].values()), r
    assert r["seed"] in seeds
    if m == "topkx":
      assert r["selector_metric"] in metrics
      assert 1.0 <= r["expected_k"] <= A
    else:
      assert isinstance(r["k"], int) and 1 <= r["k"] <= A
      assert r["expected_k"] == r["k"]
    counts[m] = counts.get(m, 0) + 1
  n = len(seeds)
  assert counts == {"topk": A * n, "top1": n, "oracle": A * n,
                    "random": A * n,
                    "topkx": len(LAMBDAS) * len(metrics) * n}


def test_synthetic_regression_writes_the_exact_schema(synthetic_run, tmp_path,
                                                      capsys):
  pool, out = synthetic_run
  args = argparse.Namespace(config="cpu", dataset="synthetic_regression")
  res = cli.write(tmp_path / "o", pool, out, args=args, command="cmd",
                  seconds=1.0, pool_seconds=0.5)
  capsys.readouterr()
  names = sorted(p.name for p in (tmp_path / "o").iterdir())
  assert names == ["budget_performance.png", "details.json", "results.json",
                   "table.md"]
  on_disk = json.loads((tmp_path / "o" / "results.json").read_text())
  assert on_disk["agents"][:2] == [
      {"index": 0, "beta": 0.0, "metric_alone": pytest.approx(
          res["agents"][0]["metric_alone"], rel=1e-9)},
      {"index": 1, "beta": 0.05, "metric_alone": pytest.approx(
          res["agents"][1]["metric_alone"], rel=1e-9)}]
  assert len(on_disk["results"]) == len(res["results"])
  for a, b in zip(on_disk["results"], res["results"]):
    assert a == {k: (pytest.approx(v, rel=1e-9) if isinstance(v, float)
                     else v) for k, v in b.items() if k != "metrics"} | {
                         "metrics": pytest.approx(b["metrics"], rel=1e-9)}
  _check_schema(on_disk, dataset="synthetic_regression", config_name="cpu",
                metrics=config.REGRESSION_METRICS, seeds=[0, 1])
  np.testing.assert_allclose([a["metric_alone"] for a in on_disk["agents"]],
                             pool.metric_alone(), rtol=1e-6)
  details = json.loads((tmp_path / "o" / "details.json").read_text())
  assert details["command"] == "cmd"
  table = (tmp_path / "o" / "table.md").read_text()
  for metric in config.REGRESSION_METRICS:
    assert f"## {metric}" in table


def test_topk_and_top1_budgets_and_k1_agree(synthetic_run):
  pool, out = synthetic_run
  es = out["entries"]
  for seed in (0, 1):
    top1 = [e for e in es if e["method"] == "top1" and e["seed"] == seed]
    k1 = [e for e in es if e["method"] == "topk" and e["k"] == 1
          and e["seed"] == seed]
    assert top1[0]["metrics"] == k1[0]["metrics"]
    full = [e for e in es if e["method"] in ("topk", "oracle", "random")
            and e["k"] == A and e["seed"] == seed]
    # Every agent consulted: the same budget and uniform average for all.
    for e in full:
      assert e["expected_budget"] == pytest.approx(sum(config.BETA), abs=1e-5)
      assert e["metrics"]["uniform_average_rmse"] == pytest.approx(
          full[0]["metrics"]["uniform_average_rmse"], rel=1e-5)
  # k = 1: every metric is the error of the one consulted agent.
  for e in es:
    if e.get("k") == 1:
      v = list(e["metrics"].values())
      assert v == pytest.approx([v[0]] * 3, rel=1e-6)


def test_oracle_never_worse_than_topk_at_the_same_k(synthetic_run):
  _, out = synthetic_run
  es = out["entries"]
  for seed in (0, 1):
    for k in range(1, A + 1):
      (topk,) = [e for e in es if e["method"] == "topk" and e["k"] == k
                 and e["seed"] == seed]
      (oracle,) = [e for e in es if e["method"] == "oracle" and e["k"] == k
                   and e["seed"] == seed]
      (rand,) = [e for e in es if e["method"] == "random" and e["k"] == k
                 and e["seed"] == seed]
      assert oracle["topk_deferral_loss"] <= topk["topk_deferral_loss"] + 1e-5
      assert oracle["topk_deferral_loss"] <= rand["topk_deferral_loss"] + 1e-5


def test_random_allocation_consults_k_agents_at_random():
  pool = _toy_pool(n=400)
  scores = np.zeros((400, A), np.float32)
  costs = run_lib.agent_costs(pool, "test")
  es = run_lib.random_entries(pool, scores, costs, seed=0, draws=50)
  for e in es:
    # A uniform k-set costs k/A of Σβ on average.
    assert e["expected_budget"] == pytest.approx(
        e["k"] / A * sum(config.BETA), rel=0.03)


def _toy_pool(n=60):
  rng = np.random.default_rng(0)
  y = rng.normal(size=n).astype(np.float32)
  preds = (y[:, None] + rng.normal(size=(n, A)) *
           np.arange(1, A + 1)).astype(np.float32)
  split = {s: slice(None) for s in pools_lib.SPLITS}
  return pools_lib.Pool(
      dataset="toy", task="regression",
      features={s: rng.normal(size=(n, 3)).astype(np.float32) for s in split},
      targets={s: y for s in split}, predictions={s: preds for s in split},
      beta=np.asarray(config.BETA, np.float32),
      alpha=np.asarray(config.ALPHA, np.float32))


def test_oracle_entries_use_the_k_lowest_costs():
  pool = _toy_pool()
  costs = np.asarray(run_lib.agent_costs(pool, "test"))
  es = run_lib._per_k_entries(pool, "oracle", 0, -costs, costs)  # pylint: disable=protected-access
  sorted_costs = np.sort(costs, axis=1)
  for e in es:
    k = e["k"]
    assert e["topk_deferral_loss"] == pytest.approx(
        sorted_costs[:, :k].sum(1).mean(), rel=1e-5)


def test_region_bands_overlap_and_cover():
  coord = np.arange(1000, dtype=np.float64)[::-1]
  bands = pools_lib.region_bands(coord)
  assert bands.shape == (A, 300)
  ranks = 999 - bands  # rank of each point by the coordinate
  for j in range(A):
    assert ranks[j].min() == 140 * j and ranks[j].max() == 140 * j + 299
  assert len(set(bands[:2].ravel())) == 440  # neighbours share 160 points
  with pytest.raises(ValueError, match="do not fit"):
    pools_lib.region_bands(coord, width=0.5)


def test_expert_class_masks():
  m = pools_lib.expert_class_masks(5, 10)
  assert [np.flatnonzero(r).tolist() for r in m] == [
      [0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9], [0, 1, 8, 9]]
  assert pools_lib.expert_class_masks(5, 100).sum(1).tolist() == [40] * 5


def test_image_pipeline_on_random_images():
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, size=(160, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, size=160).astype(np.int32)
  pool = pools_lib.image_pool(imgs[:64], labels[:64], imgs[64:], labels[64:],
                              num_classes=10, budget=TINY, progress=False)
  assert pool.task == "classification"
  assert pool.predictions["test"].shape[1] == A
  # The experts know their classes with p = 0.95 (uniform guesses elsewhere).
  out = run_lib.run_seed(pool, seed=0, budget=TINY, lambdas=LAMBDAS,
                         progress=False)
  res = report.results(out["entries"], dataset="cifar10", config_name="cpu",
                       beta=pool.beta, metric_alone=pool.metric_alone())
  _check_schema(res, dataset="cifar10", config_name="cpu",
                metrics=config.CLASSIFICATION_METRICS, seeds=[0])
  for k in range(1, A + 1):
    (topk,) = [e for e in out["entries"] if e["method"] == "topk"
               and e["k"] == k]
    (oracle,) = [e for e in out["entries"] if e["method"] == "oracle"
                 and e["k"] == k]
    # Correct agents cost β <= .25 < 1 <= a wrong agent: the oracle's set
    # holds an answer y whenever any agent does.
    assert (oracle["metrics"]["topk_accuracy"]
            >= topk["metrics"]["topk_accuracy"])


def test_california_housing_subsample(data_dir, tmp_path):
  from l2d_jax import data  # pylint: disable=g-import-not-at-top
  x, y, names = data.load_california_housing(data_dir)
  keep = np.random.default_rng(0).permutation(x.shape[0])[:1500]
  pool = pools_lib.california_pool(
      x[keep], y[keep], budget=TINY, progress=False,
      lat_lon_columns=(names.index("Latitude"), names.index("Longitude")))
  out = run_lib.run(pool, seeds=[0], budget=TINY, lambdas=LAMBDAS,
                    progress=False)
  res = report.results(out["entries"], dataset=pool.dataset,
                       config_name="cpu", beta=pool.beta,
                       metric_alone=pool.metric_alone())
  _check_schema(res, dataset="california_housing", config_name="cpu",
                metrics=config.REGRESSION_METRICS, seeds=[0])


def _bad_cases(tmp_path):
  (tmp_path / "file").write_text("x")
  # A data directory that passes the data checks, so that the --out case
  # tests --out whether or not ../shared/data exists.
  fake = tmp_path / "data" / "california_housing"
  fake.mkdir(parents=True)
  (fake / "cal_housing.data").write_text("")
  return [
      (["--seeds", "0"], "--seeds must be >= 1, got 0"),
      (["--seeds", "x"], "--seeds must be an integer, got 'x'"),
      (["--first-seed", "-1"], "--first-seed must be an integer in [0, 2**32)"),
      (["--dataset", "mnist"], "--dataset: invalid choice: 'mnist'"),
      (["--config", "tpu"], "--config: invalid choice: 'tpu'"),
      (["--lambdas", "0,-1"], "--lambdas must hold numbers in [0, inf], got -1"),
      (["--lambdas", "1,1"], "--lambdas must not repeat a value"),
      (["--selector-scale", "max"], "--selector-scale: invalid choice"),
      (["--data-dir", str(tmp_path / "nodata")],
       f"--data-dir: {tmp_path / 'nodata'} does not exist"),
      (["--dataset", "svhn", "--data-dir", str(tmp_path)],
       f"--data-dir: SVHN (.mat) not found: {tmp_path / 'svhn'}"),
      (["--dataset", "cifar100", "--data-dir", str(tmp_path)],
       f"--data-dir: CIFAR-100 (binary version) not found: "
       f"{tmp_path / 'cifar-100-binary'}"),
      (["--dataset", "california_housing", "--data-dir", str(tmp_path)],
       "--data-dir: California Housing not found"),
      (["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "file")],
       "--out: "),
  ]


def test_every_bad_argument_is_one_line_naming_the_option(tmp_path, capsys,
                                                           monkeypatch):
  def no_work(*args, **kwargs):
    raise AssertionError("work started before the arguments were checked")

  monkeypatch.setattr(pools_lib, "load_pool", no_work)
  cli_checks.assert_bad_arguments_are_one_line(exp.main, _bad_cases(tmp_path),
                                               tmp_path / "o", capsys)


def test_missing_svhn_names_the_path_and_data_dir(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.topk_l2d", "--dataset", "svhn",
       "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.count("\n") == 1
  assert str(tmp_path / "svhn" / "train_32x32.mat") in proc.stderr
  assert "--data-dir" in proc.stderr


def test_help_documents_every_option_with_a_default():
  cli_checks.assert_help_documents_every_option("experiments.topk_l2d", cli.build_parser())

def test_documented_commands_parse():
  parser = cli.build_parser()
  assert parser.parse_args([]).lambdas == config.LAMBDAS
  for name, e in config.EXPERIMENTS.items():
    words = shlex.split(e.command)
    assert words[:3] == ["python", "-m", "experiments.topk_l2d"], name
    args = parser.parse_args(words[3:])
    assert args.dataset in config.DATASETS and args.config in config.CONFIGS


def _write_svhn(root, rng, n):
  import scipy.io  # pylint: disable=g-import-not-at-top
  (root / "svhn").mkdir(parents=True)
  for split in ("train", "test"):
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)  # 10 is digit 0
    scipy.io.savemat(root / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})


def _write_cifar100(root, rng, n):
  (root / "cifar-100-binary").mkdir(parents=True)
  for split in ("train", "test"):
    rec = np.zeros((n, 2 + 3072), np.uint8)
    rec[:, 0] = rng.integers(0, 20, n)
    rec[:, 1] = rng.integers(0, 100, n)
    rec[:, 2:] = rng.integers(0, 256, (n, 3072))
    (root / "cifar-100-binary" / f"{split}.bin").write_bytes(rec.tobytes())


@pytest.mark.parametrize("dataset,num_classes", [("svhn", 10),
                                                 ("cifar100", 100)])
def test_svhn_and_cifar100_pools_from_their_original_files(tmp_path, dataset,
                                                           num_classes):
  rng = np.random.default_rng(0)
  (_write_svhn if dataset == "svhn" else _write_cifar100)(tmp_path, rng, 80)
  pools_lib.check_dataset_files(dataset, tmp_path)
  pool = pools_lib.load_pool(dataset, data_dir=tmp_path, budget=TINY,
                             progress=False)
  assert pool.dataset == dataset and pool.num_classes == num_classes
  assert pool.features["train"].shape[1] == num_classes
  preds = np.concatenate([pool.predictions[s] for s in pools_lib.SPLITS])
  assert preds.shape == (80, A) and preds.min() >= 0
  assert preds.max() < num_classes
