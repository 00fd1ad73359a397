"""Tests of the bring-your-own loader and AnnotatedDataset's checks (l2d_jax.data).

Real-data tests use the ``data_dir`` fixture (skipped when ../shared/data is
absent).
"""

import json
import warnings

import numpy as np
import pytest

from l2d_jax import data
from l2d_jax.data import _common
from l2d_jax.experts import Annotations
from tests.data_writers import long_triples as _long
from tests.data_writers import write_csv as _write_csv


def _byo_dir(tmp_path, *, probs=True, rows=None, labels=(3, 1, 2, 0)):
  folder = tmp_path / "byo"
  folder.mkdir(exist_ok=True)
  np.save(folder / "labels.npy", np.asarray(labels))
  if probs:
    np.save(folder / "probs.npy", np.full((len(labels), 4), 0.25, np.float32))
  if rows is None:
    rows = [(0, "alice", 3), (0, "bob", 1), (2, "alice", 2), (2, "10", 2),
            (2, "9", 0)]
  _write_csv(folder / "annotations.csv", ("image", "annotator", "answer"), rows)
  return folder


def test_byo_load(tmp_path):
  ds = data.load_byo(_byo_dir(tmp_path))
  assert ds.name == "byo" and ds.num_classes == 4 and ds.num_images == 4
  assert ds.expert_names == ("9", "10", "alice", "bob")
  assert _long(ds.annotations) == [(0, 2, 3), (0, 3, 1), (2, 0, 0), (2, 1, 2),
                                   (2, 2, 2)]
  assert ds.probs.dtype == np.float32 and ds.labels.dtype == np.int32


def test_byo_round_trip_real(data_dir, tmp_path):
  ds = data.load_cifar10s(data_dir, model="resnet-110")
  data.save_byo(ds, tmp_path / "c10s")
  back = data.load_byo(tmp_path / "c10s")
  assert back.name == "cifar10s" and back.expert_names == ds.expert_names
  assert back.class_names == ds.class_names
  np.testing.assert_array_equal(back.labels, ds.labels)
  np.testing.assert_allclose(back.probs, ds.probs, atol=1e-7)
  assert _long(back.annotations) == _long(ds.annotations)


def test_byo_round_trip_without_probs_and_with_extras(tmp_path):
  ds = data.load_byo(_byo_dir(tmp_path))
  ds2 = _common.AnnotatedDataset(
      probs=None, labels=ds.labels, annotations=ds.annotations,
      class_names=("a", "b", "c", "d"), expert_names=ds.expert_names,
      name="mine", extras={"image_name": np.array(["p", "q", "r", "s"])})
  data.save_byo(ds2, tmp_path / "out")
  back = data.load_byo(tmp_path / "out")
  assert back.probs is None and back.class_names == ("a", "b", "c", "d")
  np.testing.assert_array_equal(back.extras["image_name"], ["p", "q", "r", "s"])
  assert _long(back.annotations) == _long(ds.annotations)


@pytest.mark.parametrize("rows,message", [
    ([(4, "alice", 1)], "line 2: image 4 is not in the pool"),
    ([(0, "alice", 1), (1, "bob", 4)], "line 3: answer 4"),
    ([(0, "alice", "one")], "line 2: column 'answer'"),
    ([(0, "alice", 1), (1, "bob")], "line 3: expected 3 fields"),
])
def test_byo_bad_annotations(tmp_path, rows, message):
  folder = _byo_dir(tmp_path, rows=rows)
  with pytest.raises(ValueError, match=message) as err:
    data.load_byo(folder)
  assert "annotations.csv" in str(err.value)


def test_byo_bad_arrays(tmp_path):
  folder = _byo_dir(tmp_path, labels=(0, 1, 7, 2))
  with pytest.raises(ValueError, match="image 2 has label 7"):
    data.load_byo(folder)
  folder = _byo_dir(tmp_path)
  np.save(folder / "probs.npy", np.full((4, 4), 0.3))
  with pytest.raises(ValueError, match="must sum to 1"):
    data.load_byo(folder)
  (folder / "probs.npy").unlink()
  with pytest.raises(ValueError, match="number of classes is unknown"):
    data.load_byo(folder)
  (folder / "labels.npy").unlink()
  with pytest.raises(FileNotFoundError, match="labels.npy"):
    data.load_byo(folder)


def test_byo_meta_expert_order_and_unused_expert(tmp_path):
  folder = _byo_dir(tmp_path, rows=[(0, "x", 1), (1, "y", 2)])
  (folder / "meta.json").write_text(json.dumps(
      {"name": "n", "expert_names": ["y", "z", "x"]}))
  with pytest.warns(UserWarning, match="1 of 3 annotators"):
    ds = data.load_byo(folder)
  assert ds.expert_names == ("y", "x")
  (folder / "meta.json").write_text(json.dumps({"expert_names": ["y"]}))
  with pytest.raises(ValueError, match="'x' is not in 'expert_names'"):
    data.load_byo(folder)


def test_annotated_dataset_checks_shapes():
  ann = Annotations.from_long(np.array([0], np.int32), np.array([0], np.int32),
                              np.array([1], np.int32), num_images=2,
                              num_experts=1, num_classes=3)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    ok = _common.AnnotatedDataset(None, np.array([0, 2], np.int32), ann,
                                  ("a", "b", "c"), ("e",), "t")
  assert ok.num_experts == 1
  with pytest.raises(ValueError, match="probs"):
    _common.AnnotatedDataset(np.ones((2, 2), np.float32) / 2,
                             np.array([0, 2], np.int32), ann, ("a", "b", "c"),
                             ("e",), "t")
  with pytest.raises(ValueError, match="expert_names"):
    _common.AnnotatedDataset(None, np.array([0, 2], np.int32), ann,
                             ("a", "b", "c"), (), "t")
