"""Tables, plots and the JSON schema of the conformal-deferral experiment.

``summarise`` turns the per-split arrays of ``run.sweep`` into ``results.json``
and ``details.json``; ``table1`` / ``ablation_table`` render Markdown tables;
``plot`` / ``plot_ablation`` draw figures a reader can use alone (title with
data set, model and score; bands = ± 1 std over splits, said in the caption;
α_opt marked; curves hidden under another one named in the legend).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from experiments.conformal_deferral import config
from l2d_jax import metrics

STRATEGIES = config.STRATEGIES
STRATEGY_NAMES = config.STRATEGY_NAMES
TABLE_ORDER = ("naive_random", "naive_most_accurate", "segregativity",
               "segregativity_lcb")
# Bayesian segregativity is compared with these two directly (issue 9).
LCB = "segregativity_lcb"
LCB_VERSUS = ("segregativity", "naive_most_accurate")
CROSS_FITTED = "accuracy_cross_fitted"
# Drawn in this order: thick solid first, thinner dashed/dotted on top, so a
# curve equal to an earlier one stays visible (and its label says so).
_STYLE = {"naive_random": dict(color="tab:blue", ls="-", lw=2.4),
          "naive_most_accurate": dict(color="tab:orange", ls="--", lw=1.8),
          "segregativity": dict(color="tab:green", ls=":", lw=1.6),
          "segregativity_lcb": dict(color="tab:red", ls="-.", lw=1.3)}


def _ms(x) -> dict[str, float]:
  x = np.asarray(x, np.float64)
  return {"mean": float(x.mean()),
          "std": float(x.std(ddof=1)) if x.size > 1 else 0.0}


def summarise(per: dict[str, Any], *, pool: Any, alphas: np.ndarray,
              scores: Sequence[str]) -> tuple[dict, dict]:
  """Builds ``results.json`` (the README's schema) and ``details.json``.

  Args:
    per: what ``run.sweep`` returns.
    pool: the ``run.Pool`` swept (its ``dataset`` and ``model`` names are read).
    alphas: ``[A]`` the swept miscoverage levels.
    scores: the scores swept.

  Returns:
    ``(results, details)`` dicts of numbers, lists and strings. Each strategy
    gets ``accuracy_cross_fitted: {"mean", "std"}`` beside
    ``accuracy_at_opt`` when ``per`` holds the per-split cross-fitted accuracy.
  """
  alphas = np.asarray(alphas, np.float64)
  base = {b: np.asarray(v, np.float64) for b, v in per["baselines"].items()}
  # Columns: 0 accuracy, 1 queries, 2 max Q/E, 3 avg Q/E.
  strongest = max(("best_expert", "model"), key=lambda b: base[b][:, 0].mean())
  results = {
      "dataset": pool.dataset, "model": pool.model, "n_test": per["n_test"],
      "n_splits": int(base["model"].shape[0]),
      "model_accuracy": _ms(base["model"][:, 0]),
      "random_expert_accuracy": _ms(base["random_expert"][:, 0]),
      "best_expert_accuracy": _ms(base["best_expert"][:, 0]),
      "scores": {},
  }
  details = {"strongest_baseline": strongest, "alphas": alphas,
             "baselines": {b: {"accuracy": _ms(v[:, 0]),
                               "queries": _ms(v[:, 1]),
                               "max_queries_per_expert": _ms(v[:, 2]),
                               "avg_queries_per_queried_expert": _ms(v[:, 3])}
                           for b, v in base.items()},
             "scores": {}}
  for s in scores:
    entry = {"alphas": alphas,
             "coverage": np.mean(per["coverage"][s], axis=0),
             "mean_set_size": np.mean(per["mean_set_size"][s], axis=0),
             "strategies": {}}
    det = {"strategies": {}}
    for t in STRATEGIES:
      raw = per["strategies"][s][t]
      m = {f: np.asarray(v, np.float64) for f, v in raw.items()
           if f != CROSS_FITTED}
      acc = m["accuracy"]
      opt = int(np.argmax(acc.mean(axis=0)))
      test = metrics.paired_one_tailed_test(acc[:, opt], base[strongest][:, 0])
      r = {
          "accuracy_mean": acc.mean(axis=0),
          "accuracy_std": (acc.std(axis=0, ddof=1) if acc.shape[0] > 1
                           else np.zeros(acc.shape[1])),
          "queries_mean": m["queries"].mean(axis=0),
          "max_queries_per_expert_mean": m["max_queries_per_expert"].mean(0),
          "avg_queries_per_queried_expert_mean":
              m["avg_queries_per_queried_expert"].mean(0),
          "alpha_opt": float(alphas[opt]),
          "accuracy_at_opt": _ms(acc[:, opt]),
      }
      if raw.get(CROSS_FITTED) is not None and len(raw[CROSS_FITTED]):
        r[CROSS_FITTED] = _ms(np.asarray(raw[CROSS_FITTED], np.float64))
      r["p_value_vs_strongest_baseline"] = test.p_value
      entry["strategies"][t] = r
      det["strategies"][t] = {
          "test": test.test, "shapiro_p": test.shapiro_p,
          "marks": metrics.significance_marks(test),
          "queries_at_opt": _ms(m["queries"][:, opt]),
          "max_queries_per_expert_at_opt": _ms(
              m["max_queries_per_expert"][:, opt]),
          "avg_queries_per_queried_expert_at_opt": _ms(
              m["avg_queries_per_queried_expert"][:, opt]),
          "queries_std": m["queries"].std(axis=0),
      }
    # The paper's paired one-tailed test, each strategy at its own α_opt:
    # is Segregativity-LCB more accurate than segregativity / naive most
    # accurate over the same splits?
    acc_of = {t: np.asarray(per["strategies"][s][t]["accuracy"], np.float64)
              for t in (LCB,) + LCB_VERSUS}
    at_opt = {t: a[:, int(np.argmax(a.mean(axis=0)))]
              for t, a in acc_of.items()}
    det["lcb_vs"] = {}
    for t in LCB_VERSUS:
      test = metrics.paired_one_tailed_test(at_opt[LCB], at_opt[t])
      det["lcb_vs"][t] = {
          "p_value": test.p_value, "test": test.test,
          "shapiro_p": test.shapiro_p,
          "marks": metrics.significance_marks(test),
          "mean_difference": float((at_opt[LCB] - at_opt[t]).mean())}
    if s == "raps" and per.get("raps_params"):
      det["raps_k_reg_mean"] = np.mean(
          [p["k_reg"] for p in per["raps_params"]], axis=0)
      det["raps_lam_mean"] = np.mean(
          [p["lam"] for p in per["raps_params"]], axis=0)
    results["scores"][s] = entry
    details["scores"][s] = det
  return results, details


# ---------------------------------------------------------------------------
# Tables.


def _pct(d: dict | None) -> str:
  if not d:
    return "-"
  return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"


def _num(d: dict, p: int = 0) -> str:
  return f"{d['mean']:.{p}f} ± {d['std']:.{p}f}"


def title(dataset: str, model: str) -> str:
  """``dataset / model``, with "simulated" for simulated data."""
  if dataset in config.SYNTHETIC_DATASETS:
    return f"{dataset} (simulated data) / {model}"
  return f"{dataset} / {model}"


def table1(results: dict, details: dict) -> str:
  """The paper's Table 1 layout as Markdown, plus the cross-fitted accuracy."""
  lines = [
      f"**{title(results['dataset'], results['model'])}**, "
      f"{results['n_splits']} splits, {results['n_test']} test points; "
      "mean ± std over splits. Acc. at α_opt: α chosen in hindsight on the "
      "splits it is scored on (the paper's figure); cross-fitted: α chosen on "
      "one half of each split's test points, scored on the other half. Marks "
      "(at α_opt) vs the stronger of Best Expert and Model "
      f"({details['strongest_baseline']}): * t-test, o Wilcoxon, at p < 0.05 "
      "/ 0.01 / 0.001 / 0.0001.", "",
      "| Score | Strategy | α_opt | Acc. at α_opt [%] | Acc. cross-fitted [%] "
      "| # Queries | Max Q/E | Avg Q/E |",
      "|---|---|---|---|---|---|---|---|"]
  for s, entry in results["scores"].items():
    for t in TABLE_ORDER:
      r = entry["strategies"][t]
      d = details["scores"][s]["strategies"][t]
      lines.append(
          f"| {s.upper()} | {STRATEGY_NAMES[t]} | {r['alpha_opt']:.3f} | "
          f"{(_pct(r['accuracy_at_opt']) + ' ' + d['marks']).rstrip()} | "
          f"{_pct(r.get(CROSS_FITTED))} | "
          f"{_num(d['queries_at_opt'])} | "
          f"{_num(d['max_queries_per_expert_at_opt'], 2)} | "
          f"{_num(d['avg_queries_per_queried_expert_at_opt'], 2)} |")
  for b, name in (("random_expert", "Random Expert Accuracy"),
                  ("best_expert", "Best Expert Accuracy"),
                  ("model", "Model Accuracy")):
    d = details["baselines"][b]
    avg = (_num(d["avg_queries_per_queried_expert"], 2) if b != "model"
           else "-")
    lines.append(
        f"| | {name} | - | {_pct(d['accuracy'])} | - | {_num(d['queries'])} "
        f"| {_num(d['max_queries_per_expert'], 2)} | {avg} |")
  vs = [(s, t, d) for s in results["scores"]
        for t, d in details["scores"][s].get("lcb_vs", {}).items()]
  if vs:
    lines += ["", f"{STRATEGY_NAMES[LCB]} vs each strategy at its own α_opt "
              "(paired one-tailed test over splits, the paper's test; "
              "difference in points of %):", ""]
    for s, t, d in vs:
      lines.append(
          f"- {s.upper()}, vs {STRATEGY_NAMES[t]}: "
          f"{100 * d['mean_difference']:+.2f}, p = {d['p_value']:.3g} "
          f"({d['test']}){(' ' + d['marks']) if d['marks'] else ''}")
  return "\n".join(lines) + "\n"


def ablation_table(ablation: dict) -> str:
  """Accuracy at α_opt per ablation value, as Markdown (README layout)."""
  s = ablation["score"]
  rows = ablation["rows"]
  n = rows[0]["results"]["n_splits"] if rows else 0
  lines = [
      f"**{title(ablation['dataset'], ablation['model'])}**, "
      f"{s.upper()}, ablation {ablation['ablation']}, {n} splits: accuracy "
      "[%] at α_opt (mean ± std over splits; cross-fitted in parentheses "
      "where available) and the baselines' mean accuracy.", "",
      f"| {ablation['ablation']} | "
      + " | ".join(STRATEGY_NAMES[t] for t in reversed(TABLE_ORDER))
      + " | Best Expert | Model |",
      "|---" * (len(TABLE_ORDER) + 3) + "|"]
  for row in rows:
    res = row["results"]
    cells = []
    for t in reversed(TABLE_ORDER):
      r = res["scores"][s]["strategies"][t]
      cell = _pct(r["accuracy_at_opt"])
      if r.get(CROSS_FITTED):
        cell += f" ({_pct(r[CROSS_FITTED])})"
      cells.append(cell)
    lines.append(
        f"| {row['value']:g} | " + " | ".join(cells)
        + f" | {100 * res['best_expert_accuracy']['mean']:.2f} | "
        f"{100 * res['model_accuracy']['mean']:.2f} |")
  if ablation.get("stopped"):
    lines += ["", ablation["stopped"]]
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Plots.


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _labels_with_overlaps(curves: dict[str, np.ndarray]) -> dict[str, str]:
  """Labels noting a curve drawn exactly on top of an earlier one."""
  labels, seen = {}, []
  for name, y in curves.items():
    y = np.asarray(y, np.float64)
    same = [o for o, oy in seen if oy.shape == y.shape
            and np.allclose(oy, y, rtol=0.0, atol=1e-9, equal_nan=True)]
    labels[name] = name + (f" (same as {same[0]})" if same else "")
    seen.append((name, y))
  return labels


def _caption(fig, text: str) -> None:
  fig.text(0.01, -0.02, text, ha="left", va="top", fontsize=7, wrap=True)


def plot(results: dict, save: Callable[[Any, str], Any]) -> list[str]:
  """Accuracy and workload against α for each score (the paper's Fig. 2).

  Args:
    results: ``results.json``.
    save: ``save(fig, file_name)`` writes a figure (``OutputSet.save_figure``).

  Returns:
    The file names written.
  """
  plt = _pyplot()
  written = []
  n = results["n_splits"]
  head = title(results["dataset"], results["model"])
  for s, entry in results["scores"].items():
    a = np.asarray(entry["alphas"])
    fig, ax = plt.subplots(figsize=(7, 4.6))
    means = {STRATEGY_NAMES[t]: 100 * np.asarray(
        entry["strategies"][t]["accuracy_mean"]) for t in TABLE_ORDER}
    labels = _labels_with_overlaps(means)
    for t in TABLE_ORDER:
      r = entry["strategies"][t]
      name = STRATEGY_NAMES[t]
      m = means[name]
      sd = 100 * np.asarray(r["accuracy_std"])
      st = _STYLE[t]
      ax.plot(a, m, **st, label=f"{labels[name]}, α_opt = {r['alpha_opt']:.3g}")
      ax.fill_between(a, m - sd, m + sd, color=st["color"], alpha=0.15, lw=0)
      ax.plot([r["alpha_opt"]], [100 * r["accuracy_at_opt"]["mean"]],
              marker="*", ms=13, color=st["color"], mec="black", ls="none")
    ax.plot([], [], marker="*", ms=11, color="white", mec="black", ls="none",
            label="α_opt (best mean accuracy)")
    ax.fill_between([], [], [], color="gray", alpha=0.3,
                    label=f"± 1 std over {n} splits")
    base = {"Best expert (hindsight)": ("best_expert_accuracy", "--"),
            "Model alone": ("model_accuracy", "-."),
            "Random expert": ("random_expert_accuracy", ":")}
    blabels = _labels_with_overlaps(
        {k: np.array([results[v]["mean"]]) for k, (v, _) in base.items()})
    for k, (v, style) in base.items():
      ax.axhline(100 * results[v]["mean"], ls=style, c="gray", lw=1.2,
                 label=blabels[k])
    ax.set_xscale("log")
    ax.set_xlabel("miscoverage α (log scale)")
    ax.set_ylabel("system accuracy [%]")
    ax.set_title(f"{head} / {s.upper()}: accuracy vs α")
    ax.legend(fontsize=7, loc="best")
    _caption(fig, f"Lines: mean over {n} calibration/test splits; shaded: "
             "± 1 std over splits; ★: α_opt, the α with the best mean "
             "accuracy, chosen on the same splits (optimistic); gray: "
             "baselines (mean).")
    name = f"accuracy_vs_alpha_{s}.png"
    save(fig, name)
    plt.close(fig)
    written.append(name)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, f, ylabel in zip(
        axes, ("queries_mean", "max_queries_per_expert_mean",
               "avg_queries_per_queried_expert_mean"),
        ("# queries to experts", "max queries per expert",
         "mean queries per queried expert")):
      curves = {STRATEGY_NAMES[t]: entry["strategies"][t][f]
                for t in TABLE_ORDER}
      labels = _labels_with_overlaps(curves)
      for t in TABLE_ORDER:
        ax.plot(a, curves[STRATEGY_NAMES[t]], **_STYLE[t],
                label=labels[STRATEGY_NAMES[t]])
      ax.set_xscale("log")
      ax.set_xlabel("miscoverage α (log scale)")
      ax.set_ylabel(ylabel)
      ax.legend(fontsize=7)
    fig.suptitle(f"{head} / {s.upper()}: expert workload vs α")
    fig.tight_layout()
    _caption(fig, f"Mean over {n} splits. The number of queries depends only "
             "on the prediction sets, so it is the same for every strategy.")
    name = f"workload_vs_alpha_{s}.png"
    save(fig, name)
    plt.close(fig)
    written.append(name)
  return written


def plot_ablation(ablation: dict, save: Callable[[Any, str], Any]
                  ) -> list[str]:
  """Accuracy at α_opt and α_opt against the ablation value."""
  rows = ablation["rows"]
  if not rows:
    return []
  plt = _pyplot()
  x = np.array([r["value"] for r in rows], np.float64)
  s = ablation["score"]
  n = rows[0]["results"]["n_splits"]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
  acc = {STRATEGY_NAMES[t]: np.array(
      [100 * r["results"]["scores"][s]["strategies"][t]["accuracy_at_opt"][
          "mean"] for r in rows]) for t in TABLE_ORDER}
  opt = {STRATEGY_NAMES[t]: np.array(
      [r["results"]["scores"][s]["strategies"][t]["alpha_opt"] for r in rows])
         for t in TABLE_ORDER}
  acc_labels, opt_labels = _labels_with_overlaps(acc), _labels_with_overlaps(
      opt)
  for t in TABLE_ORDER:
    name = STRATEGY_NAMES[t]
    sd = np.array([100 * r["results"]["scores"][s]["strategies"][t][
        "accuracy_at_opt"]["std"] for r in rows])
    st = _STYLE[t]
    axes[0].plot(x, acc[name], marker="o", **st, label=acc_labels[name])
    axes[0].fill_between(x, acc[name] - sd, acc[name] + sd,
                         color=st["color"], alpha=0.15, lw=0)
    axes[1].plot(x, opt[name], marker="o", **st, label=opt_labels[name])
  axes[0].fill_between([], [], [], color="gray", alpha=0.3,
                       label=f"± 1 std over {n} splits")
  for b, style, label in (("best_expert_accuracy", "--",
                           "Best expert (hindsight)"),
                          ("model_accuracy", "-.", "Model alone")):
    axes[0].plot(x, [100 * r["results"][b]["mean"] for r in rows], style,
                 c="gray", label=label)
  for ax in axes:
    ax.set_xlabel(ablation["ablation"])
    ax.legend(fontsize=7)
  axes[0].set_ylabel("system accuracy at α_opt [%]")
  axes[1].set_ylabel("α_opt")
  axes[1].set_yscale("log")
  fig.suptitle(f"{title(ablation['dataset'], ablation['model'])} / "
               f"{s.upper()}: ablation {ablation['ablation']}")
  fig.tight_layout()
  _caption(fig, f"Mean over {n} splits at each value; shaded: ± 1 std over "
           "splits; α_opt chosen on the same splits.")
  name = f"ablation_{ablation['ablation']}.png"
  save(fig, name)
  plt.close(fig)
  return [name]
