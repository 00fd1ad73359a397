"""California Housing (Pace & Barry 1997) from the StatLib ``cal_housing.data``.

The file (``<data_dir>/california_housing/cal_housing.data``) has no header,
CRLF line ends and 20,640 rows of 9 comma-separated numbers, one census block
group each, in this order: ``longitude``, ``latitude``, ``housingMedianAge``,
``totalRooms``, ``totalBedrooms``, ``population``, ``households``,
``medianIncome``, ``medianHouseValue`` (dollars). Rows and order are those of
scikit-learn's ``fetch_california_housing``.

References:
  Pace, Barry. Sparse Spatial Autoregressions. Statistics and Probability
  Letters 33 (1997) 291-297.
"""

from __future__ import annotations

import pathlib

import numpy as np

from l2d_jax.data import _common

FILE_NAME = "cal_housing.data"
FOLDER = "california_housing"

# Columns of ``cal_housing.data``, in file order.
CALIFORNIA_RAW_COLUMNS: tuple[str, ...] = (
    "longitude", "latitude", "housingMedianAge", "totalRooms",
    "totalBedrooms", "population", "households", "medianIncome",
    "medianHouseValue")
# scikit-learn's feature names (``fetch_california_housing().feature_names``).
CALIFORNIA_FEATURES: tuple[str, ...] = (
    "MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup",
    "Latitude", "Longitude")

_NUM_COLS = len(CALIFORNIA_RAW_COLUMNS)
(_LON, _LAT, _AGE, _ROOMS, _BEDROOMS, _POPULATION, _HOUSEHOLDS, _INCOME,
 _VALUE) = range(_NUM_COLS)
# Target unit: scikit-learn gives the median house value in 100,000 dollars.
TARGET_UNIT_DOLLARS = 100_000.0


def _data_file(path_or_dir: _common.PathLike) -> pathlib.Path:
  """The ``cal_housing.data`` file named by a path, its folder or the data root."""
  path = pathlib.Path(path_or_dir)
  if path.is_file():
    return path
  for candidate in (path / FOLDER / FILE_NAME, path / FILE_NAME):
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(
      f"California Housing file not found: {path / FOLDER / FILE_NAME} (nor "
      f"{path / FILE_NAME}); pass the data root, its {FOLDER}/ folder or the "
      "file itself.")


def _line_of_row(path: pathlib.Path, row: int) -> int | None:
  """1-based line of data row ``row`` (0-based), skipping blank lines.

  Only used to word an error, so the file is read a second time.
  """
  text = _common.read_text(path, "California Housing file")
  seen = -1
  for number, line in enumerate(text.splitlines(), start=1):
    if line.split("#", 1)[0].strip():
      seen += 1
      if seen == row:
        return number
  return None


def load_california_housing(
    data_dir: _common.PathLike,
    *,
    raw: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """Loads California Housing as scikit-learn's ``fetch_california_housing``.

  By default the 8 features are scikit-learn's, in its order: ``MedInc``
  (median income, 10,000 dollars), ``HouseAge``, ``AveRooms`` (totalRooms /
  households), ``AveBedrms`` (totalBedrooms / households), ``Population``,
  ``AveOccup`` (population / households), ``Latitude``, ``Longitude``; the
  per-household ratios are computed in float64 and then rounded to float32.
  With ``raw=True`` the features are the file's first 8 columns unchanged,
  in file order (``CALIFORNIA_RAW_COLUMNS[:8]``). The target is always the
  median house value in units of 100,000 dollars (0.14999 to 5.00001 on the
  real file; values are capped at 500,001 dollars in the source).

  Args:
    data_dir: the data root holding ``california_housing/cal_housing.data``,
      that folder, or the file itself.
    raw: return the 8 raw columns instead of scikit-learn's derived features.

  Returns:
    ``(features, targets, feature_names)``: ``[N, 8]`` float32, ``[N]``
    float32 and the 8 column names (``CALIFORNIA_FEATURES``, or
    ``CALIFORNIA_RAW_COLUMNS[:8]`` with ``raw=True``). N = 20,640 for the
    real file, in file (= scikit-learn) order.

  Raises:
    FileNotFoundError: no such file.
    DataFileError: an empty file, text that is not UTF-8, a row without 9
      fields, a field that is not a finite number, or (derived features
      only) a row with ``households <= 0`` -- naming the file and the line.
    TypeError: ``raw`` is not a bool.

  Example:
    >>> from l2d_jax import data
    >>> x, y, names = data.load_california_housing(
    ...     "../shared/data")  # doctest: +SKIP
    >>> x.shape, names[0], float(y[0])  # doctest: +SKIP
    ((20640, 8), 'MedInc', 4.526)
  """
  if not isinstance(raw, (bool, np.bool_)):
    raise TypeError(f"`raw` must be a bool, got {type(raw).__name__}.")
  path = _data_file(data_dir)
  table = _common.read_numeric_csv(path, num_cols=_NUM_COLS,
                                   what="California Housing file")
  targets = (table[:, _VALUE] / TARGET_UNIT_DOLLARS).astype(np.float32)
  if raw:
    return (table[:, :_VALUE].astype(np.float32), targets,
            CALIFORNIA_RAW_COLUMNS[:_VALUE])
  households = table[:, _HOUSEHOLDS]
  if np.any(households <= 0):
    row = int(np.argmax(households <= 0))
    raise _common.DataFileError(
        path, f"households must be positive to compute per-household features,"
        f" got {households[row]:g} (pass raw=True for the raw columns).",
        _line_of_row(path, row))
  features = np.stack([
      table[:, _INCOME],
      table[:, _AGE],
      table[:, _ROOMS] / households,
      table[:, _BEDROOMS] / households,
      table[:, _POPULATION],
      table[:, _POPULATION] / households,
      table[:, _LAT],
      table[:, _LON],
  ], axis=1)
  return features.astype(np.float32), targets, CALIFORNIA_FEATURES
