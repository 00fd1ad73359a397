"""Checkpoint integrity: checksums at save, verification and fallback at restore.

Issue 7: overwritten bytes in a checkpoint used to resume silently into wrong
parameters; a corrupt ``best/`` loaded garbage weights. Every test here
corrupts files the way a disk, a copy or a person does and checks that the
corruption is detected, that training falls back to an intact checkpoint
with a warning and ends bit-for-bit where an uninterrupted run ends, and that
nothing corrupt is ever loaded.
"""

import hashlib
import json
import os
import warnings

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
from l2d_jax.training import load_checkpoint
from l2d_jax.training._checkpoint import CHECKSUM_FILE
from l2d_jax.training._checkpoint import verify_checksums
from l2d_jax.training._checkpoint import write_checksums

FEATURES, NUM_CLASSES = 4, 3
BATCH = 16  # a multiple of the 4 forced CPU devices


def _data(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, FEATURES)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
  return {"x": x, "y": y}


DATA = _data(64, 0)
VAL = _data(32, 1)


def _loss(model, batch):
  logits = model(batch["x"])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["y"]).mean(), {}


def _accuracy(model, batch):
  pred = jnp.argmax(model(batch["x"]), -1)
  return {"accuracy": (pred == batch["y"]).astype(jnp.float32)}


def _batches(epoch):
  return EpochBatches(DATA, BATCH, seed=0, epoch=epoch)


def _model(seed=0):
  return MLP(FEATURES, (8,), NUM_CLASSES, rngs=nnx.Rngs(seed))


def _trainer(path, **kwargs):
  model = _model()
  return model, Trainer(model, optax.adam(0.05), _loss, checkpoint_dir=path,
                        progress=False, **kwargs)


def _params(model):
  return jax.tree.map(np.asarray,
                      nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _fit(trainer, epochs, **kwargs):
  """Fits with a monitored validation accuracy, so ``best/`` is written."""
  return trainer.fit(_batches, epochs, monitor="accuracy", eval_fn=lambda:
                     trainer.evaluate([VAL], _accuracy), **kwargs)


def _run(path, epochs, *, max_to_keep=3, on_epoch_end=None):
  model, trainer = _trainer(path, max_to_keep=max_to_keep)
  history = _fit(trainer, epochs, on_epoch_end=on_epoch_end)
  trainer.close()
  return model, history


def _data_file(step_dir, item="state"):
  """The largest array-data file of an item (the one orbax reads)."""
  files = [p for p in (step_dir / item / "d").iterdir() if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def _overwrite_64_bytes(path):
  data = bytearray(path.read_bytes())
  start = max(0, len(data) // 2 - 32)
  data[start:start + 64] = bytes(255 - i for i in range(64))[
      :len(data[start:start + 64])]
  path.write_bytes(bytes(data))


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _snapshot(path):
  """Every file under ``path`` with the SHA-256 of its bytes."""
  return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(path.rglob("*")) if p.is_file()}


def _corruption_warnings(record):
  return [w for w in record if issubclass(w.category, UserWarning)
          and "corrupt checkpoint" in str(w.message)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 4-epoch run: final parameters and history."""
  model, history = _run(tmp_path_factory.mktemp("ref"), 4)
  return _params(model), history


# ------------------------------------------------------------ at save -------

def test_every_saved_step_has_checksums_that_verify(tmp_path):
  _run(tmp_path, 3, max_to_keep=2)
  steps = sorted(os.listdir(tmp_path / "ckpt"))
  assert steps == ["2", "3"]
  (best,) = os.listdir(tmp_path / "best")
  for step_dir in [tmp_path / "ckpt" / s for s in steps] + [
      tmp_path / "best" / best]:
    record = json.loads((step_dir / CHECKSUM_FILE).read_text())
    files = {str(p.relative_to(step_dir)) for p in step_dir.rglob("*")
             if p.is_file() and p.name != CHECKSUM_FILE}
    assert set(record["files"]) == files
    for rel, entry in record["files"].items():
      data = (step_dir / rel).read_bytes()
      assert entry == {"size": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_checksums(step_dir) == ("ok", "")
  # Restoring (here a no-op resume and a load) leaves the files as written;
  # a resume exports the best model again, with new checksums.
  before = _snapshot(tmp_path / "ckpt")
  _, again = _trainer(tmp_path)
  _fit(again, 3, resume=True)
  again.close()
  load_checkpoint(_model(1), tmp_path)
  assert _snapshot(tmp_path / "ckpt") == before
  assert verify_checksums(tmp_path / "best" / best) == ("ok", "")


# --------------------------------------------------------- at resume --------

@pytest.mark.parametrize("damage", ["overwrite_64_bytes", "truncate"])
def test_corrupt_latest_step_falls_back_and_matches_uninterrupted_run(
    tmp_path, reference, damage):
  _run(tmp_path, 3)
  bad = _data_file(tmp_path / "ckpt" / "3")
  {"overwrite_64_bytes": _overwrite_64_bytes, "truncate": _truncate}[damage](
      bad)
  status, detail = verify_checksums(tmp_path / "ckpt" / "3")
  assert status == "corrupt" and bad.name in detail

  model, trainer = _trainer(tmp_path, max_to_keep=3)
  with pytest.warns(UserWarning, match=r"corrupt checkpoint.*ckpt/3.*"
                    r"previous intact checkpoint .*ckpt/2") as record:
    history = _fit(trainer, 4, resume=True)
  trainer.close()
  assert len(_corruption_warnings(record)) == 1
  # Epochs 3 and 4 were trained again: the same parameters and history as
  # the uninterrupted run (resumption is exact).
  ref_params, ref_history = reference
  chex.assert_trees_all_close(_params(model), ref_params, rtol=0, atol=1e-6)
  assert [r["train/loss"] for r in history] == pytest.approx(
      [r["train/loss"] for r in ref_history], rel=1e-6)
  # The corrupt step was moved aside, not deleted; the new ones verify.
  assert (tmp_path / "corrupt" / "ckpt-3" / bad.relative_to(
      tmp_path / "ckpt" / "3")).exists()
  for step in ("3", "4"):
    assert verify_checksums(tmp_path / "ckpt" / step)[0] == "ok"


def test_missing_or_extra_file_is_corruption(tmp_path):
  _run(tmp_path, 2)
  (tmp_path / "ckpt" / "2" / "meta" / "metadata").unlink()
  status, detail = verify_checksums(tmp_path / "ckpt" / "2")
  assert status == "corrupt" and "meta/metadata is missing" in detail
  (tmp_path / "ckpt" / "1" / "state" / "stray").write_text("x")
  status, detail = verify_checksums(tmp_path / "ckpt" / "1")
  assert status == "corrupt" and "unexpected file state/stray" in detail
  (best,) = os.listdir(tmp_path / "best")
  (tmp_path / "best" / best / CHECKSUM_FILE).write_text("{not json")
  status, detail = verify_checksums(tmp_path / "best" / best)
  assert status == "corrupt" and "unreadable" in detail


def test_every_step_corrupt_raises_naming_each_step_and_changes_nothing(
    tmp_path):
  _run(tmp_path, 2)
  _overwrite_64_bytes(_data_file(tmp_path / "ckpt" / "2"))
  _truncate(_data_file(tmp_path / "ckpt" / "1"))
  before = _snapshot(tmp_path)
  _, trainer = _trainer(tmp_path)
  with pytest.raises(CheckpointError) as info:
    _fit(trainer, 3, resume=True)
  message = str(info.value)
  assert "cannot restore checkpoint" in message
  assert str(tmp_path / "ckpt" / "1") in message
  assert str(tmp_path / "ckpt" / "2") in message
  assert "SHA-256" in message and "bytes" in message
  assert _snapshot(tmp_path) == before
  with pytest.raises(CheckpointError, match=str(tmp_path / "ckpt" / "2")):
    load_checkpoint(_model(1), tmp_path, best=False, step=2)


def test_orbax_errors_name_the_step_directory(tmp_path):
  """Damage that the checksums cannot see (written before hashing)."""
  _run(tmp_path, 1)
  step_dir = tmp_path / "ckpt" / "1"
  _overwrite_64_bytes(_data_file(step_dir))
  write_checksums(step_dir)
  _, trainer = _trainer(tmp_path)
  with pytest.raises(CheckpointError, match=f"checkpoint {step_dir}: "):
    _fit(trainer, 2, resume=True)
  with pytest.raises(CheckpointError, match=f"cannot load {step_dir} "):
    load_checkpoint(_model(1), tmp_path, best=False)


# ----------------------------------------------------- load_checkpoint ------

def test_corrupt_best_loads_the_identical_copy_or_raises(tmp_path):
  model, _ = _run(tmp_path, 3)  # restore_best: `model` holds the best
  (best,) = os.listdir(tmp_path / "best")
  best_dir = tmp_path / "best" / best
  _overwrite_64_bytes(_data_file(best_dir, "model"))
  fresh = _model(1)
  with pytest.warns(UserWarning, match=f"corrupt checkpoint {best_dir}.*"
                    r"identical copy .*ckpt/3/best"):
    assert load_checkpoint(fresh, tmp_path) == int(best)
  chex.assert_trees_all_close(_params(fresh), _params(model), rtol=0, atol=0)
  # With every copy corrupt too, nothing is loaded.
  for step in os.listdir(tmp_path / "ckpt"):
    _truncate(_data_file(tmp_path / "ckpt" / step, "best"))
  untouched = _model(2)
  with pytest.raises(CheckpointError, match=f"cannot load checkpoint "
                     f"{best_dir}: it is corrupt"):
    load_checkpoint(untouched, tmp_path)
  chex.assert_trees_all_close(_params(untouched), _params(_model(2)), atol=0)


def test_load_latest_falls_back_to_newest_intact_step(tmp_path):
  saved = {}
  _, trainer = _trainer(tmp_path)
  _fit(trainer, 2, on_epoch_end=lambda r: saved.update(
      {r["epoch"]: _params(trainer.model)}))
  trainer.close()
  _overwrite_64_bytes(_data_file(tmp_path / "ckpt" / "2"))
  fresh = _model(1)
  with pytest.warns(UserWarning, match=r"corrupt checkpoint.*ckpt/2.*"
                    r"newest intact one, .*ckpt/1"):
    assert load_checkpoint(fresh, tmp_path, best=False) == 1
  chex.assert_trees_all_close(_params(fresh), saved[1], atol=0)
  # An explicitly requested step is never swapped for another one.
  with pytest.raises(CheckpointError, match=r"ckpt/2: it is corrupt"):
    load_checkpoint(_model(1), tmp_path, best=False, step=2)


# ---------------------------------------------------------- old format ------

def test_checkpoints_without_checksums_restore_with_one_warning(
    tmp_path, reference):
  _run(tmp_path, 2)
  for f in tmp_path.rglob(CHECKSUM_FILE):
    f.unlink()  # the layout written before checksums existed
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    assert load_checkpoint(_model(1), tmp_path, best=False) == 2
    assert load_checkpoint(_model(1), tmp_path, best=False, step=1) == 1
    model, trainer = _trainer(tmp_path)
    _fit(trainer, 4, resume=True)
    trainer.close()
  unverified = [w for w in record if "cannot be verified" in str(w.message)]
  assert len(unverified) == 1, [str(w.message) for w in record]
  assert "ckpt/2" in str(unverified[0].message)
  chex.assert_trees_all_close(_params(model), reference[0], rtol=0,
                              atol=1e-6)
  # New saves are checksummed.
  assert verify_checksums(tmp_path / "ckpt" / "4")[0] == "ok"


# ------------------------------------------------------ error messages ------

def test_non_finite_error_never_names_a_corrupt_checkpoint_as_good(tmp_path):
  def corrupt_after_save(record):
    if record["epoch"] == 2:
      _overwrite_64_bytes(_data_file(tmp_path / "ckpt" / "2"))

  def poisoned(epoch):
    for i, b in enumerate(_batches(epoch)):
      if epoch == 2 and i == 1:
        b = dict(b, x=np.full_like(b["x"], np.nan))
      yield b

  model = _model()
  trainer = Trainer(model, optax.adam(0.05), _loss, checkpoint_dir=tmp_path,
                    max_to_keep=3, progress=False)
  with pytest.raises(NonFiniteError) as info:
    trainer.fit(poisoned, 4, on_epoch_end=corrupt_after_save)
  trainer.close()
  message = str(info.value)
  assert "epoch 1" in message and "epoch 2" not in message, message
