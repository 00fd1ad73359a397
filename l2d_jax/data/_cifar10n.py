"""CIFAR-10N / CIFAR-100N: crowd labels of the 50,000 CIFAR train images (Wei et al.).

Files of ``cifar10n/`` (github UCSC-REAL/cifar-10-100n; the ``.npz`` files hold
the arrays of the original ``.pt`` files, all ``[50000]`` int64, train order):

- CIFAR-10N: ``CIFAR-10_human.npz`` with ``clean_label`` (CIFAR-10 truth),
  ``aggre_label`` (majority vote), ``worse_label`` (a wrong label when any
  worker gave one) and ``random_label1..3`` (the three workers' answers);
  ``side_info_cifar10N.csv`` with columns ``Image-batch`` (``"a--b"``, the
  train indices a..b inclusive, 10 images), ``Worker1-id``,
  ``Work-time-in-seconds-1``, ``Worker2-id``, ... ``Work-time-in-seconds-3``:
  worker *i* of a batch gave ``random_label<i>`` of its images.
- CIFAR-100N: ``CIFAR-100_human.npz`` with ``clean_label``, ``noisy_label``
  (the single worker's answer), ``clean_coarse_label`` and
  ``noisy_coarse_label``; ``side_info_cifar100N.csv`` with ``Image-batch``
  (5 images), ``Worker-id``, ``Work-time-in-seconds``: one worker per image.

References:
  Wei, Zhu, Cheng, Liu, Niu, Liu. Learning with Noisy Labels Revisited: A
  Study Using Real-World Human Annotations. ICLR 2022.
"""

from __future__ import annotations

import pathlib

import numpy as np

from l2d_jax.data import _common

_NUM_IMAGES = 50_000

CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")

# which -> (npz, side info, batch size, [(worker column, label array)], classes)
_SPECS = {
    "cifar10": ("CIFAR-10_human.npz", "side_info_cifar10N.csv", 10,
                (("Worker1-id", "random_label1"), ("Worker2-id", "random_label2"),
                 ("Worker3-id", "random_label3")), _common.CIFAR10_CLASSES),
    "cifar100": ("CIFAR-100_human.npz", "side_info_cifar100N.csv", 5,
                 (("Worker-id", "noisy_label"),), CIFAR100_CLASSES),
}
_COARSE = ("clean_coarse_label", "noisy_coarse_label")


def _spec(which: str):
  if which not in _SPECS:
    raise ValueError(f"unknown `which` {which!r}; choose one of "
                     f"{tuple(_SPECS)}.")
  return _SPECS[which]


def load_cifar10n_labels(
    data_dir: _common.PathLike,
    *,
    which: str = "cifar10",
) -> dict[str, np.ndarray]:
  """Loads every label array of CIFAR-10N or CIFAR-100N.

  Args:
    data_dir: the data root holding ``cifar10n/``.
    which: ``"cifar10"`` or ``"cifar100"``.

  Returns:
    Dict of ``[50000]`` int32 arrays in train order: for CIFAR-10N
    ``clean_label``, ``aggre_label``, ``worse_label``, ``random_label1..3``;
    for CIFAR-100N ``clean_label``, ``noisy_label``, ``clean_coarse_label``,
    ``noisy_coarse_label`` (coarse labels in [0, 20)).

  Raises:
    ValueError: unknown ``which``, missing arrays, wrong shapes or labels out
      of range; ``DataFileError`` for an unreadable, damaged, encrypted or
      oversized archive or member.
    FileNotFoundError: the file is missing.
  """
  npz_name, _, _, _, classes = _spec(which)
  path = pathlib.Path(data_dir) / "cifar10n" / npz_name
  arrays = _common.load_npz(path, "CIFAR-N label file")
  names = list(arrays)
  needed = ["clean_label"] + [label for _, label in _SPECS[which][3]]
  missing = [n for n in needed if n not in names]
  if missing:
    raise _common.DataFileError(path, f"missing arrays {missing}; found "
                                f"{names}.")
  out = {}
  for name in names:
    num_classes = 20 if name in _COARSE else len(classes)
    out[name] = _common.check_label_array(
        arrays[name], num_images=_NUM_IMAGES, num_classes=num_classes,
        source=f"{path}[{name}]")
  return out


def load_cifar10n(
    data_dir: _common.PathLike,
    *,
    which: str = "cifar10",
) -> _common.AnnotatedDataset:
  """Loads CIFAR-10N (3 workers per image) or CIFAR-100N (1 worker per image).

  Each batch row of the side-information file names the workers of its
  images; worker *i* of a CIFAR-10N batch answered ``random_label<i>`` (the
  CIFAR-100N worker answered ``noisy_label``). Truth is ``clean_label``.

  Args:
    data_dir: the data root holding ``cifar10n/``.
    which: ``"cifar10"`` (747 workers, K=10) or ``"cifar100"`` (K=100, fine
      labels).

  Returns:
    ``AnnotatedDataset`` over the 50,000 train images named ``"cifar10n"`` or
    ``"cifar100n"``, ``probs=None``, expert names = worker ids (numeric
    order), and ``extras`` holding every label array of
    :func:`load_cifar10n_labels`.

  Raises:
    ValueError: unknown ``which``, a malformed batch row (naming file and
      line), text that is not UTF-8, or batches that do not cover every
      train image exactly once.
    FileNotFoundError: a file is missing.
  """
  _, side_name, batch_size, workers, classes = _spec(which)
  arrays = load_cifar10n_labels(data_dir, which=which)
  path = pathlib.Path(data_dir) / "cifar10n" / side_name
  worker_cols = [w for w, _ in workers]
  columns, lines = _common.read_csv(
      path, required=["Image-batch", *worker_cols],
      what="CIFAR-N side-information file")
  starts = []
  for batch, line in zip(columns["Image-batch"], lines.tolist()):
    parts = batch.strip().split("--")
    if len(parts) != 2:
      raise _common.row_error(path, line, "column 'Image-batch' must look like "
                              f"'a--b', got {batch!r}.")
    first, last = (_common.parse_int(p, path=path, line=line,
                                     column="Image-batch") for p in parts)
    if last - first + 1 != batch_size or first < 0 or last >= _NUM_IMAGES:
      raise _common.row_error(path, line, f"batch {batch!r} must hold "
                              f"{batch_size} train indices in [0, "
                              f"{_NUM_IMAGES}).")
    starts.append(first)
  names = []
  for col in worker_cols:
    ids = _common.strip_all(columns[col])
    if "" in ids:
      raise _common.row_error(path, lines[ids.index("")], f"empty {col!r}.")
    names.append(ids)
  starts = np.asarray(starts, np.int64)
  covered = np.bincount(
      (starts[:, None] + np.arange(batch_size)).reshape(-1),
      minlength=_NUM_IMAGES)
  if covered.shape[0] != _NUM_IMAGES or np.any(covered != 1):
    bad = int(np.argmax(covered != 1))
    raise ValueError(f"{path}: the batches must cover each of the "
                     f"{_NUM_IMAGES} train images exactly once; image {bad} "
                     f"is covered {covered[bad]} times.")
  image_of_batch = starts[:, None] + np.arange(batch_size)
  image, annotator, answer = [], [], []
  for slot, (_, label_name) in enumerate(workers):
    img = image_of_batch.reshape(-1)
    image.append(img)
    annotator.extend(np.repeat(np.asarray(names[slot], dtype=object),
                               batch_size).tolist())
    answer.append(arrays[label_name][img])
  # Slot-major order within each image: worker 1, worker 2, worker 3.
  image = np.concatenate(image)
  answer = np.concatenate(answer)
  annotations, expert_names = _common.build_annotations(
      image, annotator, answer, num_images=_NUM_IMAGES,
      num_classes=len(classes), duplicates="all", source=str(path))
  return _common.AnnotatedDataset(
      probs=None, labels=arrays["clean_label"], annotations=annotations,
      class_names=classes, expert_names=expert_names,
      name="cifar10n" if which == "cifar10" else "cifar100n", extras=arrays)
