"""L2D-Pop surrogate (one deferral logit) and the FixMatch consistency term."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from l2d_jax import _validation
from l2d_jax.losses._multi_expert import multi_expert_softmax_loss


def population_l2d_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    answers: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""L2D-Pop softmax surrogate: one deferral logit for the query's expert.

  .. math::
    \ell = -\log q_y - 1[m = y] \log q_⊥, \quad
    q = \mathrm{softmax}([g_1..g_K, g_⊥(x, ψ_e)]),

  i.e. :func:`multi_expert_softmax_loss` with ``J = 1`` (this function only
  reshapes ``answers``). The expert is whichever one the query's context set
  describes, so ``answers[i]`` is that expert's answer on example ``i``.

  Args:
    logits: ``[..., K + 1]`` floating, e.g. from ``models.PopulationL2D``.
    labels: ``[...]`` integer true labels in ``[0, K)``.
    answers: ``[...]`` integer answers of the query's expert in ``[0, K)``.
    where: optional ``[...]`` bool; masked examples get loss 0 and zero
      gradient.

  Returns:
    ``[...]`` per-example losses (natural log); the caller reduces.

  Raises:
    TypeError, ValueError: as :func:`multi_expert_softmax_loss`; ``answers``
      whose shape differs from ``labels``.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> logits = jnp.array([[2.0, 0.0, 1.0], [0.0, 1.0, 2.0]])  # K = 2
    >>> loss = losses.population_l2d_loss(logits, jnp.array([0, 1]),
    ...                                   jnp.array([1, 1]))
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.4076 1.8152]

  References:
    Mozannar & Sontag, Consistent Estimators for Learning to Defer to an
    Expert, ICML 2020.

    Tailor, Patra, Verma, Manggala & Nalisnick, Learning to Defer to a
    Population: A Meta-Learning Approach, AISTATS 2024.
  """
  _validation.check_integer(answers, "answers")
  if tuple(jnp.shape(answers)) != tuple(jnp.shape(labels)):
    raise ValueError(f"`answers` must have the shape of `labels` "
                     f"{tuple(jnp.shape(labels))}, got "
                     f"{tuple(jnp.shape(answers))}.")
  if jnp.ndim(logits) >= 1:
    _validation.check_index_range(answers, jnp.shape(logits)[-1] - 1,
                                  "answers", where=where)
  return multi_expert_softmax_loss(logits, labels,
                                   jnp.asarray(answers)[..., None],
                                   where=where)


def fixmatch_consistency(
    weak_logits: jax.typing.ArrayLike,
    strong_logits: jax.typing.ArrayLike,
    *,
    threshold: float = 0.95,
) -> tuple[jax.Array, jax.Array]:
  r"""FixMatch consistency: CE of the strong view against the weak view's argmax.

  With ``p = softmax(weak_logits)`` (gradient stopped: the pseudo label is a
  target, not a prediction) and ``ŷ = argmax p``,

  .. math::
    \ell = 1[\max p \ge τ] \cdot (-\log \mathrm{softmax}(s)_{ŷ}).

  The loss is per example; the paper's ``L_u`` is the mean over *all*
  unlabelled examples (masked ones count as 0), so use ``loss.mean()``.
  For a binary predictor (will the expert be right?) pass two logits.

  Args:
    weak_logits: ``[..., K]`` logits on the weakly augmented views.
    strong_logits: ``[..., K]`` logits on the strongly augmented views.
    threshold: confidence threshold ``τ`` in ``[0, 1]``.

  Returns:
    ``(loss, mask)``: ``[...]`` per-example losses (0 where not confident,
    with zero gradient) and the ``[...]`` bool mask of confident examples.

  Raises:
    TypeError: non-floating logits.
    ValueError: mismatched shapes, fewer than one class, ``threshold``
      outside ``[0, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> weak = jnp.array([[10.0, 0.0], [0.2, 0.0]])
    >>> strong = jnp.array([[0.0, 0.0], [0.0, 5.0]])
    >>> loss, mask = losses.fixmatch_consistency(weak, strong)
    >>> print(mask)
    [ True False]
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.6931 0.    ]

  References:
    Sohn et al., FixMatch: Simplifying Semi-Supervised Learning with
    Consistency and Confidence, NeurIPS 2020.
  """
  _validation.check_floating(weak_logits, "weak_logits")
  _validation.check_floating(strong_logits, "strong_logits")
  if jnp.ndim(weak_logits) < 1 or jnp.shape(weak_logits)[-1] < 1:
    raise ValueError(f"`weak_logits` must have shape [..., K] with K >= 1, "
                     f"got {tuple(jnp.shape(weak_logits))}.")
  if tuple(jnp.shape(strong_logits)) != tuple(jnp.shape(weak_logits)):
    raise ValueError(f"`strong_logits` must have the shape of `weak_logits` "
                     f"{tuple(jnp.shape(weak_logits))}, got "
                     f"{tuple(jnp.shape(strong_logits))}.")
  if isinstance(threshold, (int, float)) and not 0.0 <= threshold <= 1.0:
    raise ValueError(f"`threshold` must lie in [0, 1], got {threshold}.")
  probs = jax.nn.softmax(jax.lax.stop_gradient(jnp.asarray(weak_logits)), -1)
  pseudo = jnp.argmax(probs, axis=-1)
  mask = jnp.max(probs, axis=-1) >= threshold
  log_q = jax.nn.log_softmax(jnp.asarray(strong_logits), axis=-1)
  nll = -jnp.take_along_axis(log_q, pseudo[..., None], axis=-1)[..., 0]
  return jnp.where(mask, nll, 0.0), mask
