"""Tests for l2d_jax.training: sharding, resumption, failures, early stop."""

import json
import os
import pathlib
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from l2d_jax.models import MLP
from l2d_jax.training import CheckpointError
from l2d_jax.training import EpochBatches
from l2d_jax.training import NonFiniteError
from l2d_jax.training import Trainer
from l2d_jax.training import adam_cosine
from l2d_jax.training import cosine_schedule
from l2d_jax.training import data_mesh
from l2d_jax.training import load_checkpoint
from l2d_jax.training import read_jsonl
from l2d_jax.training import sgd_cosine

NUM_CLASSES, NUM_EXPERTS, FEATURES = 3, 2, 4
BATCH = 16  # a multiple of the 4 forced CPU devices


def _data(n=96, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, FEATURES)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
  experts = np.stack([np.where(rng.random(n) < 0.7, y, (y + 1) % 3),
                      rng.integers(0, NUM_CLASSES, n)], axis=1)
  return {"x": x, "y": y, "expert_predictions": experts.astype(np.int32)}


DATA = _data()
VAL = _data(40, seed=1)


def l2d_loss(model, batch):
  """Multi-expert softmax surrogate (METHODS.md section 5), batch mean."""
  logits = model(batch["x"])
  logq = jax.nn.log_softmax(logits, axis=-1)
  y = batch["y"]
  nll = -jnp.take_along_axis(logq, y[:, None], axis=-1)[:, 0]
  correct = (batch["expert_predictions"] == y[:, None]).astype(jnp.float32)
  defer = -jnp.sum(correct * logq[:, NUM_CLASSES:], axis=-1)
  acc = jnp.mean(jnp.argmax(logits[:, :NUM_CLASSES], -1) == y)
  return jnp.mean(nll + defer), {"accuracy": acc}


def accuracy(model, batch):
  logits = model(batch["x"])[:, :NUM_CLASSES]
  return {"accuracy": (jnp.argmax(logits, -1) == batch["y"]).astype(
      jnp.float32)}


def batches(epoch, data=DATA, seed=0):
  return EpochBatches(data, BATCH, seed=seed, epoch=epoch)


def new_trainer(*, mesh=None, dropout=0.2, tx=None, **kwargs):
  model = MLP(FEATURES, (16,), NUM_CLASSES, num_experts=NUM_EXPERTS,
              dropout=dropout, rngs=nnx.Rngs(0))
  tx = tx or optax.chain(optax.clip_by_global_norm(5.0),
                         sgd_cosine(0.1, 40, weight_decay=1e-4))
  return model, Trainer(model, tx, l2d_loss, mesh=mesh, progress=False,
                        **kwargs)


def params(model_or_trainer):
  model = getattr(model_or_trainer, "model", model_or_trainer)
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def full_state(trainer):
  """Every array of the training state (params, opt state, rng counters)."""
  state = trainer._state  # pylint: disable=protected-access
  leaves = jax.tree.leaves(state)
  return [np.asarray(jax.random.key_data(x)) if jnp.issubdtype(
      x.dtype, jax.dtypes.prng_key) else np.asarray(x) for x in leaves]


# ------------------------------------------------------------------ mesh ----

def test_one_device_and_four_devices_agree():
  assert jax.device_count() == 4, "conftest should force 4 CPU devices"
  m1, t1 = new_trainer(mesh=data_mesh(1))
  m4, t4 = new_trainer(mesh=data_mesh(4))
  h1 = t1.fit(batches, 3)
  h4 = t4.fit(batches, 3)
  chex.assert_trees_all_close(params(m1), params(m4), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose([r["train/loss"] for r in h1],
                             [r["train/loss"] for r in h4], rtol=1e-5)
  # The trained parameters are replicated on the mesh.
  assert m4.head.kernel[...].sharding.is_fully_replicated
  assert len(m4.head.kernel[...].sharding.device_set) == 4


def test_batch_not_divisible_by_devices_raises():
  _, trainer = new_trainer(mesh=data_mesh(4))
  with pytest.raises(ValueError, match="batch size 10 is not divisible by "
                     "the 4 devices"):
    trainer.fit(lambda e: EpochBatches(DATA, 10, seed=0, epoch=e), 1)


def test_evaluate_pads_uneven_batches_and_matches_numpy():
  model, trainer = new_trainer(mesh=data_mesh(4), dropout=0.0)
  val = EpochBatches(VAL, 12, seed=0, epoch=0, shuffle=False,
                     drop_remainder=False)  # 12, 12, 12, 4 examples
  got = trainer.evaluate(val, accuracy)["accuracy"]
  logits = np.asarray(model(jnp.asarray(VAL["x"])))[:, :NUM_CLASSES]
  assert got == pytest.approx(np.mean(logits.argmax(-1) == VAL["y"]))
  out = trainer.predict(val, lambda m, b: {"logits": m(b["x"])})
  assert out["logits"].shape == (40, NUM_CLASSES + NUM_EXPERTS)


# ----------------------------------------------------------- compilation ----

def test_train_step_compiles_once():
  model = MLP(FEATURES, (16,), NUM_CLASSES, num_experts=NUM_EXPERTS,
              rngs=nnx.Rngs(0))
  loss = chex.assert_max_traces(l2d_loss, n=1)
  trainer = Trainer(model, optax.adam(1e-2), loss, progress=False)
  trainer.fit(batches, 3)
  assert trainer.trace_count == 1
  assert trainer.step == 3 * len(batches(0))


# ------------------------------------------------------------- resumption ---

class Killed(Exception):
  pass


def _kill_mid_epoch(epoch_to_kill, batch_to_kill):
  def train_batches(epoch):
    for i, b in enumerate(batches(epoch)):
      if epoch == epoch_to_kill and i == batch_to_kill:
        raise Killed
      yield b
  return train_batches


@pytest.mark.parametrize("how", ["callback", "mid_epoch"])
def test_resume_matches_uninterrupted_run(tmp_path, how):
  epochs = 5
  ref_model, ref = new_trainer(checkpoint_dir=tmp_path / "ref")
  ref_history = ref.fit(batches, epochs, eval_fn=lambda: ref.evaluate(
      batches(0, VAL), accuracy))

  run_dir = tmp_path / "run"
  if how == "callback":  # killed right after the epoch-2 checkpoint
    _, first = new_trainer(checkpoint_dir=run_dir)

    def stop(record):
      if record["epoch"] == 2:
        raise Killed

    with pytest.raises(Killed):
      first.fit(batches, epochs, on_epoch_end=stop,
                eval_fn=lambda: first.evaluate(batches(0, VAL), accuracy))
  else:  # killed inside epoch 4 with checkpoints every 2 epochs: replay 3-4
    _, first = new_trainer(checkpoint_dir=run_dir, save_every=2)
    with pytest.raises(Killed):
      first.fit(_kill_mid_epoch(3, 2), epochs,
                eval_fn=lambda: first.evaluate(batches(0, VAL), accuracy))
    assert first.epoch == 3
  first.close()
  saved = ["1", "2"] if how == "callback" else ["2"]
  assert sorted(os.listdir(run_dir / "ckpt")) == saved
  # The log may hold epochs after the checkpoint; resuming rewrites it.
  model, second = new_trainer(checkpoint_dir=run_dir)
  history = second.fit(batches, epochs, resume=True, eval_fn=lambda:
                       second.evaluate(batches(0, VAL), accuracy))

  chex.assert_trees_all_close(params(model), params(ref_model), rtol=0,
                              atol=1e-6)
  for a, b in zip(full_state(second), full_state(ref)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  assert len(history) == len(ref_history) == epochs
  for got, want in zip(history, ref_history):
    assert got.keys() == want.keys()
    for k in want:
      if k != "seconds":
        assert got[k] == pytest.approx(want[k], rel=1e-6), k
  log = read_jsonl(run_dir / "metrics.jsonl")
  assert [r["epoch"] for r in log] == list(range(1, epochs + 1))


def test_resume_of_finished_run_is_a_no_op(tmp_path):
  model, trainer = new_trainer(checkpoint_dir=tmp_path)
  trainer.fit(batches, 2)
  trainer.close()
  again_model, again = new_trainer(checkpoint_dir=tmp_path)
  again.fit(batches, 2, resume=True)
  assert again.trace_count == 0
  chex.assert_trees_all_close(params(again_model), params(model), atol=0)


def test_epoch_batches_are_a_pure_function_of_seed_and_epoch():
  a = [b["x"] for b in batches(3)]
  b = [b["x"] for b in batches(3)]
  c = [b["x"] for b in batches(4)]
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  assert not np.array_equal(np.stack(a), np.stack(c))
  assert len(batches(0)) == 96 // BATCH
  short = EpochBatches(VAL, 16, seed=0, epoch=0, drop_remainder=False)
  assert [len(b["y"]) for b in short] == [16, 16, 8]


# --------------------------------------------------------- bad inputs -------

def test_nan_in_batch_names_the_step_and_keeps_checkpoint(tmp_path):
  saved = {}

  def remember(record):
    saved[record["epoch"]] = params(trainer)

  def poisoned(epoch):
    for i, b in enumerate(batches(epoch)):
      if epoch == 1 and i == 3:
        b = dict(b, x=b["x"].copy())
        b["x"][5, 1] = np.nan
      yield b

  _, trainer = new_trainer(checkpoint_dir=tmp_path)
  with pytest.raises(NonFiniteError, match=r"step 10 \(.*`x` \(1 NaN/inf"):
    trainer.fit(poisoned, 3, on_epoch_end=remember)
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["1"]
  fresh = MLP(FEATURES, (16,), NUM_CLASSES, num_experts=NUM_EXPERTS,
              dropout=0.2, rngs=nnx.Rngs(1))
  assert load_checkpoint(fresh, tmp_path, best=False) == 1
  chex.assert_trees_all_close(params(fresh), saved[1], atol=0)
  # The run can be resumed from that checkpoint with clean data.
  _, resumed = new_trainer(checkpoint_dir=tmp_path)
  resumed.fit(batches, 2, resume=True)
  assert resumed.epoch == 2


def test_non_finite_loss_names_the_step(tmp_path):
  def loss(model, batch):
    value, aux = l2d_loss(model, batch)
    return value * jnp.log(batch["w"][0]), aux  # log(-1) = NaN

  def weighted(epoch):
    for i, b in enumerate(batches(epoch)):
      w = np.full(len(b["y"]), -1.0 if (epoch, i) == (1, 4) else np.e,
                  np.float32)
      yield dict(b, w=w)

  model = MLP(FEATURES, (16,), NUM_CLASSES, num_experts=NUM_EXPERTS,
              rngs=nnx.Rngs(0))
  trainer = Trainer(model, optax.sgd(0.05), loss, checkpoint_dir=tmp_path,
                    progress=False)
  with pytest.raises(NonFiniteError, match=r"non-finite loss \(nan\) at step "
                     r"11 .*epoch 1\) in .* is kept"):
    trainer.fit(weighted, 3)
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["1"]
  assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1]


# ---------------------------------------------------------- checkpoints -----

def _finished_run(path):
  _, trainer = new_trainer(checkpoint_dir=path)
  trainer.fit(batches, 1)
  trainer.close()


def test_corrupt_checkpoint_raises_and_is_not_overwritten(tmp_path):
  _finished_run(tmp_path)
  state_dir = tmp_path / "ckpt" / "1" / "state"
  for f in state_dir.iterdir():
    if f.is_file():
      f.write_text("garbage")
    else:
      shutil.rmtree(f)
  before = sorted(str(p) for p in tmp_path.rglob("*"))
  _, trainer = new_trainer(checkpoint_dir=tmp_path)
  with pytest.raises(CheckpointError, match="cannot restore checkpoint"):
    trainer.fit(batches, 2, resume=True)
  with pytest.raises(CheckpointError):
    new_trainer(checkpoint_dir=tmp_path)[1].fit(batches, 2, resume="auto")
  assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_unrestorable_directories(tmp_path):
  # Missing directory, resume=True: nothing to continue.
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    new_trainer(checkpoint_dir=tmp_path / "missing")[1].fit(
        batches, 1, resume=True)
  # ckpt/ holds something that is not an orbax checkpoint.
  junk = tmp_path / "junk"
  (junk / "ckpt").mkdir(parents=True)
  (junk / "ckpt" / "notes.txt").write_text("hello")
  with pytest.raises(CheckpointError, match="no finalised orbax checkpoint"):
    new_trainer(checkpoint_dir=junk)[1].fit(batches, 1, resume="auto")
  # An empty step directory (e.g. copied half-way).
  half = tmp_path / "half"
  _finished_run(half)
  shutil.rmtree(half / "ckpt" / "1")
  (half / "ckpt" / "1").mkdir()
  with pytest.raises(CheckpointError):
    new_trainer(checkpoint_dir=half)[1].fit(batches, 1, resume=True)
  # A different model cannot be restored into.
  other = MLP(FEATURES, (8,), NUM_CLASSES, rngs=nnx.Rngs(0))
  done = tmp_path / "done"
  _finished_run(done)
  with pytest.raises(CheckpointError, match="different model"):
    Trainer(other, optax.sgd(0.1), l2d_loss, checkpoint_dir=done,
            progress=False).fit(batches, 2, resume=True)


def test_fresh_start_never_overwrites_a_previous_run(tmp_path):
  _finished_run(tmp_path)
  with pytest.raises(FileExistsError, match="resume=True"):
    new_trainer(checkpoint_dir=tmp_path)[1].fit(batches, 2)
  # 'auto' on an empty directory starts fresh.
  _, trainer = new_trainer(checkpoint_dir=tmp_path / "new")
  trainer.fit(batches, 1, resume="auto")
  assert trainer.epoch == 1


# ------------------------------------------------------- early stopping -----

def test_early_stopping_restores_best_params(tmp_path):
  scores = iter([0.1, 0.5, 0.3, 0.2, 0.4, 0.9])
  snapshots = {}
  model, trainer = new_trainer(checkpoint_dir=tmp_path)

  def remember(record):
    snapshots[record["epoch"]] = params(trainer)

  history = trainer.fit(batches, 6, eval_fn=lambda: {"score": next(scores)},
                        monitor="score", patience=2, on_epoch_end=remember)
  assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # stopped early
  assert trainer._es["best_epoch"] == 2  # pylint: disable=protected-access
  chex.assert_trees_all_close(params(model), snapshots[2], atol=0)
  chex.assert_trees_all_close(params(trainer), snapshots[2], atol=0)
  assert not np.allclose(snapshots[4]["head"]["kernel"],
                         snapshots[2]["head"]["kernel"])
  fresh = MLP(FEATURES, (16,), NUM_CLASSES, num_experts=NUM_EXPERTS,
              dropout=0.2, rngs=nnx.Rngs(3))
  assert load_checkpoint(fresh, tmp_path) == 2
  chex.assert_trees_all_close(params(fresh), snapshots[2], atol=0)
  # Resuming the stopped run does not train further and gives the best.
  scores2 = iter([])
  again_model, again = new_trainer(checkpoint_dir=tmp_path)
  again.fit(batches, 6, eval_fn=lambda: {"score": next(scores2)},
            monitor="score", patience=2, resume=True)
  chex.assert_trees_all_close(params(again_model), snapshots[2], atol=0)


def test_min_mode_and_non_finite_monitor():
  values = iter([3.0, 2.0, float("nan")])
  _, trainer = new_trainer(mesh=data_mesh(1))
  with pytest.raises(NonFiniteError, match="'val_loss' is nan after epoch 3"):
    trainer.fit(batches, 5, eval_fn=lambda: {"val_loss": next(values)},
                monitor="val_loss", mode="min")
  assert trainer._es["best_epoch"] == 2  # pylint: disable=protected-access


# ------------------------------------------------------------- helpers ------

def test_schedules_and_optimisers():
  s = cosine_schedule(0.1, 100, warmup_steps=10)
  assert float(s(0)) == 0.0
  assert float(s(10)) == pytest.approx(0.1)
  assert float(s(100)) == pytest.approx(0.0, abs=1e-7)
  with pytest.raises(ValueError, match="warmup_steps"):
    cosine_schedule(0.1, 10, warmup_steps=10)


def test_sgd_cosine_two_steps_by_hand():
  """L2 decay before Nesterov momentum, lr from the cosine at steps 0 and 1."""
  lr, wd, mu, total = 0.1, 0.01, 0.9, 10
  p0, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
  tx = sgd_cosine(lr, total, momentum=mu, nesterov=True, weight_decay=wd)
  params_, state = {"w": jnp.asarray(p0, jnp.float32)}, None
  state = tx.init(params_)
  got = []
  for _ in range(2):
    updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state,
                               params_)
    params_ = optax.apply_updates(params_, updates)
    got.append(np.asarray(params_["w"]))
  # By hand: d = g + wd p; trace = d + mu trace; update = -lr_t (d + mu trace).
  lr1 = lr * 0.5 * (1 + np.cos(np.pi * 1 / total))
  d0 = g + wd * p0
  p1 = p0 - lr * (d0 + mu * d0)
  d1 = g + wd * p1
  trace1 = d1 + mu * d0
  p2 = p1 - lr1 * (d1 + mu * trace1)
  np.testing.assert_allclose(got[0], p1, rtol=1e-6)
  np.testing.assert_allclose(got[1], p2, rtol=1e-6)
  np.testing.assert_allclose(p1, [0.9031, -2.0437], atol=1e-12)


def test_adam_cosine_first_step_by_hand():
  """AdamW step 1: bias-corrected m/sqrt(v) = g/|g|, plus decoupled decay."""
  lr, wd = 1e-3, 0.1
  p0, g = np.array([1.0, -2.0, 0.5]), np.array([0.3, -4.0, 1e-3])
  tx = adam_cosine(lr, 10, weight_decay=wd)
  params_ = {"w": jnp.asarray(p0, jnp.float32)}
  updates, _ = tx.update({"w": jnp.asarray(g, jnp.float32)},
                         tx.init(params_), params_)
  want = -lr * (g / (np.abs(g) + 1e-8) + wd * p0)
  np.testing.assert_allclose(np.asarray(updates["w"]), want, rtol=1e-5)
  # With warm-up, the first learning rate is 0: no step at all.
  tx = adam_cosine(lr, 10, warmup_steps=2)
  updates, _ = tx.update({"w": jnp.asarray(g, jnp.float32)},
                         tx.init(params_), params_)
  np.testing.assert_array_equal(np.asarray(updates["w"]), 0.0)


def test_metrics_log_is_json_lines(tmp_path):
  _, trainer = new_trainer(checkpoint_dir=tmp_path)
  history = trainer.fit(batches, 2, eval_fn=lambda: trainer.evaluate(
      batches(0, VAL), accuracy))
  lines = pathlib.Path(tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
  assert set(history[0]) == {"epoch", "step", "seconds", "train/loss",
                             "train/accuracy", "eval/accuracy"}
  assert not list(tmp_path.glob(".metrics.jsonl.*"))  # no temp files left


# ----------------------------------------------- one process of a job ----
# (several processes: tests/test_distributed.py)


def test_default_mesh_spans_every_device_and_placement_helpers_alone():
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from l2d_jax.training import _mesh  # pylint: disable=g-import-not-at-top
  mesh = data_mesh()
  assert list(mesh.devices.flat) == jax.devices()
  rep = NamedSharding(mesh, P())
  host = {"w": np.arange(6.0, dtype=np.float32), "k": jax.random.key(3)}
  out = _mesh.replicate(host, rep)
  assert out["w"].sharding.is_fully_replicated
  np.testing.assert_array_equal(np.asarray(out["w"]), host["w"])
  # A copy, even of the shard on the source's device: the step donates it.
  source = jax.device_put(jnp.ones(3), jax.devices()[0])
  copied = _mesh.replicate(source, rep)
  copied.delete()
  np.testing.assert_array_equal(np.asarray(source), 1.0)
  # One process holds every row: process_local changes nothing.
  assert _mesh.process_local(out)["w"] is out["w"]
  batch = _mesh.shard_batch({"x": np.arange(8.0).reshape(8, 1)}, mesh)
  assert batch["x"].sharding.spec == P("data")
  np.testing.assert_array_equal(np.asarray(batch["x"])[:, 0], np.arange(8.0))
  sharding = NamedSharding(mesh, P("data"))
  assert _mesh._local_rows(sharding, 8, (8, 1)) == (0, 8)  # pylint: disable=protected-access
