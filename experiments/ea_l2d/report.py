"""results.json, Markdown tables and PNG curves of the EA-L2D experiment."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from experiments.ea_l2d import config

READING_LABELS = {
    None: "ID experts (trained on ID experts)",
    "train_ood_eval_id": "OOD, paper's reading: trained on OOD experts, "
                         "evaluated on ID experts",
    "train_id_eval_ood": "OOD, unseen experts: trained on ID experts, "
                         "evaluated on OOD experts",
}
SHORT_READING = {None: "ID", "train_ood_eval_id": "OOD (paper: train OOD → "
                 "eval ID)", "train_id_eval_ood": "OOD (train ID → eval OOD)"}


def results(rows: list[dict[str, Any]], *, dataset: str, study: str,
            config_name: str) -> dict[str, Any]:
  """The issue's ``results.json``: dataset, study, config, result rows."""
  keep = ("method", "overlap", "split", "seed", "aursac", "aurdac",
          "aursac_intervals")
  out = []
  for r in rows:
    row = {k: r[k] for k in keep}
    row.update({k: v for k, v in r.items() if k not in keep})
    out.append(row)
  return {"dataset": dataset, "study": study, "config": config_name,
          "results": out}


def _ms(values) -> str:
  v = np.asarray([x for x in values if x is not None], float)
  if v.size == 0:
    return "N/A"
  if v.size == 1:
    return f"{v[0]:.3f}"
  return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def _select(rows, **match):
  return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _mean(rows, key):
  v = [r[key] for r in rows]
  return float(np.mean(v)) if v else float("nan")


def table_rq1(rows, *, command: str) -> str:
  """Table 5.1 analogue: one table per aggregation."""
  methods = [m for m in config.METHODS if _select(rows, method=m)]
  overlaps = sorted({r["overlap"] for r in rows})
  lines = [f"Command: `{command}`", ""]
  for agg in config.AGGREGATIONS:
    lines += [f"### AURSAC / AURDAC (0, 1), {agg} "
              f"({'each point to its highest-priority expert' if agg == 'routed' else 'areas per test expert, averaged'}); mean ± std over seeds",
              "",
              "| p | experts | " + " | ".join(
                  f"{config.METHOD_LABELS[m]} AURSAC | "
                  f"{config.METHOD_LABELS[m]} AURDAC" for m in methods)
              + " | EA − L2D-Pop AURSAC |",
              "|---|---|" + "---|---|" * len(methods) + "---|"]
    for p in overlaps:
      for reading in (None, "train_ood_eval_id", "train_id_eval_ood"):
        cells = []
        for m in methods:
          sel = _select(rows, method=m, overlap=p, aggregation=agg,
                        ood_reading=reading)
          cells += [_ms(r["aursac"] for r in sel),
                    _ms(r["aurdac"] for r in sel)]
        gap = (_mean(_select(rows, method="ea_l2d", overlap=p,
                             aggregation=agg, ood_reading=reading), "aursac")
               - _mean(_select(rows, method="l2d_pop", overlap=p,
                               aggregation=agg, ood_reading=reading),
                       "aursac"))
        lines.append(f"| {p:g} | {SHORT_READING[reading]} | "
                     + " | ".join(cells)
                     + (f" | {gap:+.3f} |" if np.isfinite(gap) else " | |"))
    lines.append("")
  lines.append("Multi-Exp. L2D is trained on fixed experts: N/A for OOD.")
  return "\n".join(lines) + "\n"


def table_rq2(rows, *, command: str) -> str:
  methods = ("ea_l2d", "l2d_pop", "pop_avg")
  lines = [f"Command: `{command}`", "",
           "### AURSAC (0, 1) against the number of expertise classes E "
           "(routed = per expert here: one test expert)", "",
           "| p | E | experts | " + " | ".join(config.METHOD_LABELS[m]
                                              for m in methods) + " |",
           "|---|---|---|" + "---|" * len(methods)]
  for p in sorted({r["overlap"] for r in rows}):
    for e in sorted({r["classes_per_expert"] for r in rows}):
      for split in ("id", "ood"):
        cells = [_ms(r["aursac"] for r in _select(
            rows, method=m, overlap=p, classes_per_expert=e, split=split,
            aggregation="routed")) for m in methods]
        lines.append(f"| {p:g} | {e} | {split.upper()} | "
                     + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def table_rq3(rows, *, command: str) -> str:
  sizes = sorted({r["context_size"] for r in rows})
  lines = [f"Command: `{command}`", "",
           f"### EA-L2D AURSAC (0, 1) of one test expert (expertise class "
           f"{config.RQ3_CLASS}) against its context size, per prior "
           f"(strength {config.RQ3_STRENGTH:g})", "",
           "| prior | " + " | ".join(f"n = {s}" for s in sizes) + " |",
           "|---|" + "---|" * len(sizes)]
  for kind in ("accurate", "uninformative", "misspecified"):
    cells = [_ms(r["aursac"] for r in _select(
        rows, prior=kind, context_size=s, aggregation="routed"))
             for s in sizes]
    lines.append(f"| {kind} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def table_lcb(rows, *, command: str) -> str:
  from l2d_jax import experts  # pylint: disable=g-import-not-at-top
  types = list(experts.LCB_EXPERT_TYPES)
  lines = [f"Command: `{command}`", "",
           "### LCB ablation: overall AURSAC / AURDAC (routed and per "
           "expert) and AURDAC conditional on the true expert type "
           "(per-expert areas averaged over the type's test experts)", "",
           "| variant | AURSAC routed | AURDAC routed | AURSAC per expert | "
           "AURDAC per expert | " + " | ".join(types) + " |",
           "|---|---|---|---|---|" + "---|" * len(types)]
  for variant in config.LCB_VARIANTS:
    routed = _select(rows, variant=variant, aggregation="routed")
    per = _select(rows, variant=variant, aggregation="per_expert")
    cells = [_ms(r["aursac"] for r in routed), _ms(r["aurdac"] for r in routed),
             _ms(r["aursac"] for r in per), _ms(r["aurdac"] for r in per)]
    cells += [_ms(r["aurdac_by_type"][t] for r in per) for t in types]
    lines.append(f"| {variant} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


TABLES = {"rq1": table_rq1, "rq2": table_rq2, "rq3": table_rq3,
          "lcb-ablation": table_lcb}


def table(study: str, rows, *, command: str) -> str:
  """The Markdown table of ``study``."""
  return TABLES[study](rows, command=command)


def _band(ax, x, runs, label, color=None):
  arr = np.asarray(runs, float)
  mean = arr.mean(0)
  line, = ax.plot(x, mean, label=label, color=color)
  if arr.shape[0] > 1:
    sd = arr.std(0, ddof=1)
    # Accuracies: the band is clipped to [0, 1].
    ax.fill_between(x, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1),
                    alpha=0.2, color=line.get_color())


def plot(study: str, rows, curves, save: Callable, *, dataset: str,
         model: str) -> list[str]:
  """Writes the study's PNGs through ``save(fig, name)``; returns names."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from experiments.ea_l2d import run as run_lib  # pylint: disable=g-import-not-at-top
  grid = run_lib.CURVE_GRID
  names = []
  if study in ("rq1", "lcb-ablation"):
    if study == "rq1":
      overlaps = sorted({k[1] for k in curves})
      panels = [(reading, [(m, (m, p, reading if reading else "id"))
                           for m in config.METHODS], p)
                for reading in (None, "train_ood_eval_id",
                                "train_id_eval_ood") for p in overlaps]
    else:
      panels = [("lcb", [(v, (v,)) for v in config.LCB_VARIANTS], None)]
    groups = {}
    for reading, items, p in panels:
      groups.setdefault(reading, []).append((items, p))
    for reading, cols in groups.items():
      fig, axes = plt.subplots(2, len(cols), figsize=(4.2 * len(cols), 7),
                               squeeze=False)
      for c, (items, p) in enumerate(cols):
        for label, key in items:
          if key not in curves:
            continue
          runs = curves[key]
          text = config.METHOD_LABELS.get(label, label)
          _band(axes[0, c], grid, [r[0] for r in runs], text)
          _band(axes[1, c], grid, [r[1] for r in runs], text)
        title = f"p = {p:g}" if p is not None else "five expert types"
        axes[0, c].set_title(title)
        axes[0, c].set_ylabel("SysAcc (system accuracy)")
        axes[1, c].set_ylabel("ExpAcc (accuracy on deferred points)")
        for r in range(2):
          axes[r, c].set_xlabel("deferral fraction")
          axes[r, c].grid(alpha=0.3)
      axes[0, 0].legend(fontsize=8)
      what = (READING_LABELS[reading] if study == "rq1"
              else "LCB ablation, EA-L2D loss variants")
      fig.suptitle(f"{dataset}, {model} — simulated experts; {what}; "
                   f"routed; mean ± 1 std over seeds", fontsize=10)
      fig.tight_layout()
      tag = {None: "id", "train_ood_eval_id": "ood_paper",
             "train_id_eval_ood": "ood_unseen", "lcb": "lcb"}[reading]
      name = f"ea_curves_{tag}.png"
      save(fig, name)
      plt.close(fig)
      names.append(name)
  elif study == "rq2":
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    p = sorted({r["overlap"] for r in rows})[0]
    for c, split in enumerate(("id", "ood")):
      for m in ("ea_l2d", "l2d_pop", "pop_avg"):
        es = sorted({r["classes_per_expert"] for r in rows})
        means, sds = [], []
        for e in es:
          v = [r["aursac"] for r in _select(rows, method=m, overlap=p,
                                            classes_per_expert=e,
                                            split=split,
                                            aggregation="routed")]
          means.append(np.mean(v))
          sds.append(np.std(v, ddof=1) if len(v) > 1 else 0.0)
        axes[0, c].errorbar(es, means, yerr=sds, marker="o", capsize=3,
                            label=config.METHOD_LABELS[m])
      axes[0, c].set_title(f"{split.upper()} expert")
      axes[0, c].set_xlabel("expertise classes E")
      axes[0, c].set_ylabel("AURSAC (0, 1)")
      axes[0, c].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{dataset}, {model} — simulated experts, p = {p:g}; "
                 f"mean ± 1 std over cohorts", fontsize=10)
    fig.tight_layout()
    save(fig, "ea_rq2.png")
    plt.close(fig)
    names.append("ea_rq2.png")
  else:
    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = sorted({r["context_size"] for r in rows})
    for kind in ("accurate", "uninformative", "misspecified"):
      v = [[r["aursac"] for r in _select(rows, prior=kind, context_size=s,
                                         aggregation="routed")]
           for s in sizes]
      means = [np.mean(x) for x in v]
      sds = [np.std(x, ddof=1) if len(x) > 1 else 0.0 for x in v]
      ax.errorbar(sizes, means, yerr=sds, marker="o", capsize=3, label=kind)
    ax.set_xlabel("context size n")
    ax.set_ylabel("AURSAC (0, 1)")
    ax.set_xscale("symlog", linthresh=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="prior")
    ax.set_title(f"{dataset}, {model} — simulated expert (class "
                 f"{config.RQ3_CLASS}); mean ± 1 std over seeds", fontsize=9)
    fig.tight_layout()
    save(fig, "ea_rq3.png")
    plt.close(fig)
    names.append("ea_rq3.png")
  return names
