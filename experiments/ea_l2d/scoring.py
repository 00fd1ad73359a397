"""Scoring: AURSAC / AURDAC of both aggregations and the routed curves."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.ea_l2d import config
from l2d_jax import metrics

CURVE_GRID = np.linspace(0.0, 1.0, 101)


def _areas_of(p, m, e):
  out = {}
  for name, iv in config.INTERVALS.items():
    out[name] = (metrics.aursac(p, m, e, interval=iv),
                 metrics.aurdac(p, m, e, interval=iv))
  return out


@jax.jit
def _areas(priority, model_right, expert_right, route):
  """Routed and per-expert areas and the routed curves."""
  rows = jnp.arange(priority.shape[0])
  p, e = priority[rows, route], expert_right[rows, route]
  routed = _areas_of(p, model_right, e)
  per = jax.vmap(_areas_of, in_axes=(1, None, 1))(priority, model_right,
                                                   expert_right)
  return routed, per, metrics.deferral_curves(p, model_right, e)


def _grid(curve: np.ndarray) -> np.ndarray:
  return np.interp(CURVE_GRID, np.linspace(0, 1, curve.size), curve)


def score(priority, class_logits, y, answers, *, route=None,
          pop_avg_key=None) -> dict[str, Any]:
  """Areas of both aggregations and the routed curves on a 101-point grid.

  Args:
    priority: ``[Q, J]`` priorities of the test experts.
    class_logits: ``[Q, K]``.
    y: ``[Q]`` labels.
    answers: ``[Q, J]`` the test experts' answers.
    route: ``[Q]`` expert index per query (default: highest priority).
    pop_avg_key: route uniformly at random with this key (Pop-Avg).
  """
  priority = np.asarray(priority, np.float32)
  y = np.asarray(y)
  model_right = (np.asarray(class_logits).argmax(1) == y).astype(np.float32)
  expert_right = (np.asarray(answers) == y[:, None]).astype(np.float32)
  if pop_avg_key is not None:
    route = np.asarray(jax.random.randint(pop_avg_key, (y.size,), 0,
                                          priority.shape[1]))
  elif route is None:
    route = priority.argmax(1)
  routed, per, curves = _areas(priority, model_right, expert_right,
                               jnp.asarray(route, jnp.int32))
  out = {}
  for agg, src, reduce in (("routed", routed, float),
                           ("per_expert", per, lambda v: float(np.mean(v)))):
    out[agg] = {"aursac": reduce(src["0-1"][0]), "aurdac": reduce(src["0-1"][1]),
                "aursac_intervals": {k: reduce(src[k][0])
                                     for k in ("0-0.2", "0.8-1")},
                "aurdac_intervals": {k: reduce(src[k][1])
                                     for k in ("0-0.2", "0.8-1")}}
  out["per_expert_aurdac"] = np.asarray(per["0-1"][1])
  out["curves"] = (_grid(np.asarray(curves.system_accuracy)),
                   _grid(np.asarray(curves.expert_accuracy)))
  out["model_accuracy"] = float(model_right.mean())
  return out
