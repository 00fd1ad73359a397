"""MedMNIST ``.npz`` loader on small synthetic archives in the official schema."""

import zipfile

import numpy as np
import pytest

from l2d_jax import data


def _write(path, *, channels=None, n=(5, 3, 4), size=28, classes=7,
           label_shape="column", skip=()):
  rng = np.random.default_rng(0)
  arrays = {}
  for split, count in zip(("train", "val", "test"), n):
    shape = (count, size, size) + (() if channels is None else (channels,))
    arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, classes, count)
    arrays[f"{split}_labels"] = (labels[:, None] if label_shape == "column"
                                 else labels)
  for k in skip:
    arrays.pop(k)
  np.savez(path, **arrays)
  return arrays


@pytest.mark.parametrize("name,channels", [("dermamnist", 3),
                                           ("bloodmnist", 3),
                                           ("octmnist", None),
                                           ("organamnist", None)])
def test_every_split_matches_the_archive(tmp_path, name, channels):
  classes = data.MEDMNIST_CLASSES[name]
  arrays = _write(tmp_path / f"{name}.npz", channels=channels,
                  classes=classes)
  for split in ("train", "val", "test"):
    x, y = data.load_medmnist(tmp_path, name, split)
    want = arrays[f"{split}_images"]
    if channels is None:
      want = want[..., None]
    np.testing.assert_array_equal(x, want)
    assert x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(y, arrays[f"{split}_labels"][:, 0])


def test_flat_labels_sub_folder_and_larger_sizes(tmp_path):
  (tmp_path / "medmnist").mkdir()
  arrays = _write(tmp_path / "medmnist" / "bloodmnist_64.npz", channels=3,
                  size=64, classes=8, label_shape="flat")
  x, y = data.load_medmnist(tmp_path, "bloodmnist", "val", size=64)
  assert x.shape == (3, 64, 64, 3)
  np.testing.assert_array_equal(y, arrays["val_labels"])
  assert data.medmnist_path(tmp_path, "bloodmnist", size=64) == (
      tmp_path / "medmnist" / "bloodmnist_64.npz")


def test_bad_arguments_and_missing_file(tmp_path):
  with pytest.raises(ValueError, match="`name` must be one of"):
    data.load_medmnist(tmp_path, "pathmnist")
  with pytest.raises(ValueError, match="`split` must be one of"):
    data.load_medmnist(tmp_path, "octmnist", "dev")
  with pytest.raises(ValueError, match="`size` must be one of"):
    data.load_medmnist(tmp_path, "octmnist", size=32)
  with pytest.raises(FileNotFoundError, match="octmnist.npz"):
    data.load_medmnist(tmp_path, "octmnist")


def test_malformed_archives_are_data_file_errors_naming_the_file(tmp_path):
  p = tmp_path / "octmnist.npz"
  _write(p, classes=4, skip=("test_labels",))
  with pytest.raises(data.DataFileError, match="octmnist.npz: no 'test_labels'"):
    data.load_medmnist(tmp_path, "octmnist", "test")
  # The other splits of the same archive still load.
  assert data.load_medmnist(tmp_path, "octmnist", "train")[0].shape[0] == 5
  _write(p, classes=9)  # labels beyond octmnist's 4 classes
  with pytest.raises(data.DataFileError, match=r"outside \[0, 4\)"):
    data.load_medmnist(tmp_path, "octmnist", "train")
  np.savez(p, train_images=np.zeros((2, 28, 28), np.float32),
           train_labels=np.zeros((2, 1), int))
  with pytest.raises(data.DataFileError, match="must be uint8"):
    data.load_medmnist(tmp_path, "octmnist")
  np.savez(p, train_images=np.zeros((2, 28, 28), np.uint8),
           train_labels=np.zeros((3, 1), int))
  with pytest.raises(data.DataFileError, match="N=2 images"):
    data.load_medmnist(tmp_path, "octmnist")
  np.savez(p, train_images=np.zeros((2, 28, 28), np.uint8),
           train_labels=np.array([[0.0], [0.5]]))
  with pytest.raises(data.DataFileError, match="whole numbers"):
    data.load_medmnist(tmp_path, "octmnist")
  np.savez(p, train_images=np.zeros((2, 28, 28, 2), np.uint8),
           train_labels=np.zeros((2, 1), int))
  with pytest.raises(data.DataFileError, match="must be uint8"):
    data.load_medmnist(tmp_path, "octmnist")
  p.write_bytes(b"not a zip archive")
  with pytest.raises(data.DataFileError, match="octmnist.npz"):
    data.load_medmnist(tmp_path, "octmnist")
  with zipfile.ZipFile(p, "w") as z:
    z.writestr("train_images.npy", b"\x93NUMPY truncated")
  with pytest.raises(data.DataFileError, match="octmnist.npz"):
    data.load_medmnist(tmp_path, "octmnist")
