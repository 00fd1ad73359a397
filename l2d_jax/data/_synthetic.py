"""A simulated pool of model probabilities and crowd annotations.

The embedded default data of the quickstart and the CIFAR10-H-sized pool of
the benchmark. Classes come in confusable pairs (cat/dog-like): the model's
mistakes, and most human mistakes, fall on the partner class. Every expert is
good overall but a specialist on a few pairs, which is the structure that
segregativity-based selection is designed to exploit. Nothing here is real
data; results on it are only a check that the machinery works.
"""

from __future__ import annotations

import numpy as np

from l2d_jax.data import _common
from l2d_jax.data._common import AnnotatedDataset
from l2d_jax.experts import _annotations


def balanced_assignment(
    rng: np.random.Generator,
    *,
    num_images: int,
    num_experts: int,
    answers_per_expert: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Deals images to experts so that each image gets nearly equal answers.

  Consecutive random permutations of the images are cut into windows of
  ``answers_per_expert``; an expert never answers the same image twice (a
  repeat at a permutation boundary is dropped), as in CIFAR-10H where each
  annotator saw 200 distinct images.

  Returns:
    ``(image, expert)`` int32 arrays, one row per answer.

  Raises:
    TypeError: a size that is not an integer.
    ValueError: a size below 1.
  """
  num_images = _common.check_int(num_images, "num_images", minimum=1)
  num_experts = _common.check_int(num_experts, "num_experts", minimum=1)
  answers_per_expert = _common.check_int(answers_per_expert,
                                         "answers_per_expert", minimum=1)
  total = num_experts * answers_per_expert
  reps = -(-total // num_images)
  slots = np.concatenate([rng.permutation(num_images) for _ in range(reps)])
  image = slots[:total].reshape(num_experts, answers_per_expert)
  expert = np.repeat(np.arange(num_experts), answers_per_expert).reshape(
      image.shape)
  # Drop repeats of an image within one expert's window.
  order = np.argsort(image, axis=1, kind="stable")
  srt = np.take_along_axis(image, order, axis=1)
  dup_sorted = np.concatenate(
      [np.zeros((num_experts, 1), bool), srt[:, 1:] == srt[:, :-1]], axis=1)
  dup = np.zeros_like(dup_sorted)
  np.put_along_axis(dup, order, dup_sorted, axis=1)
  keep = ~dup
  return image[keep].astype(np.int32), expert[keep].astype(np.int32)


def synthetic_pool(
    seed: int = 0,
    *,
    num_images: int = 2000,
    num_classes: int = 10,
    num_experts: int = 100,
    answers_per_expert: int = 200,
    model_strength: float = 6.0,
    expert_accuracy: float = 0.9,
    specialist_accuracy: float = 0.99,
    pairs_per_specialist: int = 1,
) -> AnnotatedDataset:
  """Simulated model probabilities and crowd answers on a pool of images.

  Args:
    seed: numpy seed; the pool is a pure function of the arguments.
    num_images: pool size N. Sizes may be Python or numpy integers.
    num_classes: K (even: classes form confusable pairs ``(2i, 2i + 1)``).
    num_experts: J.
    answers_per_expert: answers per expert (each image then gets about
      ``J * answers_per_expert / N`` answers).
    model_strength: margin of the true class logit; larger = better model.
    expert_accuracy: expert accuracy outside its specialty.
    specialist_accuracy: accuracy on the pairs it specialises in.
    pairs_per_specialist: how many class pairs each expert masters.

  Returns:
    ``AnnotatedDataset`` named ``"synthetic"``.

  Raises:
    TypeError: a size that is not an integer (Python or numpy; bools and
      floats are refused).
    ValueError: odd ``num_classes``, sizes that are not positive, or
      accuracies outside [0, 1].
  """
  num_images = _common.check_int(num_images, "num_images", minimum=1)
  num_classes = _common.check_int(num_classes, "num_classes", minimum=2)
  num_experts = _common.check_int(num_experts, "num_experts", minimum=1)
  answers_per_expert = _common.check_int(answers_per_expert,
                                         "answers_per_expert", minimum=1)
  pairs_per_specialist = _common.check_int(pairs_per_specialist,
                                           "pairs_per_specialist", minimum=0)
  if num_classes % 2:
    raise ValueError(f"`num_classes` must be even and >= 2, got {num_classes}.")
  if answers_per_expert > num_images:
    raise ValueError("`answers_per_expert` cannot exceed `num_images` "
                     f"({answers_per_expert} > {num_images}).")
  for name, v in (("expert_accuracy", expert_accuracy),
                  ("specialist_accuracy", specialist_accuracy)):
    if not 0.0 <= v <= 1.0:
      raise ValueError(f"`{name}` must lie in [0, 1], got {v}.")
  if not np.isfinite(model_strength):
    raise ValueError(f"`model_strength` must be finite, got {model_strength}.")
  rng = np.random.default_rng(seed)
  k = num_classes
  labels = rng.integers(0, k, num_images).astype(np.int32)
  partner = labels ^ 1
  # Model: a noisy margin for the true class, a smaller one for its partner,
  # and an image-level difficulty that moves mass to the partner.
  difficulty = rng.beta(2.0, 5.0, num_images)
  logits = rng.normal(0.0, 1.0, (num_images, k))
  rows = np.arange(num_images)
  logits[rows, labels] += model_strength * (1.0 - difficulty)
  logits[rows, partner] += model_strength * difficulty * 0.8
  logits -= logits.max(axis=1, keepdims=True)
  probs = np.exp(logits)
  probs /= probs.sum(axis=1, keepdims=True)
  # Experts: specialists on a few pairs.
  num_pairs = k // 2
  skill = np.full((num_experts, num_pairs), expert_accuracy)
  for e in range(num_experts):
    mine = rng.choice(num_pairs, size=min(pairs_per_specialist, num_pairs),
                      replace=False)
    skill[e, mine] = specialist_accuracy
  image, expert = balanced_assignment(
      rng, num_images=num_images, num_experts=num_experts,
      answers_per_expert=answers_per_expert)
  y = labels[image]
  p_right = skill[expert, y // 2] * (1.0 - 0.15 * difficulty[image])
  right = rng.random(y.shape[0]) < p_right
  to_partner = rng.random(y.shape[0]) < 0.7
  other = (y + rng.integers(1, k, y.shape[0])) % k
  answer = np.where(right, y, np.where(to_partner, y ^ 1, other))
  annotations = _annotations.Annotations.from_long(
      image, expert, answer.astype(np.int32), num_images=num_images,
      num_experts=num_experts, num_classes=k)
  return AnnotatedDataset(
      probs=probs.astype(np.float32),
      labels=labels,
      annotations=annotations,
      class_names=tuple(f"class_{c}" for c in range(k)),
      expert_names=tuple(f"expert_{e}" for e in range(num_experts)),
      name="synthetic",
  )
