"""Bad input to the data loaders gets a clear error naming the file (issue 7).

Every case here used to give a wrong result without an error (overflowing
numbers) or a raw ``UnicodeDecodeError``/``BadZipFile``/``EOFError``/
``RecursionError``/``RuntimeError`` without the file name. Files are small
synthetic ones in each loader's original schema; the last tests read the
real data through the ``data_dir`` fixture.
"""

import csv
import io
import json
import pickle
import re
import zipfile

import numpy as np
import pytest

from l2d_jax import data
from l2d_jax.data import _archives
from l2d_jax.data import _common
from tests.test_data_images import _write_fake_cifar
from tests.test_data_loaders import _C10H_HEADER
from tests.test_data_loaders import _C10H_ROWS
from tests.test_data_loaders import _H16_HEADER
from tests.test_data_loaders import _LABELS
from tests.test_data_loaders_byo import _byo_dir
from tests.test_data_loaders import _c10h_file
from tests.test_data_loaders import _c10h_row
from tests.test_data_loaders import _c10n_dir
from tests.test_data_loaders import _c10s_dir
from tests.test_data_loaders import _h16_row
from tests.data_writers import write_csv as _write_csv

_CLASSES16 = ("knife", "keyboard", "elephant")


def _raises_for(path, pattern=""):
  """``pytest.raises`` for a ValueError whose message starts with ``path``."""
  return pytest.raises(ValueError, match=re.escape(str(path)) + pattern)


def _spoil_line(path, line, byte=b"\xe9"):
  """Appends a latin-1 byte (not UTF-8) to line ``line`` (1-based)."""
  rows = path.read_bytes().split(b"\n")
  rows[line - 1] = rows[line - 1] + byte
  path.write_bytes(b"\n".join(rows))
  return path


def _h16_model_dir(tmp_path, scores=None, noise="110"):
  """imagenet16h_model_preds/ with 3 classes and 2 images."""
  folder = tmp_path / "imagenet16h_model_preds"
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "label_to_int_mapping.json").write_text(
      json.dumps({c: k for k, c in enumerate(_CLASSES16)}))
  header = ("", "image_name", "noise_type", "noise_level", "category",
            "model_name", "model_pred", "correct", *_CLASSES16)
  if scores is None:
    scores = [["0.5", "0.25", "0.125"], ["0.1", "0.7", "0.1"]]
  rows = [(k, f"img_{k}", "phase", noise, _CLASSES16[k], "vgg19", k, 1, *s)
          for k, s in enumerate(scores)]
  return _write_csv(folder / "vgg19_epoch10_preds_noise110.csv", header, rows)


def _model_probs_file(tmp_path, rows=3):
  folder = tmp_path / "cifar10h_model_probs"
  folder.mkdir(parents=True, exist_ok=True)
  table = np.concatenate([np.zeros((rows, 1)), np.ones((rows, 10)),
                          np.full((rows, 10), 0.1)], 1)
  path = folder / "resnet-110.csv"
  np.savetxt(path, table, delimiter=",", fmt="%.9g")
  return path


def _zip(path, members, compression=zipfile.ZIP_DEFLATED):
  with zipfile.ZipFile(path, "w", compression) as archive:
    for name, blob in members.items():
      archive.writestr(name, blob)
  return path


def _patch_zip(path, *, encrypted=False, declared_size=None):
  """Rewrites the headers of every member: encryption flag, declared size."""
  raw = bytearray(path.read_bytes())
  for signature, flag_at, size_at in ((b"PK\x03\x04", 6, 22),
                                      (b"PK\x01\x02", 8, 24)):
    start = raw.find(signature)
    while start >= 0:
      if encrypted:
        raw[start + flag_at] |= 0x01
      if declared_size is not None:
        raw[start + size_at:start + size_at + 4] = declared_size.to_bytes(
            4, "little")
      start = raw.find(signature, start + 4)
  path.write_bytes(bytes(raw))
  return path


def _c10h_csv_bytes(rows=_C10H_ROWS):
  text = io.StringIO()
  csv.writer(text).writerows([_C10H_HEADER, *rows])
  return text.getvalue().encode()


# ---------------------------------------------------------------------------
# Text that is not UTF-8: every text-reading loader names the file and line.


def _latin1_cifar10h(tmp_path):
  path = _spoil_line(_c10h_file(tmp_path, _C10H_ROWS), 3)
  return path, lambda: data.load_cifar10h_raw(path, num_images=3)


def _latin1_byo(tmp_path):
  folder = _byo_dir(tmp_path)
  path = _spoil_line(folder / "annotations.csv", 3)
  return path, lambda: data.load_byo(folder)


def _latin1_cifar10s(tmp_path):
  root = _c10s_dir(tmp_path, [("a", "spec_conf", "mostProbCat", "Cat", "0.0"),
                              ("b", "spec_conf", "mostProbCat", "Cat", "0.0")])
  path = _spoil_line(root / "cifar10s" / "raw_human_data.csv", 3)
  return path, lambda: data.load_cifar10s(root, labels=_LABELS)


def _latin1_cifar10n(tmp_path):
  root = _c10n_dir(tmp_path, [f"{a}--{a + 9}" for a in range(0, 50_000, 10)])
  path = _spoil_line(root / "cifar10n" / "side_info_cifar10N.csv", 3)
  return path, lambda: data.load_cifar10n(root)


def _latin1_imagenet16h_model(tmp_path):
  path = _spoil_line(_h16_model_dir(tmp_path), 3)
  return path, lambda: data.load_imagenet16h_model_preds(tmp_path)


def _latin1_imagenet16h_classes(tmp_path):
  _h16_model_dir(tmp_path)
  path = tmp_path / "imagenet16h_model_preds" / "label_to_int_mapping.json"
  path.write_bytes(b'{\n"kn\xe9fe": 0}')
  return path, lambda: data.load_imagenet16h_classes(tmp_path)


def _latin1_imagenet16h_human(tmp_path):
  path = _write_csv(tmp_path / "human.csv", _H16_HEADER,
                    [_h16_row(1, 1, "img_a", "knife", "knife", 95)] * 3)
  _spoil_line(path, 3)
  return path, lambda: data.load_imagenet16h_human(
      path, image_names=("img_a",), class_names=("knife",))


def _latin1_model_probs(tmp_path):
  path = _spoil_line(_model_probs_file(tmp_path), 3)
  return path, lambda: data.load_model_probs(tmp_path, "resnet-110")


def _latin1_cifar10_index(tmp_path):
  _write_fake_cifar(tmp_path)
  path = _spoil_line(tmp_path / "cifar10_images" / "test_index.csv", 3)
  return path, lambda: data.load_cifar10_images(tmp_path)


def _latin1_zipped_csv(tmp_path):
  path = _zip(tmp_path / "cifar10h-raw.zip", {
      "cifar10h-raw.csv": _c10h_csv_bytes() + b"\xe9\n"})
  return path, lambda: data.load_cifar10h_raw(path, num_images=3)


@pytest.mark.parametrize("make", [
    _latin1_cifar10h, _latin1_byo, _latin1_cifar10s, _latin1_cifar10n,
    _latin1_imagenet16h_model, _latin1_imagenet16h_classes,
    _latin1_imagenet16h_human, _latin1_model_probs, _latin1_cifar10_index,
    _latin1_zipped_csv,
])
def test_text_that_is_not_utf8_names_file_and_line(tmp_path, make):
  path, load = make(tmp_path)
  line = 2 if make in (_latin1_imagenet16h_classes,) else (
      len(_C10H_ROWS) + 2 if make is _latin1_zipped_csv else 3)
  with _raises_for(path, rf", line {line}: not UTF-8 text \(byte 0xe9") as err:
    load()
  assert isinstance(err.value, data.DataFileError)
  assert err.value.line == line


# ---------------------------------------------------------------------------
# Numbers that overflow.


def test_counts_beyond_int64_are_refused(tmp_path):
  (tmp_path / "cifar10h").mkdir()
  path = tmp_path / "cifar10h" / "cifar10h-counts.npy"
  counts = np.ones((10_000, 10))
  counts[17, 3] = 1e30
  np.save(path, counts)
  with _raises_for(path, r": counts must be whole numbers within the 64-bit "
                   r"integer range; index \(17, 3\) holds 1e\+30"):
    data.load_cifar10h_counts(tmp_path)
  np.save(path, np.full((10_000, 10), 2 ** 63, np.uint64))
  with _raises_for(path, ": counts at index .* beyond the 64-bit"):
    data.load_cifar10h_counts(tmp_path)
  np.save(path, np.ones((10_000, 10)))
  assert data.load_cifar10h_counts(tmp_path).sum() == 100_000


def test_model_probs_counts_beyond_int64_are_refused(tmp_path):
  path = _model_probs_file(tmp_path, rows=10_000)
  lines = path.read_text().splitlines()
  fields = lines[4].split(",")
  fields[2] = "1e30"
  lines[4] = ",".join(fields)
  path.write_text("\n".join(lines) + "\n")
  with _raises_for(path, r": the CIFAR-10H count columns must be whole "
                   r"numbers .* index \(4, 1\) holds 1e\+30"):
    data.load_model_probs(tmp_path, "resnet-110")


@pytest.mark.parametrize("column,value", [
    (4, "1e20"), (4, "99999999999999999999"), (4, "-1e20"), (8, "1e20"),
])
def test_cifar10h_raw_index_beyond_int64_is_refused(tmp_path, column, value):
  row = list(_c10h_row(3, 0, 1, 8, 8))
  row[column] = value
  path = _c10h_file(tmp_path, _C10H_ROWS + [tuple(row)])
  name = _C10H_HEADER[column]
  with _raises_for(path, rf", line {len(_C10H_ROWS) + 2}: column '{name}' "
                   "holds .*outside the 64-bit integer range"):
    data.load_cifar10h_raw(path, num_images=3)


def test_byo_integer_beyond_int64_names_the_line(tmp_path):
  folder = _byo_dir(tmp_path, rows=[(0, "a", 1), (99999999999999999999, "b",
                                                  1)])
  with _raises_for(folder / "annotations.csv", ", line 3: column 'image' "
                   "holds '99999999999999999999', outside"):
    data.load_byo(folder)


@pytest.mark.parametrize("scores,bad_line", [
    ([["0.5", "0.25", "0.125"], ["1e308", "1e308", "0.1"]], 3),
    ([["1e400", "0.25", "0.125"], ["0.1", "0.7", "0.1"]], 2),
])
def test_imagenet16h_scores_that_overflow_are_refused(tmp_path, scores,
                                                      bad_line):
  path = _h16_model_dir(tmp_path, scores=scores)
  with _raises_for(path, rf", line {bad_line}: class scores must be finite, "
                   "non-negative, not all 0, and sum to a finite number"):
    data.load_imagenet16h_model_preds(tmp_path)
  with pytest.raises(ValueError, match="row 0 overflow"):
    _common.normalize_scores(np.array([[1e308, 1e308]]), source="s")


def test_imagenet16h_noise_level_beyond_int64(tmp_path):
  path = _h16_model_dir(tmp_path, noise="1e20")
  with _raises_for(path, ", line 2: column 'noise_level' holds '1e20'"):
    data.load_imagenet16h_model_preds(tmp_path, noise_level=110)


# ---------------------------------------------------------------------------
# Arrays: empty, truncated, padded, pickled, corrupt or encrypted archives.


def _counts_path(tmp_path):
  (tmp_path / "cifar10h").mkdir(exist_ok=True)
  return tmp_path / "cifar10h" / "cifar10h-counts.npy"


def test_npy_files_that_are_not_complete_arrays(tmp_path):
  path = _counts_path(tmp_path)
  load = lambda: data.load_cifar10h_counts(tmp_path)  # noqa: E731
  path.write_bytes(b"")
  with _raises_for(path, ": empty file, expected a .npy array"):
    load()
  np.save(path, np.ones((10_000, 10), np.int64))
  raw = path.read_bytes()
  for cut in (3, 9, 60, len(raw) - 1):
    path.write_bytes(raw[:cut])
    with _raises_for(path, ": (not a .npy|corrupt .npy header|truncated)"):
      load()
  path.write_bytes(raw[:-8])
  with _raises_for(path, r": truncated: the header declares shape \(10000, "
                   r"10\) of int64 \(800000 bytes of data\) but 799992"):
    load()
  path.write_bytes(raw + b"\0" * 8)
  with _raises_for(path, ": longer than declared"):
    load()
  path.write_bytes(pickle.dumps(np.ones((10_000, 10))))
  with _raises_for(path, ": not a .npy array"):
    load()
  with open(path, "wb") as handle:
    np.savez(handle, counts=np.ones((10_000, 10)))
  with _raises_for(path, r": is a zip \(.npz\) archive"):
    load()
  np.save(path, np.full((10_000, 10), None, dtype=object), allow_pickle=True)
  with _raises_for(path, ": holds Python objects"):
    load()


def _c10n_npz(tmp_path, **arrays):
  folder = tmp_path / "cifar10n"
  folder.mkdir(parents=True, exist_ok=True)
  zeros = np.zeros(50_000, np.int64)
  names = ("clean_label", "aggre_label", "worse_label", "random_label1",
           "random_label2", "random_label3")
  path = folder / "CIFAR-10_human.npz"
  np.savez(path, **{**{n: zeros for n in names}, **arrays})
  return path


def test_npz_archives_that_are_corrupt(tmp_path):
  path = _c10n_npz(tmp_path)
  load = lambda: data.load_cifar10n_labels(tmp_path)  # noqa: E731
  assert set(load()) >= {"clean_label", "random_label3"}
  assert list(_common.load_npz(path, names=["worse_label"])) == ["worse_label"]
  raw = bytearray(path.read_bytes())
  raw[raw.index(b"\x93NUMPY") + 200_000] ^= 0xFF  # inside the first array
  path.write_bytes(bytes(raw))
  with _raises_for(path, r": cannot read member '.*\.npy' \(Bad CRC-32"):
    load()
  path.write_bytes(b"PK\x03\x04 not really a zip")
  with _raises_for(path, ": not a valid zip archive"):
    load()
  path.write_bytes(b"")
  with _raises_for(path, ": not a valid zip archive"):
    load()
  _c10n_npz(tmp_path, extra=np.array([None] * 50_000, dtype=object))
  with _raises_for(path, r"\[extra\]: holds Python objects"):
    load()
  _zip(path, {"clean_label.npy": b"\x93NUMPY\x01\x00junk"})
  with _raises_for(path, r"\[clean_label\]: corrupt .npy header"):
    load()
  _zip(path, {"notes.txt": b"hello"})
  with _raises_for(path, ": member 'notes.txt' is not a .npy array"):
    load()


def test_encrypted_zip_members_are_refused(tmp_path):
  path = _patch_zip(_zip(tmp_path / "cifar10h-raw.zip", {
      "cifar10h-raw.csv": _c10h_csv_bytes()}), encrypted=True)
  with _raises_for(path, ": member 'cifar10h-raw.csv' is encrypted"):
    data.load_cifar10h_raw(path, num_images=3)
  npz = _patch_zip(_c10n_npz(tmp_path), encrypted=True)
  with _raises_for(npz, ": member 'clean_label.npy' is encrypted"):
    data.load_cifar10n_labels(tmp_path)
  _write_fake_cifar(tmp_path)
  images = _patch_zip(tmp_path / "cifar10_images" / "cifar10_test_jpg.zip",
                      encrypted=True)
  with _raises_for(images, ": member '.*' is encrypted"):
    data.load_cifar10_images(tmp_path)


# ---------------------------------------------------------------------------
# Zip members that inflate too far.


def test_zip_bomb_is_refused_before_inflating(tmp_path):
  blob = _c10h_csv_bytes() + b"0" * (20 << 20)  # 20 MB, deflates ~1000-fold
  path = _zip(tmp_path / "cifar10h-raw.zip", {"cifar10h-raw.csv": blob})
  assert path.stat().st_size < 100_000
  with _raises_for(path, r": member 'cifar10h-raw.csv' inflates \d+-fold .*"
                   "MAX_ZIP_RATIO = 200"):
    data.load_cifar10h_raw(path, num_images=3)
  folder = tmp_path / "cifar10n"
  folder.mkdir()
  np.savez_compressed(folder / "CIFAR-10_human.npz",
                      clean_label=np.zeros(3 << 20, np.int64))
  with _raises_for(folder / "CIFAR-10_human.npz", ": member 'clean_label.npy'"
                   " inflates .*MAX_ZIP_RATIO"):
    data.load_cifar10n_labels(tmp_path)


def test_zip_member_above_the_size_bound_is_refused(tmp_path, monkeypatch):
  path = _zip(tmp_path / "cifar10h-raw.zip", {
      "cifar10h-raw.csv": _c10h_csv_bytes()})
  assert data.load_cifar10h_raw(path, num_images=3).num_experts == 3
  monkeypatch.setattr(_archives, "MAX_ZIP_MEMBER_BYTES", 100)
  with _raises_for(path, r": member 'cifar10h-raw.csv' inflates to \d+ bytes, "
                   "more than the limit of 100 bytes"):
    data.load_cifar10h_raw(path, num_images=3)


def test_set_zip_limits_is_what_every_loader_reads(tmp_path):
  path = _zip(tmp_path / "cifar10h-raw.zip", {
      "cifar10h-raw.csv": _c10h_csv_bytes()})
  previous = data.set_zip_limits(max_member_bytes=100)
  try:
    assert data.MAX_ZIP_MEMBER_BYTES == 100
    assert data.MAX_ZIP_RATIO == previous[1]
    with _raises_for(path, r": member 'cifar10h-raw.csv' inflates to \d+ "
                     "bytes, more than the limit of 100 bytes"):
      data.load_cifar10h_raw(path, num_images=3)
  finally:
    data.set_zip_limits(max_member_bytes=previous[0], max_ratio=previous[1])
  assert (data.MAX_ZIP_MEMBER_BYTES, data.MAX_ZIP_RATIO) == previous
  assert data.load_cifar10h_raw(path, num_images=3).num_experts == 3
  for bad in (0, -5, 1.5, True, "100"):
    with pytest.raises(ValueError, match="`max_member_bytes` must be a "
                       "positive integer"):
      data.set_zip_limits(max_member_bytes=bad)
  with pytest.raises(ValueError, match="`max_ratio`"):
    data.set_zip_limits(max_ratio=0)
  assert (data.MAX_ZIP_MEMBER_BYTES, data.MAX_ZIP_RATIO) == previous


def test_oversized_jpeg_member_is_refused(tmp_path):
  # A stored (uncompressed) member of 2 MiB cannot be a 32x32 JPEG.
  _write_fake_cifar(tmp_path)
  zpath = tmp_path / "cifar10_images" / "cifar10_test_jpg.zip"
  with zipfile.ZipFile(zpath) as archive:
    blobs = {n: archive.read(n) for n in archive.namelist()}
  victim = sorted(blobs)[2]
  blobs[victim] += b"\0" * (2 << 20)
  _zip(zpath, blobs, compression=zipfile.ZIP_STORED)
  with _raises_for(zpath, rf": member '{victim}' inflates to \d+ bytes, "
                   "more than the limit of 1048576"):
    data.load_cifar10_images(tmp_path)


def test_member_inflating_past_its_declared_size(tmp_path):
  blob = _c10h_csv_bytes() + b"1,2,3\n" * 100_000
  path = _patch_zip(_zip(tmp_path / "cifar10h-raw.zip",
                         {"cifar10h-raw.csv": blob}), declared_size=1000)
  with _raises_for(path, ": (cannot read member 'cifar10h-raw.csv'|member "
                   "'cifar10h-raw.csv' inflates to more bytes)"):
    data.load_cifar10h_raw(path, num_images=3)


def test_read_zip_member_stops_one_byte_past_the_declared_size():
  requested = []

  class Member(io.BytesIO):

    def read(self, size=-1):
      requested.append(size)
      return super().read(size)

  class Archive:

    def open(self, info):
      return Member(b"x" * 1_000_000)  # inflates far beyond its header

  info = zipfile.ZipInfo("big.csv")
  info.file_size, info.compress_size = 100, 90
  with pytest.raises(ValueError, match=r"a\.zip: member 'big\.csv' inflates "
                     "to more bytes than the 100 its header declares"):
    _common.read_zip_member("a.zip", Archive(), info)
  assert requested == [101]


# ---------------------------------------------------------------------------
# JSON and CSV structure.


def test_json_nested_too_deeply_or_with_huge_numbers(tmp_path):
  _h16_model_dir(tmp_path)
  path = tmp_path / "imagenet16h_model_preds" / "label_to_int_mapping.json"
  path.write_text("[" * 100_000 + "]" * 100_000)
  with _raises_for(path, ": JSON nested too deeply"):
    data.load_imagenet16h_classes(tmp_path)
  path.write_text('{"knife": ' + "1" * 5000 + "}")
  with _raises_for(path, ": invalid JSON"):
    data.load_imagenet16h_classes(tmp_path)
  path.write_text('{"knife": true, "fork": 0}')
  with _raises_for(path, ": expected an object of class name -> integer"):
    data.load_imagenet16h_classes(tmp_path)
  folder = _byo_dir(tmp_path)
  (folder / "meta.json").write_text('{"a":' + "[" * 100_000 + "]" * 100_000
                                   + "}")
  with _raises_for(folder / "meta.json", ": JSON nested too deeply"):
    data.load_byo(folder)


def test_cifar10s_response_nested_too_deeply(tmp_path):
  root = _c10s_dir(tmp_path, [("a", "spec_conf", "mostProbCat", "Cat", "0.0")])
  path = root / "cifar10s" / "raw_human_data.csv"
  text = path.read_text()
  start = text.index('"{')
  end = text.index('}"', start) + 2
  path.write_text(text[:start] + "[" * 100_000 + text[end:])
  with _raises_for(path, ", line 2: column 'response' must be JSON"):
    data.load_cifar10s(root, labels=_LABELS)


def test_cifar10_index_with_a_huge_field_or_number(tmp_path):
  _write_fake_cifar(tmp_path)
  path = tmp_path / "cifar10_images" / "test_index.csv"
  lines = path.read_text().splitlines()
  path.write_text("\n".join(lines + ['1,2,"' + "x" * 200_000 + '",p']) + "\n")
  with _raises_for(path, ", line 14: malformed CSV"):
    data.load_cifar10_images(tmp_path)
  fields = lines[1].split(",")
  fields[0] = "99999999999999999999"
  path.write_text("\n".join([lines[0], ",".join(fields)] + lines[2:]) + "\n")
  with _raises_for(path, ": `test_idx` and `label` must be integers in the "
                   "int64 range"):
    data.load_cifar10_images(tmp_path)


def test_data_file_error_keeps_path_and_line_and_pickles():
  err = data.DataFileError("a/b.csv", "bad thing.", 7)
  assert isinstance(err, ValueError)
  assert str(err) == "a/b.csv, line 7: bad thing."
  assert (err.path, err.line, err.problem) == ("a/b.csv", 7, "bad thing.")
  back = pickle.loads(pickle.dumps(err))
  assert str(back) == str(err) and back.line == 7
  assert str(data.DataFileError("x.npy", "empty.")) == "x.npy: empty."


# ---------------------------------------------------------------------------
# Real data: the bounds let every real file through.


def test_real_archives_pass_the_zip_bounds(data_dir):
  for split, count in (("test", 10_000), ("train", 50_000)):
    path = data_dir / "cifar10_images" / f"cifar10_{split}_jpg.zip"
    with zipfile.ZipFile(path) as archive:
      infos = archive.infolist()
    assert len(infos) == count
    for info in infos:
      _common.check_zip_member(path, info, max_bytes=1 << 20)
  for name in ("CIFAR-10_human.npz", "CIFAR-100_human.npz"):
    path = data_dir / "cifar10n" / name
    arrays = _common.load_npz(path)
    with np.load(path, allow_pickle=False) as reference:
      assert list(arrays) == list(reference.files)
      for key in reference.files:
        np.testing.assert_array_equal(arrays[key], reference[key])
  counts = _common.load_npy(data_dir / "cifar10h" / "cifar10h-counts.npy")
  np.testing.assert_array_equal(
      counts, np.load(data_dir / "cifar10h" / "cifar10h-counts.npy"))


# ---------------------------------------------------------------------------
# Integer arguments: numpy integers are accepted, bools and floats refused.


def test_numpy_integers_are_accepted_as_sizes():
  i64 = np.int64
  a = data.synthetic_pool(i64(3), num_images=i64(40), num_classes=i64(4),
                          num_experts=i64(5), answers_per_expert=i64(8),
                          pairs_per_specialist=i64(1))
  b = data.synthetic_pool(3, num_images=40, num_classes=4, num_experts=5,
                          answers_per_expert=8, pairs_per_specialist=1)
  np.testing.assert_array_equal(a.probs, b.probs)
  np.testing.assert_array_equal(a.annotations.answer, b.annotations.answer)
  for u, v in zip(data.mixture_of_gaussians(i64(1), i64(30)),
                  data.mixture_of_gaussians(1, 30)):
    np.testing.assert_array_equal(u, v)
  image, expert = data.balanced_assignment(
      np.random.default_rng(0), num_images=i64(10), num_experts=np.int32(3),
      answers_per_expert=np.uint8(4))
  assert image.shape == expert.shape == (12,)
  assert data.steps_per_epoch(i64(10), i64(3)) == 3
  np.testing.assert_array_equal(
      data.epoch_permutation(i64(10), seed=i64(1), epoch=i64(2)),
      data.epoch_permutation(10, seed=1, epoch=2))


@pytest.mark.parametrize("kwargs,error,message", [
    ({"num_experts": True}, TypeError, "`num_experts` must be an int, got bool"),
    ({"num_images": 50.0}, TypeError, "`num_images` must be an int, got float"),
    ({"num_classes": np.float64(4)}, TypeError, "`num_classes` must be an int"),
    ({"answers_per_expert": 0}, ValueError, "`answers_per_expert` must be >= 1"),
    ({"pairs_per_specialist": -1}, ValueError, "`pairs_per_specialist`"),
    ({"model_strength": float("nan")}, ValueError, "`model_strength`"),
])
def test_synthetic_pool_refuses_non_integer_sizes(kwargs, error, message):
  args = dict(num_images=50, num_classes=4, num_experts=5,
              answers_per_expert=10)
  with pytest.raises(error, match=message):
    data.synthetic_pool(0, **{**args, **kwargs})


def test_other_size_arguments_refuse_bools_floats_and_zero():
  with pytest.raises(TypeError, match="`num_samples` must be an int"):
    data.mixture_of_gaussians(0, True)
  with pytest.raises(TypeError, match="`num_samples` must be an int"):
    data.mixture_of_gaussians(0, 10.0)
  with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
    data.steps_per_epoch(10, 0)
  with pytest.raises(ValueError, match="`num_examples`"):
    data.epoch_permutation(2.5, seed=0, epoch=0)
  with pytest.raises(TypeError, match="`num_experts` must be an int"):
    data.balanced_assignment(np.random.default_rng(0), num_images=10,
                             num_experts=2.0, answers_per_expert=3)
