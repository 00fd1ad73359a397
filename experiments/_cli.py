"""The command-line layer shared by the experiments.

Every experiment's ``__main__`` builds an ``argparse`` parser with
``make_parser`` (help shows every option's default), uses the ``type=``
helpers of ``experiments._cli_types`` (re-exported here) so bad values are
refused while parsing, and hands the parser and its run function to
``run_main``. Expected errors -- a bad value, a missing data
directory, an unwritable ``--out`` -- end with one line on stderr that names the
option and exit code 2; ``--debug`` shows the full traceback instead.

The options every experiment shares are added by ``add_data_dir_argument``,
``add_seeds_arguments``, ``add_config_argument``, ``add_cache_dir_argument``,
``add_out_argument`` and ``add_progress_argument`` (one help text and check
for all); ``check_data_dir`` ends a missing data folder with one line,
``seed_range`` turns ``--seeds``/``--first-seed`` into the seeds,
``run_details`` starts ``details.json`` with the full command, and
``experiment_main`` is an experiment's whole ``main``::

  def main(argv=None) -> int:
    return _cli.experiment_main(build_parser, execute, argv,
                                module="experiments.<name>")
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import re
import shlex
import sys
import tempfile
import traceback
from typing import Any, Callable, Sequence

from experiments._cli_types import MAX_SEED
from experiments._cli_types import alpha_list
from experiments._cli_types import float_list
from experiments._cli_types import fraction
from experiments._cli_types import int_at_least
from experiments._cli_types import int_list
from experiments._cli_types import non_negative_int
from experiments._cli_types import positive_int
from experiments._cli_types import seed

__all__ = [
    "CliError",
    "HelpFormatter",
    "make_parser",
    "run_main",
    "positive_int",
    "non_negative_int",
    "int_at_least",
    "seed",
    "fraction",
    "float_list",
    "int_list",
    "alpha_list",
    "require_dir",
    "require_file",
    "check_output_dir",
    "options_without_help",
    # Options every experiment shares
    "add_data_dir_argument",
    "add_seeds_arguments",
    "add_config_argument",
    "add_cache_dir_argument",
    "add_out_argument",
    "add_progress_argument",
    "check_data_dir",
    "seed_range",
    "command_line",
    "run_details",
    # Entry points, one or several processes
    "experiment_main",
    "add_num_processes_argument",
    "run_distributed_main",
]

EXIT_USAGE = 2


class CliError(Exception):
  """An expected command-line error; ``run_main`` prints it as one line."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
  """Shows each option's default and keeps the description's line breaks.

  An option whose help already says "(default: ...)" -- e.g. to explain what
  a ``None`` default means -- is left as it is.
  """

  def _get_help_string(self, action):
    if "(default:" in (action.help or ""):
      return action.help
    return super()._get_help_string(action)


def make_parser(prog: str, description: str, **kwargs) -> argparse.ArgumentParser:
  """An ``ArgumentParser`` with ``HelpFormatter`` (defaults in ``--help``)."""
  return argparse.ArgumentParser(prog=prog, description=description,
                                 formatter_class=HelpFormatter, **kwargs)


def _one_line(message: str) -> str:
  return " ".join(str(message).split())


_ARGUMENT = re.compile(r"^argument ([^:]+): (.*)$", re.S)


def _parse_error_line(message: str) -> str:
  """argparse's "argument --x: must ..." as "--x must ..." (one line)."""
  m = _ARGUMENT.match(message)
  if m:
    option = m.group(1).split("/")[-1]
    rest = m.group(2)
    message = (f"{option} {rest}" if rest.startswith("must ")
               else f"{option}: {rest}")
  return _one_line(message)


def run_main(parser: argparse.ArgumentParser,
             run_fn: Callable[[argparse.Namespace], Any],
             argv: Sequence[str] | None = None) -> int:
  """Parses ``argv`` and calls ``run_fn(args)``; returns the exit code.

  Adds ``--debug`` to ``parser``. Parse errors and the expected errors of
  ``run_fn`` (``CliError``, ``ValueError``, ``TypeError``, ``OSError``) are
  printed as one line ``error: ...`` on stderr and give exit code 2; with
  ``--debug`` an error from ``run_fn`` prints its full traceback (still exit
  code 2). ``--help`` exits through ``SystemExit(0)`` as usual.

  Args:
    parser: the experiment's parser (its ``error`` is made to raise).
    run_fn: runs the experiment from the parsed arguments; an int it returns
      is the exit code, anything else means 0.
    argv: arguments without the program name; ``None`` reads ``sys.argv``.

  Returns:
    The exit code: 0 on success, 2 on an expected error.
  """
  if not any("--debug" in a.option_strings for a in parser._actions):  # pylint: disable=protected-access
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error.")

  def _raise(message):
    raise CliError(_parse_error_line(message))

  parser.error = _raise  # One line instead of usage + message + SystemExit.
  try:
    args = parser.parse_args(argv)
  except CliError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USAGE
  try:
    code = run_fn(args)
  except (CliError, ValueError, TypeError, OSError) as e:
    if getattr(args, "debug", False):
      traceback.print_exc()
    else:
      hint = "" if isinstance(e, CliError) else " (--debug shows the traceback)"
      print(f"error: {_one_line(e) or type(e).__name__}{hint}",
            file=sys.stderr)
    return EXIT_USAGE
  return code if isinstance(code, int) and not isinstance(code, bool) else 0


# ---------------------------------------------------------------------------
# Paths.


def require_dir(path: str | os.PathLike, option: str) -> pathlib.Path:
  """Returns ``path`` if it is a directory, else raises a one-line CliError."""
  p = pathlib.Path(path)
  if not p.is_dir():
    state = "is not a directory" if p.exists() else "does not exist"
    raise CliError(f"{option}: {p} {state}; pass the data directory with "
                   f"{option} PATH")
  return p


def require_file(path: str | os.PathLike, option: str) -> pathlib.Path:
  """Returns ``path`` if it is a file, else raises a one-line CliError."""
  p = pathlib.Path(path)
  if not p.is_file():
    state = "is not a file" if p.exists() else "does not exist"
    raise CliError(f"{option}: {p} {state}")
  return p


def check_output_dir(out: str | os.PathLike, option: str = "--out"
                     ) -> pathlib.Path:
  """Checks, before any work, that the output folder ``out`` can be written.

  The experiments write their outputs into a temporary sibling of ``out`` and
  swap it in (``_io.OutputSet``), so the parent must be writable too. Creates
  the parent folders (not ``out`` itself) and probes them with a temporary
  folder that is removed again.

  Args:
    out: the output folder.
    option: the option that named it, for the error message.

  Returns:
    ``out`` as an absolute path with symlinks resolved.

  Raises:
    CliError: ``out`` is a file, the current folder or one of its parents, or
      it (or its parent) cannot be created or written.
  """
  given = pathlib.Path(out)
  p = pathlib.Path(os.path.realpath(given))
  if p.exists() and not p.is_dir():
    raise CliError(f"{option}: {given} exists and is not a directory")
  cwd = pathlib.Path(os.path.realpath(os.getcwd()))
  if p == p.parent or p == cwd or p in cwd.parents:
    raise CliError(f"{option}: {given} is the current directory or one of its "
                   "parents; choose a folder of its own for the outputs")
  for d, what in ((p.parent, "create or write to"),) + (
      ((p, "write to"),) if p.exists() else ()):
    try:
      d.mkdir(parents=True, exist_ok=True)
      tempfile.TemporaryDirectory(dir=d, prefix=".l2d-write-probe-").cleanup()
    except OSError as e:
      raise CliError(f"{option}: cannot {what} {d} "
                     f"({e.strerror or type(e).__name__})") from None
  if p.exists() and not os.access(p, os.W_OK | os.X_OK):
    raise CliError(f"{option}: cannot write to {given} (permission denied)")
  return p


def options_without_help(parser: argparse.ArgumentParser) -> list[str]:
  """The options of ``parser`` that have no help text (for tests)."""
  return [a.option_strings[0] for a in parser._actions  # pylint: disable=protected-access
          if a.option_strings and not a.help]


# ---------------------------------------------------------------------------
# Options every experiment shares (one help text, one check each).

OUT_HELP = ("output folder (its owned files are replaced as one set at the "
            "end of the run).")


def add_data_dir_argument(parser: argparse.ArgumentParser, *, default: str,
                          help: str = "folder of the shared data."
                          ) -> None:
  """Adds ``--data-dir`` (checked by :func:`check_data_dir`)."""
  parser.add_argument("--data-dir", default=default, help=help)


def add_seeds_arguments(parser: argparse.ArgumentParser, *, default: int,
                        first_seed: int = 0,
                        help: str = "number of seeds."
                        ) -> None:
  """Adds ``--seeds N`` (>= 1) and ``--first-seed S`` (in [0, 2**32)).

  The run's seeds are ``S, S + 1, ..., S + N - 1`` (:func:`seed_range`).
  """
  parser.add_argument("--seeds", type=positive_int, default=default,
                      help=help)
  parser.add_argument("--first-seed", type=seed, default=first_seed,
                      help="the seeds are first-seed, first-seed + 1, ...")


def seed_range(args: argparse.Namespace) -> range:
  """The seeds of ``--seeds`` and ``--first-seed``: ``range(S, S + N)``.

  Raises:
    CliError: the last seed would not be below 2**32.
  """
  if args.first_seed + args.seeds > MAX_SEED:
    raise CliError(f"--first-seed + --seeds must be <= 2**32, got "
                   f"{args.first_seed + args.seeds}")
  return range(args.first_seed, args.first_seed + args.seeds)


def add_config_argument(parser: argparse.ArgumentParser, *,
                        choices: Sequence[str], default: str,
                        help: str
                        ) -> None:
  """Adds ``--config`` (the named training budget)."""
  parser.add_argument("--config", choices=choices, default=default,
                      help=help)


def add_cache_dir_argument(parser: argparse.ArgumentParser, *,
                           default: str | None,
                           help: str
                           ) -> None:
  """Adds ``--cache-dir`` (decoded images, embeddings: reused by reruns)."""
  parser.add_argument("--cache-dir", default=default, help=help)


def add_out_argument(parser: argparse.ArgumentParser, *,
                     default: str | None,
                     help: str = OUT_HELP
                     ) -> None:
  """Adds ``--out`` (checked by :func:`check_output_dir`)."""
  parser.add_argument("--out", default=default, help=help)


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
  """Adds ``--no-progress`` (hides the progress bars)."""
  parser.add_argument("--no-progress", action="store_true",
                      help="hide the progress bars.")


def check_data_dir(path: str | os.PathLike,
                   check_files: Callable[[pathlib.Path], Any] | None = None,
                   option: str = "--data-dir") -> pathlib.Path:
  """Checks the data folder (and its files) before any work.

  Args:
    path: the folder.
    check_files: called with the folder; a ``FileNotFoundError`` it raises
      (naming the missing file) becomes the one-line error.
    option: the option that named the folder.

  Returns:
    ``path`` as a ``pathlib.Path``.

  Raises:
    CliError: ``"--data-dir: <path> does not exist; pass the data directory
      with --data-dir PATH"``, or ``"--data-dir: <what is missing>"``.
  """
  data_dir = require_dir(path, option)
  if check_files is not None:
    try:
      check_files(data_dir)
    except FileNotFoundError as e:
      raise CliError(f"{option}: {e}") from None
  return data_dir


def command_line(prog: str, argv: Sequence[str]) -> str:
  """The full command, ``prog`` and the quoted ``argv``, for ``details.json``."""
  return " ".join([prog, shlex.join(argv)]).strip()


def run_details(args: argparse.Namespace, *, command: str,
                seconds: float) -> dict[str, Any]:
  """The first entries of a run's ``details.json``.

  Returns:
    ``{"command": the full command, "args": every parsed option,
    "seconds": the run's wall time}``.
  """
  return {"command": command, "args": dict(vars(args)), "seconds": seconds}


def experiment_main(build_parser: Callable[[], argparse.ArgumentParser],
                    execute: Callable[[argparse.Namespace, list[str]], Any],
                    argv: Sequence[str] | None = None, *, module: str,
                    private_options: Sequence[str] = ("out",)) -> int:
  """An experiment's ``main``: ``execute(args, argv)`` on one or N processes.

  Args:
    build_parser: makes the experiment's parser.
    execute: runs the experiment from the parsed ``args`` and the arguments
      as given (for the recorded command).
    argv: arguments without the program name (``None``: ``sys.argv``).
    module: the experiment's module, e.g. ``'experiments.topk_l2d'``.
    private_options: as for :func:`run_distributed_main`.

  Returns:
    The exit code (0, or 2 on an expected error).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  return run_distributed_main(build_parser(), lambda a: execute(a, argv), argv,
                              module=module, private_options=private_options)


def package_entry_points(package: str) -> tuple[Callable[[str], Any],
                                                 Callable[..., int]]:
  """``(__getattr__, main)`` for an experiment package's ``__init__``.

  ``__getattr__`` reaches the names of ``<package>.run`` lazily (importing
  ``run`` only when one is asked for, so that ``--help`` stays fast and no
  re-export can go stale); ``main(argv)`` runs the package's command line.
  ``__main__`` is imported inside ``main``: importing it with the package
  would make ``python -m <package>`` load it twice.
  """

  def getattr_(name: str) -> Any:
    if name.startswith("__") or name == "run":
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    run = importlib.import_module(f"{package}.run")
    try:
      return getattr(run, name)
    except AttributeError:
      raise AttributeError(
          f"module {package!r} has no attribute {name!r}") from None

  def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line with ``argv``; returns the exit code."""
    return importlib.import_module(f"{package}.__main__").main(argv)

  return getattr_, main



# ---------------------------------------------------------------------------
# Several processes: --num-processes N (local workers) and --cluster.

NUM_PROCESSES_OPTION = "--num-processes"
WORKER_TIMEOUT_ENV = "L2D_WORKER_TIMEOUT"


def add_num_processes_argument(parser: argparse.ArgumentParser) -> None:
  """Adds ``--num-processes N`` and ``--cluster`` to an experiment's parser.

  ``--num-processes N`` (default 1) runs the experiment as N local processes
  of one JAX job on loopback (``l2d_jax.distributed.spawn``); ``--cluster``
  joins a job that a cluster started (SLURM, Open MPI, a TPU pod):
  ``jax.distributed.initialize()`` with no arguments. Added once (a second
  call does nothing).
  """
  if any(NUM_PROCESSES_OPTION in a.option_strings
         for a in parser._actions):  # pylint: disable=protected-access
    return
  parser.add_argument(
      NUM_PROCESSES_OPTION, type=positive_int, default=1,
      help="run as N local processes of one JAX job on this machine "
      "(jax.distributed on 127.0.0.1, a free port, gloo collectives on CPU); "
      "process 0 prints and writes the outputs. 1: this process alone.")
  parser.add_argument(
      "--cluster", action="store_true",
      help="join a multi-host job started by SLURM, Open MPI or a TPU pod "
      "(jax.distributed.initialize() with no arguments: the cluster "
      "describes the job); run the same command on every host.")


def _worker_args_config(args: argparse.Namespace,
                        private: Sequence[str]) -> dict[str, Any]:
  skip = set(private) | {"debug", "num_processes", "cluster"}
  return {k: v for k, v in sorted(vars(args).items()) if k not in skip}


def run_distributed_main(parser: argparse.ArgumentParser,
                         run_fn: Callable[[argparse.Namespace], Any],
                         argv: Sequence[str] | None = None, *, module: str,
                         private_options: Sequence[str] = ("out",)) -> int:
  """``run_main`` with ``--num-processes N`` and ``--cluster``.

  With ``--num-processes N > 1`` this process only launches N workers
  (``python -m <module> <same arguments>``, on loopback, watched together)
  and returns 0 when all succeed, or 2 with one line naming the failed
  worker. Each worker (and each ``--cluster`` process) joins the job
  (``l2d_jax.distributed.initialize``), checks that every process parsed the
  same arguments (a hash exchanged between them), and runs ``run_fn``; on
  every process but 0, stdout is silenced and each option of
  ``private_options`` (a folder) points to a fresh temporary folder that is
  removed afterwards, so that process 0 alone prints and writes the outputs
  while all take part in the computation. A worker that fails (exit code
  not 0) leaves the job at once (``os._exit``, after printing its error)
  instead of waiting at JAX's shutdown barrier for the others, which may be
  waiting for it. With N = 1 it is ``run_main``.

  Args:
    parser: the experiment's parser; the two options are added to it.
    run_fn: as for ``run_main``.
    argv: arguments without the program name (``None``: ``sys.argv``).
    module: the experiment's module, e.g. ``'experiments.conformal_deferral'``.
    private_options: ``args`` attributes naming output folders.

  Returns:
    The exit code.
  """
  add_num_processes_argument(parser)
  argv = list(sys.argv[1:] if argv is None else argv)

  def run_or_launch(args: argparse.Namespace) -> Any:
    from l2d_jax import distributed  # pylint: disable=import-outside-toplevel
    from l2d_jax.distributed import _runtime  # pylint: disable=import-outside-toplevel
    is_worker = bool(os.environ.get(_runtime.ENV_NUM_PROCESSES))
    if args.num_processes > 1 and not is_worker:
      if args.cluster:
        raise CliError("--cluster and --num-processes > 1 exclude each "
                       "other: a cluster starts its own processes")
      timeout = os.environ.get(WORKER_TIMEOUT_ENV)
      try:
        distributed.spawn([sys.executable, "-m", module, *argv],
                          args.num_processes,
                          timeout_s=float(timeout) if timeout else None)
      except distributed.WorkerError as e:
        raise CliError(_one_line(str(e).splitlines()[0])) from e
      return 0
    if not (is_worker or args.cluster):
      return run_fn(args)
    distributed.initialize()
    import jax  # pylint: disable=import-outside-toplevel
    distributed.check_same_config(_worker_args_config(args, private_options),
                                  what="command-line arguments")
    if jax.process_index() == 0:
      return run_fn(args)
    with tempfile.TemporaryDirectory(prefix="l2d-worker-") as scratch:
      for name in private_options:
        if getattr(args, name, None) is not None:
          setattr(args, name, os.path.join(scratch, name))
      with open(os.devnull, "w", encoding="utf-8") as null:
        saved, sys.stdout = sys.stdout, null
        try:
          return run_fn(args)
        finally:
          sys.stdout = saved

  try:
    code = run_main(parser, run_or_launch, argv)
  except Exception:  # pylint: disable=broad-exception-caught
    if not _in_job():
      raise
    traceback.print_exc()
    code = 1
  if code and _in_job():
    _leave_job(code)
  return code


def _in_job() -> bool:
  """Whether this process is one of several of a running JAX job."""
  if "jax" not in sys.modules:
    return False
  import jax  # pylint: disable=import-outside-toplevel
  return jax.distributed.is_initialized() and jax.process_count() > 1


def _leave_job(code: int) -> None:
  """Ends a failed worker at once, without JAX's shutdown barrier.

  At exit, ``jax.distributed`` waits (minutes) for every process at a
  shutdown barrier; the others may be waiting in a collective for this one,
  so a failed worker would hang until the barrier times out. Leaving at
  once lets ``spawn`` (or the cluster's heartbeat) stop the others now.
  """
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os._exit(code)  # pylint: disable=protected-access
