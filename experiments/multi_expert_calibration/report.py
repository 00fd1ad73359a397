"""Tables, plots and the output files of the calibration experiment."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from experiments import _io

PARAMETERISATIONS = ("softmax", "ova")
RESULT_KEYS = ("parameterisation", "setting", "seed", "ece_mean",
               "ece_per_expert", "system_accuracy")
COLOURS = {"softmax": "tab:blue", "ova": "tab:orange"}
LABELS = {"softmax": "Softmax", "ova": "OvA"}
DATASET_TITLES = {"mog": "simulated mixture of Gaussians",
                  "cifar10": "CIFAR-10"}
MODEL_TITLES = {"mlp": "MLP", "small_cnn": "SmallCNN", "wrn": "WRN"}
# Files of one complete output set (progress.json and checkpoints/ are not).
OUTPUTS = ("results.json", "details.json", "table.md", "ece.png",
           "system_accuracy.png", "reliability.png")


def summarise(results: list[dict[str, Any]]
              ) -> dict[str, dict[float, dict[str, float]]]:
  """Mean and std (ddof 1) over seeds of the ECE and system accuracy.

  Args:
    results: ``results.json`` rows.

  Returns:
    ``{parameterisation: {setting: {"n", "ece_mean", "ece_std",
    "random_ece_mean", "random_ece_std", "acc_mean", "acc_std"}}}``
    (``random_ece``: expert 0's ECE).
  """
  summary: dict[str, dict[float, dict[str, float]]] = {}
  for p in PARAMETERISATIONS:
    rows = [r for r in results if r["parameterisation"] == p]
    for s in sorted({r["setting"] for r in rows}):
      sel = [r for r in rows if r["setting"] == s]
      ece = np.array([r["ece_mean"] for r in sel])
      rand = np.array([r["ece_per_expert"][0] for r in sel])
      acc = np.array([r["system_accuracy"] for r in sel])
      sd = lambda a: float(a.std(ddof=1)) if a.size > 1 else 0.0
      summary.setdefault(p, {})[s] = {
          "n": len(sel), "ece_mean": float(ece.mean()), "ece_std": sd(ece),
          "random_ece_mean": float(rand.mean()), "random_ece_std": sd(rand),
          "acc_mean": float(acc.mean()), "acc_std": sd(acc)}
  return summary


def title(dataset: str, experiment: str, model: str) -> str:
  """Figure title naming the data, the model and that experts are simulated."""
  return (f"{DATASET_TITLES.get(dataset, dataset)}, "
          f"{MODEL_TITLES.get(model, model)}, simulated experts: {experiment}")


def table(results: list[dict[str, Any]], dataset: str, experiment: str,
          num_bins: int = 15) -> str:
  """Markdown table: ECE and system accuracy, mean ± std over seeds."""
  summary = summarise(results)
  dep = experiment == "expert-dependence"
  head = "p (others)" if dep else "experts"
  cols = ["ECE random expert", "ECE mean"] if dep else ["ECE mean"]
  lines = [f"**{dataset} / {experiment}** (mean ± std over seeds; ECE "
           f"{num_bins} equal-width bins)", "",
           f"| {head} | " + " | ".join(
               f"{c} {LABELS[p]}" for c in cols for p in PARAMETERISATIONS)
           + " | " + " | ".join(f"sys. acc. {LABELS[p]} [%]"
                                for p in PARAMETERISATIONS) + " | seeds |",
           "|" + "---|" * (2 + 2 * len(cols) + 2)]
  for s in sorted({r["setting"] for r in results}):
    cells = []
    for k in (["random_ece", "ece"] if dep else ["ece"]):
      for p in PARAMETERISATIONS:
        v = summary.get(p, {}).get(s)
        cells.append(f"{v[k + '_mean']:.3f} ± {v[k + '_std']:.3f}" if v
                     else "-")
    for p in PARAMETERISATIONS:
      v = summary.get(p, {}).get(s)
      cells.append(f"{100 * v['acc_mean']:.1f} ± {100 * v['acc_std']:.1f}"
                   if v else "-")
    n = max(summary.get(p, {}).get(s, {"n": 0})["n"]
            for p in PARAMETERISATIONS)
    lines.append(f"| {s:g} | " + " | ".join(cells) + f" | {n} |")
  return "\n".join(lines) + "\n"


def prepare_plotting() -> None:
  """Imports matplotlib (Agg) ahead of :func:`plot` (about 0.4 s of CPU).

  The sweep calls it on a core that has no group left to train, so the
  import does not wait until the last group has finished.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import


def plot(results: list[dict[str, Any]], details: list[dict[str, Any]], *,
         dataset: str, experiment: str, model: str,
         out: _io.OutputSet) -> list[str]:
  """Figure 1/2 layout (ECE, system accuracy) and reliability diagrams."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  summary = summarise(results)
  dep = experiment == "expert-dependence"
  xlabel = {"increasing-experts": "number of experts",
            "expert-dependence": "P(other experts correct) on their groups",
            "specialised": "number of specialised experts"}[experiment]
  ece_key = "random_ece" if dep else "ece"
  ece_label = ("ECE of the random expert (expert 1)" if dep
               else "ECE (mean over experts)")
  head = title(dataset, experiment, model)
  written = []
  for name, key, ylabel in (("ece.png", ece_key, ece_label),
                            ("system_accuracy.png", "acc",
                             "system accuracy [%]")):
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for p, rows in summary.items():
      x = np.array(sorted(rows))
      scale = 100.0 if key == "acc" else 1.0
      m = scale * np.array([rows[s][key + "_mean"] for s in x])
      sd = scale * np.array([rows[s][key + "_std"] for s in x])
      ax.plot(x, m, marker="o", color=COLOURS[p], label=f"{LABELS[p]} mean")
      ax.fill_between(x, m - sd, m + sd, color=COLOURS[p], alpha=0.25,
                      label=f"{LABELS[p]} ± 1 std over seeds")
      # Individual seeds: a mean over seeds can hide failed runs.
      runs = [r for r in results if r["parameterisation"] == p]
      y = [(r["ece_per_expert"][0] if key == "random_ece" else
            r["ece_mean"] if key == "ece" else 100 * r["system_accuracy"])
           for r in runs]
      ax.scatter([r["setting"] for r in runs], y, s=9, color=COLOURS[p],
                 alpha=0.5, linewidths=0, label=f"{LABELS[p]} seeds")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(head, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    out.save_figure(fig, name)
    plt.close(fig)
    written.append(name)
  # Reliability diagrams of expert 1 (id 0) at the largest setting, first seed.
  last = max(d["setting"] for d in details)
  fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8), sharey=True)
  for ax, p in zip(axes, PARAMETERISATIONS):
    sel = sorted((d for d in details if d["parameterisation"] == p
                  and d["setting"] == last), key=lambda d: d["seed"])
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set_xlabel("estimated P(m=y|x)")
    ax.set_ylabel("observed correctness")
    ax.yaxis.set_tick_params(labelleft=True)
    if not sel:
      ax.set_title(f"{LABELS[p]}: not run", fontsize=8)
      continue
    ax.set_title(f"{LABELS[p]}, setting {last:g}, expert 1, seed "
                 f"{sel[0]['seed']}", fontsize=8)
    r = sel[0]["reliability"][0]
    counts = np.asarray(r["counts"])
    nb = counts.size
    centres = (np.arange(nb) + 0.5) / nb
    ok = counts > 0
    ax.bar(centres[ok], np.asarray(r["accuracy"])[ok], width=1 / nb,
           edgecolor="k", color=COLOURS[p], alpha=0.7,
           label="observed (bin accuracy)")
    ax.plot(np.asarray(r["confidence"])[ok], np.asarray(r["accuracy"])[ok],
            "k.", label="bin mean estimate")
    ax.legend(fontsize=7, loc="best", framealpha=0.9)
  fig.suptitle(head, fontsize=9)
  out.save_figure(fig, "reliability.png")
  plt.close(fig)
  written.append("reliability.png")
  return written


def write_progress(out: pathlib.Path, dataset: str, experiment: str,
                   identity: dict[str, Any], runs: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
  """Rewrites ``progress.json`` and ``results.json`` (atomically each)."""
  results = [{k: r[k] for k in RESULT_KEYS} for r in runs]
  _io.write_json(out / "progress.json", {"identity": identity, "runs": runs})
  _io.write_json(out / "results.json", {"dataset": dataset,
                                        "experiment": experiment,
                                        "results": results})
  return results


def write_outputs(out: pathlib.Path, *, dataset: str, experiment: str,
                  identity: dict[str, Any], runs: list[dict[str, Any]],
                  command: str) -> list[dict[str, Any]]:
  """Writes the final output set (results, details, table, plots) as one.

  Args:
    out: the output folder (``progress.json`` and ``checkpoints/`` in it are
      kept).
    dataset, experiment: names for the files and titles.
    identity: dataset, experiment, config name, config and ECE bins.
    runs: every finished run (``progress.json`` rows).
    command: the full command line, recorded in ``details.json``.

  Returns:
    The ``results.json`` rows.
  """
  results = [{k: r[k] for k in RESULT_KEYS} for r in runs]
  details = [{**{k: r[k] for k in ("parameterisation", "setting", "seed")},
              **r["details"]} for r in runs]
  with _io.OutputSet(out, owns=OUTPUTS) as o:
    o.write_json("results.json", {"dataset": dataset,
                                  "experiment": experiment,
                                  "results": results})
    o.write_json("details.json", {**identity, "command": command,
                                  "runs": details})
    o.write_text("table.md", table(results, dataset, experiment,
                                   identity["num_bins"]))
    plot(results, details, dataset=dataset, experiment=experiment,
         model=identity["config"]["model"], out=o)
  return results
