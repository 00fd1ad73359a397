"""``--num-processes N`` of the experiments (experiments/_cli.py)."""

import json
import subprocess
import sys

import pytest

from experiments import _cli
from experiments import conformal_deferral as exp
from tests.test_distributed import REPO

SMALL = ["--dataset", "synthetic", "--splits", "2", "--cal-size", "200",
         "--alphas", "0.1,0.3", "--score", "all", "--no-progress"]


def _run(argv, timeout=300):
  return subprocess.run(
      [sys.executable, "-m", "experiments.conformal_deferral", *argv],
      cwd=REPO, capture_output=True, text=True, timeout=timeout,
      env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"}, check=False)


def test_help_shows_the_options(capsys):
  with pytest.raises(SystemExit):
    exp.main(["--help"])
  text = capsys.readouterr().out
  assert "--num-processes NUM_PROCESSES" in text and "--cluster" in text


def test_cluster_and_local_processes_exclude_each_other(capsys):
  assert exp.main(SMALL + ["--num-processes", "2", "--cluster"]) == 2
  assert capsys.readouterr().err.startswith(
      "error: --cluster and --num-processes > 1 exclude each other")


def test_num_processes_is_checked_while_parsing(capsys):
  assert exp.main(SMALL + ["--num-processes", "0"]) == 2
  assert capsys.readouterr().err == "error: --num-processes must be >= 1, got 0\n"


def test_a_failing_worker_ends_the_launcher_with_one_line(tmp_path):
  res = _run(["--dataset", "cifar10s", "--data-dir", str(tmp_path / "none"),
              "--out", str(tmp_path / "out"), "--num-processes", "2"])
  assert res.returncode == 2
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("error: process ") and "of 2 exited with code 2" in last
  assert "--data-dir" in res.stderr  # each worker's own one-line error


def test_parser_gets_the_options_once():
  parser = _cli.make_parser("p", "d")
  _cli.add_num_processes_argument(parser)
  _cli.add_num_processes_argument(parser)
  assert parser.parse_args([]).num_processes == 1
  assert _cli.options_without_help(parser) == []


@pytest.mark.slow  # two sweeps compiled from scratch: ~1 min each under load
def test_two_processes_write_the_same_results_json(tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  assert exp.main(SMALL + ["--out", str(one)]) == 0
  res = _run(SMALL + ["--out", str(two), "--num-processes", "2"])
  assert res.returncode == 0, res.stderr[-2000:]
  assert json.loads((one / "results.json").read_text()) == json.loads(
      (two / "results.json").read_text())
  # Process 0 alone printed the table.
  assert res.stdout.count("| Score | Strategy |") == 1
