"""EA-LCE: the expert-agnostic learning-to-defer loss (EA-L2D).

The classifier's ``K`` logits and the rejector's one deferral logit form a
``(K + 1)``-way softmax ``q``; the deferral output is a target with a weight
``w`` built from the expert's Beta-posterior profile (``mean``, ``std`` per
class, e.g. from ``experts.beta_posterior``), not from the expert's answer on
the query, so query sets need no expert labels.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation
from l2d_jax.experts._beta import expertise_class

EA_WEIGHTINGS = ("lcb", "mean", "binary", "none")


def _check_inputs(class_logits, defer_logit, labels, expert_mean, expert_std,
                  weighting, lcb_lambda, where) -> int:
  """Trace-time (and, when concrete, value) checks; returns ``K``."""
  if weighting not in EA_WEIGHTINGS:
    raise ValueError(f"`weighting` must be one of {EA_WEIGHTINGS}, got "
                     f"{weighting!r}.")
  for value, name in ((class_logits, "class_logits"),
                      (defer_logit, "defer_logit"),
                      (expert_mean, "expert_mean"),
                      (expert_std, "expert_std")):
    _validation.check_floating(value, name)
  _validation.check_integer(labels, "labels")
  shape = tuple(jnp.shape(class_logits))
  if len(shape) < 1 or shape[-1] < 1:
    raise ValueError(f"`class_logits` must have shape [..., K] with K >= 1, "
                     f"got {shape}.")
  batch = shape[:-1]
  for value, name in ((defer_logit, "defer_logit"), (labels, "labels")):
    if tuple(jnp.shape(value)) != batch:
      raise ValueError(f"`{name}` must have shape [...] equal to the batch "
                       f"shape {batch} of `class_logits` [..., K], got "
                       f"{tuple(jnp.shape(value))}.")
  for value, name in ((expert_mean, "expert_mean"),
                      (expert_std, "expert_std")):
    if tuple(jnp.shape(value)) != shape:
      raise ValueError(f"`{name}` must have the shape [..., K]={shape} of "
                       f"`class_logits`, got {tuple(jnp.shape(value))}.")
  if where is not None:
    if tuple(jnp.shape(where)) != batch:
      raise ValueError(f"`where` must have shape [...] equal to the batch "
                       f"shape {batch}, got {tuple(jnp.shape(where))}.")
    if jnp.result_type(where) != jnp.bool_:
      raise TypeError(f"`where` must be boolean, got "
                      f"{jnp.result_type(where)}.")
  num_classes = shape[-1]
  _validation.check_index_range(labels, num_classes, "labels", where=where)
  _validation.check_unit_interval(expert_mean, "expert_mean", where=where)
  _validation.check_unit_interval(expert_std, "expert_std", where=where)
  if _validation.is_concrete(lcb_lambda):
    lam = np.asarray(lcb_lambda, np.float64)
    if lam.shape != () or not np.isfinite(lam) or lam < 0:
      raise ValueError(f"`lcb_lambda` must be a finite scalar >= 0, got "
                       f"{lcb_lambda!r}.")
  elif jnp.ndim(lcb_lambda) != 0:
    raise ValueError("`lcb_lambda` must be a scalar.")
  return num_classes


def ea_deferral_weight(
    labels: jax.typing.ArrayLike,
    expert_mean: jax.typing.ArrayLike,
    expert_std: jax.typing.ArrayLike,
    *,
    lcb_lambda: Any = 1.0,
    weighting: str = "lcb",
    key: jax.Array | None = None,
) -> jax.Array:
  """The weight ``w`` of the deferral target in :func:`ea_lce_loss`.

  With ``k* = argmax_k mean_k`` (``experts.expertise_class``):

  - ``'lcb'``: ``w = 1[y = k*] · max(0, mean_y − λ·std_y)``;
  - ``'mean'``: ``w = 1[y = k*] · mean_y`` (the LCB with ``λ = 0``; the
    indicator applies, as in the paper's "mean only" ablation);
  - ``'binary'``: ``w = 1[y = k*]``;
  - ``'none'``: ``w = 0`` (never defer).

  The weight is a constant of the loss: no gradient flows through it.

  Args:
    labels: ``[...]`` integer true labels in ``[0, K)``.
    expert_mean: ``[..., K]`` posterior means of the expert's accuracy.
    expert_std: ``[..., K]`` posterior standard deviations.
    lcb_lambda: ``λ >= 0`` (scalar, may be traced).
    weighting: one of ``'lcb'``, ``'mean'``, ``'binary'``, ``'none'``.
    key: optional ``jax.random`` key for a random ``k*`` tie-break.

  Returns:
    ``[...]`` weights in ``[0, 1]``; 0 where the label is outside ``[0, K)``
    (values are not checked here; :func:`ea_lce_loss` checks them). A row
    whose profile holds NaN (e.g. ``experts.beta_posterior`` of invalid
    counts under jit) gets a NaN weight, never a silent 0, except with
    ``'none'``, which reads no profile.

  Raises:
    TypeError: non-integer labels, non-floating ``expert_mean``.
    ValueError: an unknown ``weighting`` or mismatched shapes.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> w = losses.ea_deferral_weight(jnp.array([1, 0]),
    ...                               jnp.array([[0.5, 0.9], [0.5, 0.9]]),
    ...                               jnp.array([[0.1, 0.2], [0.1, 0.2]]))
    >>> print(w)
    [0.7 0. ]
  """
  if weighting not in EA_WEIGHTINGS:
    raise ValueError(f"`weighting` must be one of {EA_WEIGHTINGS}, got "
                     f"{weighting!r}.")
  _validation.check_integer(labels, "labels")
  _validation.check_floating(expert_mean, "expert_mean")
  shape = tuple(jnp.shape(expert_mean))
  if (len(shape) < 1 or shape[-1] < 1 or tuple(jnp.shape(expert_std)) != shape
      or tuple(jnp.shape(labels)) != shape[:-1]):
    raise ValueError(
        f"`expert_mean` and `expert_std` must share a shape [..., K] (K >= 1) "
        f"and `labels` must have its batch shape [...]; got "
        f"{shape}, {tuple(jnp.shape(expert_std))} and "
        f"{tuple(jnp.shape(labels))}.")
  mean = jax.lax.stop_gradient(jnp.asarray(expert_mean))
  std = jax.lax.stop_gradient(jnp.asarray(expert_std))
  labels = jnp.asarray(labels)
  num_classes = jnp.shape(mean)[-1]
  dtype = mean.dtype
  if weighting == "none":
    return jnp.zeros(jnp.shape(labels), dtype)
  in_range = (labels >= 0) & (labels < num_classes)
  safe = jnp.clip(labels, 0, num_classes - 1)
  is_expertise = in_range & (expertise_class(mean, key=key) == safe)
  mean_y = jnp.take_along_axis(mean, safe[..., None], axis=-1)[..., 0]
  std_y = jnp.take_along_axis(std, safe[..., None], axis=-1)[..., 0]
  if weighting == "binary":
    value = jnp.ones_like(mean_y)
  elif weighting == "mean":
    value = mean_y
  else:
    lam = jax.lax.stop_gradient(jnp.asarray(lcb_lambda, dtype))
    value = jnp.maximum(mean_y - lam * std_y, 0)
  bad = jnp.any(jnp.isnan(mean) | jnp.isnan(std), axis=-1)
  w = jnp.where(is_expertise, value, 0)
  return jnp.where(bad, jnp.nan, w).astype(dtype)


def ea_lce_loss(
    class_logits: jax.typing.ArrayLike,
    defer_logit: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    expert_mean: jax.typing.ArrayLike,
    expert_std: jax.typing.ArrayLike,
    *,
    lcb_lambda: Any = 1.0,
    weighting: str = "lcb",
    key: jax.Array | None = None,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""EA-LCE loss of expert-agnostic learning to defer.

  With ``q = softmax([g_1..g_K, g_⊥])`` over the ``K`` class logits and the
  deferral logit,

  .. math::
    \ell = -\log q_y - w \log q_⊥,

  where the constant weight ``w`` is :func:`ea_deferral_weight` (default the
  lower confidence bound ``1[y = k*]·max(0, μ_y − λσ_y)``, ``λ = 1``). The
  loss is computed in log space (finite values and gradients for logits up
  to ±1e4 and beyond) and per example; the caller reduces. Any leading
  batch shape works, including none.

  Args:
    class_logits: ``[..., K]`` floating class logits ``g``.
    defer_logit: ``[...]`` floating deferral logit ``g_⊥`` (the rejector's
      output for this expert).
    labels: ``[...]`` integer true labels in ``[0, K)``.
    expert_mean: ``[..., K]`` posterior means ``μ`` of the expert's per-class
      accuracy.
    expert_std: ``[..., K]`` posterior standard deviations ``σ`` (the square
      root of ``BetaPosterior.var``).
    lcb_lambda: ``λ >= 0`` of the LCB (scalar; may be traced).
    weighting: ``'lcb'`` (default), ``'mean'``, ``'binary'`` or ``'none'``
      (see :func:`ea_deferral_weight`).
    key: optional ``jax.random`` key for a random tie-break of ``k*`` (pass
      the key given to ``experts.ea_rejector_features`` to use the same
      ``k*``).
    where: optional ``[...]`` bool; masked examples get loss 0 and zero
      gradient (their inputs may be padding).

  Returns:
    ``[...]`` per-example losses, dtype of ``class_logits``. Under jit an
    out-of-range label is the target of no output (loss ``-w log q_⊥`` with
    ``w = 0``), never of another class, and an unmasked example whose
    profile row holds NaN (an invalid posterior) has a NaN loss (except with
    ``weighting='none'``).

  Raises:
    TypeError: non-floating logits or profiles, non-integer labels,
      non-boolean ``where``.
    ValueError: an unknown ``weighting``; mismatched shapes; (when concrete)
      labels outside ``[0, K)``, profiles outside ``[0, 1]``, ``lcb_lambda``
      negative or not finite.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> loss = losses.ea_lce_loss(jnp.array([0.0, 0.0]), jnp.array(0.0),
    ...                           jnp.array(1), jnp.array([0.5, 0.9]),
    ...                           jnp.array([0.1, 0.2]))
    >>> print(round(float(loss), 4))  # (1 + 0.7) log 3
    1.8676

  References:
    Expert-agnostic learning to defer (EA-L2D); see ``METHODS.md`` section 2.
  """
  num_classes = _check_inputs(class_logits, defer_logit, labels, expert_mean,
                              expert_std, weighting, lcb_lambda, where)
  class_logits = jnp.asarray(class_logits)
  defer_logit = jnp.asarray(defer_logit, class_logits.dtype)
  labels = jnp.asarray(labels)
  expert_mean = jnp.asarray(expert_mean)
  expert_std = jnp.asarray(expert_std)
  if where is not None:
    where = jnp.asarray(where)
    class_logits = jnp.where(where[..., None], class_logits, 0)
    defer_logit = jnp.where(where, defer_logit, 0)
    labels = jnp.where(where, labels, 0)
    expert_mean = jnp.where(where[..., None], expert_mean, 0)
    expert_std = jnp.where(where[..., None], expert_std, 0)
  w = ea_deferral_weight(labels, expert_mean, expert_std,
                         lcb_lambda=lcb_lambda, weighting=weighting, key=key)
  logits = jnp.concatenate([class_logits, defer_logit[..., None]], axis=-1)
  log_q = jax.nn.log_softmax(logits, axis=-1)
  is_label = jax.nn.one_hot(labels, num_classes + 1, dtype=jnp.bool_)
  # One-hot of the label over K + 1 outputs: the deferral output (index K)
  # is never a label target because labels are checked/clipped to [0, K).
  is_label = is_label & (jnp.arange(num_classes + 1) < num_classes)
  class_term = -jnp.sum(jnp.where(is_label, log_q, 0), axis=-1)
  # Select rather than multiply: 0 * log q_⊥ is NaN when g_⊥ = -inf. A NaN
  # weight (invalid profile) stays visible.
  defer_term = jnp.where(w > 0, -w.astype(log_q.dtype) * log_q[..., -1],
                         jnp.where(jnp.isnan(w), jnp.nan, 0))
  loss = class_term + defer_term
  if where is not None:
    loss = jnp.where(where, loss, 0)
  return loss
