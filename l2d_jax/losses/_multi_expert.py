"""Multi-expert learning-to-defer surrogates: softmax and one-vs-all.

Both surrogates score ``K + J`` outputs per example: ``K`` class logits
``g_1..g_K`` followed by ``J`` deferral logits ``g_⊥1..g_⊥J``, one per expert.
The number of classes is never passed; it is ``logits.shape[-1] - J`` with
``J`` read from ``expert_predictions`` (losses) or ``num_experts``
(estimators).

Every function takes any leading batch shape ``[...]`` (none for a single
example), so it works under ``jax.vmap``, e.g. for per-example gradients.
Losses are per example; the caller reduces.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from l2d_jax import _validation


def _check_loss_inputs(
    logits: Any, labels: Any, expert_predictions: Any, where: Any
) -> tuple[int, int]:
  """Trace-time (and, when concrete, value) checks; returns ``(K, J)``.

  Any leading batch shape ``[...]`` is allowed (none under ``jax.vmap`` over
  single examples); it must be the same for every argument.
  """
  _validation.check_floating(logits, "logits")
  _validation.check_integer(labels, "labels")
  _validation.check_integer(expert_predictions, "expert_predictions")
  if jnp.ndim(logits) < 1:
    raise ValueError("`logits` must have shape [..., K + J], got a scalar.")
  batch = tuple(jnp.shape(logits)[:-1])
  if tuple(jnp.shape(labels)) != batch:
    raise ValueError(
        f"`labels` must have shape [...] equal to the batch shape {batch} of "
        f"`logits` [..., K + J], got shape {tuple(jnp.shape(labels))}.")
  shape = tuple(jnp.shape(expert_predictions))
  if len(shape) != len(batch) + 1 or shape[:-1] != batch:
    raise ValueError(
        f"`expert_predictions` must have shape [..., J] with the batch shape "
        f"{batch} of `logits`, got shape {shape}.")
  num_experts = shape[-1]
  if num_experts < 1:
    raise ValueError("`expert_predictions` must have shape [..., J] with "
                     "J >= 1, got J=0.")
  width = jnp.shape(logits)[-1]
  if width - num_experts < 1:
    raise ValueError(
        f"`logits` must have shape [..., K + J] with K >= 1: "
        f"`expert_predictions` gives J={num_experts} experts, so `logits` "
        f"needs at least {num_experts + 1} columns, got shape "
        f"{tuple(jnp.shape(logits))}.")
  if where is not None:
    if tuple(jnp.shape(where)) != batch:
      raise ValueError(
          f"`where` must have shape [...] equal to the batch shape {batch} of "
          f"`logits`, got shape {tuple(jnp.shape(where))}.")
    if jnp.result_type(where) != jnp.bool_:
      raise TypeError(
          f"`where` must be boolean, got {jnp.result_type(where)}.")
  num_classes = width - num_experts
  _validation.check_index_range(labels, num_classes, "labels", where=where)
  _validation.check_index_range(
      expert_predictions, num_classes, "expert_predictions", where=where)
  return num_classes, num_experts


def _masked_inputs(logits, labels, expert_predictions, where):
  """Replaces masked rows by zeros before any arithmetic (double-where).

  Masked rows may hold padding (NaN logits, label -1); zeroing them first keeps
  both the loss and its gradient exactly zero there instead of NaN.
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  expert_predictions = jnp.asarray(expert_predictions)
  if where is None:
    return logits, labels, expert_predictions
  where = jnp.asarray(where)
  return (jnp.where(where[..., None], logits, 0),
          jnp.where(where, labels, 0),
          jnp.where(where[..., None], expert_predictions, 0))


def _targets(labels, expert_predictions, num_classes):
  """``[..., K + J]`` bool: the true class, then the experts that are right."""
  is_label = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
  correct = expert_predictions == labels[..., None]
  return jnp.concatenate([is_label, correct], axis=-1)


def multi_expert_softmax_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    expert_predictions: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Softmax (cross-entropy) surrogate for deferral to J experts.

  With ``q = softmax([g_1..g_K, g_⊥1..g_⊥J])`` over all ``K + J`` outputs,

  .. math::
    \ell = -\log q_y - \sum_{j=1}^J 1[m_j = y] \log q_{⊥j}.

  For ``J = 1`` this is the cross-entropy surrogate of Mozannar & Sontag
  (2020). Its minimiser satisfies ``q_⊥j = P(m_j=y|x) / (1 + Σ_j' P(m_j'=y|x))``;
  see :func:`softmax_correctness` and :func:`softmax_class_probabilities`.

  The loss is per example; the caller reduces (mean, masked mean, ...). Any
  leading batch shape ``[...]`` works, including none: ``jax.vmap`` over single
  examples (e.g. for per-example gradients) gives the batched result.

  Args:
    logits: ``[..., K + J]`` floating; ``K`` class logits then ``J`` deferral
      logits.
    labels: ``[...]`` integer true labels in ``[0, K)``.
    expert_predictions: ``[..., J]`` integer expert answers in ``[0, K)``;
      ``J`` is read from this shape and ``K = logits.shape[-1] - J``.
    where: optional ``[...]`` bool; masked examples get loss 0 and zero
      gradient (their inputs may be padding, even NaN or -1).

  Returns:
    ``[...]`` per-example losses, dtype of ``logits``. Logits of -inf are
    allowed for outputs that are not targets of the example (e.g. an expert
    that cannot answer it): the loss and gradient stay finite.

  Raises:
    TypeError: non-floating ``logits``, non-integer ``labels`` or
      ``expert_predictions``, non-boolean ``where``.
    ValueError: a scalar ``logits``; ``labels``, ``expert_predictions`` or
      ``where`` whose batch shape differs from ``logits.shape[:-1]``;
      ``J < 1`` or ``K < 1``; labels or expert predictions outside
      ``[0, K)`` on unmasked examples (checked when concrete; under jit an
      out-of-range label is the target of no class output, never of
      another class).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> logits = jnp.array([[2.0, 0.0, 1.0, -1.0], [0.0, 1.0, 0.0, 2.0]])
    >>> labels = jnp.array([0, 1])  # K = 2 classes, J = 2 experts
    >>> experts = jnp.array([[0, 1], [1, 1]])
    >>> loss = losses.multi_expert_softmax_loss(logits, labels, experts)
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [1.8804 4.4814]

  References:
    Mozannar & Sontag, Consistent Estimators for Learning to Defer to an
    Expert, ICML 2020.

    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023.
  """
  num_classes, _ = _check_loss_inputs(logits, labels, expert_predictions, where)
  logits, labels, expert_predictions = _masked_inputs(
      logits, labels, expert_predictions, where)
  log_q = jax.nn.log_softmax(logits, axis=-1)
  targets = _targets(labels, expert_predictions, num_classes)
  # Select rather than multiply: 0 * log q = NaN when an output that is not a
  # target has logit -inf (e.g. an expert who cannot answer this example).
  loss = -jnp.sum(jnp.where(targets, log_q, 0), axis=-1)
  if where is not None:
    loss = jnp.where(where, loss, 0)
  return loss


def multi_expert_ova_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    expert_predictions: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""One-vs-all (logistic) surrogate for deferral to J experts.

  With the logistic loss :math:`\phi(z) = \log(1 + e^{-z})`,

  .. math::
    \ell = \phi(g_y) + \sum_{y' \ne y} \phi(-g_{y'})
      + \sum_j \phi(-g_{⊥j}) + \sum_j 1[m_j = y]\,(\phi(g_{⊥j}) - \phi(-g_{⊥j})).

  Equivalently, each of the ``K + J`` outputs is an independent binary
  classifier: class ``k`` with target ``1[y = k]``, deferral ``j`` with target
  ``1[m_j = y]``. It is computed in that form (no difference of two large
  terms). For ``J = 1`` this is the surrogate of Verma & Nalisnick (2022).

  The loss is per example; the caller reduces. Leading batch shapes and
  ``jax.vmap`` work as for :func:`multi_expert_softmax_loss`.

  Args:
    logits: ``[..., K + J]`` floating; ``K`` class logits then ``J`` deferral
      logits.
    labels: ``[...]`` integer true labels in ``[0, K)``.
    expert_predictions: ``[..., J]`` integer expert answers in ``[0, K)``.
    where: optional ``[...]`` bool; masked examples get loss 0 and zero
      gradient (their inputs may be padding, even NaN or -1).

  Returns:
    ``[...]`` per-example losses, dtype of ``logits``. As for the softmax
    loss, -inf logits are allowed on outputs whose target is 0.

  Raises:
    TypeError: non-floating ``logits``, non-integer ``labels`` or
      ``expert_predictions``, non-boolean ``where``.
    ValueError: as for :func:`multi_expert_softmax_loss`.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> logits = jnp.array([[2.0, 0.0, 1.0, -1.0], [0.0, 1.0, 0.0, 2.0]])
    >>> labels = jnp.array([0, 1])
    >>> experts = jnp.array([[0, 1], [1, 1]])
    >>> loss = losses.multi_expert_ova_loss(logits, labels, experts)
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [1.4466 1.8265]

  References:
    Verma & Nalisnick, Calibrated Learning to Defer with One-vs-All
    Classifiers, ICML 2022.

    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023.
  """
  num_classes, _ = _check_loss_inputs(logits, labels, expert_predictions, where)
  logits, labels, expert_predictions = _masked_inputs(
      logits, labels, expert_predictions, where)
  # phi(z) = -log_sigmoid(z): finite value and gradient for any finite z.
  # One phi per output, at +z where the target is 1 and -z where it is 0
  # (the same values as selecting between phi(z) and phi(-z), half the work).
  targets = _targets(labels, expert_predictions, num_classes)
  signed = jnp.where(targets, logits, -logits)
  loss = jnp.sum(-jax.nn.log_sigmoid(signed), axis=-1)
  if where is not None:
    loss = jnp.where(where, loss, 0)
  return loss


def softmax_correctness(
    logits: jax.typing.ArrayLike, *, num_experts: int, cap: bool = True
) -> jax.Array:
  r"""Estimates P(m_j = y | x) from softmax-surrogate logits.

  At the minimiser of :func:`multi_expert_softmax_loss`,

  .. math::
    P(m_j = y | x) = \frac{q_{⊥j}}{1 - \sum_{j'} q_{⊥j'}}
      = \frac{q_{⊥j}}{\sum_k q_k}
      = \exp\big(g_{⊥j} - \mathrm{logsumexp}_k\, g_k\big),

  so the shared softmax normaliser cancels and the estimate is computed
  without forming ``1 - Σ q_⊥`` (which cancels catastrophically).
  Away from the optimum it can exceed 1 (the degeneracy the paper studies):
  ``cap=True`` clips it to 1, as the paper does before computing ECE.

  Args:
    logits: ``[..., K + J]`` floating.
    num_experts: the number of experts J (static; Python or NumPy int).
    cap: clip the estimate at 1. Capped values and gradients are finite for
      any finite logits; uncapped ones overflow to inf once
      ``g_⊥j - logsumexp(g_1..g_K)`` exceeds the log of the dtype's maximum.

  Returns:
    ``[..., J]`` estimates, dtype of ``logits``.

  Raises:
    TypeError: ``num_experts`` not an int, or non-floating ``logits``.
    ValueError: ``num_experts < 1`` or fewer than ``J + 1`` columns.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> logits = jnp.array([[0.0, 0.0, 0.0, 2.0]])  # K = 2, J = 2
    >>> with jnp.printoptions(precision=4):
    ...   print(losses.softmax_correctness(logits, num_experts=2, cap=False))
    [[0.5    3.6945]]
    >>> print(losses.softmax_correctness(logits, num_experts=2))
    [[0.5 1. ]]

  References:
    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023 (Eq. 2).
  """
  num_classes = _validation.check_num_experts(logits, num_experts)
  logits = jnp.asarray(logits)
  log_p = logits[..., num_classes:] - jax.nn.logsumexp(
      logits[..., :num_classes], axis=-1, keepdims=True)
  if cap:
    log_p = jnp.minimum(log_p, 0)
  return jnp.exp(log_p)


def ova_correctness(
    logits: jax.typing.ArrayLike, *, num_experts: int
) -> jax.Array:
  """Estimates P(m_j = y | x) from OvA-surrogate logits: ``sigmoid(g_⊥j)``.

  Each estimate depends on its own deferral logit only and always lies in
  ``[0, 1]``.

  Args:
    logits: ``[..., K + J]`` floating.
    num_experts: the number of experts J (static; Python or NumPy int).

  Returns:
    ``[..., J]`` estimates in ``[0, 1]``, dtype of ``logits``.

  Raises:
    TypeError: ``num_experts`` not an int, or non-floating ``logits``.
    ValueError: ``num_experts < 1`` or fewer than ``J + 1`` columns.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> logits = jnp.array([[0.0, 0.0, 0.0, 2.0]])
    >>> with jnp.printoptions(precision=4):
    ...   print(losses.ova_correctness(logits, num_experts=2))
    [[0.5    0.8808]]

  References:
    Verma & Nalisnick, Calibrated Learning to Defer with One-vs-All
    Classifiers, ICML 2022.
  """
  num_classes = _validation.check_num_experts(logits, num_experts)
  return jax.nn.sigmoid(jnp.asarray(logits)[..., num_classes:])


def softmax_class_probabilities(
    logits: jax.typing.ArrayLike, *, num_experts: int
) -> jax.Array:
  """Estimates P(y | x) from softmax-surrogate logits.

  At the optimum ``q_k = P(y=k|x) / (1 + Σ_j P(m_j=y|x))`` for every class, so
  ``P(y|x)`` is the softmax over the K class logits alone.

  Args:
    logits: ``[..., K + J]`` floating.
    num_experts: the number of experts J (static; Python or NumPy int).

  Returns:
    ``[..., K]`` probabilities summing to 1.

  Raises:
    TypeError: ``num_experts`` not an int, or non-floating ``logits``.
    ValueError: ``num_experts < 1`` or fewer than ``J + 1`` columns.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> logits = jnp.array([[0.0, 0.0, 5.0]])
    >>> print(losses.softmax_class_probabilities(logits, num_experts=1))
    [[0.5 0.5]]

  References:
    Mozannar & Sontag, Consistent Estimators for Learning to Defer to an
    Expert, ICML 2020.
  """
  num_classes = _validation.check_num_experts(logits, num_experts)
  return jax.nn.softmax(jnp.asarray(logits)[..., :num_classes], axis=-1)


def ova_class_probabilities(
    logits: jax.typing.ArrayLike, *, num_experts: int, normalize: bool = False
) -> jax.Array:
  """Estimates P(y | x) from OvA-surrogate logits: ``sigmoid(g_k)``.

  Args:
    logits: ``[..., K + J]`` floating.
    num_experts: the number of experts J (static; Python or NumPy int).
    normalize: divide by the row sum (the raw one-vs-all estimates need not
      sum to 1 away from the optimum).

  Returns:
    ``[..., K]`` per-class estimates in ``[0, 1]``.

  Raises:
    TypeError: ``num_experts`` not an int, or non-floating ``logits``.
    ValueError: ``num_experts < 1`` or fewer than ``J + 1`` columns.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> logits = jnp.array([[0.0, 0.0, 5.0]])
    >>> print(losses.ova_class_probabilities(logits, num_experts=1))
    [[0.5 0.5]]

  References:
    Verma & Nalisnick, Calibrated Learning to Defer with One-vs-All
    Classifiers, ICML 2022.
  """
  num_classes = _validation.check_num_experts(logits, num_experts)
  class_logits = jnp.asarray(logits)[..., :num_classes]
  if normalize:
    # sigmoid(g) / Σ sigmoid(g) in log space: finite for any finite logits.
    log_p = jax.nn.log_sigmoid(class_logits)
    return jax.nn.softmax(log_p, axis=-1)
  return jax.nn.sigmoid(class_logits)
