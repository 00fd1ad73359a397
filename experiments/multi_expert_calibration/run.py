"""The calibration sweep: settings x surrogates x seeds, resumable.

For every (parameterisation, setting, seed) a model with ``K + J`` outputs is
trained on the softmax or the one-vs-all (OvA) surrogate, then evaluated on
the test split (correctness estimates, their per-expert ECE, system
accuracy); see the package docstring. The pieces live in
:mod:`~experiments.multi_expert_calibration.data` (data, simulated experts)
and :mod:`~experiments.multi_expert_calibration.train` (models, training,
test metrics), re-exported here; this module runs (and resumes) a sweep.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import shutil
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from experiments import _io
from experiments.multi_expert_calibration import config as configs
from experiments.multi_expert_calibration import report
# Re-exported: the pieces of a run, as the tests and benchmarks use them.
from experiments.multi_expert_calibration.data import EXPERIMENTS  # noqa: F401
from experiments.multi_expert_calibration.data import EXPERT_GROUPS  # noqa: F401
from experiments.multi_expert_calibration.data import NUM_CLASSES  # noqa: F401
from experiments.multi_expert_calibration.data import DEPENDENCE_EXPERTS
from experiments.multi_expert_calibration.data import Split  # noqa: F401
from experiments.multi_expert_calibration.data import Dataset
from experiments.multi_expert_calibration.data import load_mog
from experiments.multi_expert_calibration.data import load_cifar10
from experiments.multi_expert_calibration.data import expert_knowledge
from experiments.multi_expert_calibration.data import simulate_experts  # noqa: F401
from experiments.multi_expert_calibration.data import expert_predictions  # noqa: F401
from experiments.multi_expert_calibration.train import SURROGATES  # noqa: F401
from experiments.multi_expert_calibration.train import ORDER_STREAM  # noqa: F401
from experiments.multi_expert_calibration.train import build_model  # noqa: F401
from experiments.multi_expert_calibration.train import build_optimizer  # noqa: F401
from experiments.multi_expert_calibration.train import make_fns  # noqa: F401
from experiments.multi_expert_calibration.train import make_batches  # noqa: F401
from experiments.multi_expert_calibration.train import evaluate_logits  # noqa: F401
from experiments.multi_expert_calibration.train import order_key  # noqa: F401
from experiments.multi_expert_calibration.train import train_and_evaluate
from experiments.multi_expert_calibration.train import train_together
from experiments.multi_expert_calibration.train import _eval_chunk  # noqa: F401
from l2d_jax import distributed

PARAMETERISATIONS = report.PARAMETERISATIONS
RESULT_KEYS = report.RESULT_KEYS


# ---------------------------------------------------------------------------
# Sweep and resumption.


def default_settings(dataset: str, experiment: str) -> list[float]:
  """The config's x-axis values of ``(dataset, experiment)``."""
  return list(configs.SETTINGS[(dataset, experiment)])


def check_settings(values: Sequence[float], experiment: str) -> list[float]:
  """Validates ``--settings`` for ``experiment`` (numbers of experts or p)."""
  if experiment == "expert-dependence":
    if any(not 0.0 <= v <= 1.0 for v in values):
      raise ValueError(f"--settings for expert-dependence are probabilities "
                       f"in [0, 1], got {list(values)}.")
    return [float(v) for v in values]
  if any(v < 1 or v != int(v) for v in values):
    raise ValueError(f"--settings for {experiment} are numbers of experts "
                     f"(integers >= 1), got {list(values)}.")
  return [int(v) for v in values]


OVERRIDES = ("epochs", "patience", "batch_size", "lr", "monitor")


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any],
                    sets: Sequence[str] = ()) -> dict[str, Any]:
  """Applies ``--set KEY=VALUE`` then the named options that are not None.

  Args:
    cfg: a config dict (modified and returned).
    overrides: ``{key: value or None}`` for :data:`OVERRIDES`.
    sets: ``KEY=VALUE`` strings; VALUE is JSON (else a string).

  Returns:
    ``cfg``.

  Raises:
    ValueError: a malformed or unknown ``--set``, or invalid values.
  """
  for item in sets:
    if "=" not in item:
      raise ValueError(f"--set expects KEY=VALUE, got {item!r}.")
    k, v = item.split("=", 1)
    if k not in cfg:
      raise ValueError(f"--set: unknown config key {k!r}; keys: "
                       f"{sorted(cfg)}.")
    try:
      cfg[k] = json.loads(v)
    except json.JSONDecodeError:
      cfg[k] = v
  for name, value in overrides.items():
    if value is not None:
      cfg[name] = value
  if cfg.get("patience") is not None and cfg["patience"] <= 0:
    cfg["patience"] = None  # --patience 0 disables early stopping
  if not isinstance(cfg["epochs"], int) or cfg["epochs"] < 1:
    raise ValueError(f"--epochs must be an integer >= 1, got {cfg['epochs']}.")
  if not isinstance(cfg["batch_size"], int) or cfg["batch_size"] < 1:
    raise ValueError(f"--batch-size must be an integer >= 1, got "
                     f"{cfg['batch_size']}.")
  if cfg["monitor"] not in ("loss", "system_accuracy"):
    raise ValueError(f"--monitor must be loss or system_accuracy, got "
                     f"{cfg['monitor']!r}.")
  return cfg


def run_name(parameterisation: str, setting: float, seed: int) -> str:
  """Name of one run's checkpoint folder."""
  return f"{parameterisation}_{setting:g}_seed{seed}"


def _key(entry: dict[str, Any]) -> tuple[str, float, int]:
  return (entry["parameterisation"], float(entry["setting"]),
          int(entry["seed"]))


def load_progress(out: pathlib.Path, identity: dict[str, Any],
                  restart: bool) -> list[dict[str, Any]]:
  """Finished runs recorded by an earlier (killed) sweep into ``out``."""
  path = out / "progress.json"
  if restart:
    if path.exists():
      path.unlink()
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return []
  if not path.exists():
    return []
  state = json.loads(path.read_text())
  # Compared as written (floats rounded by _io), also for older files.
  same = lambda d: json.loads(_io.to_json(d))
  if same(state.get("identity")) != same(identity):
    flat = lambda d: {**{k: v for k, v in d.items() if k != "config"},
                      **{f"config.{k}": v
                         for k, v in d.get("config", {}).items()}}
    old, new = flat(same(state.get("identity", {}))), flat(same(identity))
    diff = sorted(k for k in set(old) | set(new)
                  if json.dumps(old.get(k)) != json.dumps(new.get(k)))
    raise ValueError(
        f"{out} holds runs of a different configuration (differs in: "
        f"{', '.join(diff)}); use another --out or pass --restart.")
  return list(state["runs"])


@dataclasses.dataclass
class Options:
  """What to run (the parsed command line, minus presentation options)."""

  dataset: str = "mog"
  experiment: str = "increasing-experts"
  parameterisations: tuple[str, ...] = PARAMETERISATIONS
  seeds: tuple[int, ...] = (0, 1, 2)
  settings: tuple[float, ...] | None = None
  config_name: str = "cpu"
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  sets: tuple[str, ...] = ()
  num_bins: int = 15
  data_dir: str = "../shared/data"
  cache_dir: str | None = "results/.cache"
  out: pathlib.Path = pathlib.Path("results/multi_expert_calibration/run")
  restart: bool = False
  keep_checkpoints: bool = False
  sequential: bool = False
  workers: int | None = None
  progress: bool = True
  epoch_progress: bool = False
  command: str = ""


def resolve(options: Options) -> tuple[dict[str, Any], list[float],
                                       dict[str, Any]]:
  """The config, the settings and the run identity of ``options``."""
  cfg = apply_overrides(configs.get_config(options.dataset,
                                           options.config_name),
                        dict(options.overrides), options.sets)
  settings = (default_settings(options.dataset, options.experiment)
              if options.settings is None else
              check_settings(options.settings, options.experiment))
  identity = {"dataset": options.dataset, "experiment": options.experiment,
              "config_name": options.config_name, "config": cfg,
              "num_bins": options.num_bins}
  return cfg, settings, identity


def available_cores() -> int:
  """CPU cores this process may run on (its affinity mask)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


# Compilations shorter than this are not written to the persistent cache.
_CACHE_MIN_COMPILE_S = 0.2


def use_compilation_cache(cache_dir: str | None) -> pathlib.Path | None:
  """Turns on JAX's persistent compilation cache in ``<cache_dir>/jax``.

  Every (setting, surrogate) of a sweep compiles its own training program
  (the output layer has ``K + J`` units); on CPU this is a large share of a
  MoG sweep. With the cache, a rerun (another ``--out``, a resumed sweep,
  other seeds) loads the compiled programs instead. Programs are keyed by
  their HLO, compile options and jaxlib version, so results do not change.
  Does nothing when ``cache_dir`` is None or JAX already uses a cache
  folder (e.g. ``JAX_COMPILATION_CACHE_DIR``).

  Args:
    cache_dir: the experiment's cache folder (``--cache-dir``).

  Returns:
    The compilation cache folder in use, or None.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return pathlib.Path(current)
  if cache_dir is None:
    return None
  path = pathlib.Path(cache_dir) / "jax"
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    _CACHE_MIN_COMPILE_S)
  return path


def _group_cost(options: Options, setting: float, parameterisation: str
                ) -> tuple[bool, int]:
  """Sort key of a group's expected training time (larger: longer).

  An epoch of the one-vs-all surrogate costs more than a softmax epoch of
  any number of experts (MoG, 5 seeds, one core: OvA 38-56 ms, softmax
  31-37 ms for 1-8 experts), and more experts cost more; every group runs
  up to the same number of epochs.
  """
  num_experts = (DEPENDENCE_EXPERTS if options.experiment
                 == "expert-dependence" else int(setting))
  return parameterisation == "ova", num_experts


def run(options: Options) -> dict[str, Any]:
  """Runs (or resumes) the sweep of ``options``; returns ``results.json``.

  Runs of one setting and surrogate that are not yet recorded train
  together (MLP configs, unless ``sequential``), ``workers`` groups at a
  time on as many threads (default :func:`available_cores`; each group's
  numbers do not depend on it), or one run after another;
  ``progress.json`` and ``results.json`` are rewritten after each group,
  the full output set at the end. Compiled programs are kept in ``<cache_dir>/jax``
  (:func:`use_compilation_cache`).

  In a multi-process job (``l2d_jax.distributed``; every process sees the
  same ``out``) process 0 alone reads, clears and writes ``out``. Groups
  trained together are shared out (process ``p`` of ``N`` trains groups
  ``p, p + N, ...`` in the order above, on its own threads) and their runs
  gathered at the end; until then ``progress.json`` holds process 0's
  groups only. Runs trained one at a time use ``training.Trainer``, which
  spans every process: all processes train each run together (data
  parallel over the processes, one shared checkpoint folder).
  """
  cfg, settings, identity = resolve(options)
  use_compilation_cache(options.cache_dir)
  out = pathlib.Path(options.out)
  main = distributed.is_main_process()
  if main:  # the others get process 0's list (or its error)
    try:
      loaded = (load_progress(out, identity, options.restart), None)
    except ValueError as e:
      loaded = (None, str(e))
  runs, error = distributed.allgather_objects(loaded if main else None)[0]
  if error is not None:
    raise ValueError(error)
  done = {_key(r) for r in runs}
  todo = [(s, [(p, seed) for seed in options.seeds
               for p in options.parameterisations
               if (p, float(s), seed) not in done]) for s in settings]
  todo = [(s, group) for s, group in todo if group]
  together = cfg["model"] == "mlp" and not options.sequential
  count = sum(len(g) for _, g in todo)
  print(f"{options.dataset}/{options.experiment}: {count} runs to do, "
        f"{len(runs)} already recorded in {out}"
        + (" (the runs of each setting train together)"
           if together and count else ""))
  t0 = time.perf_counter()
  cache: dict[int, Dataset] = {}

  def dataset(seed: int) -> Dataset:
    if seed not in cache:
      if options.dataset != "mog":
        cache.clear()  # one CIFAR-10 split in memory at a time
      cache[seed] = (load_mog(cfg, seed) if options.dataset == "mog" else
                     load_cifar10(cfg, seed, options.data_dir,
                                  options.cache_dir))
    return cache[seed]

  def record(p, s, seed, res, diag):
    runs.append({"parameterisation": p, "setting": s, "seed": seed, **res,
                 "details": diag})
    tqdm.write(f"{run_name(p, s, seed)}: ECE mean {res['ece_mean']:.4f} "
               f"(per expert {np.round(res['ece_per_expert'], 3).tolist()}),"
               f" system accuracy {res['system_accuracy']:.4f}, "
               f"{diag['epochs']} epochs (best {diag['best_epoch']}), "
               f"{diag['train_seconds']:.1f} s")

  def save_progress():
    if main:
      report.write_progress(out, options.dataset, options.experiment,
                            identity, runs)

  if together:
    groups = []
    for s, group in todo:
      for p in options.parameterisations:
        seeds = [seed for q, seed in group if q == p]
        if seeds:
          groups.append((s, p, seeds))
    # Longest first (see _group_cost), so that the last group to finish
    # is a short one and no core idles long at the end of the sweep.
    groups.sort(key=lambda g: _group_cost(options, g[0], g[1]), reverse=True)
    # Several processes: each trains its share of the groups.
    groups = [(s, p, {seed: dataset(seed) for seed in seeds})
              for s, p, seeds in distributed.shard_items(groups)]
    count = sum(len(d) for _, _, d in groups)
  bar = tqdm(total=count, desc="runs", disable=not (options.progress and main))
  if together:
    workers = max(1, min(len(groups), options.workers or available_cores()))
    mine = []

    def train_group(s, p, datasets):
      knowledge = expert_knowledge(
          options.dataset, options.experiment, s,
          next(iter(datasets.values())).num_groups)
      return train_together(datasets, parameterisation=p, knowledge=knowledge,
                            cfg=cfg, num_bins=options.num_bins)

    # Each group is one deterministic program: running groups on several
    # cores at once changes when they finish, not their numbers.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      futures = {pool.submit(train_group, *g): g for g in groups}
      for finished, future in enumerate(
          concurrent.futures.as_completed(futures), 1):
        s, p, datasets = futures[future]
        trained = future.result()
        for seed in sorted(datasets):
          record(p, s, seed, *trained[seed])
          mine.append(runs[-1])
        bar.set_postfix(setting=f"{s:g}", surrogate=p, seeds=len(datasets))
        bar.update(len(datasets))
        runs.sort(key=_key)
        save_progress()
        if main and finished == len(groups) - workers + 1 < len(groups):
          report.prepare_plotting()  # a core has no group left from here on
    if jax.process_count() > 1:  # every process's runs, on every process
      theirs = distributed.allgather_objects(mine)
      runs.extend(r for q, rs in enumerate(theirs)
                  if q != jax.process_index() for r in rs)
      runs.sort(key=_key)
      save_progress()
    todo = []
  for s, group in todo:  # one run at a time (CNN configs, --sequential)
    for p, seed in group:
      bar.set_postfix(run=run_name(p, s, seed))
      ds = dataset(seed)
      knowledge = expert_knowledge(options.dataset, options.experiment, s,
                                   ds.num_groups)
      ckpt = out / "checkpoints" / run_name(p, s, seed)
      res, diag = train_and_evaluate(
          ds, parameterisation=p, knowledge=knowledge, seed=seed, cfg=cfg,
          num_bins=options.num_bins, checkpoint_dir=ckpt,
          progress=options.epoch_progress)
      record(p, s, seed, res, diag)
      runs.sort(key=_key)
      save_progress()
      if not options.keep_checkpoints:
        distributed.barrier(f"run {run_name(p, s, seed)} finished")
        if main:
          shutil.rmtree(ckpt, ignore_errors=True)
      bar.update(1)
  bar.close()
  if not main:
    return {"dataset": options.dataset, "experiment": options.experiment,
            "results": [{k: r[k] for k in RESULT_KEYS} for r in runs]}
  results = report.write_outputs(
      out, dataset=options.dataset, experiment=options.experiment,
      identity=identity, runs=runs, command=options.command)
  ckpt_root = out / "checkpoints"
  if ckpt_root.is_dir() and not any(ckpt_root.iterdir()):
    ckpt_root.rmdir()
  print(report.table(results, options.dataset, options.experiment,
                     options.num_bins))
  print(f"wrote {out}/results.json, details.json, table.md, ece.png, "
        f"system_accuracy.png, reliability.png "
        f"({time.perf_counter() - t0:.1f} s)")
  return {"dataset": options.dataset, "experiment": options.experiment,
          "results": results}
