"""``results.json``, tables and budget–performance plots of the Top-k experiment.

``results`` builds the issue's schema from the entries of ``run.run``;
``summarise`` groups the entries over seeds (mean ± std); ``table`` renders
Markdown; ``plot`` draws one panel per metric (RMSE or accuracy against the
expected budget), each with its title, y-label and a legend, error bars
± 1 std over seeds.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from experiments.topk_l2d import config

METHOD_NAMES = {"topk": "Top-k L2D (k = 1..A)",
                "topkx": "Top-k(x) L2D (λ sweep)",
                "top1": "Top-1 two-stage L2D",
                "random": f"random k agents ({config.RANDOM_DRAWS} draws)",
                "oracle": "oracle (k lowest costs in hindsight)"}
_STYLE = {"topk": dict(color="tab:blue", marker="o", ls="-"),
          "topkx": dict(color="tab:red", marker="s", ls="-"),
          "top1": dict(color="black", marker="*", ls="none", ms=12),
          "random": dict(color="tab:gray", marker="x", ls="--"),
          "oracle": dict(color="tab:green", marker="^", ls=":")}


def is_rmse(metric: str) -> bool:
  return metric.endswith("_rmse")


def results(entries: Sequence[dict], *, dataset: str, config_name: str,
            beta: np.ndarray, metric_alone: np.ndarray) -> dict[str, Any]:
  """The issue's ``results.json``.

  ``{"dataset", "config", "agents": [{"index", "beta", "metric_alone"}],
  "results": [{"method", "k" or "lambda", "seed", "expected_budget",
  "expected_k", "metrics": {...}} (+ "selector_metric" for Top-k(x))]}``.
  """
  keep = ("method", "k", "lambda", "selector_metric", "seed",
          "expected_budget", "expected_k", "metrics")
  return {
      "dataset": dataset, "config": config_name,
      # float32 β keeps its own digits (0.05, not 0.0500000007).
      "agents": [{"index": j, "beta": float(str(np.float32(b))),
                  "metric_alone": float(m)}
                 for j, (b, m) in enumerate(zip(beta, metric_alone))],
      "results": [{k: e[k] for k in keep if k in e} for e in entries],
  }


def _ms(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def summarise(entries: Sequence[dict], metric: str) -> dict[str, list[dict]]:
  """Method -> rows (one per k or λ) of mean ± std over seeds for ``metric``.

  Top-k(x) rows are those whose selector was trained for ``metric``.
  """
  groups: dict[tuple, list[dict]] = {}
  for e in entries:
    if e["method"] == "topkx" and e["selector_metric"] != metric:
      continue
    key = (e["method"], e.get("k", e.get("lambda")))
    groups.setdefault(key, []).append(e)
  out: dict[str, list[dict]] = {m: [] for m in config.METHODS}
  for (method, setting), es in groups.items():
    out[method].append({
        "setting": setting,
        "value": _ms([e["metrics"][metric] for e in es]),
        "budget": _ms([e["expected_budget"] for e in es]),
        "expected_k": _ms([e["expected_k"] for e in es]),
        "seeds": len(es)})
  for rows in out.values():
    rows.sort(key=lambda r: r["setting"])
  return out


def headline(entries: Sequence[dict], metric: str) -> dict[str, Any]:
  """Top-k's best value and the cheapest Top-k(x) λ that matches it.

  "Matches" means a mean within one standard deviation (over seeds) of
  Top-k's best mean, or better.
  """
  rows = summarise(entries, metric)
  sign = 1.0 if is_rmse(metric) else -1.0  # lower is better for RMSE
  best_k = min(rows["topk"], key=lambda r: sign * r["value"][0])
  best_x = min(rows["topkx"], key=lambda r: sign * r["value"][0])
  tol = max(best_k["value"][1], 1e-12)
  match = [r for r in rows["topkx"]
           if sign * (r["value"][0] - best_k["value"][0]) <= tol]
  cheapest = min(match, key=lambda r: r["budget"][0]) if match else None
  full = max(rows["topk"], key=lambda r: r["setting"])
  return {
      "metric": metric,
      "topk_best": {"k": best_k["setting"], "value": best_k["value"],
                    "budget": best_k["budget"]},
      "topk_full": {"k": full["setting"], "value": full["value"],
                    "budget": full["budget"]},
      "topkx_best": {"lambda": best_x["setting"], "value": best_x["value"],
                     "budget": best_x["budget"],
                     "expected_k": best_x["expected_k"]},
      "topkx_matching_topk_best": None if cheapest is None else {
          "lambda": cheapest["setting"], "value": cheapest["value"],
          "budget": cheapest["budget"], "expected_k": cheapest["expected_k"]},
      "top1": rows["top1"][0]["value"] if rows["top1"] else None,
  }


def _fmt(ms: tuple[float, float], digits: int = 4) -> str:
  return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def table(res: dict[str, Any], entries: Sequence[dict],
          metrics: Sequence[str], *, command: str = "") -> str:
  """Markdown: the agents, then one table per metric (mean ± std over seeds)."""
  seeds = sorted({e["seed"] for e in entries})
  unit = "RMSE ($100k)" if is_rmse(metrics[0]) else "accuracy"
  lines = [f"# Top-k / Top-k(x) L2D: {res['dataset']}, config {res['config']}",
           "", f"Seeds {seeds}; ± is one standard deviation over seeds "
           f"(ddof=1). Budget = E[Σ β of the consulted agents] (β₀ counts, "
           f"it is 0); E[k] = mean number of consulted agents."]
  if command:
    lines += ["", f"Command: `{command}`"]
  lines += ["", "## Agents", "", f"| agent | β | {unit} alone (test) |",
            "|---|---|---|"]
  for a in res["agents"]:
    lines.append(f"| {a['index']}{' (main model)' if a['index'] == 0 else ''}"
                 f" | {a['beta']:.2f} | {a['metric_alone']:.4f} |")
  for metric in metrics:
    rows = summarise(entries, metric)
    h = headline(entries, metric)
    lines += ["", f"## {metric}", ""]
    m = h["topkx_matching_topk_best"]
    lines.append(
        f"Top-k best: k = {h['topk_best']['k']}, {_fmt(h['topk_best']['value'])}"
        f" at budget {h['topk_best']['budget'][0]:.3f}. Top-k(x) best: λ = "
        f"{h['topkx_best']['lambda']:g}, {_fmt(h['topkx_best']['value'])} at "
        f"budget {h['topkx_best']['budget'][0]:.3f} (E[k] = "
        f"{h['topkx_best']['expected_k'][0]:.2f}). "
        + ("No Top-k(x) λ matches Top-k's best (within one std)." if m is None
           else f"Cheapest Top-k(x) within one std of Top-k's best: λ = "
           f"{m['lambda']:g}, {_fmt(m['value'])} at budget "
           f"{m['budget'][0]:.3f} (E[k] = {m['expected_k'][0]:.2f})."))
    lines += ["", "| method | k / λ | expected budget | E[k] | "
              f"{metric} |", "|---|---|---|---|---|"]
    for method in ("top1", "topk", "topkx", "random", "oracle"):
      for r in rows[method]:
        setting = (f"λ = {r['setting']:g}" if method == "topkx"
                   else f"k = {r['setting']}")
        lines.append(f"| {method} | {setting} | {_fmt(r['budget'], 3)} | "
                     f"{_fmt(r['expected_k'], 2)} | {_fmt(r['value'])} |")
  return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], entries: Sequence[dict], metrics: Sequence[str],
         save: Callable[[Any, str], Any]) -> list[str]:
  """Draws ``budget_performance.png`` (one panel per metric); returns names."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  seeds = sorted({e["seed"] for e in entries})
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.4),
                           squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    rows = summarise(entries, metric)
    for method in ("random", "oracle", "topk", "topkx", "top1"):
      rs = rows[method]
      if not rs:
        continue
      if method == "topkx":
        rs = sorted(rs, key=lambda r: r["budget"][0])
      x = [r["budget"][0] for r in rs]
      y = [r["value"][0] for r in rs]
      e = [r["value"][1] for r in rs]
      style = {"ms": 5, **_STYLE[method]}
      ax.errorbar(x, y, yerr=e, capsize=2, lw=1.5,
                  label=METHOD_NAMES[method], **style)
      if method == "topk":
        for r, xi, yi in zip(rs, x, y):
          ax.annotate(f"k={r['setting']}", (xi, yi), fontsize=7,
                      textcoords="offset points", xytext=(3, 4))
    ax.set_xlabel("expected budget E[Σ β of consulted agents]")
    ax.set_ylabel("test RMSE ($100k), lower is better" if is_rmse(metric)
                  else "test accuracy, higher is better")
    ax.set_title(f"{res['dataset']} ({res['config']}): {metric}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(
      f"Budget vs performance, {res['dataset']}, config {res['config']}, "
      f"seeds {seeds}: mean ± 1 std over seeds. Top-k(x) selectors trained "
      "for the panel's metric, one point per λ.", fontsize=9)
  fig.tight_layout()
  save(fig, "budget_performance.png")
  plt.close(fig)
  return ["budget_performance.png"]
