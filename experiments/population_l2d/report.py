"""``results.json``, tables and the Figure 2 plots of the L2D-Pop experiment.

``results`` builds the issue's schema; ``summarise`` groups the entries over
seeds (mean ± std); ``table`` and ``strength_table`` render Markdown;
``plot`` draws Figure 2: system accuracy and expert accuracy on the deferred
points against the budget L, one column per expert group (seen, unseen),
pseudo labels solid, oracle dashed, classifier-alone and expert-alone lines.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from experiments.population_l2d import config

VARIANT_NAMES = {"np_attention": "NP+Attention", "np": "NP",
                 "finetune": "Finetune", "single": "Single"}
_COLOR = {"np_attention": "tab:red", "np": "tab:blue",
          "finetune": "tab:green", "single": "tab:purple"}
METRICS = ("system_accuracy", "deferral_rate", "expert_accuracy_on_deferred")


def results(entries: Sequence[dict], label_generator: Sequence[dict], *,
            dataset: str, config_name: str, expert_strength: int,
            oracle_sets: str, wrong_answers: str,
            baselines: dict[str, float]) -> dict[str, Any]:
  """The issue's ``results.json`` (exactly its keys)."""
  keep = ("variant", "labels", "budget_k", "seed") + METRICS
  return {
      "dataset": dataset, "config": config_name,
      "expert_strength": int(expert_strength), "oracle_sets": oracle_sets,
      "wrong_answers": wrong_answers,
      "baselines": {"classifier_alone": float(baselines["classifier_alone"]),
                    "expert_alone": float(baselines["expert_alone"])},
      "label_generator": [
          {"budget_k": int(g["budget_k"]), "seed": int(g["seed"]),
           "correctness_accuracy": {s: g["correctness_accuracy"][s]
                                    for s in ("seen", "unseen")}}
          for g in label_generator],
      "results": [{k: e[k] for k in keep} for e in entries],
  }


def _ms(values) -> tuple[float, float] | None:
  v = np.asarray([x for x in values if x is not None], np.float64)
  if v.size == 0:
    return None
  return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def summarise(res: dict[str, Any]) -> dict[tuple, dict]:
  """``(variant, labels, budget_k) -> {metric: {group: (mean, std)}, seeds}``."""
  groups: dict[tuple, list[dict]] = {}
  for e in res["results"]:
    groups.setdefault((e["variant"], e["labels"], e["budget_k"]), []).append(e)
  out = {}
  for key, es in groups.items():
    out[key] = {m: {g: _ms([e[m][g] for e in es]) for g in config.GROUPS}
                for m in METRICS}
    out[key]["seeds"] = len(es)
  return out


def _fmt(ms, scale: float = 100.0) -> str:
  if ms is None:
    return "–"
  return f"{scale * ms[0]:.1f} ± {scale * ms[1]:.1f}"


def table(res: dict[str, Any], *, command: str = "") -> str:
  """Markdown: baselines, label generator, then per metric a table (%)."""
  b = res["baselines"]
  lines = [f"# L2D-Pop from limited demonstrations: {res['dataset']} "
           f"({res['config']} config, simulated experts)", ""]
  if command:
    lines += [f"`{command}`", ""]
  lines += [f"H = {res['expert_strength']} ({res['oracle_sets']} oracle "
            f"sets, wrong answers over {res['wrong_answers']}); "
            f"{config.NUM_SEEN} seen + "
            f"{config.NUM_EXPERTS - config.NUM_SEEN} unseen experts; "
            f"context {config.EVAL_CONTEXT} at test. Mean ± std over seeds, "
            "in %.", "",
            f"Classifier alone {100 * b['classifier_alone']:.1f}, expert "
            f"alone {100 * b['expert_alone']:.1f}.", ""]
  if res["label_generator"]:
    lines += ["## Label generator: predicted-correctness accuracy", "",
              "| k | L | seen | unseen |", "|---|---|---|---|"]
    by_k: dict[int, list] = {}
    for g in res["label_generator"]:
      by_k.setdefault(g["budget_k"], []).append(g)
    for k in sorted(by_k):
      gs = by_k[k]
      lines.append(f"| {k} | {k * _num_classes(res)} | "
                   + " | ".join(_fmt(_ms([g["correctness_accuracy"][s]
                                          for g in gs]))
                                for s in ("seen", "unseen")) + " |")
    lines.append("")
  summ = summarise(res)
  titles = {"system_accuracy": "System accuracy",
            "deferral_rate": "Deferral rate",
            "expert_accuracy_on_deferred": "Expert accuracy on deferred"}
  for m in METRICS:
    lines += [f"## {titles[m]}", "",
              "| variant | labels | k | seen | unseen | all | seeds |",
              "|---|---|---|---|---|---|---|"]
    for (v, lab, k), s in sorted(summ.items(), key=lambda kv: (
        config.VARIANTS.index(kv[0][0]), kv[0][1], kv[0][2])):
      lines.append(f"| {VARIANT_NAMES[v]} | {lab} | {k} | "
                   + " | ".join(_fmt(s[m][g]) for g in config.GROUPS)
                   + f" | {s['seeds']} |")
    lines.append("")
  return "\n".join(lines)


def _num_classes(res) -> int:
  return {"gtsrb": 43}.get(res["dataset"], 10)


def strength_table(by_h: dict[int, dict[str, Any]], *, command: str = ""
                   ) -> str:
  """Markdown: system accuracy (all experts) per H, variant and labels."""
  lines = ["# Expert strength: system accuracy (all experts, %) against H",
           ""]
  if command:
    lines += [f"`{command}`", ""]
  hs = sorted(by_h)
  lines += ["| variant | labels | k | " + " | ".join(f"H = {h}" for h in hs)
            + " |", "|---|---|---|" + "---|" * len(hs)]
  summ = {h: summarise(by_h[h]) for h in hs}
  keys = sorted({k for s in summ.values() for k in s},
                key=lambda t: (config.VARIANTS.index(t[0]), t[1], t[2]))
  for key in keys:
    cells = [_fmt(summ[h][key]["system_accuracy"]["all"]) if key in summ[h]
             else "–" for h in hs]
    lines.append(f"| {VARIANT_NAMES[key[0]]} | {key[1]} | {key[2]} | "
                 + " | ".join(cells) + " |")
  for name in ("classifier_alone", "expert_alone"):
    lines.append(f"| {name.replace('_', ' ')} | – | – | "
                 + " | ".join(f"{100 * by_h[h]['baselines'][name]:.1f}"
                              for h in hs) + " |")
  return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], save: Callable[[Any, str], Any]) -> list[str]:
  """Figure 2: 2 x 2 panels (metric x seen/unseen); returns the file names."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  summ = summarise(res)
  kk = _num_classes(res)
  fig, axes = plt.subplots(2, 2, figsize=(11, 8), squeeze=False)
  ylabels = {"system_accuracy": "system accuracy",
             "expert_accuracy_on_deferred": "expert accuracy on deferred"}
  for row, m in enumerate(ylabels):
    for col, g in enumerate(("seen", "unseen")):
      ax = axes[row, col]
      for v in config.VARIANTS:
        for lab, ls in (("pseudo", "-"), ("oracle", "--")):
          pts = sorted((k, s[m][g]) for (vv, ll, k), s in summ.items()
                       if vv == v and ll == lab and s[m][g] is not None)
          if not pts:
            continue
          x = np.asarray([p[0] * kk for p in pts], float)
          mu = np.asarray([p[1][0] for p in pts])
          sd = np.asarray([p[1][1] for p in pts])
          name = f"{VARIANT_NAMES[v]} ({lab})"
          if lab == "oracle":  # Independent of L: one flat dashed line.
            ax.axhline(float(mu.mean()), ls=ls, color=_COLOR[v], label=name)
            continue
          ax.plot(x, mu, ls=ls, marker="o", color=_COLOR[v], label=name)
          ax.fill_between(x, mu - sd, mu + sd, color=_COLOR[v], alpha=0.12)
      if m == "system_accuracy":
        ax.axhline(res["baselines"]["classifier_alone"], color="black",
                   ls=":", label="classifier alone")
      ax.axhline(res["baselines"]["expert_alone"], color="grey", ls="-.",
                 label="expert alone")
      ax.set_xscale("log")
      ls_budgets = sorted({e["budget_k"] * kk for e in res["results"]})
      ax.set_xticks(ls_budgets, [str(v) for v in ls_budgets])
      ax.set_xticks([], minor=True)
      ax.set_xlabel("labelled points per expert L = K·k")
      ax.set_ylabel(ylabels[m])
      ax.set_title(f"{res['dataset']} ({res['config']}), simulated experts, "
                   f"H = {res['expert_strength']}: {g} experts", fontsize=9)
      ax.grid(alpha=0.3)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8,
             bbox_to_anchor=(0.5, -0.06))
  fig.tight_layout()
  name = "figure2.png"
  save(fig, name)
  plt.close(fig)
  return [name]
