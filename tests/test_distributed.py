"""Multi-process runs (jax.distributed, CPU, loopback): trainer and sweep.

Each test starts real worker processes with ``distributed.spawn`` (a free
port on 127.0.0.1, gloo collectives, one forced CPU device per process) and
compares with a single-process run in this process. The workers are this
file run as a module: ``python -m tests.test_distributed <role> <dir>``.

Tolerance of the training comparison: the parameters of a 2-process run
(2 devices, gradient all-reduced by gloo) and of a 1-process run on a
2-device mesh with the same global batches agree to ``rtol=atol=1e-5``
(float32; the partial gradients are summed in a different place, nothing
else differs). The sweep's numbers are equal exactly.
"""

import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from l2d_jax import distributed

REPO = pathlib.Path(__file__).resolve().parent.parent
NUM_EPOCHS = 4
KILL_EPOCH_INDEX, KILL_BATCH = 2, 1  # process 1 dies mid-epoch 3
BATCH = 16
WORKER_TIMEOUT_S = 120  # a hung job fails the test instead of the suite
_TINY_SWEEP = dict(num_images=150, num_classes=4, num_experts=8,
                   answers_per_expert=50)
SWEEP_SCORES = ("aps", "raps")  # one score per process


# ------------------------------------------------------------ the workers --


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4)).astype(np.float32)
  y = ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1)).astype(np.int32)
  return {"x": x, "y": y}


def _loss(model, batch):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  logq = jax.nn.log_softmax(model(batch["x"]), axis=-1)
  nll = -jnp.take_along_axis(logq, batch["y"][:, None], axis=-1)[:, 0]
  return nll.mean(), {}


def _trainer(checkpoint_dir=None, *, seed=0, mesh=None):
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from l2d_jax.models import MLP  # pylint: disable=g-import-not-at-top
  from l2d_jax.training import Trainer  # pylint: disable=g-import-not-at-top
  model = MLP(4, (8,), 3, rngs=nnx.Rngs(seed))
  return model, Trainer(model, optax.sgd(0.1, momentum=0.9), _loss,
                        mesh=mesh, checkpoint_dir=checkpoint_dir,
                        progress=False, sync_every=2)


def _batches(kill=False):
  from l2d_jax.training import EpochBatches  # pylint: disable=g-import-not-at-top
  data = _data()

  def epoch_batches(epoch):
    for i, batch in enumerate(EpochBatches(data, BATCH, seed=0, epoch=epoch)):
      if (kill and jax.process_index() == 1 and epoch == KILL_EPOCH_INDEX
          and i == KILL_BATCH):
        os.kill(os.getpid(), signal.SIGKILL)
      yield batch

  return epoch_batches


def _params(model):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  return [np.asarray(x) for x in leaves]


def _save_params(out, model, history):
  np.savez(out / f"params_{jax.process_index()}.npz", *_params(model))
  np.save(out / f"epochs_{jax.process_index()}.npy",
          [r["epoch"] for r in history])


def worker_train(out, kill=False, resume=False):
  """Trains NUM_EPOCHS epochs with checkpoints in ``out/ckpt``."""
  model, trainer = _trainer(out / "ckpt")
  assert trainer.mesh.size == jax.process_count()  # the global mesh
  with trainer:
    history = trainer.fit(_batches(kill), NUM_EPOCHS, resume=resume)
  _save_params(out, model, history)


def worker_bad_inputs(out):
  """Every error is raised on every process, so none hangs; prints each."""
  from l2d_jax.training import EpochBatches  # pylint: disable=g-import-not-at-top
  lines = []
  try:
    distributed.check_same_config({"lr": 0.1 * (1 + jax.process_index())})
  except ValueError as e:
    lines.append(f"config: {e}")
  try:
    _trainer(seed=jax.process_index())  # different initial parameters
  except ValueError as e:
    lines.append(f"trainer: {e}")
  _, trainer = _trainer()
  try:
    trainer.fit(lambda e: EpochBatches(_data(), 15, seed=0, epoch=e), 1)
  except ValueError as e:
    lines.append(f"batch: {e}")
  (out / f"errors_{jax.process_index()}.txt").write_text("\n".join(lines))
  # The on-device epoch and evaluation on the global mesh.
  model, history, nll = _device_epochs_run()
  np.savez(out / f"device_epochs_{jax.process_index()}.npz", *_params(model),
           losses=[r["train/loss"] for r in history], nll=nll)


def _device_epochs_run(mesh=None):
  from l2d_jax.training import DeviceEpochs  # pylint: disable=g-import-not-at-top
  model, trainer = _trainer(mesh=mesh)
  history = trainer.fit(DeviceEpochs(_data(), BATCH, key=jax.random.key(0)),
                        2)
  nll = trainer.evaluate([_data()], _nll)["nll"]
  return model, history, nll


def _nll(model, batch):
  logq = jax.nn.log_softmax(model(batch["x"]), axis=-1)
  return {"nll": -logq[np.arange(logq.shape[0]), batch["y"]]}


def _sweep_inputs():
  """A tiny pool, 3 splits: positional arguments and RAPS's tune_idx."""
  from l2d_jax import data  # pylint: disable=g-import-not-at-top
  ds = data.synthetic_pool(0, **_TINY_SWEEP)
  has = np.flatnonzero(np.asarray(ds.annotations.mask).any(1))
  rng = np.random.default_rng(0)
  idx = np.stack([rng.permutation(has)[:80] for _ in range(3)])
  return (ds.probs, ds.labels, ds.annotations, idx[:, :30], idx[:, 40:],
          np.array([0.05, 0.1, 0.2, 0.4])), idx[:, 30:40]


def worker_sweep(out):
  args, tune = _sweep_inputs()
  for shard in distributed.SWEEP_SHARDS:
    res = distributed.deferral_sweep(*args, key=jax.random.key(0),
                                     scores=SWEEP_SCORES, tune_idx=tune,
                                     shard=shard)
    np.savez(out / f"sweep_{shard}_{jax.process_index()}.npz",
             *[np.asarray(x) for x in jax.tree.leaves(res)])
  # Fewer splits than processes: split 1 alone, with its id; process 1
  # has none to sweep.
  one = (*args[:3], args[3][1:2], args[4][1:2], args[5])
  res = distributed.deferral_sweep(*one, key=jax.random.key(0),
                                   scores=SWEEP_SCORES, tune_idx=tune[1:2],
                                   split_ids=[1])
  np.savez(out / f"sweep_one_{jax.process_index()}.npz",
           *[np.asarray(x) for x in jax.tree.leaves(res)])


def _worker_main(argv):
  distributed.initialize()  # from the environment that spawn sets
  role, out = argv[0], pathlib.Path(argv[1])
  if role == "sweep":
    worker_sweep(out)
  elif role == "train":
    worker_train(out, kill="kill" in argv[2:], resume="resume" in argv[2:])
  elif role == "bad_inputs":
    worker_bad_inputs(out)
  else:
    raise SystemExit(f"unknown role {role!r}")


def _spawn(role, out, *extra, num_processes=2):
  return distributed.spawn(
      [sys.executable, "-m", "tests.test_distributed", role, str(out),
       *extra], num_processes, devices_per_process=1,
      timeout_s=WORKER_TIMEOUT_S, grace_s=2.0, log_dir=out / "logs",
      cwd=REPO, env={"JAX_PLATFORMS": "cpu"})


# -------------------------------------------------------------- the tests --


def _reference_params(num_epochs=NUM_EPOCHS):
  """One process, a 2-device mesh, the same global batches."""
  from l2d_jax.training import data_mesh  # pylint: disable=g-import-not-at-top
  model, trainer = _trainer(mesh=data_mesh(2))
  trainer.fit(_batches(), num_epochs)
  return _params(model)


def _check_params(out, expected):
  for pid in (0, 1):
    got = np.load(out / f"params_{pid}.npz")
    got = [got[f"arr_{i}"] for i in range(len(got.files))]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
      np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_two_processes_train_like_one(tmp_path):
  _spawn("train", tmp_path)
  _check_params(tmp_path, _reference_params())
  for pid in (0, 1):
    np.testing.assert_array_equal(np.load(tmp_path / f"epochs_{pid}.npy"),
                                  np.arange(1, NUM_EPOCHS + 1))
  # The metrics log was written by process 0 alone: one record per epoch.
  log = (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()
  assert len(log) == NUM_EPOCHS


def test_a_killed_process_stops_both_and_a_restart_resumes(tmp_path):
  from l2d_jax.training import _checkpoint  # pylint: disable=g-import-not-at-top
  # Process 1 is killed mid-epoch: both end, with a clear error.
  with pytest.raises(distributed.WorkerError,
                     match=r"process 1 of 2 was killed by SIGKILL"):
    _spawn("train", tmp_path, "kill")
  ckpt = tmp_path / "ckpt" / "ckpt"
  steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  assert steps == [KILL_EPOCH_INDEX - 1, KILL_EPOCH_INDEX]  # max_to_keep=2
  for step in steps:
    assert _checkpoint.verify_checksums(ckpt / str(step)) == ("ok", "")
  assert not (tmp_path / "params_0.npz").exists()
  # A restart resumes from the last checkpoint and ends like one process.
  _spawn("train", tmp_path, "resume")
  _check_params(tmp_path, _reference_params())


def test_two_process_sweep_equals_one_process(tmp_path):
  from l2d_jax import conformal  # pylint: disable=g-import-not-at-top
  _spawn("sweep", tmp_path)
  args, tune = _sweep_inputs()
  expected = conformal.deferral_sweep(*args, key=jax.random.key(0),
                                      scores=SWEEP_SCORES, tune_idx=tune)
  leaves = [np.asarray(x) for x in jax.tree.leaves(expected)]
  # By split (3 splits: process 0 sweeps 0 and 2, process 1 sweeps 1) and
  # by score (one score each).
  for shard in ("splits", "scores"):
    for pid in (0, 1):
      got = np.load(tmp_path / f"sweep_{shard}_{pid}.npz")
      assert len(got.files) == len(leaves)
      for i, e in enumerate(leaves):
        np.testing.assert_array_equal(got[f"arr_{i}"], e)
  for pid in (0, 1):  # split 1 alone: row 1 of the full sweep
    got = np.load(tmp_path / f"sweep_one_{pid}.npz")
    for i, e in enumerate(leaves):
      np.testing.assert_array_equal(got[f"arr_{i}"], e[1:2])


def test_bad_inputs_and_device_epochs_across_processes(tmp_path):
  from l2d_jax.training import data_mesh  # pylint: disable=g-import-not-at-top
  _spawn("bad_inputs", tmp_path)
  model, history, nll = _device_epochs_run(mesh=data_mesh(2))
  for pid in (0, 1):
    got = np.load(tmp_path / f"device_epochs_{pid}.npz")
    for i, e in enumerate(_params(model)):
      np.testing.assert_allclose(got[f"arr_{i}"], e, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["losses"],
                               [r["train/loss"] for r in history], rtol=1e-5)
    np.testing.assert_allclose(got["nll"], nll, rtol=1e-5)
  for pid in (0, 1):
    lines = (tmp_path / f"errors_{pid}.txt").read_text().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("config: the 2 processes disagree on the "
                               "config")
    assert lines[1].startswith("trainer: the 2 processes disagree on the "
                               "model, optimiser state")
    assert "batch size 15 is not divisible by the 2 devices" in lines[2]


def test_unreachable_coordinator_names_the_address():
  address = f"127.0.0.1:{distributed.free_port()}"
  with pytest.raises(ConnectionError, match=f"coordinator at {address} "
                     r"within 0.5 s"):
    distributed.initialize(address, num_processes=2, process_id=1,
                           timeout_s=0.5)
  assert not jax.distributed.is_initialized()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_processes=2, process_id=2), ValueError,
     r"`process_id` must lie in \[0, 2\) for num_processes=2, got 2"),
    (dict(num_processes=2, process_id=-1), ValueError,
     r"`process_id` must lie in \[0, 2\)"),
    (dict(num_processes=0, process_id=0), ValueError,
     "`num_processes` must be >= 1, got 0"),
    (dict(num_processes=2, process_id=1.0), TypeError,
     "`process_id` must be an int"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0),
     ValueError, "'host:port'"),
    (dict(coordinator_address="h:70000", num_processes=2, process_id=0),
     ValueError, r"port in \[1, 65535\]"),
    (dict(num_processes=2), ValueError, "`process_id` is required"),
    (dict(num_processes=2, process_id=0), ValueError,
     "`coordinator_address`"),
])
def test_initialize_rejects_bad_arguments(kwargs, error, match):
  with pytest.raises(error, match=match):
    distributed.initialize(**kwargs)


def test_initialize_without_a_job_says_how_to_describe_one():
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("L2D_", "SLURM_", "OMPI_", "TPU_"))}
  res = subprocess.run(
      [sys.executable, "-c",
       "from l2d_jax import distributed; distributed.initialize()"],
      cwd=REPO, env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True,
      text=True, timeout=120, check=False)
  assert res.returncode == 1
  assert "initialize() found no job to join" in res.stderr
  assert "distributed.spawn" in res.stderr


def test_initialize_alone_is_a_no_op():
  assert distributed.initialize(num_processes=1) is False
  assert not jax.distributed.is_initialized()


def test_spawn_reports_a_failed_worker_and_stops_the_others(tmp_path):
  code = ("import os, sys, time\n"
          "if os.environ['L2D_PROCESS_ID'] == '1':\n"
          "  print('worker 1 fails'); sys.exit(3)\n"
          "time.sleep(60)\n")
  with pytest.raises(distributed.WorkerError) as info:
    distributed.spawn([sys.executable, "-c", code], 2, timeout_s=30,
                      grace_s=0.5, log_dir=tmp_path)
  message = str(info.value)
  assert "process 1 of 2 exited with code 3" in message
  assert "process 0 was killed by SIGTERM" in message
  assert "worker 1 fails" in message  # the end of its log


def test_spawn_times_out(tmp_path):
  with pytest.raises(distributed.WorkerError, match="did not finish within"):
    distributed.spawn([sys.executable, "-c", "import time; time.sleep(60)"],
                      2, timeout_s=1, log_dir=tmp_path)


def test_worker_env_sets_the_job_and_the_device_count():
  env = distributed.worker_env(
      1, 3, "127.0.0.1:1234", devices_per_process=2,
      base={"XLA_FLAGS": "--xla_force_host_platform_device_count=4 --foo"})
  assert env["L2D_PROCESS_ID"] == "1" and env["L2D_NUM_PROCESSES"] == "3"
  assert env["L2D_COORDINATOR_ADDRESS"] == "127.0.0.1:1234"
  assert env["XLA_FLAGS"].split() == [
      "--foo", "--xla_force_host_platform_device_count=2"]


def test_config_hash_is_order_independent_and_value_sensitive():
  h = distributed.config_hash
  assert h({"a": 1, "b": [1, 2]}) == h({"b": [1, 2], "a": 1})
  assert h({"a": 1}) != h({"a": 2})
  assert distributed.check_same_config({"a": 1}) == h({"a": 1})


def test_assign_scores_covers_every_score_once():
  for n in (1, 2, 3, 4):
    plan = distributed.assign_scores(SWEEP_SCORES, n)
    assert len(plan) == n
    assert sorted(s for p in plan for s in p) == sorted(SWEEP_SCORES)


if __name__ == "__main__":
  _worker_main(sys.argv[1:])
