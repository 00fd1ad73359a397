"""Loaders of the top-k data sets: California Housing, SVHN (.mat), CIFAR-100 (binary)."""

import pathlib
import sys
import types

import numpy as np
import pytest
import scipy.io

from l2d_jax import data
from l2d_jax.data import DataFileError

# ---------------------------------------------------------------------------
# California Housing
# ---------------------------------------------------------------------------

# First row of cal_housing.data, typed from the file.
_FIRST_RAW = (-122.23, 37.88, 41.0, 880.0, 129.0, 322.0, 126.0, 8.3252,
              452600.0)


def test_california_real_file(data_dir):
  x, y, names = data.load_california_housing(data_dir)
  assert x.shape == (20640, 8) and y.shape == (20640,)
  assert x.dtype == np.float32 and y.dtype == np.float32
  assert names == ("MedInc", "HouseAge", "AveRooms", "AveBedrms",
                   "Population", "AveOccup", "Latitude", "Longitude")
  lon, lat, age, rooms, beds, pop, house, income, value = _FIRST_RAW
  expected = np.array([income, age, rooms / house, beds / house, pop,
                       pop / house, lat, lon], np.float32)
  np.testing.assert_array_equal(x[0], expected)
  assert y[0] == np.float32(4.526)
  assert y.min() == np.float32(0.14999) and y.max() == np.float32(5.00001)
  # Column means of scikit-learn's California Housing (its DESCR/describe()).
  np.testing.assert_allclose(
      x[:, :3].astype(np.float64).mean(0), [3.870671, 28.639486, 5.429000],
      rtol=1e-6)
  np.testing.assert_allclose(y.astype(np.float64).mean(), 2.068558, rtol=1e-6)


def test_california_raw_and_path_forms(data_dir):
  folder = data_dir / "california_housing"
  x, y, _ = data.load_california_housing(folder)
  xr, yr, names = data.load_california_housing(
      str(folder / "cal_housing.data"), raw=True)
  assert names == data.CALIFORNIA_RAW_COLUMNS[:8] and xr.shape == (20640, 8)
  np.testing.assert_array_equal(xr[0], np.float32(_FIRST_RAW[:8]))
  np.testing.assert_array_equal(yr, y)
  # Derived columns are the raw ones per household.
  raw = xr.astype(np.float64)
  np.testing.assert_allclose(x[:, 5], raw[:, 5] / raw[:, 6], rtol=1e-6)
  np.testing.assert_array_equal(x[:, [6, 7]], xr[:, [1, 0]])


def _write(path, text, encoding="utf-8"):
  path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
  return path


_GOOD = "-122.23,37.88,41,880,129,322,126,8.3252,452600\r\n" \
        "-118.5,34.2,10,1000,200,500,250,3.5,150000\r\n"


def test_california_synthetic_values(tmp_path):
  path = _write(tmp_path / "cal_housing.data", _GOOD)
  x, y, _ = data.load_california_housing(path)
  np.testing.assert_array_equal(y, np.float32([4.526, 1.5]))
  np.testing.assert_array_equal(
      x[1], np.float32([3.5, 10, 4.0, 0.8, 500, 2.0, 34.2, -118.5]))
  # The data root and the folder find the file too.
  (tmp_path / "california_housing").mkdir()
  _write(tmp_path / "california_housing" / "cal_housing.data", _GOOD)
  np.testing.assert_array_equal(data.load_california_housing(tmp_path)[0], x)


@pytest.mark.parametrize("text, line, match", [
    (_GOOD + "1,2,3\r\n", 3, "expected 9"),
    ("1,2,3,4,5,6,7,8,9,10\r\n", 1, "expected 9"),
    (_GOOD + "-118,34,10,abc,200,500,250,3.5,150000\r\n", 3,
     "column 3 is not a number"),
    ("-118,34,10,1,200,nan,250,3.5,150000\r\n", 1, "column 5 is not finite"),
    (_GOOD + "-118,34,10,1,200,500,250,inf,150000\r\n", 3, "not finite"),
])
def test_california_bad_rows(tmp_path, text, line, match):
  path = _write(tmp_path / "bad.data", text)
  with pytest.raises(DataFileError, match=match) as info:
    data.load_california_housing(path)
  assert info.value.line == line
  assert str(info.value).startswith(f"{path}, line {line}:")


def test_california_empty_and_not_utf8(tmp_path):
  path = _write(tmp_path / "empty.data", "")
  with pytest.raises(DataFileError, match="empty file") as info:
    data.load_california_housing(path)
  assert info.value.path == str(path)
  latin = _write(tmp_path / "latin.data",
                 _GOOD.encode() + "caf\u00e9,1,2,3,4,5,6,7,8\r\n".encode(
                     "latin-1"))
  with pytest.raises(DataFileError, match="not UTF-8") as info:
    data.load_california_housing(latin)
  assert info.value.line == 3 and info.value.path == str(latin)


def test_california_households_zero(tmp_path):
  text = _GOOD + "\r\n-118,34,10,1,200,500,0,3.5,150000\r\n"
  path = _write(tmp_path / "zero.data", text)
  with pytest.raises(DataFileError, match="households must be positive") as e:
    data.load_california_housing(path)
  assert e.value.line == 4  # A blank line 3 precedes the bad row.
  x, _, _ = data.load_california_housing(path, raw=True)
  assert x[2, 6] == 0


def test_california_arguments(tmp_path):
  with pytest.raises(FileNotFoundError, match="cal_housing.data"):
    data.load_california_housing(tmp_path)
  path = _write(tmp_path / "cal_housing.data", _GOOD)
  with pytest.raises(TypeError, match="`raw` must be a bool"):
    data.load_california_housing(path, raw=1)


# ---------------------------------------------------------------------------
# SVHN
# ---------------------------------------------------------------------------


def _svhn_arrays(n=5, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
  y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10
  return x, y


def _savemat(path, **arrays):
  scipy.io.savemat(path, arrays)
  return path


def test_svhn_mat_schema(tmp_path):
  x, y = _svhn_arrays(12)
  path = _savemat(tmp_path / "train_32x32.mat", X=x, y=y)
  images, labels = data.load_svhn(path)
  assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int32
  for i in range(12):
    np.testing.assert_array_equal(images[i], x[:, :, :, i])
  np.testing.assert_array_equal(labels, [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2])
  assert images.flags["C_CONTIGUOUS"]


def test_svhn_split_and_folders(tmp_path):
  x, y = _svhn_arrays(3)
  _savemat(tmp_path / "test_32x32.mat", X=x, y=y)
  _savemat(tmp_path / "train_32x32.mat", X=x[..., :2], y=y[:2])
  assert data.load_svhn(tmp_path, "test")[0].shape[0] == 3
  assert data.load_svhn(tmp_path)[0].shape[0] == 2
  root = tmp_path / "root"
  (root / "svhn").mkdir(parents=True)
  _savemat(root / "svhn" / "extra_32x32.mat", X=x, y=y)
  assert data.load_svhn(str(root), split="extra")[1].tolist() == [1, 2, 3]
  with pytest.raises(ValueError, match="`split` must be one of"):
    data.load_svhn(tmp_path, "valid")
  with pytest.raises(FileNotFoundError, match="extra_32x32.mat"):
    data.load_svhn(tmp_path, "extra")


def test_svhn_other_dtypes_and_row_labels(tmp_path):
  x, y = _svhn_arrays(4)
  path = _savemat(tmp_path / "a.mat", X=x.astype(np.float64),
                  y=y.reshape(1, 4).astype(np.float64))
  images, labels = data.load_svhn(path)
  np.testing.assert_array_equal(images, np.moveaxis(x, -1, 0))
  np.testing.assert_array_equal(labels, [1, 2, 3, 4])


@pytest.mark.parametrize("arrays, match", [
    (dict(y=np.ones((2, 1))), "no variable 'X'"),
    (dict(X=np.zeros((32, 32, 3, 2), np.uint8)), "no variable 'y'"),
    (dict(X=np.zeros((32, 32, 2), np.uint8), y=np.ones((2, 1))),
     r"'X' must have shape \[32, 32, 3, N\]"),
    (dict(X=np.zeros((3, 32, 32, 2), np.uint8), y=np.ones((2, 1))),
     r"'X' must have shape"),
    (dict(X=np.zeros((32, 32, 3, 2), np.uint8), y=np.ones((3, 1))),
     r"'y' must have shape \[2, 1\]"),
    (dict(X=np.zeros((32, 32, 3, 2), np.uint8), y=np.array([[1], [0]])),
     "image 1 has label 0"),
    (dict(X=np.zeros((32, 32, 3, 2), np.uint8), y=np.array([[11], [1]])),
     "image 0 has label 11"),
    (dict(X=np.zeros((32, 32, 3, 2), np.uint8), y=np.array([[1.5], [1]])),
     "whole numbers"),
    (dict(X=np.full((32, 32, 3, 2), 256.0), y=np.ones((2, 1))),
     r"must lie in \[0, 255\]"),
    (dict(X=np.zeros((32, 32, 3, 2), np.uint8), y=np.array([["a"], ["b"]])),
     "'y' must be a numeric array"),
])
def test_svhn_bad_schema(tmp_path, arrays, match):
  path = _savemat(tmp_path / "bad.mat", **arrays)
  with pytest.raises(DataFileError, match=match) as info:
    data.load_svhn(path)
  assert info.value.path == str(path)


def test_svhn_corrupt_files(tmp_path):
  x, y = _svhn_arrays(6)
  good = _savemat(tmp_path / "good.mat", X=x, y=y).read_bytes()
  cases = {
      "empty.mat": b"",
      "junk.mat": np.random.default_rng(1).bytes(4000),
      "truncated.mat": good[:len(good) // 2],
      "cut_end.mat": good[:-10],
  }
  matches = {"empty.mat": "not a MATLAB .mat file",
             "junk.mat": "not a MATLAB .mat file",
             "truncated.mat": "no variable 'y'.*truncated",
             "cut_end.mat": "corrupt MATLAB file"}
  for name, content in cases.items():
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=matches[name]) as info:
      data.load_svhn(path)
    assert info.value.path == str(path), name


def test_svhn_refuses_v73_hdf5(tmp_path):
  header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116, b" ")
  header += b"\x00" * 8 + b"\x00\x02IM"  # Version 0x0200, little endian.
  path = tmp_path / "train_32x32.mat"
  path.write_bytes(header.ljust(512, b"\x00") + b"\x89HDF\r\n\x1a\n" +
                   b"\x00" * 64)
  with pytest.raises(DataFileError, match=r"v7\.3 \(HDF5\)") as info:
    data.load_svhn(path)
  assert info.value.path == str(path)


def test_svhn_refuses_v4(tmp_path):
  _, y = _svhn_arrays(2)
  path = tmp_path / "old.mat"
  scipy.io.savemat(path, {"X": np.zeros((32, 96)), "y": y}, format="4")
  with pytest.raises(DataFileError, match=r"MATLAB v4\.0 file; only MATLAB v5"):
    data.load_svhn(path)


def test_svhn_refuses_decompression_bomb(tmp_path):
  x = np.zeros((32, 32, 3, 4000), np.uint8)  # 12 MB of zeros, ~12 kB stored.
  path = tmp_path / "bomb.mat"
  scipy.io.savemat(path, {"X": x, "y": np.ones((4000, 1))},
                   do_compression=True)
  assert path.stat().st_size * 200 < x.nbytes
  with pytest.raises(DataFileError, match="decompression bomb"):
    data.load_svhn(path)


# ---------------------------------------------------------------------------
# CIFAR-100 (binary version)
# ---------------------------------------------------------------------------


def _record(image, coarse, fine):
  """One record written pixel by pixel: planes R, G, B, each row-major."""
  out = bytearray([coarse, fine])
  for channel in range(3):
    for row in range(32):
      for col in range(32):
        out.append(int(image[row, col, channel]))
  return bytes(out)


def _cifar_images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3),
                                              dtype=np.uint8)


def test_cifar100_pixel_layout(tmp_path):
  images = _cifar_images(3)
  images[0] = 0
  images[0, 0, 1, 0] = 255  # Red at row 0, column 1.
  images[0, 2, 0, 2] = 77   # Blue at row 2, column 0.
  fine, coarse = [3, 99, 0], [19, 0, 7]
  path = tmp_path / "train.bin"
  path.write_bytes(b"".join(_record(images[i], coarse[i], fine[i])
                            for i in range(3)))
  got, labels, names = data.load_cifar100(path)
  assert got.shape == (3, 32, 32, 3) and got.dtype == np.uint8
  assert got.flags["C_CONTIGUOUS"]
  np.testing.assert_array_equal(got, images)
  raw = path.read_bytes()
  assert raw[2 + 1] == 255 and raw[2 + 2 * 1024 + 2 * 32] == 77
  assert labels.dtype == np.int32 and labels.tolist() == fine
  assert names == data.CIFAR100_CLASSES and names[99] == "worm"
  coarse_labels = data.load_cifar100(path, label_mode="coarse")
  assert coarse_labels[1].tolist() == coarse
  assert coarse_labels[2] == data.CIFAR100_COARSE_CLASSES
  assert coarse_labels[2][19] == "vehicles_2"


def _write_bin(path, n, seed=0, fine=None, coarse=None):
  fine = np.arange(n) % 100 if fine is None else np.asarray(fine)
  coarse = np.arange(n) % 20 if coarse is None else np.asarray(coarse)
  images = _cifar_images(n, seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"".join(_record(images[i], coarse[i], fine[i])
                            for i in range(n)))
  return images


def test_cifar100_folders_and_names(tmp_path):
  folder = tmp_path / "cifar-100-binary"
  train = _write_bin(folder / "train.bin", 4)
  test = _write_bin(folder / "test.bin", 2, seed=1)
  np.testing.assert_array_equal(data.load_cifar100(tmp_path)[0], train)
  np.testing.assert_array_equal(data.load_cifar100(folder, "test")[0], test)
  coarse = [f"super{i}" for i in range(20)]
  (folder / "coarse_label_names.txt").write_text("\n".join(coarse) + "\n\n")
  _, labels, names = data.load_cifar100(str(folder), "test",
                                        label_mode="coarse")
  assert names == tuple(coarse) and labels.tolist() == [0, 1]
  (folder / "fine_label_names.txt").write_text("a\nb\n")
  with pytest.raises(DataFileError, match="expected 100 class names") as info:
    data.load_cifar100(tmp_path)
  assert info.value.path == str(folder / "fine_label_names.txt")
  with pytest.raises(ValueError, match="`split` must be one of"):
    data.load_cifar100(tmp_path, "extra")
  with pytest.raises(ValueError, match="`label_mode` must be one of"):
    data.load_cifar100(tmp_path, label_mode="super")
  with pytest.raises(FileNotFoundError, match="pickled python version"):
    data.load_cifar100(tmp_path / "nowhere")


def test_cifar100_bad_files(tmp_path):
  path = tmp_path / "train.bin"
  _write_bin(path, 3)
  content = path.read_bytes()
  path.write_bytes(content[:-1])
  with pytest.raises(DataFileError, match="not a multiple of the 3074-byte"
                     ) as info:
    data.load_cifar100(path)
  assert info.value.path == str(path)
  path.write_bytes(b"")
  with pytest.raises(DataFileError, match="empty file"):
    data.load_cifar100(path)
  _write_bin(path, 3, fine=[1, 100, 2])
  with pytest.raises(DataFileError, match="fine labels must lie in "
                     r"\[0, 100\); record 1 .* fine label 100") as info:
    data.load_cifar100(path)
  assert info.value.path == str(path)
  _write_bin(path, 3, coarse=[0, 1, 20])
  # Coarse bytes are checked whichever label_mode is asked for.
  with pytest.raises(DataFileError, match="record 2 .* coarse label 20"):
    data.load_cifar100(path, label_mode="fine")


# ---------------------------------------------------------------------------
# TFDS paths (no network: a fake module stands in for tensorflow_datasets)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("loader", [data.load_svhn_tfds,
                                    data.load_cifar100_tfds])
def test_tfds_missing_gives_clear_error(monkeypatch, loader):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match="tensorflow-datasets"):
    loader("test")


@pytest.mark.parametrize("loader, name, kwargs, key", [
    (data.load_svhn_tfds, "svhn_cropped", {}, "label"),
    (data.load_cifar100_tfds, "cifar100", {}, "label"),
    (data.load_cifar100_tfds, "cifar100", {"label_mode": "coarse"},
     "coarse_label"),
])
def test_tfds_with_fake_module(monkeypatch, loader, name, kwargs, key):
  images = _cifar_images(5)
  records = [{"image": images[i], "label": i, "coarse_label": 10 + i}
             for i in range(5)]
  calls = {}

  def data_source(source_name, *, split, data_dir, download):
    calls.update(name=source_name, split=split, data_dir=data_dir,
                 download=download)
    return records

  monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                      types.SimpleNamespace(data_source=data_source))
  got, labels = loader("train[:5]", data_dir="/tmp/tfds", download=False,
                       **kwargs)
  assert calls == dict(name=name, split="train[:5]", data_dir="/tmp/tfds",
                       download=False)
  np.testing.assert_array_equal(got, images)
  assert labels.dtype == np.int32
  assert labels.tolist() == [r[key] for r in records]


def test_public_names():
  for name in ("load_california_housing", "load_svhn", "load_svhn_tfds",
               "load_cifar100", "load_cifar100_tfds", "CALIFORNIA_FEATURES",
               "CIFAR100_COARSE_CLASSES"):
    assert name in data.__all__
  assert pathlib.Path(data.load_svhn.__code__.co_filename).name == "_svhn.py"
