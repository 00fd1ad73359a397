"""Smoke and CLI tests of the EA-L2D experiment."""

import argparse
import json
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import _io
from experiments import ea_l2d as exp
from experiments.ea_l2d import __main__ as cli
from experiments.ea_l2d import config
from experiments.ea_l2d import report
from experiments.ea_l2d import run as run_lib
from experiments.ea_l2d import training
from l2d_jax import experts
from l2d_jax import losses
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
  np.testing.assert_array_equal(training._mode(answers, 4), [1, 2, 0])  # pylint: disable=protected-access


def _previous_pop_logits(m, xq, ctx):
  """The former per-query path: φ of the context once, then one copy of the
  φ-features per query row, each self-attended separately."""
  one = jax.tree.map(lambda a: a[None], ctx)
  feats = m.context_features(xq[:1], one)
  return m(xq, jax.tree.map(lambda a: jnp.broadcast_to(
      a, (xq.shape[0],) + a.shape[1:]), feats))


# in_dim 8 equals TINY.hidden: raw inputs and φ-features have the same shape.
@pytest.mark.parametrize("in_dim", [16, 8])
def test_pop_logits_shared_context_equals_per_query_copies(in_dim):
  rng = np.random.default_rng(in_dim)
  b, c, k = 7, 6, 4
  data = run_lib.Data("t", np.zeros((3, in_dim), np.float32),
                      np.zeros(3, np.int32), {}, k, "")
  m = run_lib.make_model("l2d_pop", data, TINY, jax.random.key(3), 1)
  xq = jnp.asarray(rng.normal(size=(b, in_dim)), jnp.float32)
  ctx = experts.Context(
      jnp.asarray(rng.normal(size=(c, in_dim)), jnp.float32),
      jnp.asarray(rng.integers(0, k, c), jnp.int32),
      jnp.asarray(rng.integers(0, k, c), jnp.int32),
      jnp.asarray([True, True, False, True, False, True]))
  y = jnp.asarray(rng.integers(0, k, b), jnp.int32)
  a = jnp.asarray(rng.integers(0, k, b), jnp.int32)
  graphdef, params = nnx.split(m)
  paths = {  # jitted: one compilation each instead of many eager ops
      "shared": lambda mm: run_lib.pop_logits(mm, xq, ctx),
      "per_query": lambda mm: mm(xq, ctx.broadcast(b)),  # raw copy per query
      "previous": lambda mm: _previous_pop_logits(mm, xq, ctx)}

  @jax.jit
  def outputs(p):
    return {n: f(nnx.merge(graphdef, p)) for n, f in paths.items()}

  @jax.jit
  def grads(p):
    def loss(q, path):
      out = paths[path](nnx.merge(graphdef, q))
      return losses.population_l2d_loss(out, y, a).mean()
    return [jax.grad(lambda q, n=n: loss(q, n))(p)
            for n in ("shared", "per_query")]

  out = outputs(params)
  assert out["shared"].shape == (b, k + 1)
  np.testing.assert_allclose(out["shared"], out["per_query"], rtol=1e-5,
                             atol=1e-6)
  if in_dim != TINY.hidden:  # same logits as before the change
    np.testing.assert_allclose(out["shared"], out["previous"], rtol=1e-5,
                               atol=1e-6)
  g_shared, g_per = grads(params)
  for u, v in zip(jax.tree.leaves(g_shared), jax.tree.leaves(g_per)):
    np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


def test_padded_context_pool_draws_the_same_contexts():
  rng = np.random.default_rng(1)
  n, k, j, capacity = 60, 4, 3, 5
  x = jnp.asarray(rng.normal(size=(n, 2)), jnp.float32)
  y = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  answers = jnp.asarray(rng.integers(0, k, (n, j)), jnp.int32)
  pool = np.sort(rng.choice(n, 17, replace=False))

  def draw(idx, valid):
    return training._contexts(  # pylint: disable=protected-access
        jax.random.key(5), x, y, answers, jnp.asarray(idx), valid,
        jnp.int32(4), None, capacity=capacity, num_classes=k,
        by_counts=False)

  plain = draw(pool, jnp.ones(pool.size, bool))
  padded = draw(*training._padded(pool, 40))  # pylint: disable=protected-access
  assert plain.mask.any() and not plain.mask.all()
  for a, b in zip(plain, padded):  # features, labels, answers, mask
    np.testing.assert_array_equal(a, b)


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
