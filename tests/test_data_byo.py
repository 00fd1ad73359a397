"""Integrity of the bring-your-own format: atomic save_byo, checksums in load_byo.

Issue 7, "Lost or corrupted data": ``save_byo`` used to write in place, so a
kill mid-write left an ``annotations.csv`` that ``load_byo`` read back as
valid, and a truncated file silently lost rows.
"""

import csv
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest

from l2d_jax import data
from l2d_jax.data import _byo
from l2d_jax.experts import Annotations

REPO = pathlib.Path(__file__).resolve().parents[1]


def _pool(seed=0, num_images=60, num_experts=7):
  return data.synthetic_pool(seed, num_images=num_images, num_classes=4,
                             num_experts=num_experts, answers_per_expert=20)


def _long(annotations):
  img, who, ans = annotations.to_long()
  return sorted(zip(img.tolist(), who.tolist(), ans.tolist()))


def _assert_same(back, ds):
  assert back.name == ds.name
  assert back.class_names == ds.class_names
  assert back.expert_names == ds.expert_names
  np.testing.assert_array_equal(back.labels, ds.labels)
  if ds.probs is None:
    assert back.probs is None
  else:
    np.testing.assert_allclose(back.probs, ds.probs, atol=1e-7)
  assert _long(back.annotations) == _long(ds.annotations)


def _siblings(path):
  return sorted(p.name for p in path.parent.iterdir())


# ---------------------------------------------------------------------------
# What save_byo records.


def test_save_byo_records_size_sha256_and_rows(tmp_path):
  ds = _pool()
  out = data.save_byo(ds, tmp_path / "d")
  assert out == tmp_path / "d"
  assert _siblings(out) == ["d"]  # no temporary directory left behind
  meta = json.loads((out / "meta.json").read_text())
  files = meta["files"]
  assert set(files) == {"labels.npy", "probs.npy", "annotations.csv"}
  for name, entry in files.items():
    raw = (out / name).read_bytes()
    assert entry["bytes"] == len(raw)
    assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
  with open(out / "annotations.csv", newline="") as handle:
    rows = list(csv.reader(handle))
  assert rows[0] == ["image", "annotator", "answer"]
  assert files["annotations.csv"]["rows"] == len(rows) - 1 == len(
      _long(ds.annotations))
  assert files["labels.npy"]["rows"] == files["probs.npy"]["rows"] == 60
  _assert_same(data.load_byo(out), ds)


def test_save_byo_extras_are_checksummed(tmp_path):
  ds = _pool()
  ds = data.AnnotatedDataset(
      probs=None, labels=ds.labels, annotations=ds.annotations,
      class_names=ds.class_names, expert_names=ds.expert_names, name="x",
      extras={"weight": np.arange(60.0)})
  out = data.save_byo(ds, tmp_path / "d")
  assert set(json.loads((out / "meta.json").read_text())["files"]) == {
      "labels.npy", "annotations.csv", "extras.npz"}
  back = data.load_byo(out)
  np.testing.assert_array_equal(back.extras["weight"], np.arange(60.0))
  raw = bytearray((out / "extras.npz").read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  (out / "extras.npz").write_bytes(bytes(raw))
  with pytest.raises(ValueError, match=r"extras\.npz: SHA-256"):
    data.load_byo(out)


def test_save_byo_refuses_object_extras(tmp_path):
  ds = _pool()
  ds = data.AnnotatedDataset(
      probs=ds.probs, labels=ds.labels, annotations=ds.annotations,
      class_names=ds.class_names, expert_names=ds.expert_names, name="x",
      extras={"obj": np.array([{"a": 1}] * 60, dtype=object)})
  with pytest.raises(ValueError, match=r"extras\['obj'\].*pickle"):
    data.save_byo(ds, tmp_path / "d")
  assert not (tmp_path / "d").exists() and _siblings(tmp_path / "d") == []


# ---------------------------------------------------------------------------
# What load_byo detects.


def test_every_truncation_of_annotations_is_detected(tmp_path):
  out = data.save_byo(_pool(num_images=200), tmp_path / "d")
  path = out / "annotations.csv"
  raw = path.read_bytes()
  assert len(raw) > 1000
  for cut in range(len(raw) - 120, len(raw)):
    path.write_bytes(raw[:cut])
    with pytest.raises(ValueError, match=r"annotations\.csv: holds "
                       rf"{cut} bytes but .*meta\.json records {len(raw)}"
                       ) as err:
      data.load_byo(out)
    assert isinstance(err.value, data.DataFileError)
    assert err.value.path == str(path)
  path.write_bytes(raw)
  data.load_byo(out)


@pytest.mark.parametrize("name", ["labels.npy", "probs.npy", "annotations.csv",
                                  "meta.json"])
def test_a_changed_byte_is_detected(tmp_path, name):
  out = data.save_byo(_pool(), tmp_path / "d")
  path = out / name
  raw = bytearray(path.read_bytes())
  if name == "meta.json":
    # A corrupted digest inside meta.json: the annotations no longer match.
    text = raw.decode()
    digest = json.loads(text)["files"]["annotations.csv"]["sha256"]
    raw = bytearray(text.replace(digest, digest[::-1]).encode())
    name = "annotations.csv"
  elif name == "annotations.csv":
    k = raw.rindex(b",") + 1  # the last answer: 0-3 becomes another 0-3
    raw[k] = ord("3") if raw[k] != ord("3") else ord("2")
  else:
    raw[-1] ^= 0x01  # last byte of the array data: same size, new value
  path.write_bytes(bytes(raw))
  with pytest.raises(ValueError, match=rf"{name}: SHA-256 .* differs"):
    data.load_byo(out)


def test_missing_or_unlisted_data_files_are_detected(tmp_path):
  ds = _pool()
  out = data.save_byo(ds, tmp_path / "d")
  probs = (out / "probs.npy").read_bytes()
  (out / "probs.npy").unlink()
  with pytest.raises(FileNotFoundError, match=r"probs\.npy: listed in 'files'"):
    data.load_byo(out)
  no_probs = data.AnnotatedDataset(
      probs=None, labels=ds.labels, annotations=ds.annotations,
      class_names=ds.class_names, expert_names=ds.expert_names, name="n")
  out = data.save_byo(no_probs, tmp_path / "e")
  (out / "probs.npy").write_bytes(probs)
  with pytest.raises(ValueError, match=r"probs\.npy: present but not listed"):
    data.load_byo(out)


@pytest.mark.parametrize("files,message", [
    ([1, 2], "'files' must be an object"),
    ({"notes.txt": {"bytes": 1, "sha256": "0" * 64}}, "'notes.txt'"),
    ({"labels.npy": {"bytes": -1, "sha256": "0" * 64}}, "'bytes'"),
    ({"labels.npy": {"bytes": 1, "sha256": "xyz"}}, "'sha256'"),
])
def test_malformed_files_entry(tmp_path, files, message):
  out = data.save_byo(_pool(), tmp_path / "d")
  meta = json.loads((out / "meta.json").read_text())
  meta["files"] = files
  (out / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match=message) as err:
    data.load_byo(out)
  assert "meta.json" in str(err.value)


def test_row_count_is_checked(tmp_path):
  out = data.save_byo(_pool(), tmp_path / "d")
  meta = json.loads((out / "meta.json").read_text())
  meta["files"]["annotations.csv"]["rows"] += 1
  (out / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match=r"annotations\.csv: holds \d+ rows but"):
    data.load_byo(out)


def test_hand_written_directories_load_unchecked(tmp_path):
  folder = tmp_path / "hand"
  folder.mkdir()
  np.save(folder / "labels.npy", np.array([1, 0, 2]))
  (folder / "annotations.csv").write_text("image,annotator,answer\n0,ann,1\n"
                                          "2,bob,2\n")
  (folder / "meta.json").write_text(json.dumps({"class_names": ["a", "b",
                                                                "c"]}))
  ds = data.load_byo(folder)  # meta.json without 'files'
  assert ds.expert_names == ("ann", "bob") and ds.num_classes == 3
  (folder / "meta.json").unlink()
  np.save(folder / "probs.npy", np.full((3, 3), 1 / 3))
  assert data.load_byo(folder).num_images == 3  # no meta.json at all
  # A saved directory edited by hand loads once 'files' is dropped.
  out = data.save_byo(ds, tmp_path / "saved")
  with open(out / "annotations.csv", "a") as handle:
    handle.write("1,carol,0\n")
  with pytest.raises(ValueError, match="delete 'files'"):
    data.load_byo(out)
  meta = json.loads((out / "meta.json").read_text())
  del meta["files"]
  meta["expert_names"].append("carol")
  (out / "meta.json").write_text(json.dumps(meta))
  assert data.load_byo(out).expert_names == ("ann", "bob", "carol")


# ---------------------------------------------------------------------------
# Failures during save_byo.


class _Crash(Exception):
  pass


def _failing_csv(after_rows):
  """A stand-in for the csv module whose writers fail after some rows."""

  def writer(handle, *args, **kwargs):
    real = csv.writer(handle, *args, **kwargs)
    written = [0]

    class Writer:

      def writerow(self, row):
        written[0] += 1
        if written[0] > after_rows:
          raise _Crash("disk full")
        return real.writerow(row)

      def writerows(self, rows):
        for row in rows:
          self.writerow(row)

    return Writer()

  names = {k: getattr(csv, k) for k in dir(csv) if not k.startswith("_")}
  return types.SimpleNamespace(**{**names, "writer": writer})


def _failing_json():

  def fail(*args, **kwargs):
    raise _Crash("killed before meta.json")

  names = {k: getattr(json, k) for k in dir(json) if not k.startswith("_")}
  return types.SimpleNamespace(**{**names, "dump": fail, "dumps": fail})


@pytest.mark.parametrize("where", ["annotations", "meta"])
@pytest.mark.parametrize("existing", [True, False])
def test_failed_save_keeps_old_directory_or_none(tmp_path, monkeypatch, where,
                                                 existing):
  old = _pool(0)
  target = tmp_path / "d"
  if existing:
    data.save_byo(old, target)
  fake = _failing_csv(30) if where == "annotations" else _failing_json()
  monkeypatch.setattr(_byo, "csv" if where == "annotations" else "json", fake)
  with pytest.raises(_Crash):
    data.save_byo(_pool(1, num_images=80), target)
  monkeypatch.undo()
  assert _siblings(target) == (["d"] if existing else [])
  if existing:
    _assert_same(data.load_byo(target), old)


@pytest.mark.parametrize("exchange", [True, False])
def test_save_replaces_existing_directory(tmp_path, monkeypatch, exchange):
  if not exchange:  # systems without an atomic directory swap
    monkeypatch.setattr(_byo, "_exchange", lambda a, b: False)
  target = tmp_path / "d"
  data.save_byo(_pool(0), target)
  new = data.AnnotatedDataset(
      probs=None, labels=_pool(1).labels, annotations=_pool(1).annotations,
      class_names=("a", "b", "c", "d"), expert_names=_pool(1).expert_names,
      name="new")
  data.save_byo(new, target)
  assert _siblings(target) == ["d"]
  assert sorted(os.listdir(target)) == ["annotations.csv", "labels.npy",
                                        "meta.json"]  # old probs.npy gone
  _assert_same(data.load_byo(target), new)


def test_save_refuses_a_directory_with_other_files(tmp_path):
  target = tmp_path / "d"
  target.mkdir()
  (target / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match=r"notes\.txt"):
    data.save_byo(_pool(), target)
  assert os.listdir(target) == ["notes.txt"]
  (tmp_path / "f").write_text("a file")
  with pytest.raises(FileExistsError, match="not a directory"):
    data.save_byo(_pool(), tmp_path / "f")


_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from l2d_jax import data
    from l2d_jax.experts import Annotations

    def pool(num_images, seed):
      rng = np.random.default_rng(seed)
      per_image = 5
      image = np.repeat(np.arange(num_images), per_image).astype(np.int32)
      expert = np.tile(np.arange(per_image), num_images).astype(np.int32)
      answer = rng.integers(0, 4, image.shape[0]).astype(np.int32)
      ann = Annotations.from_long(image, expert, answer,
                                  num_images=num_images, num_experts=per_image,
                                  num_classes=4)
      return data.AnnotatedDataset(
          probs=None, labels=rng.integers(0, 4, num_images).astype(np.int32),
          annotations=ann, class_names=("a", "b", "c", "d"),
          expert_names=tuple(f"annotator_{j}" for j in range(per_image)),
          name=f"pool{seed}")

    target = sys.argv[1]
    data.save_byo(pool(500, 0), target)
    big = pool(600_000, 1)
    print("ready", flush=True)
    data.save_byo(big, target)
    print("done", flush=True)
""")


def test_sigkill_during_save_leaves_the_old_directory(tmp_path):
  target = tmp_path / "d"
  script = tmp_path / "child.py"
  script.write_text(_CHILD)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH",
                                                                ""))
  proc = subprocess.Popen([sys.executable, str(script), str(target)],
                          stdout=subprocess.PIPE, text=True, env=env,
                          cwd=tmp_path)
  try:
    assert proc.stdout.readline().strip() == "ready"
    old_size = (target / "annotations.csv").stat().st_size
    deadline = time.monotonic() + 300
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
      for path in [target / "annotations.csv",
                   *tmp_path.glob(".d.*/annotations.csv")]:
        try:
          size = path.stat().st_size
        except FileNotFoundError:
          continue
        # The new annotations are being written (here or in a temporary).
        if 0 < size and (path.parent != target or size != old_size):
          proc.send_signal(signal.SIGKILL)
          killed = True
          break
      if killed:
        break
      time.sleep(0.001)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert killed and proc.returncode == -signal.SIGKILL, (
      "save_byo finished before it could be killed mid-write")
  back = data.load_byo(target)  # complete and verified, not a partial file
  answers = int(np.asarray(back.annotations.mask).sum())
  # The old directory; the new one only if the kill came after the swap.
  assert (back.name, back.num_images, answers) in (
      ("pool0", 500, 2500), ("pool1", 600_000, 3_000_000))
  if back.name == "pool0":
    assert list(tmp_path.glob(".d.*.tmp"))  # killed mid-write: a stale temp
  # The next save works despite the stale temporary, and replaces it all.
  data.save_byo(back, target)
  assert data.load_byo(target).num_images == 500
