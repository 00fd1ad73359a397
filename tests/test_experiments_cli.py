"""The experiments' shared CLI layer (_cli) and output writing (_io)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from experiments import _cli
from experiments import _io

REPO = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# _cli


def _parser():
  p = _cli.make_parser("prog", "A test parser.")
  p.add_argument("--n", type=_cli.positive_int, default=3, help="count.")
  p.add_argument("--k", type=_cli.non_negative_int, default=0, help="k.")
  p.add_argument("--seed", type=_cli.seed, default=0, help="seed.")
  p.add_argument("--f-kept", type=_cli.fraction(0.0, 1.0), default=None,
                 help="fraction.")
  p.add_argument("--alphas", type=_cli.alpha_list, default=None, help="a.")
  p.add_argument("--grid", type=_cli.int_list(1), default=(5,), help="g.")
  p.add_argument("--xs", type=_cli.float_list(), default=None, help="x.")
  p.add_argument("--out", default="out", help="output folder.")
  return p


def _run(argv, capsys, run_fn=lambda args: 0):
  code = _cli.run_main(_parser(), run_fn, argv)
  err = capsys.readouterr().err
  return code, err


@pytest.mark.parametrize("argv, message", [
    (["--f-kept", "1.5"], "error: --f-kept must lie in (0, 1], got 1.5"),
    (["--f-kept", "nan"], "error: --f-kept must lie in (0, 1], got nan"),
    (["--f-kept", "inf"], "error: --f-kept must lie in (0, 1], got inf"),
    (["--f-kept", "0"], "error: --f-kept must lie in (0, 1], got 0"),
    (["--f-kept", "x"], "error: --f-kept must be a number, got 'x'"),
    (["--seed", "-1"], "error: --seed must be an integer in [0, 2**32), got -1"),
    (["--seed", str(2**70)], "error: --seed must be an integer in [0, 2**32), "
     f"got {2**70}"),
    (["--seed", "2**70"], "error: --seed must be an integer, got '2**70'"),
    (["--seed", "1.5"], "error: --seed must be an integer, got '1.5'"),
    (["--n", "0"], "error: --n must be >= 1, got 0"),
    (["--k", "-2"], "error: --k must be >= 0, got -2"),
    (["--alphas", ""], "error: --alphas must be a non-empty comma-separated "
     "list of numbers in (0, 1), got ''"),
    (["--alphas", "0.1,,0.2"], "error: --alphas must be a non-empty "
     "comma-separated list"),
    (["--alphas", "0.1,0.2,0.1"], "error: --alphas must not repeat a value, "
     "got 0.1 twice in '0.1,0.2,0.1'"),
    (["--alphas", "0.1,1.0"], "error: --alphas must hold numbers in (0, 1), "
     "got 1.0"),
    (["--alphas", "0.1,nan"], "error: --alphas must hold numbers in (0, 1), "
     "got nan"),
    (["--grid", "5,0"], "error: --grid must hold integers >= 1, got 0"),
    (["--grid", "5,5"], "error: --grid must not repeat a value"),
    (["--xs", "1,inf"], "error: --xs must hold finite numbers, got inf"),
    (["--nope"], "error: unrecognized arguments: --nope"),
])
def test_bad_values_give_one_line_and_exit_2(capsys, argv, message):
  code, err = _run(argv, capsys, run_fn=lambda a: pytest.fail("ran"))
  assert code == 2
  assert err.count("\n") == 1 and err.startswith(message), err


def test_good_values_are_parsed(capsys):
  seen = {}

  def run_fn(args):
    seen.update(vars(args))
    return 0

  code, err = _run(["--seed", str(2**32 - 1), "--f-kept", "1", "--alphas",
                    "0.2, 0.05", "--grid", "3,1", "--xs=-1.5,2"], capsys,
                   run_fn)
  assert code == 0 and err == ""
  assert seen["seed"] == 2**32 - 1 and seen["f_kept"] == 1.0
  assert seen["alphas"] == (0.2, 0.05) and seen["grid"] == (3, 1)
  assert seen["xs"] == (-1.5, 2.0) and seen["debug"] is False


@pytest.mark.parametrize("exc", [
    ValueError("--cal-size must be >= 3 for RAPS,\n got 1"),
    TypeError("bad type"), FileNotFoundError("no file x"),
    _cli.CliError("--data-dir: /x does not exist")])
def test_run_errors_are_one_line_or_traceback_with_debug(capsys, exc):
  def run_fn(args):
    raise exc

  code, err = _run([], capsys, run_fn)
  assert code == 2 and err.count("\n") == 1
  assert err.startswith("error: " + " ".join(str(exc).split()))
  # Only an unexpected kind of error points at --debug.
  assert ("--debug" in err) != isinstance(exc, _cli.CliError)
  code, err = _run(["--debug"], capsys, run_fn)
  assert code == 2 and "Traceback" in err and type(exc).__name__ in err


def test_unexpected_errors_propagate_and_return_code(capsys):
  def boom(args):
    raise RuntimeError("a bug")

  with pytest.raises(RuntimeError):
    _cli.run_main(_parser(), boom, [])
  assert _cli.run_main(_parser(), lambda a: 3, []) == 3


def test_help_shows_every_default(capsys):
  p = _parser()
  assert _cli.options_without_help(p) == []
  with pytest.raises(SystemExit) as e:
    _cli.run_main(p, lambda a: 0, ["--help"])
  assert e.value.code == 0
  out = " ".join(capsys.readouterr().out.split())
  for opt in ("--n", "--k", "--seed", "--f-kept", "--alphas", "--grid", "--xs",
              "--out", "--debug"):
    assert opt in out
  assert "(default: 3)" in out and "(default: out)" in out
  assert "(default: False)" in out  # --debug


def test_require_dir_and_file(tmp_path):
  assert _cli.require_dir(tmp_path, "--data-dir") == tmp_path
  with pytest.raises(_cli.CliError,
                     match=r"^--data-dir: .*/missing does not exist; pass"):
    _cli.require_dir(tmp_path / "missing", "--data-dir")
  (tmp_path / "f").write_text("x")
  with pytest.raises(_cli.CliError, match="is not a directory"):
    _cli.require_dir(tmp_path / "f", "--data-dir")
  assert _cli.require_file(tmp_path / "f", "--costs") == tmp_path / "f"
  with pytest.raises(_cli.CliError, match="^--costs: .* does not exist"):
    _cli.require_file(tmp_path / "g", "--costs")


def test_check_output_dir(tmp_path, monkeypatch):
  out = tmp_path / "a" / "b"
  assert _cli.check_output_dir(out) == out.resolve()
  assert out.parent.is_dir() and not out.exists()
  assert os.listdir(out.parent) == []  # The probe is removed.
  (tmp_path / "file").write_text("x")
  with pytest.raises(_cli.CliError, match="^--out: cannot create or write to"):
    _cli.check_output_dir(tmp_path / "file" / "out")
  with pytest.raises(_cli.CliError, match="exists and is not a directory"):
    _cli.check_output_dir(tmp_path / "file")
  monkeypatch.chdir(out.parent)
  for bad in (".", "..", "/"):
    with pytest.raises(_cli.CliError, match="current directory or one of"):
      _cli.check_output_dir(bad)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_dir_read_only(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  try:
    with pytest.raises(_cli.CliError, match="--out: cannot create or write"):
      _cli.check_output_dir(ro / "out")
  finally:
    ro.chmod(0o700)


# ---------------------------------------------------------------------------
# _io


def test_json_rounds_floats_and_keeps_ints(tmp_path):
  obj = {"a": 0.9059999999999999, "b": np.float32(0.1), "n": 2**53 + 1,
         "i": np.int64(7), "arr": np.array([1 / 3, np.nan, np.inf]),
         "t": (True, np.bool_(False)), "p": pathlib.Path("x/y"),
         "tiny": 1.234567890123456e-20,
         "f32": np.array([[0.1, 0.7]], np.float32)}
  _io.write_json(tmp_path / "r.json", obj)
  back = json.loads((tmp_path / "r.json").read_text())
  assert back == {"a": 0.906, "b": 0.1, "n": 2**53 + 1, "i": 7,
                  "arr": [0.333333333333, None, None], "t": [True, False],
                  "p": "x/y", "tiny": 1.23456789012e-20,
                  "f32": [[0.1, 0.7]]}
  assert "0.9059999999999999" not in (tmp_path / "r.json").read_text()
  assert json.loads(_io.to_json({"a": 1 / 3}, digits=None))["a"] == 1 / 3


def _write_set(out, tag, owns=("*.json", "*.md", "*.png")):
  with _io.OutputSet(out, owns=owns) as o:
    o.write_json("results.json", {"tag": tag})
    o.write_json("details.json", {"tag": tag})
    o.write_text("table.md", tag)


def _tags(out):
  names = ("results.json", "details.json")
  return {json.loads((out / n).read_text())["tag"] for n in names} | {
      (out / "table.md").read_text()}


def _siblings(out):
  return sorted(n for n in os.listdir(out.parent) if n != out.name)


def test_output_set_replaces_owned_entries_and_carries_the_rest(tmp_path):
  out = tmp_path / "out"
  _write_set(out, "old")
  (out / "old_plot.png").write_bytes(b"png")
  (out / "checkpoints").mkdir()
  (out / "checkpoints" / "step_1").write_text("ckpt")
  (out / "progress.json").write_text("{}")
  (out / ".progress.json.abc.tmp").write_text("half")  # A killed atomic write.
  _write_set(out, "new", owns=("results.json", "details.json", "table.md",
                               "*.png"))
  assert _tags(out) == {"new"}
  assert sorted(os.listdir(out)) == ["checkpoints", "details.json",
                                     "progress.json", "results.json",
                                     "table.md"]
  assert (out / "checkpoints" / "step_1").read_text() == "ckpt"
  assert _siblings(out) == []


def test_output_set_exception_halfway_leaves_old_set(tmp_path):
  out = tmp_path / "out"
  _write_set(out, "old")
  with pytest.raises(KeyboardInterrupt):
    with _io.OutputSet(out, owns=("*",)) as o:
      o.write_json("results.json", {"tag": "new"})
      raise KeyboardInterrupt  # Killed between the writes.
  assert _tags(out) == {"old"} and _siblings(out) == []


class _Kill(BaseException):
  pass


@pytest.mark.parametrize("first_run", [False, True])
def test_output_set_killed_at_every_step_of_the_swap(tmp_path, monkeypatch,
                                                     first_run):
  """Kill before each rename/removal of the commit; the next start recovers."""
  real_rename, real_rmtree = os.rename, _io.shutil.rmtree
  n_killed = 0
  for kill_at in range(12):
    out = tmp_path / f"k{kill_at}" / "out"
    if not first_run:
      _write_set(out, "old")
      (out / "checkpoints").mkdir()
      (out / "checkpoints" / "c").write_text("keep me")
    calls = [0]

    def step(real):
      def fn(*a, **k):
        calls[0] += 1
        if calls[0] == kill_at + 1:
          raise _Kill()
        return real(*a, **k)
      return fn

    monkeypatch.setattr(os, "rename", step(real_rename))
    monkeypatch.setattr(_io.shutil, "rmtree", step(real_rmtree))
    killed = False
    try:
      _write_set(out, "new")
    except _Kill:
      killed = True
      n_killed += 1
    monkeypatch.setattr(os, "rename", real_rename)
    monkeypatch.setattr(_io.shutil, "rmtree", real_rmtree)
    _io.recover_output_dir(out)
    assert _siblings(out) == [], (kill_at, _siblings(out))
    if first_run and killed and not out.exists():
      continue  # Killed before the commit point of the first run ever.
    tags = _tags(out)
    assert tags in ({"old"}, {"new"}), (kill_at, tags)
    if not first_run:
      assert (out / "checkpoints" / "c").read_text() == "keep me", kill_at
    if not killed:
      assert tags == {"new"}
      # First run: staging -> out; else also out -> old, the carried
      # checkpoints/ -> staging and the removal of old.
      assert n_killed == (1 if first_run else 4)
      break
  else:
    pytest.fail("the commit never completed")


_CHILD = textwrap.dedent("""
    import pathlib, sys, time
    from experiments import _io
    out = pathlib.Path(sys.argv[1])
    with _io.OutputSet(out, owns=("results.json", "details.json",
                                  "table.md")) as o:
      o.write_json("results.json", {"tag": "new"})
      print("written", flush=True)
      time.sleep(60)  # SIGKILLed here, between the writes.
      o.write_json("details.json", {"tag": "new"})
      o.write_text("table.md", "new")
""")


def test_output_set_survives_sigkill_between_writes(tmp_path):
  out = tmp_path / "out"
  _write_set(out, "old")
  (out / "progress.json").write_text("{\"done\": 3}")  # Not owned: carried.
  proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
    proc.stdout.close()
  assert proc.returncode == -signal.SIGKILL
  assert _tags(out) == {"old"}  # Never a new results.json beside old files.
  assert len(_siblings(out)) == 1  # The killed run's staging folder.
  owns = ("results.json", "details.json", "table.md")
  _write_set(out, "next", owns=owns)  # The next start cleans it.
  assert _tags(out) == {"next"} and _siblings(out) == []
  assert (out / "progress.json").read_text() == "{\"done\": 3}"  # Carried.
