"""``l2d_jax.io``: atomic writes of files, JSON, text and figures."""

import json
import os
import stat

import numpy as np
import pytest

from l2d_jax import io


def test_atomic_write_creates_folders_and_usual_permissions(tmp_path):
  path = tmp_path / "a" / "b" / "out.bin"
  io.atomic_write(path, lambda f: f.write(b"\x00\x01"))
  assert path.read_bytes() == b"\x00\x01"
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
  assert sorted(os.listdir(path.parent)) == ["out.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "results.json"
  path.write_text("old")

  def fail(f):
    f.write(b"half")
    raise RuntimeError("disk full")

  with pytest.raises(RuntimeError, match="disk full"):
    io.atomic_write(path, fail)
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["results.json"]


def test_write_json_rounds_floats_and_converts_numpy(tmp_path):
  path = tmp_path / "r.json"
  io.write_json(path, {
      "acc": 0.9059999999999999, "f32": np.float32(0.1),
      "arr": np.array([0.5, np.nan]), "ints": np.arange(2, dtype=np.int64),
      "big": 2**60 + 1, "flag": np.bool_(True), 3: (1, None),
      "inf": float("inf")})
  assert json.loads(path.read_text()) == {
      "acc": 0.906, "f32": 0.1, "arr": [0.5, None], "ints": [0, 1],
      "big": 2**60 + 1, "flag": True, "3": [1, None], "inf": None}
  assert path.read_text().endswith("}\n")
  io.write_json(path, {"third": 1 / 3}, digits=None)
  assert json.loads(path.read_text())["third"] == 1 / 3


def test_write_json_refuses_what_json_cannot_hold(tmp_path):
  with pytest.raises(TypeError, match="set"):
    io.write_json(tmp_path / "r.json", {"s": {1}})
  assert not (tmp_path / "r.json").exists()


def test_write_text_is_utf8(tmp_path):
  io.write_text(tmp_path / "t.md", "α ≤ 0.1\n")
  assert (tmp_path / "t.md").read_bytes() == "α ≤ 0.1\n".encode("utf-8")


def test_save_figure_writes_a_png(tmp_path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(2, 2))
  ax.plot([0, 1], [1, 0])
  io.save_figure(fig, tmp_path / "plots" / "f.png")
  plt.close(fig)
  assert (tmp_path / "plots" / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_experiments_write_through_l2d_jax_io():
  from experiments import _io  # pylint: disable=g-import-not-at-top
  for name in ("write_json", "write_text", "save_figure", "to_json",
               "round_floats"):
    assert getattr(_io, name) is getattr(io, name)
