"""Tests for the mixture of Gaussians, CIFAR-10 JPEG loading and batching."""

import csv
import io
import math
import os
import sys
import types
import zipfile

import jax
import numpy as np
import pytest
from PIL import Image

from l2d_jax import data as ld
from l2d_jax.data import _batches
from l2d_jax.data import _cifar10_images


# ---------------------------------------------------------------------------
# Mixture of Gaussians
# ---------------------------------------------------------------------------


def test_mog_shapes_dtypes_counts():
  x, y, c = ld.mixture_of_gaussians(0, 1002)
  assert x.shape == (1002, 2) and x.dtype == np.float32
  assert y.shape == (1002,) and y.dtype == np.int32
  assert c.shape == (1002,) and c.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(c, minlength=4), [251, 251, 250, 250])
  np.testing.assert_array_equal(y, c)  # label = cluster by default
  # Shuffled order, not sorted blocks.
  assert np.any(np.diff(c) < 0)


def test_mog_weights_and_labels():
  x, y, c = ld.mixture_of_gaussians(
      1, 400, weights=(1, 1, 0, 2), cluster_labels=(0, 1, 0, 1))
  np.testing.assert_array_equal(np.bincount(c, minlength=4), [100, 100, 0, 200])
  np.testing.assert_array_equal(y, np.array([0, 1, 0, 1])[c])
  assert ld.mixture_of_gaussians(0, 0)[0].shape == (0, 2)


def test_mog_deterministic_and_keyed():
  a = ld.mixture_of_gaussians(3, 200)
  b = ld.mixture_of_gaussians(3, 200)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a[0], ld.mixture_of_gaussians(4, 200)[0])
  k = ld.mixture_of_gaussians(jax.random.key(7), 200)
  k_raw = ld.mixture_of_gaussians(jax.random.PRNGKey(7), 200)
  np.testing.assert_array_equal(k[0], k_raw[0])
  assert not np.array_equal(k[0], ld.mixture_of_gaussians(jax.random.key(8), 200)[0])
  gen = ld.mixture_of_gaussians(np.random.default_rng(3), 200)
  np.testing.assert_array_equal(gen[0], a[0])
  with pytest.raises(TypeError):
    ld.mixture_of_gaussians(1.5, 10)
  with pytest.raises(ValueError):
    ld.mixture_of_gaussians(-1, 10)


def test_mog_moments():
  x, _, c = ld.mixture_of_gaussians(0, 40_000, scales=(0.5, 1.0, 1.5, 2.0))
  for k in range(4):
    pts = x[c == k].astype(np.float64)
    np.testing.assert_allclose(pts.mean(0), ld.MOG_PAPER_MEANS[k], atol=0.08)
    np.testing.assert_allclose(pts.std(0), [0.5 * (k + 1)] * 2, rtol=0.05)


def _pair_accuracy(x, c, a, b, means):
  """Accuracy of the Bayes (nearest-mean) rule between clusters a and b."""
  sel = (c == a) | (c == b)
  da = np.sum((x[sel] - means[a]) ** 2, axis=1)
  db = np.sum((x[sel] - means[b]) ** 2, axis=1)
  pred = np.where(da <= db, a, b)
  return float(np.mean(pred == c[sel]))


def _phi(z):
  return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_mog_clusters_2_and_3_overlap():
  x, _, c = ld.mixture_of_gaussians(0, 40_000)
  means = np.array(ld.MOG_PAPER_MEANS)
  # Paper's clusters 2 and 3 (ids 1, 2): sqrt(2) apart, Bayes accuracy Phi(sqrt(2)/2).
  acc_overlap = _pair_accuracy(x, c, 1, 2, means)
  assert acc_overlap == pytest.approx(_phi(math.sqrt(2) / 2), abs=0.015)
  assert acc_overlap < 0.8
  # The other clusters are (nearly) separable.
  assert _pair_accuracy(x, c, 0, 1, means) > 0.995
  assert _pair_accuracy(x, c, 0, 3, means) > 0.99
  assert _pair_accuracy(x, c, 2, 3, means) > 0.999


@pytest.mark.parametrize("separation", [0.5, 2.0, 6.0])
def test_mog_separation_controls_overlap(separation):
  x, _, c = ld.mixture_of_gaussians(1, 20_000, separation=separation)
  means = np.array(ld.MOG_PAPER_MEANS)
  means[2] = means[1] + separation / math.sqrt(2)
  np.testing.assert_allclose(x[c == 2].mean(0), means[2], atol=0.05)
  acc = _pair_accuracy(x, c, 1, 2, means)
  assert acc == pytest.approx(_phi(separation / 2), abs=0.02)


def test_mog_bad_options():
  with pytest.raises(ValueError, match="either"):
    ld.mixture_of_gaussians(0, 10, means=np.zeros((4, 2)), separation=1.0)
  with pytest.raises(ValueError, match="means"):
    ld.mixture_of_gaussians(0, 10, means=np.zeros((3, 2)))
  with pytest.raises(ValueError, match="scales"):
    ld.mixture_of_gaussians(0, 10, scales=0.0)
  with pytest.raises(ValueError, match="scales"):
    ld.mixture_of_gaussians(0, 10, scales=np.ones(3))
  with pytest.raises(ValueError, match="weights"):
    ld.mixture_of_gaussians(0, 10, weights=(0, 0, 0, 0))
  with pytest.raises(ValueError, match="num_samples"):
    ld.mixture_of_gaussians(0, -1)


def test_train_val_test_split():
  x, y, c = ld.mixture_of_gaussians(0, 101)
  (xtr, ytr), (xva, yva), (xte, yte) = ld.train_val_test_split(5, x, y)
  assert (len(xtr), len(xva), len(xte)) == (61, 20, 20)
  # Rows stay aligned across arrays and the three parts cover every row once.
  rows = {tuple(r) for r in x}
  assert len(rows) == 101
  joined = np.concatenate([xtr, xva, xte])
  assert {tuple(r) for r in joined} == rows
  lookup = {tuple(r): yy for r, yy in zip(x, y)}
  assert all(lookup[tuple(r)] == yy for r, yy in zip(xte, yte))
  again = ld.train_val_test_split(5, x, y)
  np.testing.assert_array_equal(again[0][0], xtr)
  flat = ld.train_val_test_split(0, np.arange(10), fractions=(0.5, 0.3, 0.2), shuffle=False)
  assert [p[0].tolist() for p in flat] == [[0, 1, 2, 3, 4], [5, 6, 7], [8, 9]]
  with pytest.raises(ValueError, match="fractions"):
    ld.train_val_test_split(0, x, fractions=(0.5, 0.5, 0.5))
  with pytest.raises(ValueError, match="leading"):
    ld.train_val_test_split(0, x, y[:-1])


# ---------------------------------------------------------------------------
# Augmentation and normalisation
# ---------------------------------------------------------------------------


def _reference_crop_flip(images, offsets, flip, pad):
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h, w = images.shape[1:3]
  out = []
  for img, (dy, dx), f in zip(padded, offsets, flip):
    crop = img[dy:dy + h, dx:dx + w]
    out.append(crop[:, ::-1] if f else crop)
  return np.stack(out)


def test_crop_and_flip_hand_made():
  x = np.arange(1, 7, dtype=np.uint8).reshape(1, 2, 3, 1)  # [[1 2 3], [4 5 6]]
  got = ld.crop_and_flip(x, np.array([[0, 2]]), np.array([False]), pad=1)[0, ..., 0]
  np.testing.assert_array_equal(got, [[0, 0, 0], [2, 3, 0]])
  got = ld.crop_and_flip(x, np.array([[0, 2]]), np.array([True]), pad=1)[0, ..., 0]
  np.testing.assert_array_equal(got, [[0, 0, 0], [0, 3, 2]])
  got = ld.crop_and_flip(x, np.array([[1, 1]]), np.array([True]), pad=1)[0, ..., 0]
  np.testing.assert_array_equal(got, [[3, 2, 1], [6, 5, 4]])


@pytest.mark.parametrize("pad", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_crop_and_flip_matches_reference_all_offsets(pad, dtype):
  side = 2 * pad + 1
  dy, dx, f = np.meshgrid(np.arange(side), np.arange(side), [False, True], indexing="ij")
  offsets = np.stack([dy.ravel(), dx.ravel()], axis=1)
  flip = f.ravel()
  rng = np.random.default_rng(0)
  images = (rng.integers(1, 250, (len(flip), 3, 4, 2))).astype(dtype)
  got = ld.crop_and_flip(images, offsets, flip, pad=pad)
  assert got.dtype == dtype and got.shape == images.shape
  np.testing.assert_array_equal(got, _reference_crop_flip(images, offsets, flip, pad))


def test_crop_and_flip_bad_offsets():
  x = np.zeros((2, 4, 4, 3), np.uint8)
  with pytest.raises(ValueError, match="offsets"):
    ld.crop_and_flip(x, np.array([[0, 0], [0, 9]]), np.zeros(2, bool), pad=4)
  with pytest.raises(ValueError, match="flip"):
    ld.crop_and_flip(x, np.zeros((2, 2), int), np.zeros(3, bool), pad=4)
  with pytest.raises(ValueError, match="4 dims"):
    ld.crop_and_flip(x[0], np.zeros((4, 2), int), np.zeros(4, bool))


def test_augment_crop_flip_deterministic_and_documented_draws():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
  a = ld.augment_crop_flip(np.random.default_rng(1), images)
  b = ld.augment_crop_flip(1, images)
  assert a.shape == images.shape and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, ld.augment_crop_flip(2, images))
  draws = np.random.default_rng(1)
  offsets = draws.integers(0, 9, size=(64, 2))
  flip = draws.random(64) < 0.5
  np.testing.assert_array_equal(a, _reference_crop_flip(images, offsets, flip, 4))
  # A generator argument advances: two calls give different augmentations.
  g = np.random.default_rng(3)
  assert not np.array_equal(ld.augment_crop_flip(g, images), ld.augment_crop_flip(g, images))


def test_normalize_images():
  x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  got = ld.normalize_images(x)
  ref = (x / 255.0 - np.array(ld.CIFAR10_MEAN)) / np.array(ld.CIFAR10_STD)
  assert got.dtype == np.float32 and got.shape == x.shape
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  got1 = ld.normalize_images(x[0], mean=(0.5,) * 3, std=(0.5,) * 3)
  np.testing.assert_allclose(got1, x[0] / 127.5 - 1.0, rtol=1e-5, atol=1e-5)
  with pytest.raises(TypeError, match="uint8"):
    ld.normalize_images(x.astype(np.float32))
  with pytest.raises(ValueError, match="channel"):
    ld.normalize_images(x, mean=(0.5,), std=(0.5,))


# ---------------------------------------------------------------------------
# Batch iterator
# ---------------------------------------------------------------------------


@pytest.fixture
def small_images():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 50).astype(np.int32)
  return images, labels


def _collect(*args, **kwargs):
  return list(ld.iterate_batches(*args, **kwargs))


def test_iterate_batches_pure_function_of_seed_epoch(small_images):
  images, labels = small_images
  kw = dict(batch_size=8, seed=3)
  a = _collect(images, labels, epoch=1, **kw)
  b = _collect(images, labels, epoch=1, **kw)
  assert len(a) == 6 == ld.steps_per_epoch(50, 8)
  for u, v in zip(a, b):
    assert set(u) == {"image", "label", "index"}
    for k in u:
      np.testing.assert_array_equal(u[k], v[k])
  c = _collect(images, labels, epoch=2, **kw)
  assert not np.array_equal(a[0]["index"], c[0]["index"])
  d = _collect(images, labels, epoch=1, batch_size=8, seed=4)
  assert not np.array_equal(a[0]["index"], d[0]["index"])
  order = ld.epoch_permutation(50, seed=3, epoch=1)
  np.testing.assert_array_equal(np.concatenate([x["index"] for x in a]), order[:48])


def test_iterate_batches_covers_each_example_once(small_images):
  images, labels = small_images
  extra = {"expert": np.arange(50) * 10, "mask": np.ones((50, 3), bool)}
  batches = _collect(images, labels, batch_size=8, seed=0, epoch=0, drop_remainder=False,
                     augment=False, normalize=False, extra=extra)
  assert [len(b["label"]) for b in batches] == [8] * 6 + [2]
  idx = np.concatenate([b["index"] for b in batches])
  np.testing.assert_array_equal(np.sort(idx), np.arange(50))
  for b in batches:
    np.testing.assert_array_equal(b["image"], images[b["index"]])
    np.testing.assert_array_equal(b["label"], labels[b["index"]])
    np.testing.assert_array_equal(b["expert"], b["index"] * 10)
    assert b["mask"].shape == (len(b["index"]), 3)
  dropped = _collect(images, labels, batch_size=8, seed=0, epoch=0)
  idx = np.concatenate([b["index"] for b in dropped])
  assert len(idx) == 48 and len(np.unique(idx)) == 48
  plain = _collect(images, labels, batch_size=10, seed=0, epoch=0, shuffle=False)
  np.testing.assert_array_equal(plain[1]["index"], np.arange(10, 20))


def test_iterate_batches_augment_normalize_and_resume(small_images):
  images, labels = small_images
  full = _collect(images, labels, batch_size=8, seed=1, epoch=0)
  b0 = full[0]
  assert b0["image"].dtype == np.float32 and b0["image"].shape == (8, 32, 32, 3)
  assert b0["label"].dtype == np.int32
  # Batch content equals normalise(crop_flip(images[index])) for some crop; not identity.
  raw = ld.normalize_images(images[b0["index"]])
  assert not np.allclose(b0["image"], raw)
  resumed = _collect(images, labels, batch_size=8, seed=1, epoch=0, start_batch=4)
  assert len(resumed) == 2
  for u, v in zip(full[4:], resumed):
    np.testing.assert_array_equal(u["image"], v["image"])
  prefetched = _collect(images, labels, batch_size=8, seed=1, epoch=0, prefetch=2)
  assert len(prefetched) == len(full)
  for u, v in zip(full, prefetched):
    np.testing.assert_array_equal(u["image"], v["image"])
    np.testing.assert_array_equal(u["index"], v["index"])


def test_iterate_batches_prefetch_early_stop(small_images):
  images, labels = small_images
  it = ld.iterate_batches(images, labels, batch_size=4, seed=0, epoch=0, prefetch=1)
  next(it)
  it.close()  # Stops the worker thread without hanging.
  it = ld.iterate_batches(images.astype(np.float32), labels, batch_size=4, seed=0, epoch=0,
                          normalize=False, prefetch=2, extra={"x": np.zeros(50)})
  assert next(it)["image"].dtype == np.float32
  it.close()


def test_iterate_batches_prefetch_propagates_worker_errors(small_images, monkeypatch):
  images, labels = small_images

  def boom(*args, **kwargs):
    raise RuntimeError("worker failed")

  it = ld.iterate_batches(images, labels, batch_size=4, seed=0, epoch=0, prefetch=2)
  monkeypatch.setattr(_batches, "normalize_images", boom)
  with pytest.raises(RuntimeError, match="worker failed"):
    next(it)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, 51, None])
def test_iterate_batches_bad_batch_size(small_images, batch_size):
  images, labels = small_images
  with pytest.raises(ValueError, match="batch_size"):
    ld.iterate_batches(images, labels, batch_size=batch_size, seed=0, epoch=0)


def test_iterate_batches_bad_inputs(small_images):
  images, labels = small_images
  kw = dict(batch_size=4, seed=0, epoch=0)
  with pytest.raises(ValueError, match="labels"):
    ld.iterate_batches(images, labels[:-1], **kw)
  with pytest.raises(ValueError, match="extra"):
    ld.iterate_batches(images, labels, extra={"e": np.zeros(3)}, **kw)
  with pytest.raises(ValueError, match="clashes"):
    ld.iterate_batches(images, labels, extra={"label": labels}, **kw)
  with pytest.raises(TypeError, match="uint8"):
    ld.iterate_batches(images.astype(np.float32), labels, **kw)
  with pytest.raises(ValueError, match="seed"):
    ld.iterate_batches(images, labels, batch_size=4, seed=-1, epoch=0)
  with pytest.raises(ValueError, match="pad"):
    ld.iterate_batches(images, labels, pad=-1, **kw)
  # Larger than N is fine without drop_remainder: one short batch.
  assert len(_collect(images, labels, batch_size=64, seed=0, epoch=0,
                      drop_remainder=False)) == 1


# ---------------------------------------------------------------------------
# CIFAR-10 JPEG loader
# ---------------------------------------------------------------------------


def _jpeg(array, **kwargs):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="JPEG", quality=95, **kwargs)
  return buf.getvalue()


def _write_fake_cifar(root, split="test", *, n=12, index_in_zip=False, members=None):
  """Writes ``root/cifar10_images/`` in the real layout; returns (images, labels)."""
  folder = root / "cifar10_images"
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, n)
  rank = {}
  rows, blobs = [], {}
  for i, y in enumerate(labels):
    cls = ld.CIFAR10_CLASSES[y]
    path = f"{split}/{cls}/{rank.setdefault(cls, 0):04d}.jpg"
    rank[cls] += 1
    rows.append((i, int(y), cls, path))
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    blobs[path] = _jpeg(img[..., 0] if i == 1 else img)  # one grayscale JPEG
  blobs.update(members or {})
  text = io.StringIO()
  w = csv.writer(text, lineterminator="\n")
  w.writerow((f"{split}_idx", "label", "class", "path"))
  for r in reversed(rows):  # index order must come from the idx column, not the row order
    w.writerow(r)
  with zipfile.ZipFile(folder / f"cifar10_{split}_jpg.zip", "w", zipfile.ZIP_STORED) as zf:
    for path in sorted(blobs):
      zf.writestr(path, blobs[path])
    if index_in_zip:
      zf.writestr(f"{split}_index.csv", text.getvalue())
  if not index_in_zip:
    (folder / f"{split}_index.csv").write_text(text.getvalue())
  expected = np.stack([
      np.asarray(Image.open(io.BytesIO(blobs[r[3]])).convert("RGB")) for r in rows])
  return expected, labels


@pytest.mark.parametrize("index_in_zip", [False, True])
@pytest.mark.parametrize("split", ["test", "train"])
def test_load_synthetic_zip(tmp_path, index_in_zip, split):
  expected, labels = _write_fake_cifar(tmp_path, split, index_in_zip=index_in_zip)
  images, got_labels = ld.load_cifar10_images(tmp_path, split=split)
  assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
  assert got_labels.dtype == np.int32
  np.testing.assert_array_equal(got_labels, labels)
  np.testing.assert_array_equal(images, expected)
  gray = images[1]
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  # data_dir may also be the cifar10_images folder itself.
  again, _ = ld.load_cifar10_images(tmp_path / "cifar10_images", split=split)
  np.testing.assert_array_equal(again, images)


def test_load_cache_atomic_and_invalidated(tmp_path):
  expected, labels = _write_fake_cifar(tmp_path / "data")
  cache = tmp_path / "cache"
  images, _ = ld.load_cifar10_images(tmp_path / "data", cache_dir=cache)
  assert sorted(os.listdir(cache)) == ["cifar10_test_jpg.npz"]  # no temporary files left
  with np.load(cache / "cifar10_test_jpg.npz", allow_pickle=False) as z:
    np.testing.assert_array_equal(z["images"], expected)
  hit, hit_labels = ld.load_cifar10_images(tmp_path / "data", cache_dir=cache)
  np.testing.assert_array_equal(hit, images)
  np.testing.assert_array_equal(hit_labels, labels)
  # A hit never opens the zip: same size and mtime, garbage content, still a hit.
  zpath = tmp_path / "data" / "cifar10_images" / "cifar10_test_jpg.zip"
  st = zpath.stat()
  zpath.write_bytes(b"\0" * st.st_size)
  os.utime(zpath, ns=(st.st_atime_ns, st.st_mtime_ns))
  np.testing.assert_array_equal(ld.load_cifar10_images(tmp_path / "data", cache_dir=cache)[0],
                                images)
  # A changed zip (other size) invalidates the cache and is decoded again.
  zpath.write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="not a valid zip"):
    ld.load_cifar10_images(tmp_path / "data", cache_dir=cache)
  # A truncated cache file is ignored and rewritten.
  _write_fake_cifar(tmp_path / "data")
  (cache / "cifar10_test_jpg.npz").write_bytes(b"PK\x03\x04truncated")
  again, _ = ld.load_cifar10_images(tmp_path / "data", cache_dir=cache)
  np.testing.assert_array_equal(again, expected)
  assert sorted(os.listdir(cache)) == ["cifar10_test_jpg.npz"]


def test_load_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="cifar10_test_jpg.zip"):
    ld.load_cifar10_images(tmp_path)
  _write_fake_cifar(tmp_path)
  (tmp_path / "cifar10_images" / "test_index.csv").unlink()
  with pytest.raises(FileNotFoundError, match="test_index.csv"):
    ld.load_cifar10_images(tmp_path)
  with pytest.raises(ValueError, match="split"):
    ld.load_cifar10_images(tmp_path, split="val")


def test_load_corrupt_jpeg_names_member(tmp_path):
  _write_fake_cifar(tmp_path, members={})
  # Overwrite one listed member with bytes that are not a JPEG.
  folder = tmp_path / "cifar10_images"
  zpath = folder / "cifar10_test_jpg.zip"
  with zipfile.ZipFile(zpath) as zf:
    blobs = {n: zf.read(n) for n in zf.namelist()}
  victim = sorted(blobs)[3]
  blobs[victim] = blobs[victim][:40] + b"\x00" * 20
  with zipfile.ZipFile(zpath, "w") as zf:
    for n, b in blobs.items():
      zf.writestr(n, b)
  with pytest.raises(ValueError, match=victim.replace("/", ".")):
    ld.load_cifar10_images(tmp_path)


def test_load_wrong_size_and_missing_member(tmp_path):
  _write_fake_cifar(tmp_path / "a")
  folder = tmp_path / "a" / "cifar10_images"
  zpath = folder / "cifar10_test_jpg.zip"
  with zipfile.ZipFile(zpath) as zf:
    blobs = {n: zf.read(n) for n in zf.namelist()}
  victim = sorted(blobs)[0]
  blobs[victim] = _jpeg(np.zeros((16, 16, 3), np.uint8))
  with zipfile.ZipFile(zpath, "w") as zf:
    for n, b in blobs.items():
      zf.writestr(n, b)
  with pytest.raises(ValueError, match="16x16"):
    ld.load_cifar10_images(tmp_path / "a")
  del blobs[victim]
  with zipfile.ZipFile(zpath, "w") as zf:
    for n, b in blobs.items():
      zf.writestr(n, b)
  with pytest.raises(ValueError, match="no member"):
    ld.load_cifar10_images(tmp_path / "a")


def test_load_bad_index(tmp_path):
  _write_fake_cifar(tmp_path)
  path = tmp_path / "cifar10_images" / "test_index.csv"
  lines = path.read_text().splitlines()
  first = lines[1].split(",")
  first[2] = "dog" if first[2] != "dog" else "cat"  # class name disagrees with label
  path.write_text("\n".join([lines[0], ",".join(first)] + lines[2:]) + "\n")
  with pytest.raises(ValueError, match="class"):
    ld.load_cifar10_images(tmp_path)


def test_jpeg_header_parser():
  assert _cifar10_images._jpeg_size(_jpeg(np.zeros((32, 16, 3), np.uint8))) == (32, 16, 3)
  assert _cifar10_images._jpeg_size(_jpeg(np.zeros((8, 8), np.uint8))) == (8, 8, 1)
  prog = _jpeg(np.zeros((32, 32, 3), np.uint8), progressive=True)
  assert _cifar10_images._jpeg_size(prog) == (32, 32, 3)
  assert _cifar10_images._jpeg_size(b"garbage") is None


def test_load_real_cifar10_test(data_dir):
  images, labels = ld.load_cifar10_images(data_dir, split="test")
  assert images.shape == (10_000, 32, 32, 3) and images.dtype == np.uint8
  with open(data_dir / "cifar10_images" / "test_index.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [int(r["test_idx"]) for r in rows] == list(range(10_000))
  np.testing.assert_array_equal(labels, [int(r["label"]) for r in rows])
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [1000] * 10)
  assert labels[:4].tolist() == [3, 8, 8, 0]  # canonical CIFAR-10 test order
  # Pixels agree with Pillow's own decoding of the listed member.
  with zipfile.ZipFile(data_dir / "cifar10_images" / "cifar10_test_jpg.zip") as zf:
    for i in (0, 4321, 9999):
      ref = np.asarray(Image.open(io.BytesIO(zf.read(rows[i]["path"]))).convert("RGB"))
      np.testing.assert_array_equal(images[i], ref)
  assert 100 < images.mean() < 140


@pytest.mark.slow
def test_load_real_cifar10_train(data_dir):
  images, labels = ld.load_cifar10_images(data_dir, split="train")
  assert images.shape == (50_000, 32, 32, 3)
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [5000] * 10)


# ---------------------------------------------------------------------------
# TFDS path (no network: a fake module stands in for tensorflow_datasets)
# ---------------------------------------------------------------------------


def test_tfds_missing_gives_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match="tensorflow-datasets"):
    ld.load_cifar10_tfds("test")


def test_tfds_path_with_fake_module(monkeypatch):
  rng = np.random.default_rng(0)
  records = [{"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "label": i % 10,
              "id": f"x{i}"} for i in range(5)]
  calls = {}

  def data_source(name, *, split, data_dir, download):
    calls.update(name=name, split=split, data_dir=data_dir, download=download)
    return records

  monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                      types.SimpleNamespace(data_source=data_source))
  images, labels = ld.load_cifar10_tfds("train[:5]", data_dir="/tmp/tfds", download=False)
  assert calls == dict(name="cifar10", split="train[:5]", data_dir="/tmp/tfds", download=False)
  np.testing.assert_array_equal(images, np.stack([r["image"] for r in records]))
  np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4])
  assert labels.dtype == np.int32
