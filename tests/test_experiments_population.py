"""Smoke and CLI tests of the L2D-Pop / limited-demonstrations experiment."""

import argparse
import dataclasses
import json
import shlex

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import _io
from experiments import population_l2d as exp
from experiments.population_l2d import __main__ as cli
from experiments.population_l2d import config
from experiments.population_l2d import report
from experiments.population_l2d import run as run_lib
from tests import cli_checks


TINY = config.Budget(embed_epochs=1, embed_batch=32, feature_dim=8,
                     gen_steps=4, gen_batch=8, mu=2, down_steps=4,
                     down_batch=8, eval_every=2, embed_dim=8, hidden_dim=8)
TOP_KEYS = {"dataset", "config", "expert_strength", "oracle_sets",
            "wrong_answers", "baselines", "label_generator", "results"}
RESULT_KEYS = {"variant", "labels", "budget_k", "seed", "system_accuracy",
               "deferral_rate", "expert_accuracy_on_deferred"}


@pytest.fixture(scope="module")
def tiny_data():
  return run_lib.load_data("digits", data_dir=".", budget=TINY,
                           max_images=700)


@pytest.fixture(scope="module")
def tiny_run(tiny_data):
  return run_lib.run(tiny_data, seeds=[3], budget=TINY, budgets_k=(2,),
                     variants=("np", "finetune"), labels=config.LABELS,
                     size_h=8, progress=False)


def test_smoke_run_writes_files_and_the_exact_schema(tiny_data, tiny_run,
                                                     tmp_path, capsys):
  args = argparse.Namespace(config="cpu", oracle_sets="cyclic",
                            wrong_answers="other")
  res = cli.write(tmp_path / "o", tiny_data, {8: tiny_run}, args=args,
                  budget=TINY, command="cmd", seconds=1.0)
  capsys.readouterr()
  names = sorted(p.name for p in (tmp_path / "o").iterdir())
  assert names == ["details.json", "figure2.png", "results.json", "table.md"]
  on_disk = json.loads((tmp_path / "o" / "results.json").read_text())
  assert on_disk == json.loads(_io.to_json(res))
  assert set(on_disk) == TOP_KEYS
  assert (on_disk["dataset"], on_disk["config"], on_disk["expert_strength"],
          on_disk["oracle_sets"], on_disk["wrong_answers"]) == (
              "digits", "cpu", 8, "cyclic", "other")
  assert set(on_disk["baselines"]) == {"classifier_alone", "expert_alone"}
  # H = 8 of 10, wrong answers never right: experts are right on 8 classes.
  assert 0.6 < on_disk["baselines"]["expert_alone"] < 0.95
  assert on_disk["label_generator"] == [
      {"budget_k": 2, "seed": 3,
       "correctness_accuracy": on_disk["label_generator"][0][
           "correctness_accuracy"]}]
  assert set(on_disk["label_generator"][0]["correctness_accuracy"]) == {
      "seen", "unseen"}
  combos = sorted((r["variant"], r["labels"]) for r in on_disk["results"])
  assert combos == [("finetune", "oracle"), ("finetune", "pseudo"),
                    ("np", "oracle"), ("np", "pseudo")]
  for r in on_disk["results"]:
    assert set(r) == RESULT_KEYS
    assert (r["budget_k"], r["seed"]) == (2, 3)
    for m in ("system_accuracy", "deferral_rate"):
      assert set(r[m]) == {"seen", "unseen", "all"}
      assert all(0.0 <= v <= 1.0 for v in r[m].values())
    assert set(r["expert_accuracy_on_deferred"]) == {"seen", "unseen", "all"}
  details = json.loads((tmp_path / "o" / "details.json").read_text())
  assert details["command"] == "cmd"
  assert "| NP | pseudo | 2 |" in (tmp_path / "o" / "table.md").read_text()


def test_several_strengths_write_one_folder_each_and_the_table(
    tiny_data, tiny_run, tmp_path, capsys):
  args = argparse.Namespace(config="cpu", oracle_sets="cyclic",
                            wrong_answers="other")
  cli.write(tmp_path / "o", tiny_data, {2: tiny_run, 8: tiny_run}, args=args,
            budget=TINY, command="cmd", seconds=1.0)
  capsys.readouterr()
  names = sorted(p.name for p in (tmp_path / "o").iterdir())
  assert names == ["expert_strength.md", "h2", "h8"]
  for h in (2, 8):
    res = json.loads((tmp_path / "o" / f"h{h}" / "results.json").read_text())
    assert res["expert_strength"] == h and set(res) == TOP_KEYS
  text = (tmp_path / "o" / "expert_strength.md").read_text()
  assert "| H = 2 | H = 8 |" in text


def test_group_metrics_by_hand():
  # 2 seen + 1 unseen expert, 4 queries: (deferred, system right, expert right)
  out = np.zeros((3, 3, 4), bool)
  out[0] = [[1, 1, 0, 0], [1, 0, 1, 1], [1, 0, 1, 1]]
  out[1] = [[0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
  out[2] = [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
  m = run_lib.group_metrics(out, num_seen=2)
  assert m["system_accuracy"] == {"seen": 6 / 8, "unseen": 1.0, "all": 10 / 12}
  assert m["deferral_rate"] == {"seen": 2 / 8, "unseen": 1 / 4, "all": 3 / 12}
  assert m["expert_accuracy_on_deferred"] == {"seen": 0.5, "unseen": 1.0,
                                              "all": 2 / 3}
  out[2, 0] = False
  assert run_lib.group_metrics(out, num_seen=2)[
      "expert_accuracy_on_deferred"]["unseen"] is None


def test_labelled_indices_are_balanced_nested_and_checked(tiny_data):
  a = run_lib.labelled_indices(tiny_data, 2, seed=0)
  b = run_lib.labelled_indices(tiny_data, 4, seed=0)
  assert np.all(np.bincount(tiny_data.labels[a], minlength=10) == 2)
  assert set(a) <= set(b)
  assert set(a) <= set(tiny_data.splits["train"])
  with pytest.raises(ValueError, match=r"--budget-k 1000 needs 1000"):
    run_lib.labelled_indices(tiny_data, 1000, seed=0)


def test_splits_are_disjoint_and_cover(tiny_data):
  parts = [tiny_data.splits[s] for s in run_lib.SPLITS]
  allidx = np.concatenate(parts)
  assert allidx.size == np.unique(allidx).size == tiny_data.labels.size


def _bad_cases(tmp_path):
  return [
      (["--seeds", "0"], "--seeds must be >= 1, got 0"),
      (["--budget-k", "2,x"], "--budget-k must be an integer, got 'x'"),
      (["--budget-k", "0"], "--budget-k must hold integers >= 1, got 0"),
      (["--budget-k", "2,2"], "--budget-k must not repeat a value"),
      (["--expert-strength", "11"],
       "--expert-strength must hold H in [1, K=10] for digits, got 11"),
      (["--expert-strength", "10", "--oracle-sets", "lexicographic"],
       "--expert-strength H=10 gives only C(10, 10) < 10"),
      (["--variant", "npa"], "--variant: invalid choice: 'npa'"),
      (["--labels", "true"], "--labels: invalid choice: 'true'"),
      (["--oracle-sets", "random"], "--oracle-sets: invalid choice"),
      (["--wrong-answers", "none"], "--wrong-answers: invalid choice"),
      (["--dataset", "mnist"], "--dataset: invalid choice: 'mnist'"),
      (["--ema", "1"], "--ema must lie in [0, 1), got 1"),
      (["--first-seed", "-1"], "--first-seed must be an integer in [0, 2**32)"),
      (["--dataset", "cifar10", "--data-dir", str(tmp_path / "nodata")],
       f"--data-dir: {tmp_path / 'nodata'} does not exist"),
      (["--dataset", "cifar10", "--data-dir", str(tmp_path)],
       f"--data-dir: CIFAR-10 images not found: {tmp_path / 'cifar10_images'}"),
      (["--dataset", "fashion_mnist", "--data-dir", str(tmp_path)],
       f"--data-dir: fashion_mnist not found: {tmp_path / 'fashion_mnist'}"),
      (["--dataset", "gtsrb", "--data-dir", str(tmp_path)],
       f"--data-dir: gtsrb not found: {tmp_path / 'gtsrb'}"),
      (["--out", str(tmp_path / "file")], "--out: "),
  ]


def test_every_bad_argument_is_one_line_naming_the_option(tmp_path, capsys,
                                                           monkeypatch):
  def no_work(*args, **kwargs):
    raise AssertionError("work started before the arguments were checked")

  monkeypatch.setattr(run_lib, "load_data", no_work)
  (tmp_path / "file").write_text("x")
  cli_checks.assert_bad_arguments_are_one_line(exp.main, _bad_cases(tmp_path),
                                               tmp_path / "o", capsys)


def test_a_budget_larger_than_the_pool_is_one_line(tmp_path, capsys,
                                                    monkeypatch):
  monkeypatch.setattr(run_lib, "run", lambda *a, **k: (_ for _ in ()).throw(
      AssertionError("training started")))
  code = exp.main(["--budget-k", "2,250", "--out", str(tmp_path / "o"),
                   "--no-progress"])
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith("error: --budget-k 250 needs 250 labelled points")
  assert err.count("\n") == 1


def test_help_documents_every_option_with_a_default():
  cli_checks.assert_help_documents_every_option("experiments.population_l2d", cli.build_parser())

def test_documented_commands_parse():
  parser = cli.build_parser()
  for name, e in config.EXPERIMENTS.items():
    words = shlex.split(e.command)
    assert words[:3] == ["python", "-m", "experiments.population_l2d"], name
    args = cli.resolve(parser.parse_args(words[3:]))
    assert args.dataset in config.DATASETS and args.config in config.CONFIGS
    assert all(1 <= h <= 10 for h in args.expert_strength)
  args = cli.resolve(parser.parse_args([]))
  assert args.budget_k == config.DEFAULT_BUDGET_K["digits"]
  assert args.expert_strength == (8,)


def test_report_table_and_strength_table_from_hand_made_results():
  def entry(v, lab, k, seed, acc):
    g = {"seen": acc, "unseen": acc, "all": acc}
    return {"variant": v, "labels": lab, "budget_k": k, "seed": seed,
            "system_accuracy": g, "deferral_rate": g,
            "expert_accuracy_on_deferred": g}
  res = report.results(
      [entry("np", "pseudo", 2, 0, 0.8), entry("np", "pseudo", 2, 1, 0.9)],
      [], dataset="digits", config_name="cpu", expert_strength=8,
      oracle_sets="cyclic", wrong_answers="other",
      baselines={"classifier_alone": 0.7, "expert_alone": 0.8})
  text = report.table(res)
  std = 100 * np.std([0.8, 0.9], ddof=1)
  assert f"| NP | pseudo | 2 | 85.0 ± {std:.1f} | 85.0 ± {std:.1f} |" in text
  strength = report.strength_table({8: res})
  assert f"| NP | pseudo | 2 | 85.0 ± {std:.1f} |" in strength
  assert "| classifier alone | – | – | 70.0 |" in strength



FEAT = dataclasses.replace(TINY, downstream_inputs="features")


@pytest.fixture(scope="module")
def feature_phi(tiny_data):
  """An (untrained) frozen φ, its features and cached views on tiny digits."""
  key = jax.random.key(5)
  model = run_lib.Classifier(
      run_lib.embedding_backbone(tiny_data, FEAT, nnx.Rngs(params=key)),
      FEAT.feature_dim, tiny_data.num_classes,
      rngs=nnx.Rngs(params=jax.random.fold_in(key, 1)))
  phi_def, phi_params = nnx.split(model)
  feats = run_lib._predict(phi_def, phi_params, tiny_data.images,
                           method="features")
  views = run_lib.feature_views((phi_def, phi_params, feats), tiny_data, FEAT,
                                seed=3, views=2, progress=False)
  answers = run_lib.population(tiny_data, seed=3, size_h=8, order="cyclic",
                               wrong="other")[:, :config.NUM_SEEN]
  return (phi_def, phi_params, feats), views, answers


def test_feature_path_config_views_and_downstream(tiny_data, feature_phi):
  # The CIFAR-10 cpu protocol: downstream models read cached φ features.
  assert config.budget_for("cifar10", "cpu").downstream_inputs == "features"
  assert config.budget_for("digits", "cpu").downstream_inputs == "images"
  assert config.budget_for("cifar10", "gpu").downstream_inputs == "images"
  (_, _, feats), (weak, strong), answers = feature_phi
  n, d = tiny_data.labels.size, FEAT.feature_dim
  assert weak.shape == strong.shape == (2, n, d)
  tr = tiny_data.splits["train"]
  rest = np.setdiff1d(np.arange(n), tr)
  np.testing.assert_array_equal(weak[:, rest], np.stack([feats[rest]] * 2))
  np.testing.assert_array_equal(strong[:, rest], np.stack([feats[rest]] * 2))
  assert not np.allclose(weak[0, tr], feats[tr])  # augmented views differ
  assert not np.allclose(weak[0, tr], weak[1, tr])
  assert not np.allclose(strong[0, tr], weak[0, tr])
  down = dataclasses.replace(tiny_data, images=feats)
  model = run_lib.make_downstream(down, FEAT, "np", jax.random.key(0))
  assert isinstance(model.backbone, run_lib.FeatureBackbone)
  assert model.backbone.l1.kernel[...].shape == (d, FEAT.hidden_dim)
  (m_def, m_params), info = run_lib.train_downstream(
      down, "np", answers, seed=3, budget=FEAT, progress=False)
  assert 0.0 <= info["val_system_accuracy"] <= 1.0
  assert info["best_step"] in (2, 4)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(m_params))


def test_feature_path_label_generator_never_reads_pixels(tiny_data,
                                                         feature_phi):
  # NaN pixels would poison the loss and the weights if any image were read.
  phi, views, answers = feature_phi
  nan_pix = dataclasses.replace(tiny_data, images=np.full_like(
      tiny_data.images, np.nan))
  lab = run_lib.labelled_indices(tiny_data, 2, seed=3)
  g_def, g_params, hist = run_lib.train_label_generator(
      nan_pix, phi, answers, lab, seed=3, budget=FEAT, views=views,
      progress=False)
  assert hist.shape == (2, 2) and np.isfinite(hist).all()
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(g_params))


def test_conv_phi_heads_shapes_and_bad_head():
  x = np.zeros((2, 32, 32, 3), np.float32)
  for blocks, head, flat in ((2, "mean", 32), (2, "flatten", 8 * 8 * 32),
                             (3, "flatten", 4 * 4 * 64)):
    bb = run_lib.ConvBackbone((32, 32, 3), 7, width=16, blocks=blocks,
                              head=head, rngs=nnx.Rngs(params=0))
    assert bb.out.kernel[...].shape == (flat, 7)
    assert bb(x).shape == (2, 7)
  with pytest.raises(ValueError, match="head must be one of"):
    run_lib.ConvBackbone((32, 32, 3), 7, head="max", rngs=nnx.Rngs(params=0))


def test_embedding_cache_is_reused_and_keyed_by_the_architecture(tmp_path):
  # A tiny "cifar10"-like set: φ cached once, reloaded identically, and a
  # different head/width/blocks never reads the stale cache.
  rng = np.random.default_rng(0)
  data = run_lib.make_data("cifar10", rng.random((60, 8, 8, 3), np.float32),
                           np.arange(60) % 10, num_classes=10, test_start=40)
  b = dataclasses.replace(TINY, embed_width=4, embed_head="flatten")
  g, p, feats, acc = run_lib.train_embedding(data, b, seed=1,
                                             cache_dir=tmp_path,
                                             progress=False)
  path = run_lib.embedding_cache_path(data, b, seed=1, cache_dir=tmp_path)
  assert (path / "features.npy").exists() and (path / "spec.txt").exists()
  _, p2, feats2, acc2 = run_lib.train_embedding(data, b, seed=1,
                                                cache_dir=tmp_path,
                                                progress=False)
  np.testing.assert_array_equal(feats, feats2)
  assert acc == acc2
  for a, c in zip(jax.tree.leaves(p), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(np.asarray(a), c)
  others = [dataclasses.replace(b, embed_head="mean"),
            dataclasses.replace(b, embed_width=8),
            dataclasses.replace(b, embed_blocks=1),
            dataclasses.replace(b, embed_epochs=2)]
  paths = {run_lib.embedding_cache_path(data, o, seed=1, cache_dir=tmp_path)
           for o in others}
  assert len(paths) == len(others) and path not in paths
  assert run_lib.embedding_cache_path(data, b, seed=2,
                                      cache_dir=tmp_path) != path


def test_run_re_exports_every_public_name_of_its_parts():
  # Code written against the one-module run.py keeps working after the split.
  import importlib  # pylint: disable=g-import-not-at-top
  for part in ("data", "embedding", "label_generator", "downstream"):
    mod = importlib.import_module(f"experiments.population_l2d.{part}")
    public = [n for n, v in vars(mod).items() if not n.startswith("_")
              and getattr(v, "__module__", mod.__name__) == mod.__name__
              and (callable(v) or n.isupper())]
    assert public, part
    for name in public:
      assert name in run_lib.__all__, (part, name)
      assert getattr(run_lib, name) is getattr(mod, name)
      assert getattr(exp, name) is getattr(mod, name)
  assert run_lib.train_embedding.__module__.endswith(".embedding")
