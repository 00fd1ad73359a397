"""Smoke and CLI tests of the EA-L2D experiment."""

import argparse
import json
import shlex

import numpy as np
import pytest

from experiments import _io
from experiments import ea_l2d as exp
from experiments.ea_l2d import __main__ as cli
from experiments.ea_l2d import config
from experiments.ea_l2d import report
from experiments.ea_l2d import run as run_lib
from tests import cli_checks

TINY = config.Budget(steps=4, batch=8, eval_every=2, hidden=8,
                     rejector_hidden=(8,), embed_dim=8, context_size=6,
                     max_expertise=2)
TOP_KEYS = {"dataset", "study", "config", "results"}
ROW_KEYS = {"method", "overlap", "split", "seed", "aursac", "aurdac",
            "aursac_intervals", "aurdac_intervals", "aggregation",
            "ood_reading"}


@pytest.fixture(scope="module")
def tiny_data():
  return run_lib.load_data("digits", data_dir=".", budget=TINY,
                           max_images=300)


@pytest.fixture(scope="module")
def tiny_rq1(tiny_data):
  return run_lib.run(tiny_data, study="rq1", seeds=[4], overlaps=(0.2,),
                     budget=TINY, progress=False)


def _args(study):
  return argparse.Namespace(study=study, config="cpu", dataset="digits")


def test_rq1_writes_files_and_the_exact_schema(tiny_data, tiny_rq1, tmp_path,
                                               capsys):
  res = cli.write(tmp_path / "o", tiny_data, tiny_rq1, args=_args("rq1"),
                  budget=TINY, command="cmd", seconds=1.0)
  capsys.readouterr()
  names = sorted(p.name for p in (tmp_path / "o").iterdir())
  assert names == ["details.json", "ea_curves_id.png",
                   "ea_curves_ood_paper.png", "ea_curves_ood_unseen.png",
                   "results.json", "table.md"]
  on_disk = json.loads((tmp_path / "o" / "results.json").read_text())
  assert on_disk == json.loads(_io.to_json(res))
  assert set(on_disk) == TOP_KEYS
  assert (on_disk["dataset"], on_disk["study"], on_disk["config"]) == (
      "digits", "rq1", "cpu")
  combos = sorted((r["method"], r["split"], str(r["ood_reading"]),
                   r["aggregation"]) for r in on_disk["results"])
  want = []
  for m in config.METHODS:
    readings = [("id", "None")]
    if m != "multi_l2d":  # fixed experts: N/A for OOD
      readings += [("ood", "train_id_eval_ood"), ("ood", "train_ood_eval_id")]
    want += [(m, s, r, a) for s, r in readings
             for a in ("per_expert", "routed")]
  assert combos == sorted(want)
  for r in on_disk["results"]:
    assert set(r) == ROW_KEYS
    assert (r["overlap"], r["seed"]) == (0.2, 4)
    assert set(r["aursac_intervals"]) == {"0-0.2", "0.8-1"}
    assert set(r["aurdac_intervals"]) == {"0-0.2", "0.8-1"}
    for v in [r["aursac"], r["aurdac"], *r["aursac_intervals"].values(),
              *r["aurdac_intervals"].values()]:
      assert 0.0 <= v <= 1.0
  text = (tmp_path / "o" / "table.md").read_text()
  assert "| 0.2 | ID |" in text and "N/A" in text
  assert json.loads((tmp_path / "o" / "details.json").read_text())[
      "command"] == "cmd"


def test_routed_and_per_expert_areas_against_numpy():
  rng = np.random.default_rng(0)
  q, j = 40, 3
  pr = rng.normal(size=(q, j)).astype(np.float32)
  y = rng.integers(0, 4, q)
  logits = rng.normal(size=(q, 4))
  answers = np.where(rng.random((q, j)) < 0.6, y[:, None],
                     (y[:, None] + 1) % 4)
  out = run_lib.score(pr, logits, y, answers)
  m = (logits.argmax(1) == y).astype(float)
  e = (answers == y[:, None]).astype(float)

  def area(p, ee, curve):
    order = np.argsort(-p, kind="stable")
    sys = [(ee[order[:d]].sum() + m[order[d:]].sum()) / q
           for d in range(q + 1)]
    exp_ = [ee[order[:max(d, 1)]].mean() for d in range(q + 1)]
    c = np.asarray(sys if curve == "sys" else exp_)
    return float(((c[1:] + c[:-1]) / 2).sum() / q)

  route = pr.argmax(1)
  rows = np.arange(q)
  np.testing.assert_allclose(out["routed"]["aursac"],
                             area(pr[rows, route], e[rows, route], "sys"),
                             rtol=1e-5)
  np.testing.assert_allclose(out["routed"]["aurdac"],
                             area(pr[rows, route], e[rows, route], "exp"),
                             rtol=1e-5)
  np.testing.assert_allclose(
      out["per_expert"]["aursac"],
      np.mean([area(pr[:, k], e[:, k], "sys") for k in range(j)]),
      rtol=1e-5)


def test_pop_avg_target_is_the_mode_with_lowest_class_ties():
  answers = np.array([[1, 1, 2], [0, 2, 2], [3, 1, 0]])
  np.testing.assert_array_equal(run_lib._mode(answers, 4), [1, 2, 0])  # pylint: disable=protected-access


# rq3 (the cheapest) runs by default; rq2 and the LCB ablation (~1 min each
# under load) run in the CI's slow step.
@pytest.mark.parametrize("study", [
    pytest.param("rq2", marks=pytest.mark.slow),
    "rq3",
    pytest.param("lcb-ablation", marks=pytest.mark.slow),
])
def test_other_studies_write_their_tables_and_plots(tiny_data, tmp_path,
                                                    study, capsys):
  out_run = run_lib.run(tiny_data, study=study, seeds=[1], overlaps=(0.5,),
                        budget=TINY, progress=False)
  res = cli.write(tmp_path / study, tiny_data, out_run, args=_args(study),
                  budget=TINY, command="cmd", seconds=1.0)
  capsys.readouterr()
  names = sorted(p.name for p in (tmp_path / study).iterdir())
  png = {"rq2": "ea_rq2.png", "rq3": "ea_rq3.png",
         "lcb-ablation": "ea_curves_lcb.png"}[study]
  assert names == sorted(["details.json", png, "results.json", "table.md"])
  rows = res["results"]
  assert all(ROW_KEYS <= set(r) for r in rows)
  if study == "rq2":
    assert sorted({r["classes_per_expert"] for r in rows}) == [1, 2]
    assert {r["method"] for r in rows} == {"ea_l2d", "l2d_pop", "pop_avg"}
  elif study == "rq3":
    assert {r["prior"] for r in rows} == {"accurate", "uninformative",
                                          "misspecified"}
    assert sorted({r["context_size"] for r in rows}) == [
        s for s in config.RQ3_CONTEXT_SIZES
        if s <= tiny_data.splits["test_ctx"].size]
  else:
    assert {r["variant"] for r in rows} == set(config.LCB_VARIANTS)
    assert all(set(r["aurdac_by_type"]) == {"HS-HU", "MS-HU", "LS-HU",
                                             "HS-MU", "OL-LU"} for r in rows)


def test_help_documents_every_option():
  cli_checks.assert_help_documents_every_option("experiments.ea_l2d",
                                                cli.build_parser())


def test_bad_arguments_are_one_line(tmp_path, capsys):
  (tmp_path / "file").write_text("x")
  cases = [
      (["--overlap", "0.2,1.5"], "--overlap must hold numbers in [0, 1]"),
      (["--overlap", "0.2,0.2"], "--overlap must not repeat a value"),
      (["--seeds", "0"], "--seeds must be >= 1"),
      (["--study", "rq9"], "--study: invalid choice"),
      (["--dataset", "octmnist", "--data-dir", str(tmp_path / "none")],
       "--data-dir:"),
      (["--dataset", "octmnist", "--data-dir", str(tmp_path)],
       "--data-dir: octmnist not found"),
      (["--out", str(tmp_path / "file")], "--out:"),
  ]
  cli_checks.assert_bad_arguments_are_one_line(exp.main, cases,
                                               tmp_path / "never", capsys)


def test_documented_commands_parse():
  parser = cli.build_parser()
  for e in config.EXPERIMENTS.values():
    argv = shlex.split(e.command)[3:]
    args = parser.parse_args(argv)
    assert args.study in config.STUDIES


def test_medmnist_inputs_from_a_synthetic_archive(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {}
  for split, n in (("train", 40), ("val", 10), ("test", 20)):
    arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28),
                                             dtype=np.uint8)
    arrays[f"{split}_labels"] = rng.integers(0, 4, (n, 1))
  np.savez(tmp_path / "octmnist.npz", **arrays)
  d = run_lib.load_data("octmnist", data_dir=tmp_path, budget=TINY)
  assert d.x.shape == (70, 49) and d.num_classes == 4
  assert {k: v.size for k, v in d.splits.items()} == {
      "train": 40, "val": 10, "test_ctx": 10, "test_query": 10}
  np.testing.assert_array_equal(d.y[:40], arrays["train_labels"][:, 0])
  np.testing.assert_allclose(d.x[d.splits["train"]].mean(0), 0, atol=1e-5)
  test = np.concatenate([d.splits["test_ctx"], d.splits["test_query"]])
  assert sorted(test.tolist()) == list(range(50, 70))
