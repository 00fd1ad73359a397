"""Loaders of the L2D-Pop data sets (issue 8): digits, Fashion-MNIST, GTSRB."""

import gzip
import struct
import sys
import types

import numpy as np
import pytest

from l2d_jax import data
from l2d_jax.data import DataFileError


def test_load_digits_shapes_range_and_class_counts():
  images, labels = data.load_digits()
  assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
  assert labels.shape == (1797,) and labels.dtype == np.int32
  assert images.min() == 0.0 and images.max() == 1.0
  # Pixels are counts 0..16 divided by 16: exact multiples of 1/16.
  np.testing.assert_array_equal(images * 16, np.round(images * 16))
  np.testing.assert_array_equal(
      np.bincount(labels, minlength=10),
      [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])


def test_load_digits_matches_sklearn():
  from sklearn import datasets
  bunch = datasets.load_digits()
  images, labels = data.load_digits()
  np.testing.assert_array_equal(images[..., 0] * 16, bunch.images)
  np.testing.assert_array_equal(labels, bunch.target)


# ---------------------------------------------------------------------------
# Fashion-MNIST (idx-ubyte files, plain and gzipped)
# ---------------------------------------------------------------------------


def _idx_images(images, magic=2051, dims=None):
  dims = images.shape if dims is None else dims
  return (struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims)
          + images.astype(np.uint8).tobytes())


def _idx_labels(labels, magic=2049, count=None):
  count = len(labels) if count is None else count
  return (struct.pack(">II", magic, count)
          + np.asarray(labels, np.uint8).tobytes())


def _fmnist_images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 28, 28),
                                              dtype=np.uint8)


def _write_fmnist(folder, prefix, image_bytes, label_bytes, gz=False):
  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for kind, payload in (("images-idx3", image_bytes),
                        ("labels-idx1", label_bytes)):
    path = folder / f"{prefix}-{kind}-ubyte"
    if gz:
      path = path.with_name(path.name + ".gz")
      payload = gzip.compress(payload)
    path.write_bytes(payload)
    paths.append(path)
  return paths


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split, prefix", [("train", "train"),
                                           ("test", "t10k")])
def test_fashion_mnist_reads_idx_files(tmp_path, gz, split, prefix):
  images = _fmnist_images(5)
  labels = [9, 0, 3, 3, 7]
  _write_fmnist(tmp_path / "fashion_mnist", prefix, _idx_images(images),
                _idx_labels(labels), gz=gz)
  for where in (tmp_path, tmp_path / "fashion_mnist"):
    got, got_labels = data.load_fashion_mnist(where, split)
    assert got.shape == (5, 28, 28, 1) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0], images)
    assert got_labels.dtype == np.int32 and got_labels.tolist() == labels


def test_fashion_mnist_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
    data.load_fashion_mnist(tmp_path, "test")
  _write_fmnist(tmp_path, "t10k", _idx_images(_fmnist_images(2)), b"")
  (tmp_path / "t10k-labels-idx1-ubyte").unlink()
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
    data.load_fashion_mnist(tmp_path, "test")
  with pytest.raises(ValueError, match="`split` must be one of"):
    data.load_fashion_mnist(tmp_path, "valid")


def _bad_fmnist_cases():
  images = _fmnist_images(3)
  good_i, good_l = _idx_images(images), _idx_labels([1, 2, 3])
  return {
      "image magic": (_idx_images(images, magic=2049), good_l, "images",
                      r"bad idx magic number 2049 \(0x00000801\); expected "
                      "2051"),
      "label magic": (good_i, _idx_labels([1, 2, 3], magic=2051), "labels",
                      "bad idx magic number 2051 .* expected 2049"),
      "images truncated": (good_i[:-10], good_l, "images",
                           r"\[3, 28, 28\] = 2352 bytes.*truncated"),
      "labels truncated": (good_i, good_l[:-1], "labels",
                           r"\[3\] = 3 bytes.*truncated"),
      "header truncated": (good_i[:9], good_l, "images",
                           "truncated header: 9 of 16 bytes"),
      "empty": (b"", good_l, "images", "truncated: 0 bytes"),
      "trailing bytes": (good_i + b"\0", good_l, "images",
                         "2352 bytes of data, but more follow"),
      "not 28x28": (_idx_images(np.zeros((3, 28, 27))), good_l, "images",
                    "must be 28x28, the header declares 28x27"),
      "count mismatch": (good_i, _idx_labels([1, 2]), "labels",
                         "holds 2 labels but .*images-idx3-ubyte.* holds 3 "
                         "images"),
      "label 10": (good_i, _idx_labels([1, 10, 3]), "labels",
                   "labels must lie in 0..9; image 1 has label 10"),
  }


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", sorted(_bad_fmnist_cases()))
def test_fashion_mnist_bad_files_name_the_file(tmp_path, gz, case):
  image_bytes, label_bytes, culprit, message = _bad_fmnist_cases()[case]
  paths = _write_fmnist(tmp_path, "train", image_bytes, label_bytes, gz=gz)
  path = paths[0] if culprit == "images" else paths[1]
  with pytest.raises(DataFileError, match=message) as info:
    data.load_fashion_mnist(tmp_path, "train")
  assert info.value.path == str(path)
  assert str(info.value).startswith(str(path))


def test_fashion_mnist_gzip_bomb_and_corrupt_stream(tmp_path):
  # Declares 2**20 images (822 MB) behind a few hundred compressed bytes.
  header = struct.pack(">IIII", 2051, 1 << 20, 28, 28)
  image_path, _ = _write_fmnist(tmp_path, "train", header + bytes(4096),
                                _idx_labels([0]), gz=True)
  with pytest.raises(DataFileError, match="decompression bomb") as info:
    data.load_fashion_mnist(tmp_path, "train")
  assert info.value.path == str(image_path)
  # A declared size within the ratio is read one byte past it, no further.
  _write_fmnist(tmp_path, "t10k", _idx_images(_fmnist_images(2))
                + bytes(1 << 20), _idx_labels([0, 1]), gz=True)
  with pytest.raises(DataFileError, match="but more follow"):
    data.load_fashion_mnist(tmp_path, "test")
  compressed = gzip.compress(_idx_images(_fmnist_images(2)))
  image_path.write_bytes(compressed[:-12] + b"\xff" * 12)
  with pytest.raises(DataFileError, match="corrupt gzip file") as info:
    data.load_fashion_mnist(tmp_path, "train")
  assert info.value.path == str(image_path)


def test_fashion_mnist_tfds_missing(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match="tensorflow-datasets"):
    data.load_fashion_mnist_tfds("test")


def test_fashion_mnist_tfds_with_fake_module(monkeypatch):
  images = _fmnist_images(3)[..., None]
  records = [{"image": images[i], "label": 2 * i} for i in range(3)]
  calls = {}

  def data_source(name, *, split, data_dir, download):
    calls.update(name=name, split=split, data_dir=data_dir, download=download)
    return records

  monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                      types.SimpleNamespace(data_source=data_source))
  got, labels = data.load_fashion_mnist_tfds("train[:3]", data_dir="/tmp/t",
                                             download=False)
  assert calls == dict(name="fashion_mnist", split="train[:3]",
                       data_dir="/tmp/t", download=False)
  np.testing.assert_array_equal(got, images)
  assert labels.dtype == np.int32 and labels.tolist() == [0, 2, 4]


# ---------------------------------------------------------------------------
# GTSRB (Final_Training/Images/<class>/*.ppm + GT-<class>.csv)
# ---------------------------------------------------------------------------

_GT_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def _gradient_image(width, height, seed):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write_gtsrb(root, rows_by_class):
  """rows_by_class: {class: [(name, pixels [H, W, 3], (x1, y1, x2, y2))]}."""
  from PIL import Image
  images_dir = root / "GTSRB" / "Final_Training" / "Images"
  csvs = {}
  for label, rows in rows_by_class.items():
    folder = images_dir / f"{label:05d}"
    folder.mkdir(parents=True)
    lines = [_GT_HEADER]
    for name, pixels, (x1, y1, x2, y2) in rows:
      Image.fromarray(pixels).save(folder / name, format="PPM")
      h, w = pixels.shape[:2]
      lines.append(f"{name};{w};{h};{x1};{y1};{x2};{y2};{label}\n")
    csvs[label] = folder / f"GT-{label:05d}.csv"
    csvs[label].write_text("".join(lines), encoding="utf-8")
  return images_dir, csvs


def _tiny_gtsrb(root):
  return _write_gtsrb(root, {
      0: [("00000_00000.ppm", _gradient_image(12, 10, 0), (2, 1, 9, 8)),
          ("00000_00001.ppm", _gradient_image(8, 9, 1), (1, 1, 6, 7))],
      2: [("00000_00000.ppm", _gradient_image(10, 10, 2), (0, 0, 9, 9))],
      42: [("00003_00000.ppm", _gradient_image(7, 11, 3), (3, 2, 5, 9))],
  })


def test_gtsrb_crops_roi_in_class_then_row_order(tmp_path):
  images_dir, _ = _tiny_gtsrb(tmp_path)
  # Same size as the ROI: the bilinear resize is the identity, so the crop
  # must equal the ROI's pixels exactly (both corners included).
  marked = _gradient_image(12, 10, 7)
  _write_gtsrb(tmp_path / "exact", {
      5: [("a.ppm", marked, (3, 2, 6, 5))]})
  got, labels = data.load_gtsrb(tmp_path / "exact", image_size=4)
  assert got.shape == (1, 4, 4, 3) and got.dtype == np.uint8
  np.testing.assert_array_equal(got[0], marked[2:6, 3:7])
  assert labels.tolist() == [5]
  for where in (tmp_path, images_dir, images_dir.parent):
    got, labels = data.load_gtsrb(where, image_size=6)
    assert got.shape == (4, 6, 6, 3) and got.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.tolist() == [0, 0, 2, 42]


def test_gtsrb_resize_is_bilinear_of_the_crop(tmp_path):
  from PIL import Image
  pixels = _gradient_image(20, 16, 9)
  _write_gtsrb(tmp_path, {1: [("x.ppm", pixels, (4, 3, 15, 12))]})
  got, _ = data.load_gtsrb(tmp_path, image_size=5)
  expected = Image.fromarray(pixels[3:13, 4:16]).resize(
      (5, 5), Image.Resampling.BILINEAR)
  np.testing.assert_array_equal(got[0], np.asarray(expected))


def _rewrite_row(csv_path, row, new_line):
  lines = csv_path.read_text().splitlines(keepends=True)
  lines[row] = new_line
  csv_path.write_text("".join(lines))


@pytest.mark.parametrize("line, message", [
    ("00000_00001.ppm;8;9;1;1;6\n", "line 3: expected 8 semicolon-separated "
     "fields, got 6"),
    ("00000_00001.ppm;8;9;1;1;8;7;0\n", r"line 3: ROI \(1, 1\)-\(8, 7\) must "
     "satisfy 0 <= Roi.X1 <= Roi.X2 < Width = 8"),
    ("00000_00001.ppm;8;9;5;1;4;7;0\n", "line 3: ROI"),
    ("00000_00001.ppm;8;9;1;-1;6;7;0\n", "line 3: ROI"),
    ("00000_00001.ppm;8;9;1;1;6;7;3\n", "line 3: ClassId 3 differs from the "
     "class of its folder 00000"),
    ("00000_00001.ppm;8;9;1;1;6;seven;0\n", "line 3: column 'Roi.Y2' must be "
     "an integer"),
    ("00000_00001.ppm;9;9;1;1;6;7;0\n", "line 3: 00000_00001.ppm is 8x9 "
     "pixels but the row declares Width x Height = 9x9"),
    ("../00002/00000_00000.ppm;10;10;0;0;9;9;0\n", "line 3: Filename "),
])
def test_gtsrb_bad_rows_name_file_and_line(tmp_path, line, message):
  _, csvs = _tiny_gtsrb(tmp_path)
  _rewrite_row(csvs[0], 2, line)
  with pytest.raises(DataFileError, match=message) as info:
    data.load_gtsrb(tmp_path)
  assert info.value.path == str(csvs[0]) and info.value.line == 3


def test_gtsrb_bad_header_and_encoding(tmp_path):
  _, csvs = _tiny_gtsrb(tmp_path)
  _rewrite_row(csvs[2], 0, "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;"
               "Roi.Y2\n")
  with pytest.raises(DataFileError, match=r"line 1: header .*missing "
                     r"\['ClassId'\]") as info:
    data.load_gtsrb(tmp_path)
  assert info.value.path == str(csvs[2])
  # Comma-separated instead of semicolons.
  _rewrite_row(csvs[2], 0, _GT_HEADER.replace(";", ","))
  with pytest.raises(DataFileError, match="line 1: header must be"):
    data.load_gtsrb(tmp_path)
  _rewrite_row(csvs[2], 0, _GT_HEADER)
  raw = csvs[42].read_bytes()
  csvs[42].write_bytes(raw.replace(b"00003_00000", b"caf\xe9_00000"))
  with pytest.raises(DataFileError, match="line 2: not UTF-8") as info:
    data.load_gtsrb(tmp_path)
  assert info.value.path == str(csvs[42])


def test_gtsrb_missing_paths_and_bad_images(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    data.load_gtsrb(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="Final_Training/Images"):
    data.load_gtsrb(tmp_path)
  images_dir, csvs = _tiny_gtsrb(tmp_path)
  (images_dir / "00002" / "00000_00000.ppm").unlink()
  with pytest.raises(FileNotFoundError, match="00002/00000_00000.ppm"):
    data.load_gtsrb(tmp_path)
  (images_dir / "00002" / "00000_00000.ppm").write_bytes(b"P6\n10 10\n255\n"
                                                         + bytes(7))
  with pytest.raises(DataFileError, match="cannot decode the image") as info:
    data.load_gtsrb(tmp_path)
  assert info.value.path == str(images_dir / "00002" / "00000_00000.ppm")
  csvs[2].unlink()
  with pytest.raises(FileNotFoundError, match="GT-00002.csv"):
    data.load_gtsrb(tmp_path)
  (images_dir / "00002").rename(images_dir / "00043")
  with pytest.raises(ValueError, match="00043: GTSRB has classes"):
    data.load_gtsrb(tmp_path)


@pytest.mark.parametrize("size", [0, 2.5, True])
def test_gtsrb_image_size_checked(tmp_path, size):
  _tiny_gtsrb(tmp_path)
  with pytest.raises((TypeError, ValueError), match="image_size"):
    data.load_gtsrb(tmp_path, image_size=size)


def test_public_names():
  for name in ("load_digits", "load_fashion_mnist", "load_fashion_mnist_tfds",
               "load_gtsrb", "FASHION_MNIST_CLASSES"):
    assert name in data.__all__ and hasattr(data, name)
