"""Checks every experiment's command line must pass (shared by the tests)."""

import pathlib
import re
import subprocess
import sys

from experiments import _cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def assert_help_documents_every_option(module: str, parser) -> None:
  """``python -m <module> --help`` shows help text and a default for every option."""
  assert _cli.options_without_help(parser) == []
  proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        check=True)
  blocks = re.split(r"\n  (?=-)", proc.stdout.split("options:", 1)[1])
  helped = {}
  for block in blocks:
    if block.strip():
      helped[block.split()[0].rstrip(",")] = " ".join(block.split())
  options = [a.option_strings[-1] for a in parser._actions] + ["--debug"]  # pylint: disable=protected-access
  for opt in options:
    if opt in ("--help", "-h"):
      continue
    text = helped.get(opt) or helped.get(opt.split("/")[0])
    assert text is not None, opt
    assert "(default:" in text, (opt, text)
    assert len(text.split("(default:")[0].split()) > 2, (opt, text)


def assert_bad_arguments_are_one_line(main, cases, out_dir: pathlib.Path,
                                      capsys) -> None:
  """Each ``(argv, message)`` ends with exit 2 and one line starting with it.

  ``out_dir`` is passed as ``--out`` unless the case sets its own; it must
  never be created (the options are checked before any work).
  """
  for argv, message in cases:
    out = [] if "--out" in argv else ["--out", str(out_dir)]
    code = main(argv + out + ["--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.startswith("error: " + message), (argv, err)
    assert err.count("\n") == 1, (argv, err)
  assert not out_dir.exists()
