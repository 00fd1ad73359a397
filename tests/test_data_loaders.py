"""Tests of the real-data loaders (l2d_jax.data, issue 2).

Real-data tests use the ``data_dir`` fixture (skipped when ../shared/data is
absent). The two files not available offline (CIFAR-10H raw, ImageNet-16H
human answers) are tested on small synthetic files in their original schema.
"""

import json
import zipfile

import numpy as np
import pytest

from l2d_jax import data
from l2d_jax.data import _common
from tests.data_writers import long_triples as _long
from tests.data_writers import write_csv as _write_csv

# CIFAR-10H raw schema (github jcpeterson/cifar-10h, data/cifar10h-raw.zip).
_C10H_HEADER = ("annotator_id", "trial_index", "is_attn_check",
                "image_filename", "cifar10_test_test_idx", "true_category",
                "true_label", "chosen_category", "chosen_label",
                "correct_guess", "reaction_time", "time_elapsed", "subcategory")


def _c10h_row(annotator, trial, idx, true, chosen, attn=0):
  cls = dict(enumerate(_common.CIFAR10_CLASSES))
  return (annotator, trial, attn, f"img_{idx}.png", idx, cls.get(true, "?"),
          true, cls.get(chosen, "?"), chosen, int(true == chosen), 900.5,
          1000 * trial, "sub")


def _c10h_file(tmp_path, rows, name="cifar10h-raw.csv"):
  return _write_csv(tmp_path / name, _C10H_HEADER, rows)


_C10H_ROWS = [
    _c10h_row(0, 0, 0, 3, 3),
    _c10h_row(0, 1, -99999, 1, 1, attn=1),
    _c10h_row(0, 2, 1, 8, 0),
    _c10h_row(1, 0, 0, 3, 5),
    _c10h_row(1, 1, 2, 9, 9),
    _c10h_row(1, 2, -99999, 0, 0, attn=1),
    _c10h_row(2, 0, 1, 8, 8),
    _c10h_row(2, 1, 2, 9, 9),
]


# ImageNet-16H human schema (OSF 2ntrf,
# human_only_classification_6per_img_export.csv).
_H16_HEADER = ("id", "worker_id", "participant_id", "image_name",
               "image_category", "noise_level", "participant_classification",
               "confidence", "correct", "classification_time")


def _h16_row(row_id, worker, image, true, answer, noise):
  return (row_id, f"w{worker}", 100 + worker, image, true, noise, answer,
          "high", int(true == answer), 1234)


# ---------------------------------------------------------------------------
# CIFAR-10H.


def test_cifar10h_counts_real(data_dir):
  counts = data.load_cifar10h_counts(data_dir)
  assert counts.shape == (10_000, 10) and counts.dtype == np.int64
  assert counts.sum() == 511_000
  per_image = counts.sum(1)
  assert per_image.min() == 47 and per_image.max() == 63


def test_cifar10h_raw_parses_and_drops_attention_checks(tmp_path):
  path = _c10h_file(tmp_path, _C10H_ROWS)
  ds = data.load_cifar10h_raw(path, num_images=3)
  assert ds.name == "cifar10h" and ds.probs is None
  assert ds.expert_names == ("0", "1", "2")
  np.testing.assert_array_equal(ds.labels, [3, 8, 9])
  assert ds.labels.dtype == np.int32
  assert _long(ds.annotations) == [(0, 0, 3), (0, 1, 5), (1, 0, 0), (1, 2, 8),
                                   (2, 1, 9), (2, 2, 9)]
  assert ds.annotations.num_classes == 10 and ds.class_names[3] == "cat"


def test_cifar10h_raw_reads_zip(tmp_path):
  csv_path = _c10h_file(tmp_path, _C10H_ROWS)
  zip_path = tmp_path / "cifar10h-raw.zip"
  with zipfile.ZipFile(zip_path, "w") as archive:
    archive.write(csv_path, "cifar10h-raw.csv")
  ds = data.load_cifar10h_raw(zip_path, num_images=3)
  assert _long(ds.annotations) == _long(
      data.load_cifar10h_raw(csv_path, num_images=3).annotations)


@pytest.mark.parametrize("policy,expected", [
    ("first", [(0, 0, 3), (1, 0, 8)]),
    ("last", [(0, 0, 5), (1, 0, 8)]),
    ("all", [(0, 0, 3), (0, 0, 5), (1, 0, 8)]),
])
def test_cifar10h_raw_duplicates(tmp_path, policy, expected):
  rows = [_c10h_row(7, 0, 0, 3, 3), _c10h_row(7, 1, 1, 8, 8),
          _c10h_row(7, 2, 0, 3, 5)]
  ds = data.load_cifar10h_raw(_c10h_file(tmp_path, rows), num_images=2,
                              duplicates=policy)
  assert _long(ds.annotations) == expected


def test_cifar10h_raw_duplicates_error(tmp_path):
  rows = [_c10h_row(7, 0, 0, 3, 3), _c10h_row(7, 2, 0, 3, 5)]
  with pytest.raises(ValueError, match="more than once"):
    data.load_cifar10h_raw(_c10h_file(tmp_path, rows), num_images=1,
                           duplicates="error")
  with pytest.raises(ValueError, match="duplicates"):
    data.load_cifar10h_raw(_c10h_file(tmp_path, rows), num_images=1,
                           duplicates="keep")


def test_cifar10h_raw_annotator_without_answers_warns(tmp_path):
  rows = _C10H_ROWS + [_c10h_row(9, 0, -99999, 1, 1, attn=1)]
  with pytest.warns(UserWarning, match="1 of 4 annotators have no usable"):
    ds = data.load_cifar10h_raw(_c10h_file(tmp_path, rows), num_images=3)
  assert ds.expert_names == ("0", "1", "2")


def test_cifar10h_raw_labels_argument(tmp_path):
  path = _c10h_file(tmp_path, _C10H_ROWS)
  with pytest.raises(ValueError, match="no answer"):
    data.load_cifar10h_raw(path, num_images=5)
  ds = data.load_cifar10h_raw(path, num_images=5,
                              labels=np.array([3, 8, 9, 0, 1]))
  assert not np.asarray(ds.annotations.mask)[3:].any()
  with pytest.raises(ValueError, match="disagrees"):
    data.load_cifar10h_raw(path, num_images=3, labels=np.array([3, 8, 1]))


@pytest.mark.parametrize("bad_row,message", [
    (_c10h_row(3, 0, 7, 3, 3), "not in the pool"),
    (_c10h_row(3, 0, 1, 8, 10), "chosen_label 10"),
    (_c10h_row(3, 0, 1, 8, 8)[:5], "expected 13 fields"),
    (_c10h_row(3, 0, "one", 8, 8), "cifar10_test_test_idx"),
    (_c10h_row(3, 0, 1, 2, 2), "two different true labels"),
])
def test_cifar10h_raw_bad_rows(tmp_path, bad_row, message):
  path = _c10h_file(tmp_path, _C10H_ROWS + [bad_row])
  bad_line = len(_C10H_ROWS) + 2
  with pytest.raises(ValueError, match=message) as err:
    data.load_cifar10h_raw(path, num_images=3)
  assert str(path) in str(err.value)
  if "true labels" not in message:
    assert f"line {bad_line}" in str(err.value)


def test_cifar10h_raw_missing_column_and_file(tmp_path):
  path = _write_csv(tmp_path / "x.csv", ("annotator_id", "chosen_label"),
                    [(0, 1)])
  with pytest.raises(ValueError, match="missing required column"):
    data.load_cifar10h_raw(path)
  missing = tmp_path / "nope.csv"
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    data.load_cifar10h_raw(missing)


@pytest.mark.slow
def test_cifar10h_raw_full_size(tmp_path):
  # 2,571 annotators x (200 answers + 10 attention checks), as the release.
  rng = np.random.default_rng(0)
  truth = rng.integers(0, 10, 10_000)
  lines = [",".join(_C10H_HEADER)]
  for a in range(2571):
    images = rng.choice(10_000, 200, replace=False)
    chosen = rng.integers(0, 10, 200)
    lines += [f"{a},{t},1,x.png,-99999,cat,3,cat,3,1,800.0,{t},s"
              for t in range(10)]
    lines += [f"{a},{t + 10},0,x.png,{i},c,{truth[i]},c,{c},0,800.0,{t},s"
              for t, (i, c) in enumerate(zip(images, chosen))]
  path = tmp_path / "cifar10h-raw.csv"
  path.write_text("\n".join(lines) + "\n")
  ds = data.load_cifar10h_raw(path)
  assert ds.num_experts == 2571
  assert int(np.asarray(ds.annotations.mask).sum()) == 514_200


def test_read_csv_quoted_line_breaks_keep_line_numbers(tmp_path):
  path = tmp_path / "q.csv"
  path.write_text('a,b\n1,"x\ny"\n2,z\n\n3\n')
  with pytest.raises(ValueError, match=r"line 6: expected 2 fields"):
    _common.read_csv(path, required=("a", "b"))
  path.write_text('a,b\n1,"x\ny"\n\n2,z\n')
  columns, lines = _common.read_csv(path, required=("b",))
  assert columns == {"b": ("x\ny", "z")}
  np.testing.assert_array_equal(lines, [3, 5])


# ---------------------------------------------------------------------------
# Model probabilities.

_ACCURACY = {"densenet-bc-L190-k40": 0.9668, "preresnet-110": 0.9506,
             "resnet-110": 0.9389}


@pytest.mark.parametrize("model", data.MODEL_NAMES)
def test_model_probs_real(data_dir, model):
  probs, labels, counts = data.load_model_probs(data_dir, model)
  assert probs.shape == (10_000, 10) and probs.dtype == np.float32
  assert labels.shape == (10_000,) and labels.dtype == np.int32
  assert counts.dtype == np.int64
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
  assert (probs.argmax(1) == labels).mean() == pytest.approx(_ACCURACY[model],
                                                             abs=5e-5)
  np.testing.assert_array_equal(counts, data.load_cifar10h_counts(data_dir))


def test_human_model_truth_real(data_dir):
  probs, labels, counts = data.load_human_model_truth(data_dir)
  assert labels.min() == 0 and labels.max() == 9
  assert (probs.argmax(1) == labels).mean() == pytest.approx(0.8892, abs=5e-5)
  np.testing.assert_array_equal(
      labels, data.load_model_probs(data_dir, "resnet-110")[1])
  assert counts.sum() == 511_000


def _model_dir(tmp_path, probs=None, labels=None, model="resnet-110"):
  rng = np.random.default_rng(0)
  if probs is None:
    probs = rng.dirichlet(np.ones(10), size=10_000)
  if labels is None:
    labels = rng.integers(0, 10, size=10_000)
  counts = rng.integers(0, 6, size=(10_000, 10))
  table = np.concatenate([labels[:, None].astype(float), counts, probs], 1)
  folder = tmp_path / "cifar10h_model_probs"
  folder.mkdir(parents=True, exist_ok=True)
  np.savetxt(folder / f"{model}.csv", table, delimiter=",", fmt="%.9g")
  return folder / f"{model}.csv"


def test_model_probs_renormalises_small_errors(tmp_path):
  probs = np.full((10_000, 10), 0.1)
  probs[:, 0] += 5e-4
  _model_dir(tmp_path, probs=probs)
  loaded, _, _ = data.load_model_probs(tmp_path, "resnet-110")
  np.testing.assert_allclose(loaded.sum(1), 1.0, atol=1e-6)


def test_model_probs_rejects_bad_input(tmp_path):
  probs = np.full((10_000, 10), 0.1)
  probs[17, 0] = 0.2
  _model_dir(tmp_path, probs=probs)
  with pytest.raises(ValueError, match="row 17 sums to 1.1"):
    data.load_model_probs(tmp_path, "resnet-110")
  labels = np.zeros(10_000, int)
  labels[5] = 10
  _model_dir(tmp_path, labels=labels)
  with pytest.raises(ValueError, match="image 5 has label 10"):
    data.load_model_probs(tmp_path, "resnet-110")
  path = _model_dir(tmp_path)
  lines = path.read_text().splitlines()
  lines[41] = lines[41].replace(",", ",x", 1)
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=r"line 42: column 1 is not a number"
                     ) as err:
    data.load_model_probs(tmp_path, "resnet-110")
  assert str(path) in str(err.value)
  lines[41] = "1,2,3"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match="line 42: expected 21"):
    data.load_model_probs(tmp_path, "resnet-110")


def test_model_probs_unknown_model_and_missing_file(tmp_path):
  with pytest.raises(ValueError, match="densenet-bc-L190-k40") as err:
    data.load_model_probs(tmp_path, "vgg-11")
  assert "resnet-110" in str(err.value)
  with pytest.raises(FileNotFoundError, match="preresnet-110.csv"):
    data.load_model_probs(tmp_path, "preresnet-110")


# ---------------------------------------------------------------------------
# CIFAR-10S.


def test_cifar10s_real(data_dir):
  ds = data.load_cifar10s(data_dir)
  assert ds.name == "cifar10s" and ds.probs is None
  assert ds.num_images == 10_000 and ds.num_classes == 10
  assert ds.num_experts == 248
  mask = np.asarray(ds.annotations.mask)
  per_image = mask.sum(1)
  annotated = per_image > 0
  assert annotated.sum() == 1000
  # 6-7 distinct annotators per image (6-11 raw rows, see below).
  assert per_image[annotated].min() == 6 and per_image.max() == 7
  image, expert, answer = ds.annotations.to_long()
  assert len(answer) == 6200
  np.testing.assert_array_equal(np.bincount(expert, minlength=248), 25)
  accuracy = (answer == ds.labels[image]).mean()
  assert accuracy == pytest.approx(0.8435, abs=1e-3)


def test_cifar10s_real_all_rows_and_model(data_dir):
  ds = data.load_cifar10s(data_dir, duplicates="all",
                          model="densenet-bc-L190-k40")
  per_image = np.asarray(ds.annotations.mask).sum(1)
  assert per_image[per_image > 0].min() == 6 and per_image.max() == 11
  image, _, answer = ds.annotations.to_long()
  assert len(answer) == 6723
  assert (answer == ds.labels[image]).mean() == pytest.approx(0.843, abs=1e-3)
  annotated = per_image > 0
  model_acc = (ds.probs.argmax(1) == ds.labels)[annotated].mean()
  assert model_acc == pytest.approx(0.906, abs=1e-3)


def _c10s_dir(tmp_path, rows):
  header = ("", "trial_type", "trial_index", "time_elapsed", "subject",
            "condition", "rt", "view_history", "response", "filename", "task",
            "label", "img_id")
  out = []
  for i, (subject, task, choice, label, img) in enumerate(rows):
    response = (json.dumps({"classSelect": choice, "prob": "90"})
                if choice is not None else "")
    out.append((i, "survey-html-form", i, 100 * i, subject, 3, 500.0, "",
                response, f"x_{img}.png", task, label, img))
  _write_csv(tmp_path / "cifar10s" / "raw_human_data.csv", header, out)
  return tmp_path


_LABELS = np.array([3, 8, 8, 0] + [1] * 9996)


def test_cifar10s_synthetic(tmp_path):
  root = _c10s_dir(tmp_path, [
      ("a", "", None, "", ""),
      ("a", "spec_conf", "mostProbCat", "Cat", "0.0"),
      ("b", "spec_conf", "mostProbDog", "Cat", "0.0"),
      ("a", "rerun_spec_conf", "mostProbShip", "Ship", "1.0"),
      ("a", "spec_conf", "mostProbAirplane", "Ship", "1.0"),
      ("c", "instructions", None, "", ""),
  ])
  with pytest.warns(UserWarning, match="1 of 3 annotators"):
    ds = data.load_cifar10s(root, labels=_LABELS)
  assert ds.expert_names == ("a", "b")
  assert _long(ds.annotations) == [(0, 0, 3), (0, 1, 5), (1, 0, 8)]


@pytest.mark.parametrize("row,message", [
    (("a", "spec_conf", "mostProbCat", "Dog", "0.0"), "disagrees"),
    (("a", "spec_conf", "mostProbCat", "Cat", "10000.0"), "img_id 10000"),
    (("a", "spec_conf", "mostProbCat", "Cat", "0.5"), "img_id"),
    (("a", "spec_conf", "mostProbUnicorn", "Cat", "0.0"), "unicorn"),
    (("a", "spec_conf", "Cat", "Cat", "0.0"), "mostProb"),
    (("a", "spec_conf", None, "Cat", "0.0"), "JSON"),
])
def test_cifar10s_bad_rows(tmp_path, row, message):
  root = _c10s_dir(tmp_path, [row])
  with pytest.raises(ValueError, match=f"(?i){message}") as err:
    data.load_cifar10s(root, labels=_LABELS)
  assert "raw_human_data.csv" in str(err.value)


# ---------------------------------------------------------------------------
# CIFAR-10N / CIFAR-100N.


def test_cifar10n_real(data_dir):
  ds = data.load_cifar10n(data_dir)
  assert ds.name == "cifar10n" and ds.num_images == 50_000
  assert ds.num_experts == 747 and ds.annotations.max_annotations == 3
  assert np.asarray(ds.annotations.mask).all()
  image, _, answer = ds.annotations.to_long()
  assert (answer == ds.labels[image]).mean() == pytest.approx(0.8233, abs=1e-4)
  # Worker slot i carries random_label<i>.
  ann = np.asarray(ds.annotations.answer)
  np.testing.assert_array_equal(ann[:, 0], ds.extras["random_label1"])
  np.testing.assert_array_equal(ann[:, 2], ds.extras["random_label3"])
  aggre = (ds.extras["aggre_label"] == ds.labels).mean()
  assert aggre == pytest.approx(0.9099, abs=1e-4)
  assert set(ds.extras) >= {"aggre_label", "worse_label", "clean_label"}


def test_cifar100n_real(data_dir):
  ds = data.load_cifar10n(data_dir, which="cifar100")
  assert ds.name == "cifar100n" and ds.num_classes == 100
  assert ds.num_experts == 519 and ds.annotations.max_annotations == 1
  image, _, answer = ds.annotations.to_long()
  assert len(answer) == 50_000
  assert (answer == ds.labels[image]).mean() == pytest.approx(0.598, abs=1e-3)
  assert ds.extras["clean_coarse_label"].max() == 19


def _c10n_dir(tmp_path, batches):
  folder = tmp_path / "cifar10n"
  folder.mkdir(parents=True, exist_ok=True)
  zeros = np.zeros(50_000, np.int64)
  np.savez(folder / "CIFAR-10_human.npz", clean_label=zeros, aggre_label=zeros,
           worse_label=zeros, random_label1=zeros, random_label2=zeros,
           random_label3=zeros)
  header = ("Image-batch", "Worker1-id", "Work-time-in-seconds-1",
            "Worker2-id", "Work-time-in-seconds-2", "Worker3-id",
            "Work-time-in-seconds-3")
  _write_csv(folder / "side_info_cifar10N.csv", header,
             [(b, 1, 10, 2, 10, 3, 10) for b in batches])
  return tmp_path


def test_cifar10n_bad_side_info(tmp_path):
  batches = [f"{a}--{a + 9}" for a in range(0, 50_000, 10)]
  with pytest.raises(ValueError, match="exactly once"):
    data.load_cifar10n(_c10n_dir(tmp_path, batches[:-1]))
  with pytest.raises(ValueError, match="line 3: .*'a--b'"):
    data.load_cifar10n(_c10n_dir(tmp_path, [batches[0], "10-19"]))
  with pytest.raises(ValueError, match="line 2: batch '0--4'"):
    data.load_cifar10n(_c10n_dir(tmp_path, ["0--4"]))
  with pytest.raises(ValueError, match="cifar100"):
    data.load_cifar10n(tmp_path, which="svhn")


# ---------------------------------------------------------------------------
# ImageNet-16H.


def test_imagenet16h_model_preds_real(data_dir):
  names, probs, labels, classes = data.load_imagenet16h_model_preds(data_dir)
  assert len(names) == 1200 and len(set(names)) == 1200
  assert probs.shape == (1200, 16) and probs.dtype == np.float32
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(np.bincount(labels, minlength=16), 75)
  assert classes[0] == "knife" and classes[15] == "dog"
  assert (probs.argmax(1) == labels).mean() == pytest.approx(0.8467, abs=1e-4)
  ds = data.load_imagenet16h(data_dir, human_csv=None)
  assert ds.num_experts == 0 and not np.asarray(ds.annotations.mask).any()


def test_imagenet16h_human_synthetic(tmp_path):
  names = ("img_a", "img_b", "img_c")
  classes = ("knife", "keyboard", "elephant")
  rows = [
      _h16_row(1, 1, "img_a", "knife", "knife", 95),
      _h16_row(2, 1, "img_b", "keyboard", "Elephant", 95),
      _h16_row(3, 2, "img_a", "knife", "keyboard", 95),
      _h16_row(4, 2, "img_a", "knife", "knife", 110),
      _h16_row(5, 3, "img_c", "elephant", "elephant", 80),
      _h16_row(6, 1, "img_a", "knife", "elephant", 95),
  ]
  path = _write_csv(tmp_path / "human.csv", _H16_HEADER, rows)
  with pytest.warns(UserWarning, match="1 of 3 annotators"):
    ann, experts = data.load_imagenet16h_human(
        path, image_names=names, class_names=classes,
        labels=np.array([0, 1, 2]))
  assert experts == ("w1", "w2")
  assert _long(ann) == [(0, 0, 0), (0, 1, 1), (1, 0, 2)]
  ann, experts = data.load_imagenet16h_human(
      path, image_names=names, class_names=classes, noise_level=None,
      annotator_column="participant_id", duplicates="all")
  assert experts == ("101", "102", "103")
  assert len(_long(ann)) == 6


@pytest.mark.parametrize("row,message", [
    (_h16_row(9, 1, "img_z", "knife", "knife", 95), "'img_z' is not in the pool"),
    (_h16_row(9, 1, "img_a", "knife", "spoon", 95), "participant_classification"),
    (_h16_row(9, 1, "img_a", "knife", "knife", "high"), "noise_level"),
    (_h16_row(9, 1, "img_b", "knife", "knife", 95), "disagrees"),
])
def test_imagenet16h_human_bad_rows(tmp_path, row, message):
  path = _write_csv(tmp_path / "human.csv", _H16_HEADER,
                    [_h16_row(1, 1, "img_a", "knife", "knife", 95), row])
  with pytest.raises(ValueError, match=message) as err:
    data.load_imagenet16h_human(
        path, image_names=("img_a", "img_b"),
        class_names=("knife", "keyboard"), labels=np.array([0, 1]))
  assert str(path) in str(err.value)


def test_imagenet16h_combined_with_real_model(data_dir, tmp_path):
  names, _, labels, classes = data.load_imagenet16h_model_preds(data_dir)
  rows = [_h16_row(k, k % 3, names[k], classes[labels[k]],
                   classes[(labels[k] + (k % 2)) % 16], 95) for k in range(12)]
  path = _write_csv(tmp_path / "human.csv", _H16_HEADER, rows)
  ds = data.load_imagenet16h(data_dir, human_csv=path)
  assert ds.num_images == 1200 and ds.num_experts == 3
  assert np.asarray(ds.annotations.mask).sum() == 12
  assert ds.extras["image_name"][0] == names[0]
