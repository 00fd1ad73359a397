"""Optax optimisers with cosine learning-rate schedules."""

from __future__ import annotations

import optax


def cosine_schedule(learning_rate: float, total_steps: int, *,
                    warmup_steps: int = 0,
                    final_fraction: float = 0.0) -> optax.Schedule:
  """Linear warm-up then cosine decay to ``final_fraction * learning_rate``.

  Args:
    learning_rate: peak learning rate.
    total_steps: number of optimiser steps of the whole run (warm-up
      included).
    warmup_steps: linear warm-up steps from 0 (0 disables warm-up).
    final_fraction: final learning rate as a fraction of the peak.

  Returns:
    An optax schedule ``step -> learning rate``.

  Raises:
    ValueError: ``total_steps <= warmup_steps`` or negative values.

  Example:
    >>> s = cosine_schedule(0.1, 100)
    >>> round(float(s(0)), 6), round(float(s(50)), 6), round(float(s(100)), 6)
    (0.1, 0.05, 0.0)
  """
  if total_steps < 1 or warmup_steps < 0 or warmup_steps >= total_steps:
    raise ValueError(
        f"need 0 <= warmup_steps < total_steps, got warmup_steps="
        f"{warmup_steps}, total_steps={total_steps}.")
  if learning_rate <= 0 or not 0.0 <= final_fraction <= 1.0:
    raise ValueError(
        f"need learning_rate > 0 and final_fraction in [0, 1], got "
        f"{learning_rate} and {final_fraction}.")
  if warmup_steps == 0:
    return optax.cosine_decay_schedule(learning_rate, total_steps,
                                       alpha=final_fraction)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
      decay_steps=total_steps, end_value=learning_rate * final_fraction)


def sgd_cosine(learning_rate: float, total_steps: int, *,
               momentum: float = 0.9, nesterov: bool = False,
               weight_decay: float = 0.0, warmup_steps: int = 0,
               final_fraction: float = 0.0) -> optax.GradientTransformation:
  """SGD with momentum, L2 weight decay and a cosine schedule.

  Weight decay is added to the gradient before momentum (PyTorch's
  ``SGD(weight_decay=...)``, the usual WRN recipe: lr 0.1, momentum 0.9,
  weight decay 5e-4).

  Args:
    learning_rate: peak learning rate.
    total_steps: optimiser steps of the whole run.
    momentum: momentum coefficient.
    nesterov: Nesterov momentum.
    weight_decay: L2 coefficient applied to every parameter (0 disables).
    warmup_steps: linear warm-up steps.
    final_fraction: final learning rate as a fraction of the peak.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> tx = sgd_cosine(0.1, 1000, weight_decay=5e-4)
  """
  schedule = cosine_schedule(learning_rate, total_steps,
                             warmup_steps=warmup_steps,
                             final_fraction=final_fraction)
  sgd = optax.sgd(schedule, momentum=momentum, nesterov=nesterov)
  if weight_decay:
    return optax.chain(optax.add_decayed_weights(weight_decay), sgd)
  return sgd


def adam_cosine(learning_rate: float, total_steps: int, *,
                b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0, warmup_steps: int = 0,
                final_fraction: float = 0.0) -> optax.GradientTransformation:
  """Adam (AdamW when ``weight_decay > 0``) with a cosine schedule.

  Args:
    learning_rate: peak learning rate.
    total_steps: optimiser steps of the whole run.
    b1: first-moment decay.
    b2: second-moment decay.
    eps: numerical stability constant.
    weight_decay: decoupled weight decay (AdamW); 0 gives plain Adam.
    warmup_steps: linear warm-up steps.
    final_fraction: final learning rate as a fraction of the peak.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> tx = adam_cosine(1e-3, 500, warmup_steps=50)
  """
  schedule = cosine_schedule(learning_rate, total_steps,
                             warmup_steps=warmup_steps,
                             final_fraction=final_fraction)
  if weight_decay:
    return optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                       weight_decay=weight_decay)
  return optax.adam(schedule, b1=b1, b2=b2, eps=eps)
