"""Small file writers shared by the data-loader tests."""

import csv
import pathlib


def write_csv(path: pathlib.Path, header, rows) -> pathlib.Path:
  """Writes ``rows`` (after ``header`` unless None) as CSV; returns ``path``."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as handle:
    writer = csv.writer(handle)
    if header is not None:
      writer.writerow(header)
    writer.writerows(rows)
  return path


def long_triples(annotations):
  """Sorted ``(image, annotator, answer)`` triples of ``Annotations``."""
  img, who, ans = annotations.to_long()
  return sorted(zip(img.tolist(), who.tolist(), ans.tolist()))
