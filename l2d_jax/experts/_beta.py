"""Beta-posterior expert profiles and the expert-agnostic rejector input (EA-L2D).

An expert is summarised per class ``k`` by a Beta posterior over its accuracy
on that class: with a prior ``Beta(a0_k, b0_k)`` and a context set holding
``n_k`` points of class ``k``, ``c_k`` of them answered correctly,

  a_k = a0_k + c_k,  b_k = b0_k + n_k - c_k,
  mean_k = a_k / (a_k + b_k),
  var_k = a_k b_k / ((a_k + b_k)^2 (a_k + b_k + 1)).

:func:`ea_rejector_features` turns the classifier's probabilities and this
profile into six numbers that carry no class index, so a rejector trained on
them transfers to experts whose expertise lies on unseen classes.

Every function is pure, jit-able and batched over leading axes.

References:
  Expert-agnostic learning to defer (EA-L2D); see ``METHODS.md`` section 2.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation
from l2d_jax.experts._context import Context


class BetaPosterior(NamedTuple):
  """Per-class Beta posteriors of an expert's accuracy (all ``[..., K]``).

  Attributes:
    a: posterior ``a = a0 + correct``.
    b: posterior ``b = b0 + total - correct``.
    mean: ``a / (a + b)``.
    var: ``a b / ((a + b)^2 (a + b + 1))``.
  """

  a: jax.Array
  b: jax.Array
  mean: jax.Array
  var: jax.Array


def _float_dtype(*xs: Any) -> Any:
  dtype = jnp.result_type(*xs)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.result_type(float)
  return dtype


def _check_real(x: Any, name: str) -> None:
  dtype = jnp.result_type(x)
  if dtype == jnp.bool_ or not (jnp.issubdtype(dtype, jnp.integer)
                                or jnp.issubdtype(dtype, jnp.floating)):
    raise TypeError(f"`{name}` must have an integer or floating dtype, got "
                    f"{dtype}.")


def _broadcast_shape(args: dict[str, Any]) -> tuple[int, ...]:
  try:
    return jnp.broadcast_shapes(*(jnp.shape(v) for v in args.values()))
  except ValueError:
    shapes = ", ".join(f"`{k}` {tuple(jnp.shape(v))}" for k, v in args.items())
    raise ValueError(f"shapes do not broadcast: {shapes}.") from None


def _check_min(x: Any, name: str, *, strict: bool) -> None:
  """Concrete check: finite and ``>= 0`` (``> 0`` when ``strict``)."""
  if not _validation.is_concrete(x):
    return
  v = np.asarray(x, dtype=np.float64)
  if not np.all(np.isfinite(v)):
    raise ValueError(f"`{name}` contains NaN or inf.")
  if v.size and (v.min() <= 0 if strict else v.min() < 0):
    bound = "positive" if strict else "non-negative"
    raise ValueError(f"`{name}` must be {bound}, got a minimum of "
                     f"{v.min():.6g}.")


def beta_posterior(
    correct: jax.typing.ArrayLike,
    total: jax.typing.ArrayLike,
    *,
    prior_a: jax.typing.ArrayLike = 1.0,
    prior_b: jax.typing.ArrayLike = 1.0,
) -> BetaPosterior:
  """Beta posterior of per-class accuracy from correct/total counts.

  ``correct``, ``total`` and the priors broadcast against each other (e.g. a
  scalar prior, or ``[K]`` priors for ``[..., K]`` counts). Counts may be
  integers or floats (e.g. soft counts).

  Args:
    correct: ``[..., K]`` number of correctly answered context points of each
      class, ``0 <= correct <= total``.
    total: ``[..., K]`` number of context points of each class, ``>= 0``.
    prior_a: prior ``a0 > 0`` (default 1: the uniform prior).
    prior_b: prior ``b0 > 0`` (default 1).

  Returns:
    :class:`BetaPosterior` ``(a, b, mean, var)``, each of the broadcast shape
    ``[..., K]`` and a floating dtype (the default float for integer counts).
    Under jit, where values cannot be checked, an entry with a negative
    count, ``correct > total`` or a non-positive prior is NaN in all four
    fields.

  Raises:
    TypeError: a non-numeric (or boolean) argument.
    ValueError: shapes that do not broadcast; (when concrete) negative or
      non-finite counts, ``correct > total``, non-positive or non-finite
      priors.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> post = experts.beta_posterior(jnp.array([3, 0]), jnp.array([4, 0]))
    >>> print(post.a, post.b, post.mean)
    [4. 1.] [2. 1.] [0.6666667 0.5      ]
  """
  args = {"correct": correct, "total": total, "prior_a": prior_a,
          "prior_b": prior_b}
  for name, value in args.items():
    _check_real(value, name)
  _broadcast_shape(args)
  _check_min(correct, "correct", strict=False)
  _check_min(total, "total", strict=False)
  _check_min(prior_a, "prior_a", strict=True)
  _check_min(prior_b, "prior_b", strict=True)
  if _validation.is_concrete(correct) and _validation.is_concrete(total):
    excess = np.asarray(correct, np.float64) - np.asarray(total, np.float64)
    if excess.size and excess.max() > 0:
      raise ValueError(f"`correct` must not exceed `total`; it does by up to "
                       f"{excess.max():.6g}.")
  dtype = _float_dtype(correct, total, prior_a, prior_b)
  correct, total, prior_a, prior_b = (jnp.asarray(v, dtype) for v in
                                      (correct, total, prior_a, prior_b))
  valid = (correct >= 0) & (total >= correct) & (prior_a > 0) & (prior_b > 0)
  a = prior_a + correct
  b = prior_b + (total - correct)
  s = a + b
  mean = a / s
  # var = mean (1 - mean) / (s + 1), with 1 - mean taken as b / s (no
  # cancellation near mean = 1).
  var = mean * (b / s) / (s + 1)
  nan = jnp.asarray(jnp.nan, dtype)
  return BetaPosterior(*(jnp.where(valid, v, nan) for v in (a, b, mean, var)))


def prior_from_self_assessment(
    accuracy: jax.typing.ArrayLike,
    confidence: jax.typing.ArrayLike,
    *,
    strength: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
  """Beta prior from a self-assessed accuracy and a confidence in it.

  ``a0 = 1 + s·c·â`` and ``b0 = 1 + s·c·(1 − â)``: the prior mean moves from
  1/2 towards ``â`` as the pseudo-count ``s·c`` grows; ``c = 0`` gives the
  uniform prior ``Beta(1, 1)``. Arguments broadcast.

  Args:
    accuracy: ``[..., K]`` (or broadcastable) self-assessed accuracy ``â`` in
      ``[0, 1]``.
    confidence: confidence ``c`` in ``[0, 1]``.
    strength: prior strength ``s > 0`` (pseudo-counts at full confidence).

  Returns:
    ``(a0, b0)``, floating arrays of the broadcast shape; pass them as
    ``prior_a``/``prior_b`` of :func:`beta_posterior`. Under jit an
    out-of-range argument gives NaN.

  Raises:
    TypeError: a non-numeric (or boolean) argument.
    ValueError: shapes that do not broadcast; (when concrete) ``accuracy`` or
      ``confidence`` outside ``[0, 1]``, ``strength <= 0``, NaN or inf.

  Example:
    >>> from l2d_jax import experts
    >>> a0, b0 = experts.prior_from_self_assessment(0.75, 1.0, strength=4.0)
    >>> print(a0, b0)
    4.0 2.0
  """
  args = {"accuracy": accuracy, "confidence": confidence,
          "strength": strength}
  for name, value in args.items():
    _check_real(value, name)
  _broadcast_shape(args)
  _validation.check_unit_interval(accuracy, "accuracy")
  _validation.check_unit_interval(confidence, "confidence")
  _check_min(strength, "strength", strict=True)
  dtype = _float_dtype(accuracy, confidence, strength)
  acc, conf, s = (jnp.asarray(v, dtype) for v in
                  (accuracy, confidence, strength))
  valid = ((acc >= 0) & (acc <= 1) & (conf >= 0) & (conf <= 1) & (s > 0)
           & jnp.isfinite(s))
  pseudo = s * conf
  nan = jnp.asarray(jnp.nan, dtype)
  a0 = jnp.where(valid, 1 + pseudo * acc, nan)
  b0 = jnp.where(valid, 1 + pseudo * (1 - acc), nan)
  return a0, b0


def class_counts(
    context: Context, *, num_classes: int
) -> tuple[jax.Array, jax.Array]:
  """Per-class correct and total counts of an expert's context set.

  Counts the unmasked context points by their true label: ``total_k`` points
  of class ``k``, ``correct_k`` of them answered with the true label. Works
  on any leading shape of the context arrays (``[C]`` for one set,
  ``[B, C]`` for one set per query, ``[J, B, C]`` ...) and under ``jax.vmap``
  (e.g. over experts).

  Args:
    context: a :class:`Context`; only ``labels``, ``answers`` and ``mask``
      (all ``[..., C]``) are read.
    num_classes: number of classes ``K`` (static).

  Returns:
    ``(correct, total)``, int32 ``[..., K]``. Masked points are ignored;
    under jit an unmasked point whose label is outside ``[0, K)`` is counted
    for no class, and one whose answer is outside ``[0, K)`` counts as wrong.

  Raises:
    TypeError: non-int ``num_classes``, non-integer labels/answers, non-bool
      mask.
    ValueError: ``num_classes < 1``; labels, answers and mask of different
      shapes; (when concrete) unmasked labels or answers outside ``[0, K)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> ctx = experts.Context(features=jnp.zeros((4, 1)),
    ...                       labels=jnp.array([0, 0, 1, 1]),
    ...                       answers=jnp.array([0, 1, 1, 0]),
    ...                       mask=jnp.array([True, True, True, False]))
    >>> correct, total = experts.class_counts(ctx, num_classes=3)
    >>> print(correct, total)
    [1 1 0] [2 1 0]
  """
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  labels, answers, mask = context.labels, context.answers, context.mask
  _validation.check_integer(labels, "context.labels")
  _validation.check_integer(answers, "context.answers")
  if jnp.result_type(mask) != jnp.bool_:
    raise TypeError(f"`context.mask` must be boolean, got "
                    f"{jnp.result_type(mask)}.")
  shape = tuple(jnp.shape(labels))
  if not shape or tuple(jnp.shape(answers)) != shape or tuple(
      jnp.shape(mask)) != shape:
    raise ValueError(
        f"`context.labels`, `context.answers` and `context.mask` must share "
        f"one shape [..., C], got {shape}, {tuple(jnp.shape(answers))} and "
        f"{tuple(jnp.shape(mask))}.")
  _validation.check_index_range(labels, num_classes, "context.labels",
                                where=mask)
  _validation.check_index_range(answers, num_classes, "context.answers",
                                where=mask)
  labels, answers, mask = (jnp.asarray(v) for v in (labels, answers, mask))
  # one_hot of an out-of-range label is all zeros: counted for no class.
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)
  onehot = onehot * mask[..., None]
  right = (answers == labels)[..., None]
  total = jnp.sum(onehot, axis=-2)
  correct = jnp.sum(onehot * right, axis=-2)
  return correct.astype(jnp.int32), total.astype(jnp.int32)


def expertise_class(
    mean: jax.typing.ArrayLike, *, key: jax.Array | None = None
) -> jax.Array:
  """The expertise class ``k* = argmax_k mean_k`` of each profile.

  Ties (e.g. every class at the prior mean when the context set is empty)
  go to the first index by default, which favours low class ids; with
  ``key`` a class is drawn uniformly among the tied maxima, independently
  for every row. The same ``key`` and shape give the same ``k*`` in
  :func:`ea_rejector_features` and ``losses.ea_lce_loss``.

  Args:
    mean: ``[..., K]`` floating posterior means.
    key: optional ``jax.random`` key for the random tie-break.

  Returns:
    ``[...]`` int32 class indices. A row holding NaN gets the index of a NaN
    without ``key`` (``jnp.argmax``) and an arbitrary one with it; the
    callers in this package turn such rows into NaN.

  Raises:
    TypeError: non-floating ``mean``, a bad key.
    ValueError: a scalar ``mean`` or an empty class axis.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> print(experts.expertise_class(jnp.array([0.5, 0.9, 0.9])))
    1
  """
  _validation.check_floating(mean, "mean")
  if jnp.ndim(mean) < 1 or jnp.shape(mean)[-1] < 1:
    raise ValueError(f"`mean` must have shape [..., K] with K >= 1, got "
                     f"{tuple(jnp.shape(mean))}.")
  mean = jnp.asarray(mean)
  if key is None:
    return jnp.argmax(mean, axis=-1).astype(jnp.int32)
  _validation.check_key(key)
  u = jax.random.uniform(key, jnp.shape(mean))
  tied = mean == jnp.max(mean, axis=-1, keepdims=True)
  return jnp.argmax(jnp.where(tied, u, -1.0), axis=-1).astype(jnp.int32)


def _pick(x: jax.Array, index: jax.Array) -> jax.Array:
  return jnp.take_along_axis(x, index[..., None], axis=-1)[..., 0]


def ea_rejector_features(
    class_probs: jax.typing.ArrayLike,
    mean: jax.typing.ArrayLike,
    var: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
) -> jax.Array:
  """The six class-free numbers the EA-L2D rejector reads.

  ``z = [p_ŷ, μ_ŷ, σ²_ŷ, μ_k*, σ²_k*, p_k*]`` with ``ŷ = argmax_k p_k`` (the
  classifier's prediction) and ``k* = argmax_k μ_k`` (the expert's expertise
  class, :func:`expertise_class`). No class index enters, so permuting the
  classes consistently in ``class_probs``, ``mean`` and ``var`` leaves ``z``
  unchanged (expert-agnostic invariance) whenever the argmaxes are unique.
  ``ŷ`` ties go to the first index (a set of measure zero for a softmax);
  ``k*`` ties too by default, or to a uniformly drawn tied class with
  ``key`` (recommended: an expert with an empty context set ties on every
  class).

  The three inputs share the class axis ``K`` and their leading axes
  broadcast, e.g. ``class_probs [B, K]`` against profiles ``[J, 1, K]`` for
  every (expert, query) pair. The tie-break draws on the broadcast shape, so
  pass ``expert_mean`` of that shape to ``losses.ea_lce_loss`` with the same
  key to get the same ``k*``.

  Args:
    class_probs: ``[..., K]`` classifier probabilities.
    mean: ``[..., K]`` posterior means of the expert's per-class accuracy.
    var: ``[..., K]`` posterior variances.
    key: optional ``jax.random`` key for the random ``k*`` tie-break.

  Returns:
    ``[..., 6]`` features on the broadcast leading shape, dtype promoted
    from the inputs. A row with NaN in any input is all NaN.

  Raises:
    TypeError: non-floating inputs, a bad key.
    ValueError: different class axes or leading shapes that do not
      broadcast; (when concrete)
      probabilities that are not rows summing to 1, ``mean`` or ``var``
      outside ``[0, 1]`` or NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> z = experts.ea_rejector_features(jnp.array([0.5, 0.25, 0.25]),
    ...                                  jnp.array([0.5, 0.75, 0.25]),
    ...                                  jnp.array([0.125, 0.0625, 0.0625]))
    >>> print(z)
    [0.5    0.5    0.125  0.75   0.0625 0.25  ]
  """
  for value, name in ((class_probs, "class_probs"), (mean, "mean"),
                      (var, "var")):
    _validation.check_floating(value, name)
  shape = tuple(jnp.shape(class_probs))
  if len(shape) < 1 or shape[-1] < 1:
    raise ValueError(f"`class_probs` must have shape [..., K] with K >= 1, "
                     f"got {shape}.")
  for value, name in ((mean, "mean"), (var, "var")):
    vshape = tuple(jnp.shape(value))
    if len(vshape) < 1 or vshape[-1] != shape[-1]:
      raise ValueError(f"`{name}` must have shape [..., K] with the K="
                       f"{shape[-1]} classes of `class_probs`, got {vshape}.")
  full = _broadcast_shape({"class_probs": class_probs, "mean": mean,
                           "var": var})
  _validation.check_probabilities(class_probs, "class_probs")
  _validation.check_unit_interval(mean, "mean")
  _validation.check_unit_interval(var, "var")
  dtype = jnp.result_type(class_probs, mean, var)
  p, mu, v = (jnp.broadcast_to(jnp.asarray(x, dtype), full)
              for x in (class_probs, mean, var))
  y_hat = jnp.argmax(p, axis=-1)
  k_star = expertise_class(mu, key=key)
  z = jnp.stack([_pick(p, y_hat), _pick(mu, y_hat), _pick(v, y_hat),
                 _pick(mu, k_star), _pick(v, k_star), _pick(p, k_star)],
                axis=-1)
  bad = jnp.any(jnp.isnan(p) | jnp.isnan(mu) | jnp.isnan(v), axis=-1)
  return jnp.where(bad[..., None], jnp.asarray(jnp.nan, dtype), z)
