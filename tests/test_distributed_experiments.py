"""Experiments on several processes: their work shared out, one's results.

``distributed.map_sharded`` (and ``shard_items`` / ``interleave`` /
``allgather_objects``) shares independent work (seeds, settings) out over
the processes; the experiments use it so that ``--num-processes N`` writes
the ``results.json`` of one process. The multi-process tests start real
workers with ``distributed.spawn`` (loopback, one CPU device each, bounded
by ``WORKER_TIMEOUT_S``); the workers are this file run as a module:
``python -m tests.test_distributed_experiments <role> <dir> [args]``.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from l2d_jax import distributed

REPO = pathlib.Path(__file__).resolve().parent.parent
WORKER_TIMEOUT_S = 240  # a hung job fails the test instead of the suite
ITEMS = list(range(7))  # 2 processes: 4 and 3 items


def _item_result(x):
  """A result with the types the experiments return (floats, arrays, dicts)."""
  rng = np.random.default_rng(x)
  return {"seed": x, "value": float(rng.normal()),
          "history": rng.normal(size=(x + 1, 2)).astype(np.float32)}


def _check_results(got):
  expected = [_item_result(x) for x in ITEMS]
  assert [r["seed"] for r in got] == ITEMS
  for g, e in zip(got, expected):
    assert g["value"] == e["value"]
    np.testing.assert_array_equal(g["history"], e["history"])
    assert g["history"].dtype == np.float32


# ------------------------------------------------------------ the workers --


def worker_map(out):
  """map_sharded on every process: results, who computed what, errors."""
  import jax  # pylint: disable=g-import-not-at-top
  p = jax.process_index()
  seen = []

  def fn(x):
    seen.append(x)
    return _item_result(x)

  res = distributed.map_sharded(fn, ITEMS)
  lines = []

  def fail(x):
    if x == 3:  # item 3 belongs to process 1
      raise ValueError("bad item three")
    return x

  try:
    distributed.map_sharded(fail, ITEMS)
  except (ValueError, RuntimeError) as e:
    lines.append(f"{type(e).__name__}: {e}")
  try:
    distributed.map_sharded(lambda x: x, ITEMS[:5 + p])
  except ValueError as e:
    lines.append(f"{type(e).__name__}: {e}")
  np.save(out / f"seen_{p}.npy", seen)
  (out / f"results_{p}.json").write_text(json.dumps(
      [{**r, "history": r["history"].tolist()} for r in res]))
  np.savez(out / f"histories_{p}.npz", *[r["history"] for r in res])
  (out / f"errors_{p}.txt").write_text("\n".join(lines))


def _topk_budget():
  from experiments.topk_l2d import config  # pylint: disable=g-import-not-at-top
  return config.Budget(agent_epochs=2, agent_batch=64, rejector_epochs=2,
                       selector_epochs=2, batch=64, hidden=(8,), cnn_epochs=1,
                       cnn_train_images=64, cnn_batch=32)


def _ea_budget():
  from experiments.ea_l2d import config  # pylint: disable=g-import-not-at-top
  return config.Budget(steps=4, batch=8, eval_every=2, hidden=8,
                       rejector_hidden=(8,), embed_dim=8, context_size=6,
                       max_expertise=2)


def _population_budget():
  from experiments.population_l2d import config  # pylint: disable=g-import-not-at-top
  return config.Budget(embed_epochs=1, embed_batch=32, feature_dim=8,
                       gen_steps=4, gen_batch=8, mu=2, down_steps=4,
                       down_batch=8, eval_every=2, embed_dim=8, hidden_dim=8)


TINY_BUDGETS = {"topk_l2d": _topk_budget, "ea_l2d": _ea_budget,
                "population_l2d": _population_budget}


def experiment_main(name, argv):
  """``experiments.<name>``'s command line with a tiny ``cpu`` budget."""
  import importlib  # pylint: disable=g-import-not-at-top
  cli = importlib.import_module(f"experiments.{name}.__main__")
  config = importlib.import_module(f"experiments.{name}.config")
  saved = config.BUDGETS["cpu"]
  config.BUDGETS["cpu"] = TINY_BUDGETS[name]()
  try:
    return cli.main(argv)
  finally:
    config.BUDGETS["cpu"] = saved


def topk_main(argv):
  """The topk command line with the tiny budget as its ``cpu`` config."""
  return experiment_main("topk_l2d", argv)


def fail_one_main(argv):
  """A command line whose process 1 fails while process 0 waits for it."""
  from experiments import _cli  # pylint: disable=g-import-not-at-top

  def run(args):
    del args
    import jax  # pylint: disable=g-import-not-at-top
    if jax.process_index() == 1:
      raise ValueError("process 1 cannot go on")
    distributed.barrier("never reached by process 1")

  return _cli.run_distributed_main(_cli.make_parser("fail_one", "test"), run,
                                   argv, module="tests.unused")


def _worker_main(argv):
  role = argv[0]
  if role == "fail_one":
    sys.exit(fail_one_main(argv[1:]))
  if role == "map":
    distributed.initialize()  # from the environment that spawn sets
    worker_map(pathlib.Path(argv[1]))
  elif role == "experiment":  # run_distributed_main joins the job
    sys.exit(experiment_main(argv[1], argv[2:]))
  else:
    raise SystemExit(f"unknown role {role!r}")


def _spawn(argv, log_dir, num_processes=2, timeout_s=WORKER_TIMEOUT_S):
  return distributed.spawn(
      [sys.executable, "-m", "tests.test_distributed_experiments", *argv],
      num_processes, devices_per_process=1, timeout_s=timeout_s,
      grace_s=2.0, log_dir=log_dir, cwd=REPO, env={"JAX_PLATFORMS": "cpu"})


# -------------------------------------------------- one process (fast) --


def test_shard_items_and_interleave_round_trip():
  items = list("abcdefg")
  for n in (1, 2, 3, 7, 9):
    shares = [distributed.shard_items(items, process_index=p,
                                      num_processes=n) for p in range(n)]
    assert sorted(sum(shares, [])) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert distributed.interleave(shares, len(items)) == items
  assert distributed.shard_items(items, process_index=1, num_processes=3) == [
      "b", "e"]


def test_shard_items_defaults_to_this_process():
  assert distributed.shard_items(ITEMS) == ITEMS  # one process: every item


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(process_index=2, num_processes=2), ValueError,
     r"`process_id` must lie in \[0, 2\) for num_processes=2, got 2"),
    (dict(process_index=0, num_processes=0), ValueError,
     r"`num_processes` must be >= 1, got 0"),
    (dict(process_index=0.5, num_processes=2), TypeError,
     r"`process_id` must be an int"),
])
def test_shard_items_rejects_a_bad_process(kwargs, error, match):
  with pytest.raises(error, match=match):
    distributed.shard_items(ITEMS, **kwargs)


def test_interleave_names_a_share_of_the_wrong_length():
  with pytest.raises(ValueError, match=r"share 1 of 2 holds 3 results, "
                     r"expected 2 for 5 items"):
    distributed.interleave([[0, 2, 4], [1, 3, 5]], 5)


def test_map_sharded_alone_is_the_list_comprehension():
  calls = []

  def fn(x):
    calls.append(x)
    return _item_result(x)

  _check_results(distributed.map_sharded(fn, iter(ITEMS)))
  assert calls == ITEMS  # in order, once each
  assert distributed.allgather_objects({"a": 1}) == [{"a": 1}]
  with pytest.raises(KeyError):  # alone, an error passes through unchanged
    distributed.map_sharded(lambda x: {}[x], [1])


# ---------------------------------------------------- two processes --


def test_map_sharded_on_two_processes(tmp_path):
  _spawn(["map", str(tmp_path)], tmp_path / "logs")
  np.testing.assert_array_equal(np.load(tmp_path / "seen_0.npy"), [0, 2, 4, 6])
  np.testing.assert_array_equal(np.load(tmp_path / "seen_1.npy"), [1, 3, 5])
  for p in (0, 1):
    got = json.loads((tmp_path / f"results_{p}.json").read_text())
    hist = np.load(tmp_path / f"histories_{p}.npz")
    _check_results([{**r, "history": hist[f"arr_{i}"]}
                    for i, r in enumerate(got)])
  errors = [(tmp_path / f"errors_{p}.txt").read_text().splitlines()
            for p in (0, 1)]
  # Process 1 raised on item 3: it re-raises its error, process 0 names it.
  assert errors[1][0] == "ValueError: bad item three"
  assert errors[0][0] == ("RuntimeError: process 1 of 2 failed on item 3 of 7:"
                          " ValueError: bad item three")
  for p in (0, 1):
    assert errors[p][1] == (
        f"ValueError: the 2 processes passed different numbers of items to "
        f"map_sharded (this is process {p}; counts by process: [5, 6]); "
        "every process must pass the same items.")


def test_a_failed_worker_leaves_the_job_at_once(tmp_path):
  # Process 1 fails while process 0 waits in a collective for it. Had it
  # waited at JAX's shutdown barrier (5 minutes), the job would run past
  # the 150 s limit and end with "did not finish" instead.
  # Process 1 fails first; process 0's collective then breaks too. On a
  # busy machine both can have exited by the launcher's next poll, and then
  # the message leads with process 0 ("process 0 of 2 exited with code 1;
  # process 1 exited with code 2"), so either order is accepted, but
  # process 1's own exit code must be reported.
  with pytest.raises(distributed.WorkerError,
                     match=r"^process [01] of 2 exited with code [12]\b"
                     ) as err:
    _spawn(["fail_one"], tmp_path / "logs", timeout_s=150)
  assert re.search(r"process 1 (of 2 )?exited with code 2\b",
                   str(err.value)), str(err.value)
  log = (tmp_path / "logs" / "process_1.log").read_text()
  assert "error: process 1 cannot go on" in log


def _fake_california(root, n=1500):
  """A ``cal_housing.data`` of ``n`` plausible random block groups."""
  rng = np.random.default_rng(0)
  households = rng.uniform(50, 1000, n)
  rooms = households * rng.uniform(3, 7, n)
  table = np.stack([
      rng.uniform(-124, -114, n), rng.uniform(32, 42, n),
      rng.integers(1, 53, n), rooms, rooms * rng.uniform(0.15, 0.3, n),
      households * rng.uniform(2, 4, n), households,
      rng.uniform(0.5, 15, n), rng.uniform(15000, 500001, n)], axis=1)
  folder = root / "california_housing"
  folder.mkdir(parents=True)
  np.savetxt(folder / "cal_housing.data", table, fmt="%.5f", delimiter=",")
  return root


@pytest.mark.slow  # a pool and 3 seeds, compiled 3 times: ~1-2 min loaded
def test_topk_on_two_processes_writes_one_process_results(tmp_path):
  data = _fake_california(tmp_path / "data")

  def argv(out):
    return ["--dataset", "california_housing", "--data-dir", str(data),
            "--seeds", "3", "--lambdas", "0,1", "--no-progress",
            "--out", str(out)]

  assert topk_main(argv(tmp_path / "one")) == 0
  _spawn(["experiment", "topk_l2d", *argv(tmp_path / "two"),
          "--num-processes", "2"], tmp_path / "logs")
  one = json.loads((tmp_path / "one" / "results.json").read_text())
  two = json.loads((tmp_path / "two" / "results.json").read_text())
  assert [r["seed"] for r in two["results"]] == [
      r["seed"] for r in one["results"]]
  assert two == one
  assert {r["seed"] for r in one["results"]} == {0, 1, 2}
  details = json.loads((tmp_path / "two" / "details.json").read_text())
  assert sorted(details["final_rejector_val_surrogate"]) == ["0", "1", "2"]


def _one_and_two_processes(name, argv, tmp_path):
  """results.json of ``argv`` run by this process and by 2 workers."""
  assert experiment_main(name, argv + ["--out", str(tmp_path / "one")]) == 0
  _spawn(["experiment", name, *argv, "--out", str(tmp_path / "two"),
          "--num-processes", "2"], tmp_path / "logs")
  return [json.loads((tmp_path / d / "results.json").read_text())
          for d in ("one", "two")]


@pytest.mark.slow  # 3 seeds of the digits data, compiled per process
def test_ea_l2d_on_two_processes_writes_one_process_results(tmp_path):
  one, two = _one_and_two_processes(
      "ea_l2d", ["--dataset", "digits", "--data-dir", str(tmp_path),
                 "--study", "rq1", "--overlap", "0.2",
                 "--seeds", "3", "--no-progress"], tmp_path)
  assert two == one
  assert sorted({r["seed"] for r in one["results"]}) == [0, 1, 2]


@pytest.mark.slow  # 3 seeds of the digits data, compiled per process
def test_population_l2d_on_two_processes_writes_one_process_results(
    tmp_path):
  one, two = _one_and_two_processes(
      "population_l2d", ["--dataset", "digits", "--data-dir", str(tmp_path),
                         "--seeds", "3",
                         "--budget-k", "2", "--variant", "np",
                         "--no-progress"], tmp_path)
  assert two == one
  assert sorted({r["seed"] for r in one["results"]}) == [0, 1, 2]


MEC_TINY = ["--dataset", "mog", "--set", "num_samples=600", "--epochs", "2",
            "--batch-size", "64", "--seeds", "2", "--no-progress",
            "--experiment", "increasing-experts", "--settings", "1,2"]


def _mec(argv, out, num_processes):
  """results.json of the calibration sweep ``argv`` on 1 or N processes."""
  argv = MEC_TINY + argv + ["--out", str(out), "--cache-dir",
                            str(out.parent / "cache")]
  if num_processes == 1:
    from experiments import multi_expert_calibration as mec  # pylint: disable=g-import-not-at-top
    assert mec.main(argv) == 0
  else:  # the command line launches the workers itself
    res = subprocess.run(
        [sys.executable, "-m", "experiments.multi_expert_calibration", *argv,
         "--num-processes", str(num_processes)], cwd=REPO,
        capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
        env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
  return json.loads((out / "results.json").read_text())


@pytest.mark.slow  # 4 groups of 2 seeds trained, once alone and once shared
def test_calibration_groups_shared_over_two_processes(tmp_path):
  one = _mec([], tmp_path / "one", 1)
  two = _mec([], tmp_path / "two", 2)
  assert two == one
  assert len(one["results"]) == 8
  progress = json.loads((tmp_path / "two" / "progress.json").read_text())
  assert len(progress["runs"]) == 8
  # Resuming the finished sweep on 2 processes trains nothing.
  assert _mec([], tmp_path / "two", 2) == one


@pytest.mark.slow  # Trainer runs on 2 processes (data parallel)
def test_calibration_runs_one_at_a_time_on_two_processes(tmp_path):
  argv = ["--sequential", "--parameterisation", "softmax", "--settings", "2"]
  one = _mec(argv, tmp_path / "one", 1)
  two = _mec(argv, tmp_path / "two", 2)
  # The gradient is all-reduced across processes: float32 sums in another
  # order, equal to 1e-5.
  assert len(two["results"]) == len(one["results"]) == 2
  for a, b in zip(one["results"], two["results"]):
    assert {k: a[k] for k in ("parameterisation", "setting", "seed")} == {
        k: b[k] for k in ("parameterisation", "setting", "seed")}
    np.testing.assert_allclose(b["ece_per_expert"], a["ece_per_expert"],
                               rtol=1e-4, atol=1e-5)
    assert b["system_accuracy"] == pytest.approx(a["system_accuracy"],
                                                 abs=1e-3)
  assert not (tmp_path / "two" / "checkpoints").exists()


if __name__ == "__main__":
  _worker_main(sys.argv[1:])
