"""The busy training loop: windowed checks, on-device epochs, seeds at once."""

import re
import threading
import time
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from l2d_jax.models import MLP
from l2d_jax.training import DeviceEpochs
from l2d_jax.training import NonFiniteError
from l2d_jax.training import SeedTrainer
from l2d_jax.training import Trainer
from l2d_jax.training import cpu_compiler_options
from l2d_jax.training import data_mesh
from l2d_jax.training import default_compiler_options
from l2d_jax.training import epoch_indices
from l2d_jax.training import permutation
from l2d_jax.training import seed_mesh
from l2d_jax.training import sgd_cosine
from l2d_jax.training import _seed_orders
from l2d_jax.training import _programs

K, J, FEATURES, BATCH = 3, 2, 4, 16


def _data(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, FEATURES)).astype(np.float32)
  y = ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1)).astype(np.int32)
  experts = np.stack([np.where(rng.random(n) < 0.7, y, (y + 1) % K),
                      rng.integers(0, K, n)], axis=1).astype(np.int32)
  return {"x": x, "y": y, "experts": experts}


def loss_fn(model, batch):
  logits = model(batch["x"])
  logq = jax.nn.log_softmax(logits, axis=-1)
  y = batch["y"]
  nll = -jnp.take_along_axis(logq, y[:, None], axis=-1)[:, 0]
  correct = (batch["experts"] == y[:, None]).astype(jnp.float32)
  defer = -jnp.sum(correct * logq[:, K:], axis=-1)
  acc = jnp.mean(jnp.argmax(logits[:, :K], -1) == y)
  return jnp.mean(nll + defer), {"accuracy": acc}


def val_metrics(model, batch):
  logits = model(batch["x"])
  logq = jax.nn.log_softmax(logits, axis=-1)
  return {"loss": -jnp.take_along_axis(logq, batch["y"][:, None], -1)[:, 0],
          "accuracy": (jnp.argmax(logits[:, :K], -1) == batch["y"]).astype(
              jnp.float32)}


def _model(seed=0):
  return MLP(FEATURES, (16,), K, num_experts=J, rngs=nnx.Rngs(seed))


def _tx():
  return optax.chain(optax.clip_by_global_norm(5.0),
                     sgd_cosine(0.2, 60, weight_decay=1e-4))


def _params(model):
  return jax.tree.map(np.asarray,
                      nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _host_batches(data):
  return lambda epoch: data.host_batches(epoch)


# ------------------------------------------------------------ shuffling -----

def test_permutation_is_a_uniform_permutation():
  for n in (1, 2, 7, 1000, 20_000):
    p = np.asarray(permutation(jax.random.key(n), n))
    np.testing.assert_array_equal(np.sort(p), np.arange(n))
  # Position frequencies of 4 elements over 4000 keys: each of the 16
  # (element, position) cells has probability 1/4; binomial sd = 27.4.
  perms = np.asarray(jax.vmap(lambda k: permutation(k, 4))(
      jax.random.split(jax.random.key(1), 4000)))
  counts = np.stack([(perms == e).sum(0) for e in range(4)])
  assert np.abs(counts - 1000).max() < 5 * 27.4
  # All 24 orders appear, none more than 5 sd from 4000 / 24.
  codes, freq = np.unique(perms @ np.array([64, 16, 4, 1]), return_counts=True)
  assert codes.size == 24
  assert np.abs(freq - 4000 / 24).max() < 5 * np.sqrt(4000 / 24 * 23 / 24)


def test_epoch_indices_drop_the_remainder():
  idx = np.asarray(epoch_indices(jax.random.key(0), 10, 3))
  assert idx.shape == (3, 3) and len(set(idx.ravel())) == 9
  with pytest.raises(ValueError, match="batch_size"):
    epoch_indices(jax.random.key(0), 10, 11)
  with pytest.raises(ValueError, match=r"`x` contains 1 NaN"):
    DeviceEpochs({"x": np.array([0.0, np.nan])}, 1, key=jax.random.key(0))


# ------------------------------------------------------- on-device epoch ----

@pytest.mark.parametrize("devices", [1, 4])
def test_device_epochs_match_the_host_loop(devices):
  data = DeviceEpochs(_data(96, 0), BATCH, key=jax.random.key(3))
  val = _data(40, 1)
  results = []
  for train in (data, _host_batches(data)):
    model = _model()
    trainer = Trainer(model, _tx(), loss_fn, mesh=data_mesh(devices),
                      progress=False, sync_every=4)
    history = trainer.fit(train, 4, eval_fn=lambda t=trainer: t.evaluate(
        [val], val_metrics), monitor="loss", mode="min")
    results.append((_params(model), history))
  (p_dev, h_dev), (p_host, h_host) = results
  # Same compiled step, same batches: equal up to float reassociation.
  chex.assert_trees_all_close(p_dev, p_host, rtol=1e-5, atol=1e-6)
  for a, b in zip(h_dev, h_host):
    assert a.keys() == b.keys()
    for k in a:
      if k != "seconds":
        assert a[k] == pytest.approx(b[k], rel=1e-5), k


def test_device_epochs_compile_once():
  counted = chex.assert_max_traces(loss_fn, n=1)
  trainer = Trainer(_model(), _tx(), counted, progress=False)
  data = DeviceEpochs(_data(96, 0), BATCH, key=jax.random.key(0))
  trainer.fit(data, 3)
  # The host loop reuses the same traced step.
  trainer.fit(_host_batches(data), 5)
  assert trainer.trace_count == 1
  assert trainer.step == 5 * 6


def test_trainers_of_one_architecture_share_compiled_programs():
  """A second trainer (same structure, optimiser object, loss) compiles nothing.

  Its run equals the first one's exactly: same programs, same numbers.
  """
  counted = chex.assert_max_traces(loss_fn, n=1)
  tx = _tx()
  data = DeviceEpochs(_data(96, 0), BATCH, key=jax.random.key(0))
  val = _data(40, 1)
  runs = []
  for _ in range(2):
    model = _model()
    trainer = Trainer(model, tx, counted, mesh=data_mesh(1), progress=False)
    history = trainer.fit(data, 3, eval_fn=lambda t=trainer: t.evaluate(
        [val], val_metrics))
    runs.append((trainer.trace_count, _params(model), history))
  (traces_a, params_a, hist_a), (traces_b, params_b, hist_b) = runs
  assert (traces_a, traces_b) == (1, 0)
  chex.assert_trees_all_equal(params_a, params_b)
  assert ([{k: v for k, v in r.items() if k != "seconds"} for r in hist_a]
          == [{k: v for k, v in r.items() if k != "seconds"} for r in hist_b])
  # Another optimiser object (or loss function) gets its own programs.
  other = Trainer(_model(), _tx(), loss_fn, mesh=data_mesh(1),
                  progress=False)
  other.fit(data, 1)
  assert other.trace_count == 1


def _poisoned_loss(model, batch):
  value, aux = loss_fn(model, batch)
  return value * jnp.log(jnp.min(batch["w"])), aux  # log(-1) = NaN


def test_windowed_check_names_the_first_bad_step(tmp_path):
  data = _data(96, 0)
  data["w"] = np.full(96, np.e, np.float32)
  data["w"][[7, 50]] = -1.0  # two bad examples: the first step is named
  dev = DeviceEpochs(data, BATCH, key=jax.random.key(5))
  order = [dev.indices(e) for e in range(3)]
  bad = [(e, b) for e in range(3) for b in range(6)
         if {7, 50} & set(order[e][b].tolist())]
  epoch, batch = bad[0]
  step = 6 * epoch + batch + 1
  for train in (dev, _host_batches(dev)):
    trainer = Trainer(_model(), optax.sgd(0.05), _poisoned_loss,
                      checkpoint_dir=tmp_path / str(type(train).__name__),
                      sync_every=4, progress=False)
    msg = (rf"non-finite loss \(nan\) at step {step} \(epoch index {epoch}, "
           rf"batch {batch}\)")
    with pytest.raises(NonFiniteError, match=msg):
      trainer.fit(train, 3)
    assert trainer.epoch == epoch  # no epoch with the bad step completed


# ------------------------------------------------------- seeds at once ------

def _seed_data(seeds, n, offset):
  per_seed = [_data(n, offset + s) for s in seeds]
  return {k: np.stack([d[k] for d in per_seed]) for k in per_seed[0]}


def _sequential(seeds, train, val, keys, **fit_kwargs):
  params, histories = [], []
  for i, seed in enumerate(seeds):
    model = _model(seed)
    trainer = Trainer(model, _tx(), loss_fn, mesh=data_mesh(1),
                      progress=False)
    one_val = {k: v[i] for k, v in val.items()}
    history = trainer.fit(
        DeviceEpochs({k: v[i] for k, v in train.items()}, BATCH, key=keys[i]),
        12, eval_fn=lambda t=trainer, v=one_val: t.evaluate([v], val_metrics),
        **fit_kwargs)
    params.append(_params(model))
    histories.append(history)
  return params, histories


def test_vmapped_seeds_match_sequential_runs():
  seeds = (0, 1, 2)
  train, val = _seed_data(seeds, 96, 0), _seed_data(seeds, 40, 10)
  keys = jax.random.split(jax.random.key(7), len(seeds))
  fit_kwargs = dict(monitor="loss", mode="min", patience=2)
  want_params, want_hist = _sequential(seeds, train, val, keys, **fit_kwargs)
  trainer = SeedTrainer([_model(s) for s in seeds], _tx(), loss_fn,
                        mesh=seed_mesh(1))
  hist = trainer.fit(train, 12, batch_size=BATCH, keys=keys, val=val,
                     metrics_fn=val_metrics, sync_every=5, **fit_kwargs)
  assert trainer.trace_count == 1
  # Seeds stop at different epochs; each history ends where its run ended.
  assert [len(h) for h in hist] == [len(h) for h in want_hist]
  assert len({len(h) for h in hist}) > 1, "pick settings where seeds differ"
  # vmap batches the matmuls over seeds (another summation order): 1e-5.
  for got, want in zip(trainer.models, want_params):
    chex.assert_trees_all_close(_params(got), want, rtol=1e-5, atol=1e-6)
  for got_h, want_h in zip(hist, want_hist):
    for got, want in zip(got_h, want_h):
      for k in ("epoch", "step"):
        assert got[k] == want[k]
      for k in ("train/loss", "train/accuracy", "eval/loss",
                "eval/accuracy"):
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k
  out = trainer.predict(val, lambda m, b: {"logits": m(b["x"])},
                        batch_size=16)
  assert out["logits"].shape == (3, 40, K + J)
  np.testing.assert_allclose(
      out["logits"][1], np.asarray(trainer.models[1](jnp.asarray(val["x"][1]))),
      rtol=1e-5, atol=1e-6)


def test_window_orders_are_the_device_epochs_orders():
  keys = jax.random.split(jax.random.key(3), 2)
  orders = np.asarray(_seed_orders._window_orders(  # pylint: disable=protected-access
      keys, np.int32(4), num_examples=50, batch_size=16, shuffle=True,
      num_epochs=3))
  assert orders.shape == (2, 3, 3, 16)
  for s in range(2):
    data = DeviceEpochs({"x": np.zeros(50)}, 16, key=keys[s])
    for e in range(3):
      np.testing.assert_array_equal(orders[s, e], data.indices(4 + e))


def test_seeds_sharing_a_key_share_their_orders():
  cache = _seed_orders._ORDERS  # pylint: disable=protected-access
  cache.clear()
  one = _seed_data((0,), 96, 0)
  train = {k: np.concatenate([v] * 3) for k, v in one.items()}
  k0, k1 = jax.random.split(jax.random.key(5), 2)
  keys = jnp.stack([k0, k1, k0])
  params = []
  for _ in range(2):
    trainer = SeedTrainer([_model(0)] * 3, _tx(), loss_fn, mesh=seed_mesh(1))
    trainer.fit(train, 5, batch_size=BATCH, keys=keys, sync_every=2)
    params.append([_params(m) for m in trainer.models])
  # Windows of sync_every=2 epochs (the last one padded), one draw for the
  # two distinct keys, reused by the second trainer.
  assert [v.shape for v in cache._items.values()] == [(2, 2, 6, BATCH)] * 3
  # Same model, data and key: the same run; another key: another run.
  chex.assert_trees_all_equal(params[0][0], params[0][2])
  with pytest.raises(AssertionError):
    chex.assert_trees_all_equal(params[0][0], params[0][1])
  chex.assert_trees_all_equal(params[0], params[1])


def test_order_cache_keeps_its_memory_bound():
  cache = _seed_orders._OrderCache(max_bytes=3 * 4 * 16)  # pylint: disable=protected-access
  keys = jax.random.split(jax.random.key(0), 1)
  for epoch in range(5):
    got = cache.get(keys, epoch, num_examples=8, batch_size=4, shuffle=True,
                    num_epochs=2)
    assert got.nbytes == 4 * 16
  assert len(cache._items) == 3  # the three most recent windows
  assert cache._bytes == 3 * 4 * 16


def test_threads_asking_for_one_window_draw_it_once(monkeypatch):
  cache = _seed_orders._OrderCache(max_bytes=2**20)  # pylint: disable=protected-access
  draw = _seed_orders._window_orders  # pylint: disable=protected-access
  calls = []

  def slow_draw(*args, **kwargs):
    calls.append(kwargs["num_epochs"])
    time.sleep(0.2)  # the other threads ask while this one draws
    return draw(*args, **kwargs)

  monkeypatch.setattr(_seed_orders, "_window_orders", slow_draw)
  keys = jax.random.split(jax.random.key(0), 2)
  got = [None] * 3

  def ask(i):
    got[i] = cache.get(keys, 0, num_examples=8, batch_size=4, shuffle=True,
                       num_epochs=2)

  threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert calls == [2]
  assert got[0] is got[1] is got[2]
  np.testing.assert_array_equal(
      got[0], draw(keys, np.int32(0), num_examples=8, batch_size=4,
                   shuffle=True, num_epochs=2))
  # Another window is drawn anew.
  cache.get(keys, 2, num_examples=8, batch_size=4, shuffle=True, num_epochs=2)
  assert calls == [2, 2]


def test_seeds_sharded_over_four_devices_match_one_device():
  assert jax.device_count() == 4, "conftest should force 4 CPU devices"
  seeds = (0, 1, 2, 3)
  train, val = _seed_data(seeds, 64, 0), _seed_data(seeds, 24, 10)
  keys = jax.random.split(jax.random.key(1), 4)
  results = []
  for mesh in (seed_mesh(4), seed_mesh(4, devices=jax.devices()[:1])):
    trainer = SeedTrainer([_model(s) for s in seeds], _tx(), loss_fn,
                          mesh=mesh)
    hist = trainer.fit(train, 4, batch_size=BATCH, keys=keys, val=val,
                       metrics_fn=val_metrics, eval_batch_size=10,
                       monitor="accuracy")
    state = trainer._state  # pylint: disable=protected-access
    devices = {len(x.sharding.device_set) for x in jax.tree.leaves(state)}
    results.append(([_params(m) for m in trainer.models], hist, devices))
  (p4, h4, d4), (p1, h1, d1) = results
  assert d4 == {4} and d1 == {1}
  chex.assert_trees_all_close(p4, p1, rtol=1e-5, atol=1e-6)
  for a, b in zip(h4, h1):
    assert [r["eval/accuracy"] for r in a] == pytest.approx(
        [r["eval/accuracy"] for r in b], abs=1e-6)


def test_seed_trainer_reports_the_bad_seed():
  seeds = (0, 1)
  train = _seed_data(seeds, 64, 0)
  train["w"] = np.full((2, 64), np.e, np.float32)
  train["w"][1, 10] = -1.0
  trainer = SeedTrainer([_model(s) for s in seeds], optax.sgd(0.05),
                        _poisoned_loss)
  with pytest.raises(NonFiniteError, match=r"seed 1: non-finite loss \(nan\) "
                     r"at step \d+ \(epoch index 0\)"):
    trainer.fit(train, 3, batch_size=BATCH,
                keys=jax.random.split(jax.random.key(0), 2))


def test_seed_trainer_rejects_bad_inputs():
  with pytest.raises(ValueError, match="differs in structure"):
    SeedTrainer([_model(0), MLP(FEATURES, (8,), K, rngs=nnx.Rngs(1))],
                optax.sgd(0.1), loss_fn)
  trainer = SeedTrainer([_model(0), _model(1)], optax.sgd(0.1), loss_fn)
  keys = jax.random.split(jax.random.key(0), 2)
  with pytest.raises(ValueError, match=r"num_seeds=2"):
    trainer.fit(_seed_data((0, 1, 2), 32, 0), 1, batch_size=8, keys=keys)
  with pytest.raises(ValueError, match="`keys` must be 2"):
    trainer.fit(_seed_data((0, 1), 32, 0), 1, batch_size=8, keys=keys[:1])
  with pytest.raises(ValueError, match="cannot be split"):
    SeedTrainer([_model(0)] * 3, optax.sgd(0.1), loss_fn, mesh=seed_mesh(4))


# ------------------------------------------------------ compile options -----

def test_unknown_compile_option_falls_back_with_one_warning(monkeypatch):
  monkeypatch.setattr(_programs, "CPU_COMPILER_OPTIONS",
                      {"xla_cpu_option_that_does_not_exist": "true"})
  mesh = data_mesh(1)
  with pytest.warns(RuntimeWarning, match="does not accept the trainer's "
                    "default cpu compile options"):
    assert default_compiler_options(mesh) == {}
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # probed once: no second warning
    assert default_compiler_options(mesh) == {}
    trainer = Trainer(_model(), optax.sgd(0.1), loss_fn, mesh=mesh,
                      progress=False)
    trainer.fit(DeviceEpochs(_data(32, 0), 8, key=jax.random.key(0)), 1)
  assert trainer.step == 4


def test_known_compile_option_is_kept():
  opts = default_compiler_options(data_mesh(1))
  assert opts == _programs.CPU_COMPILER_OPTIONS
  assert re.fullmatch(r"xla_cpu_\w+", next(iter(opts)))


def test_requested_cpu_options_are_probed_once_and_fall_back():
  bad = {"xla_cpu_another_option_that_does_not_exist": True}
  with pytest.warns(RuntimeWarning, match="does not accept the requested "
                    "cpu compile options"):
    assert cpu_compiler_options(bad) == {}
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # probed once: no second warning
    assert cpu_compiler_options(bad, mesh=data_mesh(1)) == {}
  good = {"xla_cpu_use_fusion_emitters": False}
  got = cpu_compiler_options(good)
  assert got == good and got is not good

