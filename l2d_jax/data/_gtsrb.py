"""GTSRB (Stallkamp et al. 2011) from the official training-set layout.

``GTSRB_Final_Training_Images.zip`` unpacks to
``GTSRB/Final_Training/Images/<class>/`` with one folder per class
``00000`` .. ``00042``; each holds the images as PPM files
(``<track>_<image>.ppm``) and ``GT-<class>.csv``, a semicolon-separated UTF-8
(ASCII) table with the header
``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``. The region of
interest (ROI) gives the corners of the sign's bounding box: columns
``Roi.X1..Roi.X2`` and rows ``Roi.Y1..Roi.Y2``, both ends included (the
images keep a border of 10% of the sign, at least 5 pixels, around it).

References:
  Stallkamp, Schlipsing, Salmen, Igel. The German Traffic Sign Recognition
  Benchmark: A multi-class classification competition. IJCNN 2011.
"""

from __future__ import annotations

import csv
import pathlib
import re
import warnings

import numpy as np

from l2d_jax.data import _common

GTSRB_NUM_CLASSES = 43
GTSRB_COLUMNS: tuple[str, ...] = (
    "Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2",
    "ClassId")
# Largest image (pixels) decoded; the real ones are 15x15 .. 250x250.
MAX_GTSRB_PIXELS = 4096 * 4096
_CLASS_FOLDER = re.compile(r"\d{5}")
_IMAGES = ("GTSRB/Final_Training/Images", "Final_Training/Images", "Images",
           "")


def _images_folder(root: pathlib.Path) -> pathlib.Path:
  """The ``Images`` folder (holding the class folders) under ``root``."""
  if not root.is_dir():
    raise FileNotFoundError(f"GTSRB folder not found: {root}")
  for sub in _IMAGES:
    folder = root / sub if sub else root
    if folder.is_dir() and any(_CLASS_FOLDER.fullmatch(p.name) and p.is_dir()
                               for p in folder.iterdir()):
      return folder
  raise FileNotFoundError(
      f"GTSRB class folders not found: {root / _IMAGES[1]} (nor "
      f"{root / _IMAGES[0]}, {root / 'Images'} or {root}) holds no folder "
      "00000 .. 00042; pass the folder that GTSRB_Final_Training_Images.zip "
      "unpacks to.")


def _read_table(path: pathlib.Path) -> list[tuple[int, list[str]]]:
  """``(line, fields)`` of each non-blank data row of a ``GT-<class>.csv``."""
  text = _common.read_text(path, "GTSRB annotation file")
  reader = csv.reader(text.splitlines(), delimiter=";")
  try:
    header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
  except csv.Error as err:
    raise _common.row_error(path, 1, f"unreadable header ({err}).") from None
  if header != list(GTSRB_COLUMNS):
    missing = [c for c in GTSRB_COLUMNS if c not in header]
    raise _common.row_error(
        path, 1, f"header must be {';'.join(GTSRB_COLUMNS)} (semicolon-"
        f"separated); got {header}" + (f", missing {missing}." if missing
                                       else "."))
  rows = []
  try:
    for fields in reader:
      if not fields or (len(fields) == 1 and not fields[0].strip()):
        continue
      if len(fields) != len(GTSRB_COLUMNS):
        raise _common.row_error(
            path, reader.line_num, f"expected {len(GTSRB_COLUMNS)} "
            f"semicolon-separated fields, got {len(fields)}.")
      rows.append((reader.line_num, fields))
  except csv.Error as err:
    raise _common.row_error(path, reader.line_num,
                            f"malformed CSV ({err}).") from None
  return rows


def _read_crop(
    ppm: pathlib.Path,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    *,
    csv_path: pathlib.Path,
    line: int,
    image_size: int,
) -> np.ndarray:
  """Decodes one image, checks its size, crops the ROI and resizes it."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(ppm) as image:
        if image.size != size:
          raise _common.row_error(
              csv_path, line, f"{ppm.name} is {image.size[0]}x"
              f"{image.size[1]} pixels but the row declares Width x Height = "
              f"{size[0]}x{size[1]}.")
        if size[0] * size[1] > MAX_GTSRB_PIXELS:
          raise _common.DataFileError(
              ppm, f"{size[0]}x{size[1]} pixels, more than "
              f"MAX_GTSRB_PIXELS = {MAX_GTSRB_PIXELS}.")
        x1, y1, x2, y2 = box
        crop = image.convert("RGB").crop((x1, y1, x2 + 1, y2 + 1))
        crop = crop.resize((image_size, image_size),
                           Image.Resampling.BILINEAR)
        return np.asarray(crop, dtype=np.uint8)
  except _common.DataFileError:
    raise
  except (OSError, ValueError, SyntaxError, EOFError,
          Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
    raise _common.DataFileError(
        ppm, f"cannot decode the image ({type(err).__name__}: {err}).") from None


def load_gtsrb(
    root: _common.PathLike,
    *,
    image_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads the GTSRB training images, cropped to their sign and resized.

  Each image is cropped to the ROI of its row in ``GT-<class>.csv`` (columns
  ``Roi.X1..Roi.X2``, rows ``Roi.Y1..Roi.Y2``, ends included) and resized to
  ``image_size x image_size`` with Pillow's bilinear filter
  (``Image.Resampling.BILINEAR``, which Pillow widens to average every
  source pixel when it shrinks, so downsizing is antialiased). Grey or
  palette images are converted to RGB.

  Args:
    root: the folder holding the class folders ``00000`` .. ``00042``, or one
      above it: ``Final_Training/Images``, ``GTSRB/Final_Training/Images``
      or ``Images`` under ``root``.
    image_size: side S of the returned images (keyword-only, >= 1).

  Returns:
    ``(images, labels)``: ``uint8 [N, S, S, 3]`` (RGB) and ``int32 [N]`` in
    0..42, ordered by class folder (ascending), then by row of the class's
    CSV file. Class folders may be missing (a subset of the 43 classes);
    folders whose name is not 5 digits are ignored.

  Raises:
    TypeError, ValueError: ``image_size`` not a positive int.
    FileNotFoundError: ``root``, the class folders, a ``GT-<class>.csv`` or
      an image it lists is missing (naming the path).
    ValueError: a class folder beyond ``00042`` (naming it).
    DataFileError: naming the CSV file and line -- not UTF-8, a header other
      than ``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``, a
      row with another number of fields, a non-integer field, a file name
      with a path in it, a ROI outside the image or empty, a ``ClassId``
      other than the folder's class, or a ``Width``/``Height`` other than the
      image's; or naming the image -- one Pillow cannot decode.

  Example:
    >>> from l2d_jax import data
    >>> images, labels = data.load_gtsrb("GTSRB/")  # doctest: +SKIP
    >>> images.shape, labels.max()  # doctest: +SKIP
    ((39209, 32, 32, 3), np.int32(42))
  """
  image_size = _common.check_int(image_size, "image_size", minimum=1)
  folder = _images_folder(pathlib.Path(root))
  classes = sorted(p for p in folder.iterdir()
                   if p.is_dir() and _CLASS_FOLDER.fullmatch(p.name))
  images, labels = [], []
  for class_dir in classes:
    label = int(class_dir.name)
    if label >= GTSRB_NUM_CLASSES:
      raise ValueError(f"{class_dir}: GTSRB has classes 00000 .. "
                       f"{GTSRB_NUM_CLASSES - 1:05d}; no class {label}.")
    csv_path = _common.existing_file(class_dir / f"GT-{class_dir.name}.csv",
                                     "GTSRB annotation file")
    for line, fields in _read_table(csv_path):
      name = fields[0].strip()
      if not name or name != pathlib.PurePath(name).name or name in (".",
                                                                      ".."):
        raise _common.row_error(csv_path, line, f"Filename {name!r} must be "
                                "a file name in the class folder.")
      width, height, x1, y1, x2, y2, class_id = (
          _common.parse_int(value, path=csv_path, line=line, column=column)
          for value, column in zip(fields[1:], GTSRB_COLUMNS[1:]))
      if class_id != label:
        raise _common.row_error(
            csv_path, line, f"ClassId {class_id} differs from the class of "
            f"its folder {class_dir.name} ({label}).")
      if width < 1 or height < 1:
        raise _common.row_error(csv_path, line, f"Width x Height must be "
                                f"positive, got {width}x{height}.")
      if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
        raise _common.row_error(
            csv_path, line, f"ROI ({x1}, {y1})-({x2}, {y2}) must satisfy 0 <= "
            f"Roi.X1 <= Roi.X2 < Width = {width} and 0 <= Roi.Y1 <= Roi.Y2 < "
            f"Height = {height}.")
      ppm = _common.existing_file(class_dir / name, "GTSRB image")
      images.append(_read_crop(ppm, (x1, y1, x2, y2), (width, height),
                               csv_path=csv_path, line=line,
                               image_size=image_size))
      labels.append(label)
  if not images:
    return (np.zeros((0, image_size, image_size, 3), np.uint8),
            np.zeros((0,), np.int32))
  return np.stack(images), np.asarray(labels, np.int32)
