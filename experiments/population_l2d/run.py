"""Data, experts, label generator, downstream L2D-Pop and evaluation.

``load_data`` reads a data set and cuts the splits of ``config``;
``run_seed`` trains, for one seed, the frozen embedding φ, the classifier-alone
baseline, the label generator of every budget (pseudo expert labels) and the
downstream variants on pseudo and true expert labels, and evaluates them on
seen and unseen experts; ``run`` does every seed. Every L2D quantity
(population, context sets, encoders, losses, FixMatch, augmentation,
decision rule) comes from ``l2d_jax``; this module trains small NNX models
with plain jitted optax loops (``lax.scan`` over steps) and bookkeeps.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from experiments.population_l2d import config
from l2d_jax import data as data_lib
from l2d_jax import deferral
from l2d_jax import distributed
from l2d_jax import experts
from l2d_jax import losses
from l2d_jax import models

SPLITS = ("train", "val_ctx", "val_query", "test_ctx", "test_query")


@dataclasses.dataclass
class Data:
  """Images, labels and the index splits of one data set.

  Attributes:
    dataset: the data set name.
    images: ``float32 [N, H, W, C]`` pixels in ``[0, 1]``.
    labels: ``int32 [N]`` in ``[0, K)``.
    splits: split name (``SPLITS``) -> int index array into ``images``.
    num_classes: K.
  """

  dataset: str
  images: np.ndarray
  labels: np.ndarray
  splits: dict[str, np.ndarray]
  num_classes: int

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.images.shape[1:])


# ---------------------------------------------------------------------------
# Data.


def _halve(idx: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
  idx = rng.permutation(idx)
  return idx[:idx.size // 2], idx[idx.size // 2:]


def make_data(dataset: str, images: np.ndarray, labels: np.ndarray, *,
              num_classes: int, test_start: int | None = None,
              seed: int = config.DATA_SEED) -> Data:
  """Cuts the splits of ``config`` (see its Conventions).

  Args:
    dataset: the name recorded.
    images: ``[N, H, W, C]`` uint8 or float in ``[0, 1]``.
    labels: ``[N]`` integer labels.
    num_classes: K.
    test_start: index where an official test set starts in ``images``
      (training part cut 90/10); ``None``: one pool cut 55/15/30.
    seed: the split permutation's seed.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  images = images.astype(np.float32)
  labels = np.asarray(labels, np.int32)
  rng = np.random.default_rng(seed)
  n = labels.shape[0]
  if test_start is None:
    perm = rng.permutation(n)
    cuts = np.cumsum([int(round(config.DIGITS_SPLIT[s] * n))
                      for s in ("train", "val")])
    train, val, test = np.split(perm, cuts)
  else:
    perm = rng.permutation(test_start)
    n_val = int(round(config.CIFAR_VAL_FRACTION * test_start))
    val, train = perm[:n_val], perm[n_val:]
    test = np.arange(test_start, n)
  val_ctx, val_query = _halve(val, rng)
  test_ctx, test_query = _halve(test, rng)
  splits = {"train": np.sort(train), "val_ctx": val_ctx,
            "val_query": val_query, "test_ctx": test_ctx,
            "test_query": test_query}
  return Data(dataset, images, labels, splits, num_classes)


def _subsample(images, labels, cap, rng):
  if cap is None or labels.shape[0] <= cap:
    return images, labels
  keep = np.sort(rng.permutation(labels.shape[0])[:cap])
  return images[keep], labels[keep]


def check_dataset_files(dataset: str, data_dir) -> None:
  """Raises ``FileNotFoundError`` naming the missing path of ``dataset``."""
  root = pathlib.Path(data_dir)
  if dataset == "digits":
    return
  if dataset == "cifar10":
    for f in ("cifar10_train_jpg.zip", "cifar10_test_jpg.zip"):
      p = root / "cifar10_images" / f
      if not p.exists():
        raise FileNotFoundError(f"CIFAR-10 images not found: {p} does not "
                                "exist; pass the shared data folder with "
                                "--data-dir")
    return
  folders = {"fashion_mnist": ("fashion_mnist", "fashion-mnist",
                               "FashionMNIST"),
             "gtsrb": ("gtsrb", "GTSRB", "Final_Training")}[dataset]
  if not any((root / f).is_dir() for f in folders):
    raise FileNotFoundError(
        f"{dataset} not found: {root / folders[0]} does not exist (it is not "
        f"part of the shared data here); place the original files there or "
        f"pass their folder with --data-dir")


def load_data(dataset: str, *, data_dir, budget: config.Budget,
              cache_dir=None, max_images: int | None = None) -> Data:
  """Loads ``dataset`` and cuts its splits.

  Args:
    dataset: one of ``config.DATASETS``.
    data_dir: the shared data root (unused for digits).
    budget: caps on the numbers of training / test images.
    cache_dir: folder for decoded images (CIFAR-10).
    max_images: digits only: keep this many images (tests).
  """
  check_dataset_files(dataset, data_dir)
  rng = np.random.default_rng(config.DATA_SEED)
  if dataset == "digits":
    x, y = data_lib.load_digits()
    x, y = _subsample(x, y, max_images, rng)
    return make_data(dataset, x, y, num_classes=10)
  if dataset == "gtsrb":
    x, y = data_lib.load_gtsrb(data_dir)
    cap = None if budget.train_images is None else (
        budget.train_images + budget.test_images)
    x, y = _subsample(x, y, cap, rng)
    return make_data(dataset, x, y, num_classes=43)
  if dataset == "cifar10":
    load = functools.partial(data_lib.load_cifar10_images, data_dir,
                             cache_dir=cache_dir)
    (xtr, ytr), (xte, yte) = load(split="train"), load(split="test")
  else:
    (xtr, ytr), (xte, yte) = (data_lib.load_fashion_mnist(data_dir, "train"),
                              data_lib.load_fashion_mnist(data_dir, "test"))
  xtr, ytr = _subsample(xtr, ytr, budget.train_images, rng)
  xte, yte = _subsample(xte, yte, budget.test_images, rng)
  return make_data(dataset, np.concatenate([xtr, xte]),
                   np.concatenate([ytr, yte]), num_classes=10,
                   test_start=ytr.shape[0])


# ---------------------------------------------------------------------------
# Small models: the frozen embedding φ and the fallible downstream backbone.


class MLPBackbone(nnx.Module):
  """Flatten (optionally average-pool first) and a ReLU MLP: ``[B, D]``."""

  def __init__(self, image_shape, hidden: int, feature_dim: int, *,
               pool: int = 1, rngs: nnx.Rngs):
    h, w, c = image_shape
    self.pool = pool
    self.l1 = nnx.Linear((h // pool) * (w // pool) * c, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, feature_dim, rngs=rngs)

  def __call__(self, x):
    if self.pool > 1:
      x = nnx.avg_pool(x, (self.pool, self.pool), strides=(self.pool,
                                                           self.pool))
    x = x.reshape(x.shape[0], -1)
    return nnx.relu(self.l2(nnx.relu(self.l1(x))))


class FeatureBackbone(nnx.Module):
  """A ReLU MLP on cached feature vectors ``[B, D]`` -> ``[B, feature_dim]``."""

  def __init__(self, in_dim: int, hidden: int, feature_dim: int, *,
               rngs: nnx.Rngs):
    self.l1 = nnx.Linear(in_dim, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, feature_dim, rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.l2(nnx.relu(self.l1(x))))


class ConvBackbone(nnx.Module):
  """Conv(3x3)-ReLU-maxpool blocks and a linear layer: ``[B, D]``.

  Block ``i`` has ``width * 2**i`` channels. ``head="mean"``: global mean
  pool of the last map, then the linear layer; ``head="flatten"``: the last
  map flattened into the linear layer (keeps where things are: much
  stronger for a few epochs of a small CNN, at about the same step cost).
  """

  def __init__(self, image_shape, feature_dim: int, *, width: int = 32,
               blocks: int = 2, head: str = "mean", rngs: nnx.Rngs):
    if head not in config.EMBED_HEADS:
      raise ValueError(f"head must be one of {config.EMBED_HEADS}, got "
                       f"{head!r}")
    h, w, c = image_shape
    chans = [c] + [width * 2**i for i in range(blocks)]
    self.convs = nnx.List([nnx.Conv(chans[i], chans[i + 1], (3, 3),
                                    rngs=rngs) for i in range(blocks)])
    self.head = head
    flat = chans[-1]
    if head == "flatten":
      flat *= (h // 2**blocks) * (w // 2**blocks)
    self.out = nnx.Linear(flat, feature_dim, rngs=rngs)

  def __call__(self, x):
    for conv in self.convs:
      x = nnx.max_pool(nnx.relu(conv(x)), (2, 2), strides=(2, 2))
    x = x.mean(axis=(1, 2)) if self.head == "mean" else x.reshape(
        x.shape[0], -1)
    return nnx.relu(self.out(x))


class Classifier(nnx.Module):
  """A backbone and a linear head: ``features(x)`` and logits ``[B, K]``."""

  def __init__(self, backbone, feature_dim: int, num_classes: int, *,
               rngs: nnx.Rngs):
    self.backbone = backbone
    self.head = nnx.Linear(feature_dim, num_classes, rngs=rngs)

  def features(self, x):
    return self.backbone(x)

  def __call__(self, x):
    return self.head(self.backbone(x))


def embedding_backbone(data: Data, budget: config.Budget, rngs):
  """φ of the label generator (strong): MLP on pixels, or a small CNN."""
  if data.dataset == "digits":
    return MLPBackbone(data.image_shape, 64, budget.feature_dim, rngs=rngs)
  return ConvBackbone(data.image_shape, budget.feature_dim,
                      width=budget.embed_width, blocks=budget.embed_blocks,
                      head=budget.embed_head, rngs=rngs)


def fallible_backbone(data: Data, budget: config.Budget, rngs):
  """The downstream backbone (deliberately weak, as the paper's TinyCNN).

  On cached features (``data.images`` of shape ``[N, D]``, the
  ``downstream_inputs="features"`` path) a small MLP.
  """
  if len(data.image_shape) == 1:
    return FeatureBackbone(data.image_shape[0], budget.hidden_dim,
                           budget.hidden_dim, rngs=rngs)
  if data.dataset == "digits":
    return MLPBackbone(data.image_shape, 32, budget.hidden_dim, pool=2,
                       rngs=rngs)
  return ConvBackbone(data.image_shape, budget.hidden_dim, width=16,
                      rngs=rngs)


def _weak(key, x, dataset):
  if x.ndim == 2:  # Cached features: nothing to augment.
    return x
  a = config.AUGMENT[dataset]
  return data_lib.weak_augment(key, x, pad=a["pad"], flip=a["flip"])


def _strong(key, x, dataset):
  if x.ndim == 2:
    return x
  return data_lib.strong_augment(key, x, cutout=config.AUGMENT[dataset][
      "cutout"], value_range=(0.0, 1.0))


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "steps",
                                             "batch", "dataset"))
def _ce_epoch(params, opt, key, images, labels, idx, *, graphdef, tx, steps,
              batch, dataset):
  def step(c, k):
    p, o = c
    kb, ka = jax.random.split(k)
    ix = idx[jax.random.randint(kb, (batch,), 0, idx.shape[0])]
    x = _weak(ka, images[ix], dataset)

    def obj(p):
      return optax.softmax_cross_entropy_with_integer_labels(
          nnx.merge(graphdef, p)(x), labels[ix]).mean()
    loss, g = jax.value_and_grad(obj)(p)
    u, o = tx.update(g, o, p)
    return (optax.apply_updates(p, u), o), loss
  (params, opt), l = jax.lax.scan(step, (params, opt),
                                  jax.random.split(key, steps))
  return params, opt, l.mean()


@functools.partial(jax.jit, static_argnames=("graphdef", "method"))
def _apply_batched(params, x, *, graphdef, method=None):
  m = nnx.merge(graphdef, params)
  return m(x) if method is None else getattr(m, method)(x)


def _predict(graphdef, params, x, method=None, chunk=2048):
  return np.concatenate([np.asarray(_apply_batched(
      params, x[i:i + chunk], graphdef=graphdef, method=method))
                         for i in range(0, x.shape[0], chunk)])


def train_classifier(model: Classifier, data: Data, key, *, epochs: int,
                     batch: int, lr: float = 1e-3, desc: str = "classifier",
                     progress: bool = True):
  """CE on the training split's ground truth; the best validation epoch.

  Returns:
    ``(graphdef, params, val_accuracy)``.
  """
  graphdef, params = nnx.split(model)
  tx = optax.adam(lr)
  opt = tx.init(params)
  tr = jnp.asarray(data.splits["train"])
  steps = max(1, tr.shape[0] // batch)
  images, labels = jnp.asarray(data.images), jnp.asarray(data.labels)
  val = np.concatenate([data.splits["val_ctx"], data.splits["val_query"]])
  best, best_acc = params, -1.0
  for e in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
    params, opt, _ = _ce_epoch(params, opt, jax.random.fold_in(key, e),
                               images, labels, tr, graphdef=graphdef, tx=tx,
                               steps=steps, batch=batch, dataset=data.dataset)
    acc = float(np.mean(_predict(graphdef, params, data.images[val]).argmax(1)
                        == data.labels[val]))
    if acc > best_acc:
      best, best_acc = params, acc
  return graphdef, best, best_acc


def embedding_spec(data: Data, budget: config.Budget, seed: int) -> tuple:
  """Everything φ's cached parameters and features depend on.

  The architecture (``embed_width``, ``embed_blocks``, ``embed_head``,
  ``feature_dim``), its training (epochs, batch, augmentation), the data (set,
  number of images, splits' seed) and ``config.EMBED_CACHE_VERSION`` (bumped
  when the code of φ changes), so a cache of another φ is never reused.
  """
  return (config.EMBED_CACHE_VERSION, data.dataset, data.labels.shape[0],
          int(data.splits["train"].size), seed, budget.embed_epochs,
          budget.embed_batch, budget.embed_width, budget.embed_blocks,
          budget.embed_head, budget.feature_dim,
          tuple(sorted(config.AUGMENT.get(data.dataset, {}).items())))


def _cache_path(cache_dir, data: Data, budget: config.Budget, seed: int):
  if cache_dir is None or data.dataset == "digits":
    return None
  tag = hashlib.sha1(repr(embedding_spec(data, budget, seed)).encode()
                     ).hexdigest()[:10]
  return pathlib.Path(cache_dir) / f"{data.dataset}_phi_{tag}"


def embedding_cache_path(data: Data, budget: config.Budget, *, seed: int,
                         cache_dir) -> pathlib.Path | None:
  """The folder of φ's cached ``.npy`` files (``None``: not cached)."""
  return _cache_path(cache_dir, data, budget, seed)


def train_embedding(data: Data, budget: config.Budget, *, seed: int,
                    cache_dir=None, progress: bool = True):
  """The frozen φ: ``(graphdef, params, features [N, D], val_accuracy)``.

  For image data sets other than digits the parameters and the features of
  the un-augmented images are cached as ``.npy`` files under ``cache_dir``
  (one folder per data set, budget and seed) and reused.
  """
  key = jax.random.fold_in(jax.random.key(seed), 11)
  model = Classifier(embedding_backbone(data, budget, nnx.Rngs(params=key)),
                     budget.feature_dim, data.num_classes,
                     rngs=nnx.Rngs(params=jax.random.fold_in(key, 1)))
  graphdef, params = nnx.split(model)
  path = _cache_path(cache_dir, data, budget, seed)
  leaves, treedef = jax.tree.flatten(params)
  if path is not None and (path / "features.npy").exists():
    leaves = [np.load(path / f"param_{i}.npy") for i in range(len(leaves))]
    feats = np.load(path / "features.npy")
    acc = float(np.load(path / "val_accuracy.npy"))
    return graphdef, jax.tree.unflatten(treedef, leaves), feats, acc
  graphdef, params, acc = train_classifier(
      model, data, jax.random.fold_in(key, 2), epochs=budget.embed_epochs,
      batch=budget.embed_batch, desc="embedding φ", progress=progress)
  feats = _predict(graphdef, params, data.images, method="features")
  if path is not None:
    path.mkdir(parents=True, exist_ok=True)
    for i, leaf in enumerate(jax.tree.leaves(params)):
      np.save(path / f"param_{i}.npy", np.asarray(leaf))
    np.save(path / "features.npy", feats)
    np.save(path / "val_accuracy.npy", np.asarray(acc))
    (path / "spec.txt").write_text(repr(embedding_spec(data, budget, seed))
                                   + "\n")
  return graphdef, params, feats, acc


@functools.partial(jax.jit, static_argnames=("graphdef", "dataset",
                                             "strong"))
def _view_features(params, key, x, *, graphdef, dataset, strong):
  aug = _strong if strong else _weak
  return nnx.merge(graphdef, params).features(aug(key, x, dataset))


def feature_views(phi, data: Data, budget: config.Budget, *, seed: int,
                  views: int = config.FEATURE_VIEWS, cache_dir=None,
                  chunk: int = 1024, progress: bool = True):
  """Cached φ features of augmented training images (FixMatch on features).

  Args:
    phi: ``(graphdef, params, features [N, D])`` of the frozen embedding.
    data: the data.
    budget: the budget (names the cache folder, as ``train_embedding``).
    seed: the seed (φ's and the augmentations').
    views: augmented views per image.
    cache_dir: where ``views<V>_weak.npy`` / ``views<V>_strong.npy`` are
      cached (next to φ's files); ``None``: not cached.
    chunk: images per φ call.
    progress: show a progress bar.

  Returns:
    ``(weak, strong)``, each ``float32 [views, N, D]``: view v of a training
    image is φ of its v-th weak (strong) augmentation; the other rows hold
    the un-augmented features.
  """
  graphdef, params, feats = phi
  path = _cache_path(cache_dir, data, budget, seed)
  names = [f"views{views}_{kind}.npy" for kind in ("weak", "strong")]
  if path is not None and all((path / n).exists() for n in names):
    return tuple(np.load(path / n) for n in names)
  key = jax.random.fold_in(jax.random.key(seed), 13)
  tr = data.splits["train"]
  out = []
  for strong in (False, True):
    arr = np.broadcast_to(feats, (views,) + feats.shape).copy()
    for v in tqdm(range(views), desc=f"φ views ({'strong' if strong else 'weak'})",
                  disable=not progress, leave=False):
      kv = jax.random.fold_in(key, 2 * v + strong)
      for i in range(0, tr.size, chunk):
        ix = tr[i:i + chunk]
        arr[v, ix] = np.asarray(_view_features(
            params, jax.random.fold_in(kv, i), jnp.asarray(data.images[ix]),
            graphdef=graphdef, dataset=data.dataset, strong=strong))
    out.append(arr)
  if path is not None:
    path.mkdir(parents=True, exist_ok=True)
    for n, arr in zip(names, out):
      np.save(path / n, arr)
  return tuple(out)


# ---------------------------------------------------------------------------
# Experts.


def population(data: Data, *, seed: int, size_h: int, order: str,
               wrong: str) -> np.ndarray:
  """``[N, 10]`` int32 answers of the 10 synthetic experts on every image.

  Column j is expert ``(SEEN_EXPERTS + UNSEEN_EXPERTS)[j]``: the seen
  experts first.
  """
  sets = experts.population_oracle_sets(config.NUM_EXPERTS, data.num_classes,
                                        size_h=size_h, order=order)
  n = data.labels.shape[0]
  order_ids = jnp.asarray(config.SEEN_EXPERTS + config.UNSEEN_EXPERTS)
  ids = jnp.broadcast_to(order_ids, (n, config.NUM_EXPERTS))
  return np.asarray(experts.population_answers(
      jax.random.fold_in(jax.random.key(seed), 1), data.labels,
      jnp.arange(n), ids, sets, wrong=wrong))


def labelled_indices(data: Data, k: int, *, seed: int) -> np.ndarray:
  """``k`` training points per class (nested: a larger k keeps the smaller).

  Raises:
    ValueError: a class has fewer than ``k`` training points.
  """
  rng = np.random.default_rng(seed + 7919)
  tr = data.splits["train"]
  out = []
  for c in range(data.num_classes):
    pool = tr[data.labels[tr] == c]
    if pool.size < k:
      raise ValueError(
          f"--budget-k {k} needs {k} labelled points per class, but the "
          f"training split of {data.dataset} has only {pool.size} of class "
          f"{c}; choose a smaller --budget-k")
    out.append(rng.permutation(pool)[:k])
  return np.sort(np.concatenate(out))


# ---------------------------------------------------------------------------
# Label generator (limited demonstrations).


def _gen_apply(graphdef, params, feats, ctx):
  """``[B, 2]`` logits of queries ``feats`` sharing one context ``[C, D]``.

  The context is passed with a leading axis of 1: encoded once for all
  queries (the encoder's shared-context path).
  """
  return nnx.merge(graphdef, params)(feats, jax.tree.map(lambda a: a[None],
                                                         ctx))


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "phi_def", "tx", "steps", "batch", "mu", "ctx_size", "tau",
    "lambda_u", "ema", "dataset", "num_classes"))
def _gen_chunk(params, opt, ema_params, key, phi_params, images, feats,
               labels, answers, lab_idx, n_lab, unl_idx, n_unl, weak_views,
               strong_views, *, graphdef,
               phi_def, tx, steps, batch, mu, ctx_size, tau, lambda_u, ema,
               dataset, num_classes):
  phi = nnx.merge(phi_def, phi_params)
  lab_mask = jnp.arange(lab_idx.shape[0]) < n_lab
  pool_f, pool_y = feats[lab_idx], labels[lab_idx]
  pool_a = answers[lab_idx]  # [Lmax, E]
  num_experts = answers.shape[1]

  def step(c, k):
    p, o, ep = c
    ks = jax.random.split(k, 6)
    li = lab_idx[jax.random.randint(ks[0], (batch,), 0, n_lab)]
    ui = unl_idx[jax.random.randint(ks[1], (mu * batch,), 0, n_unl)]
    if weak_views is None:
      f_l = phi.features(_weak(ks[2], images[li], dataset))
      xu = images[ui]
      f_w = phi.features(_weak(ks[3], xu, dataset))
      f_s = phi.features(_strong(ks[4], xu, dataset))
    else:  # Cached views [V, N, D]: one drawn per point.
      def view(kk, ix, vs):
        return vs[jax.random.randint(kk, ix.shape, 0, vs.shape[0]), ix]
      f_l = view(ks[2], li, weak_views)
      f_w = view(ks[3], ui, weak_views)
      f_s = view(ks[4], ui, strong_views)
    target = (answers[li] == labels[li][:, None]).astype(jnp.int32)  # [b, E]
    ctxs = jax.vmap(lambda kk, a: experts.sample_context(
        kk, pool_f, pool_y, a, size=ctx_size, capacity=ctx_size,
        num_classes=num_classes, where=lab_mask))(
            jax.random.split(ks[5], num_experts), pool_a.T)

    def obj(p):
      def one(ctx, t):
        ce = optax.softmax_cross_entropy_with_integer_labels(
            _gen_apply(graphdef, p, f_l, ctx), t).mean()
        lu, mask = losses.fixmatch_consistency(
            _gen_apply(graphdef, p, f_w, ctx),
            _gen_apply(graphdef, p, f_s, ctx), threshold=tau)
        return ce + lambda_u * lu.mean(), mask.mean()
      per, masked = jax.vmap(one)(ctxs, target.T)
      return per.mean(), masked.mean()
    (loss, conf), g = jax.value_and_grad(obj, has_aux=True)(p)
    u, o = tx.update(g, o, p)
    p = optax.apply_updates(p, u)
    ep = optax.incremental_update(p, ep, 1.0 - ema) if ema > 0 else p
    return (p, o, ep), jnp.stack([loss, conf])

  (params, opt, ema_params), hist = jax.lax.scan(
      step, (params, opt, ema_params), jax.random.split(key, steps))
  return params, opt, ema_params, hist.mean(0)


@functools.partial(jax.jit, static_argnames=("graphdef", "ctx_size",
                                             "num_classes"))
def _gen_predict(params, key, q_feats, pool_f, pool_y, pool_a, pool_mask, *,
                 graphdef, ctx_size, num_classes):
  """``[Q]`` P(expert right) for queries, a fresh context draw per query."""
  def one(k, f):
    ctx = experts.sample_context(k, pool_f, pool_y, pool_a, size=ctx_size,
                                 capacity=ctx_size, num_classes=num_classes,
                                 where=pool_mask)
    return jax.nn.softmax(_gen_apply(graphdef, params, f[None], ctx))[0, 1]
  return jax.vmap(one)(jax.random.split(key, q_feats.shape[0]), q_feats)


def train_label_generator(data: Data, phi, answers_seen: np.ndarray,
                          lab: np.ndarray, *, seed: int,
                          budget: config.Budget, ema: float = 0.0,
                          max_labelled: int | None = None, views=None,
                          progress: bool = True):
  """Trains the expert-correctness predictor on ``lab`` + FixMatch.

  Args:
    data: the data.
    phi: ``(graphdef, params, features [N, D])`` of the frozen embedding.
    answers_seen: ``[N, S]`` true answers of the seen experts.
    lab: indices of the labelled points (each with every seen expert's
      answer).
    seed: the seed.
    budget: steps, batch sizes, τ, λ_u, μ.
    ema: EMA decay of the weights (0: none); the EMA weights are returned.
    max_labelled: pad ``lab`` to this length (one compiled program for
      every budget).
    views: ``None`` (φ applied to augmented images at every step) or the
      cached ``(weak, strong)`` views of ``feature_views`` (no image read).
    progress: show a progress bar.

  Returns:
    ``(graphdef, params, history)``, history ``[chunks, 2]`` (loss, share of
    confident unlabelled examples).
  """
  phi_def, phi_params, feats = phi
  k_ctx = 2 * data.num_classes
  key = jax.random.fold_in(jax.random.key(seed), 21 + lab.size)
  model = models.ExpertCorrectnessPredictor(
      feats.shape[1], data.num_classes, encoder_kind="attention",
      embed_dim=budget.embed_dim, hidden_dim=budget.hidden_dim,
      rngs=nnx.Rngs(params=key))
  graphdef, params = nnx.split(model)
  tx = optax.adam(budget.gen_lr)
  opt = tx.init(params)
  ema_params = params
  size = max(max_labelled or lab.size, lab.size, k_ctx)
  lab_idx = np.concatenate([lab, np.full(size - lab.size, lab[0])])
  unl = np.setdiff1d(data.splits["train"], lab)
  n_unl = unl.size  # Padded to the training split: one shape for every L.
  unl = np.concatenate([unl, np.full(data.splits["train"].size - n_unl,
                                     unl[0])])
  chunks = -(-budget.gen_steps // budget.eval_every)  # ceil
  chunk = -(-budget.gen_steps // chunks)
  hist = []
  weak_v, strong_v = (None, None) if views is None else (
      jnp.asarray(views[0]), jnp.asarray(views[1]))
  args = (phi_params, None if views is not None else jnp.asarray(data.images),
          jnp.asarray(feats), jnp.asarray(data.labels),
          jnp.asarray(answers_seen), jnp.asarray(lab_idx),
          jnp.asarray(lab.size), jnp.asarray(unl), jnp.asarray(n_unl),
          weak_v, strong_v)
  for i in tqdm(range(chunks), desc=f"label generator L={lab.size}",
                disable=not progress, leave=False):
    params, opt, ema_params, h = _gen_chunk(
        params, opt, ema_params, jax.random.fold_in(key, i), *args,
        graphdef=graphdef, phi_def=phi_def, tx=tx, steps=chunk,
        batch=budget.gen_batch, mu=budget.mu, ctx_size=k_ctx, tau=budget.tau,
        lambda_u=budget.lambda_u, ema=float(ema), dataset=data.dataset,
        num_classes=data.num_classes)
    hist.append(np.asarray(h))
  return graphdef, (ema_params if ema > 0 else params), np.stack(hist)


def predict_correctness(gen, feats, data: Data, query: np.ndarray,
                        pool: np.ndarray, pool_answers: np.ndarray, *,
                        key, pad_to: int = 0) -> np.ndarray:
  """``[Q]`` P(the expert is right) with contexts of ``2·K`` pool points.

  The pool is padded (masked) to ``pad_to`` points, so pools of different
  sizes can share one compiled program.
  """
  graphdef, params = gen
  k_ctx = 2 * data.num_classes
  pad = max(0, k_ctx - pool.size, pad_to - pool.size)
  mask = np.arange(pool.size + pad) < pool.size
  pool = np.concatenate([pool, np.full(pad, pool[0])])
  pool_answers = np.concatenate([pool_answers,
                                 np.full(pad, pool_answers[0])])
  return np.asarray(_gen_predict(
      params, key, jnp.asarray(feats[query]), jnp.asarray(feats[pool]),
      jnp.asarray(data.labels[pool]), jnp.asarray(pool_answers),
      jnp.asarray(mask), graphdef=graphdef, ctx_size=k_ctx,
      num_classes=data.num_classes))


def pseudo_answers(gen, feats, data: Data, answers_seen: np.ndarray,
                   lab: np.ndarray, *, seed: int, wrong: str,
                   pad_to: int = 0) -> tuple[np.ndarray, dict[str, float]]:
  """``[N, S]`` pseudo answers of the seen experts on train and validation.

  Each point's correctness is predicted with a fresh context of ``2·K``
  labelled points; pseudo labels follow eq. 5 (``experts.pseudo_expert_labels``
  with ``wrong``); the labelled points keep their true answers. Test points
  are left as -1 (never used).

  Returns:
    ``(answers, info)``, info with the pseudo labels' agreement with the true
    answers and the predicted-correctness accuracy on the training split.
  """
  key = jax.random.fold_in(jax.random.key(seed), 31 + lab.size)
  pts = np.concatenate([data.splits["train"], data.splits["val_ctx"],
                        data.splits["val_query"]])
  out = np.full(answers_seen.shape, -1, np.int32)
  agree, corr = [], []
  for e in range(answers_seen.shape[1]):
    ke = jax.random.fold_in(key, e)
    p = predict_correctness(gen, feats, data, pts, lab, answers_seen[lab, e],
                            key=jax.random.fold_in(ke, 0), pad_to=pad_to)
    pseudo = np.asarray(experts.pseudo_expert_labels(
        jax.random.fold_in(ke, 1), data.labels[pts], jnp.asarray(p),
        num_classes=data.num_classes, wrong=wrong))
    out[pts, e] = pseudo
    out[lab, e] = answers_seen[lab, e]
    true = answers_seen[pts, e]
    agree.append(np.mean(out[pts, e] == true))
    corr.append(np.mean((p > 0.5) == (true == data.labels[pts])))
  return out, {"pseudo_label_agreement": float(np.mean(agree)),
               "train_correctness_accuracy": float(np.mean(corr))}


def correctness_accuracy(gen, feats, data: Data, answers: np.ndarray, *,
                         seed: int) -> dict[str, float]:
  """Predicted-correctness accuracy on test queries, seen vs unseen experts."""
  key = jax.random.fold_in(jax.random.key(seed), 41)
  q, pool = data.splits["test_query"], data.splits["test_ctx"]
  acc = []
  for e in range(config.NUM_EXPERTS):
    p = predict_correctness(gen, feats, data, q, pool, answers[pool, e],
                            key=jax.random.fold_in(key, e))
    acc.append(np.mean((p > 0.5) == (answers[q, e] == data.labels[q])))
  acc = np.asarray(acc)
  return {"seen": float(acc[:config.NUM_SEEN].mean()),
          "unseen": float(acc[config.NUM_SEEN:].mean())}


# ---------------------------------------------------------------------------
# Downstream L2D-Pop, Single-L2D and Finetune.


ENCODER = {"np_attention": "attention", "np": "np", "single": None}


def make_downstream(data: Data, budget: config.Budget, variant: str, key):
  """``PopulationL2D`` on the fallible backbone (``single``: no context)."""
  rngs = nnx.Rngs(params=key)
  return models.PopulationL2D(
      fallible_backbone(data, budget, rngs), budget.hidden_dim,
      data.num_classes, encoder_kind=ENCODER[variant], rngs=rngs,
      embed_dim=budget.embed_dim, hidden_dim=budget.hidden_dim)


def _pop_logits(graphdef, params, x, ctx):
  """Logits ``[B, K+1]`` of queries ``x`` sharing one raw context ``[C, ...]``.

  The context is passed with a leading axis of 1: its points are embedded
  and self-attended once for all queries (the encoder's shared-context path).
  """
  m = nnx.merge(graphdef, params)
  if m.encoder is None:
    return m(x)
  return m(x, jax.tree.map(lambda a: a[None], ctx))


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "tx", "steps", "batch", "capacity", "dataset", "num_classes"))
def _down_chunk(params, opt, key, images, labels, answers, train_idx, *,
                graphdef, tx, steps, batch, capacity, dataset, num_classes):
  pool_x, pool_y = images[train_idx], labels[train_idx]
  pool_a = answers[train_idx]
  num_experts = answers.shape[1]

  def step(c, k):
    p, o = c
    ks = jax.random.split(k, 4)
    qi = train_idx[jax.random.randint(ks[0], (batch,), 0, train_idx.shape[0])]
    xq = _weak(ks[1], images[qi], dataset)
    sizes = jax.random.randint(ks[2], (num_experts,), config.CONTEXT_MIN,
                               capacity + 1)
    ctxs = jax.vmap(lambda kk, a, s: experts.sample_context(
        kk, pool_x, pool_y, a, size=s, capacity=capacity,
        num_classes=num_classes))(jax.random.split(ks[3], num_experts),
                                  pool_a.T, sizes)

    def obj(p):
      def one(ctx, a):
        logits = _pop_logits(graphdef, p, xq, ctx)
        return losses.population_l2d_loss(logits, labels[qi], a).mean()
      return jax.vmap(one)(ctxs, answers[qi].T).mean()
    loss, g = jax.value_and_grad(obj)(p)
    u, o = tx.update(g, o, p)
    return (optax.apply_updates(p, u), o), loss

  (params, opt), hist = jax.lax.scan(step, (params, opt),
                                     jax.random.split(key, steps))
  return params, opt, hist.mean()


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity", "draws",
                                             "num_classes"))
def _evaluate(params, key, images, labels, answers, pool, query, *, graphdef,
              capacity, draws, num_classes):
  """Per (expert, query): deferred?, system right?, expert right?"""
  xq, yq = images[query], labels[query]
  draw_of = jnp.arange(query.shape[0]) % draws

  def per_expert(ke, a):
    def per_draw(kd):
      ctx = experts.sample_context(kd, images[pool], labels[pool], a[pool],
                                   size=capacity, capacity=capacity,
                                   num_classes=num_classes)
      return _pop_logits(graphdef, params, xq, ctx)
    logits = jax.lax.map(per_draw, jax.random.split(ke, draws))  # [R, Q, K+1]
    logits = logits[draw_of, jnp.arange(query.shape[0])]
    return _decide(logits, yq, a[query])
  return jax.lax.map(lambda t: per_expert(*t),
                     (jax.random.split(key, answers.shape[1]), answers.T))


def _decide(logits, y, a):
  who = deferral.argmax_deferral(logits, num_experts=1)
  defer = who != deferral.MODEL
  model_right = jnp.argmax(logits[:, :-1], -1) == y
  expert_right = a == y
  return jnp.stack([defer, jnp.where(defer, expert_right, model_right),
                    expert_right])


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity", "draws",
                                             "num_classes", "max_steps"))
def _evaluate_finetune(params, key, lr, num_steps, images, labels, answers,
                       pool, query, *, graphdef, capacity, draws, num_classes,
                       max_steps):
  """As ``_evaluate`` for Single-L2D fine-tuned on each context draw."""
  xq, yq = images[query], labels[query]
  draw_of = jnp.arange(query.shape[0]) % draws
  tx = optax.adam(lr)

  def tune(ctx):
    def obj(p):
      logits = nnx.merge(graphdef, p)(ctx.features)
      return losses.population_l2d_loss(logits, ctx.labels, ctx.answers,
                                        where=ctx.mask).mean()

    def step(c, i):
      p, o = c
      g = jax.grad(obj)(p)
      u, o2 = tx.update(g, o, p)
      p2 = optax.apply_updates(p, u)
      keep = i < num_steps
      return jax.tree.map(lambda new, old: jnp.where(keep, new, old),
                          (p2, o2), (p, o)), None
    (p, _), _ = jax.lax.scan(step, (params, tx.init(params)),
                             jnp.arange(max_steps))
    return p

  def per_expert(ke, a):
    def per_draw(kd):
      ctx = experts.sample_context(kd, images[pool], labels[pool], a[pool],
                                   size=capacity, capacity=capacity,
                                   num_classes=num_classes)
      return nnx.merge(graphdef, tune(ctx))(xq)
    logits = jax.lax.map(per_draw, jax.random.split(ke, draws))
    logits = logits[draw_of, jnp.arange(query.shape[0])]
    return _decide(logits, yq, a[query])
  return jax.lax.map(lambda t: per_expert(*t),
                     (jax.random.split(key, answers.shape[1]), answers.T))


def group_metrics(out: np.ndarray, num_seen: int = config.NUM_SEEN
                  ) -> dict[str, dict[str, float | None]]:
  """System accuracy, deferral rate, expert accuracy on deferred, per group.

  Args:
    out: ``[E, 3, Q]`` (deferred, system right, expert right) per expert.
    num_seen: the first ``num_seen`` experts are the seen ones.
  """
  out = np.asarray(out, bool)
  groups = {"seen": out[:num_seen], "unseen": out[num_seen:], "all": out}
  res = {"system_accuracy": {}, "deferral_rate": {},
         "expert_accuracy_on_deferred": {}}
  for g, o in groups.items():
    if o.shape[0] == 0:
      for m in res:
        res[m][g] = None
      continue
    d, s, e = o[:, 0], o[:, 1], o[:, 2]
    res["system_accuracy"][g] = float(s.mean())
    res["deferral_rate"][g] = float(d.mean())
    res["expert_accuracy_on_deferred"][g] = (float((e & d).sum() / d.sum())
                                             if d.any() else None)
  return res


def _eval_args(data: Data, answers, pool_split, query_split):
  return (jnp.asarray(data.images), jnp.asarray(data.labels),
          jnp.asarray(answers), jnp.asarray(data.splits[pool_split]),
          jnp.asarray(data.splits[query_split]))


def _capacity(data: Data, pool_split: str, eval_context: int) -> int:
  return min(eval_context, data.splits[pool_split].size)


def evaluate(model, data: Data, answers: np.ndarray, *, key,
             pool_split="test_ctx", query_split="test_query",
             eval_context: int = config.EVAL_CONTEXT,
             draws: int = config.EVAL_DRAWS) -> np.ndarray:
  """``[E, 3, Q]`` outcomes of a trained downstream model per expert column."""
  graphdef, params = model
  return np.asarray(_evaluate(
      params, key, *_eval_args(data, answers, pool_split, query_split),
      graphdef=graphdef, capacity=_capacity(data, pool_split, eval_context),
      draws=draws, num_classes=data.num_classes))


def evaluate_finetune(model, data: Data, answers: np.ndarray, *, key, lr,
                      steps, pool_split="test_ctx", query_split="test_query",
                      eval_context: int = config.EVAL_CONTEXT,
                      draws: int = config.EVAL_DRAWS) -> np.ndarray:
  """``evaluate`` for Single-L2D fine-tuned on each context draw."""
  graphdef, params = model
  return np.asarray(_evaluate_finetune(
      params, key, jnp.float32(lr), jnp.int32(steps),
      *_eval_args(data, answers, pool_split, query_split), graphdef=graphdef,
      capacity=_capacity(data, pool_split, eval_context), draws=draws,
      num_classes=data.num_classes, max_steps=max(config.FINETUNE_STEPS)))


def train_downstream(data: Data, variant: str, answers_seen: np.ndarray, *,
                     seed: int, budget: config.Budget,
                     eval_context: int = config.EVAL_CONTEXT,
                     desc: str = "", progress: bool = True):
  """Trains one downstream model on ``answers_seen`` ``[N, S]``.

  Every seen expert is in every batch with a fresh context draw from the
  training split; every ``eval_every`` steps the validation system accuracy
  (seen experts, contexts from the validation context pool with the same
  kind of labels) is measured and the best parameters are kept.

  Returns:
    ``((graphdef, params), info)`` with the best validation accuracy and the
    step it was reached.
  """
  key = jax.random.fold_in(jax.random.key(seed), 51 + config.VARIANTS.index(
      variant))
  graphdef, params = nnx.split(make_downstream(data, budget, variant, key))
  tx = optax.adam(budget.down_lr)
  opt = tx.init(params)
  capacity = min(eval_context, data.splits["train"].size)
  args = (jnp.asarray(data.images), jnp.asarray(data.labels),
          jnp.asarray(answers_seen), jnp.asarray(data.splits["train"]))
  chunks = -(-budget.down_steps // budget.eval_every)  # ceil
  chunk = -(-budget.down_steps // chunks)
  best, best_acc, best_step = params, -1.0, 0
  for i in tqdm(range(chunks), desc=desc,
                disable=not progress, leave=False):
    params, opt, _ = _down_chunk(
        params, opt, jax.random.fold_in(key, i), *args, graphdef=graphdef,
        tx=tx, steps=chunk, batch=budget.down_batch, capacity=capacity,
        dataset=data.dataset, num_classes=data.num_classes)
    out = evaluate((graphdef, params), data, answers_seen,
                   key=jax.random.fold_in(key, 10_000), pool_split="val_ctx",
                   query_split="val_query", eval_context=eval_context)
    acc = float(out[:, 1].mean())
    if acc > best_acc:
      best, best_acc, best_step = params, acc, (i + 1) * chunk
  return (graphdef, best), {"val_system_accuracy": best_acc,
                            "best_step": best_step}


def select_finetune(single, data: Data, answers_seen: np.ndarray, *,
                    seed: int, eval_context: int = config.EVAL_CONTEXT):
  """Steps and learning rate of Finetune from validation context data only.

  Returns:
    ``(steps, lr, scores)``: the pair with the best validation system
    accuracy (ties: fewer steps, then the smaller rate) and every pair's.
  """
  key = jax.random.fold_in(jax.random.key(seed), 61)
  scores = {}
  for steps in config.FINETUNE_STEPS:
    for lr in config.FINETUNE_LRS:
      if steps == 0 and lr != config.FINETUNE_LRS[0]:
        scores[(steps, lr)] = scores[(0, config.FINETUNE_LRS[0])]
        continue
      out = evaluate_finetune(single, data, answers_seen, key=key, lr=lr,
                              steps=steps, pool_split="val_ctx",
                              query_split="val_query",
                              eval_context=eval_context)
      scores[(steps, lr)] = float(out[:, 1].mean())
  best = max(scores, key=lambda sl: (scores[sl], -sl[0], -sl[1]))
  return best[0], best[1], scores


# ---------------------------------------------------------------------------
# One seed.


def classifier_alone(data: Data, budget: config.Budget, *, seed: int,
                     progress: bool = True) -> float:
  """Test accuracy of the fallible backbone + linear head trained with CE."""
  key = jax.random.fold_in(jax.random.key(seed), 71)
  model = Classifier(fallible_backbone(data, budget, nnx.Rngs(params=key)),
                     budget.hidden_dim, data.num_classes,
                     rngs=nnx.Rngs(params=jax.random.fold_in(key, 1)))
  graphdef, params, _ = train_classifier(
      model, data, jax.random.fold_in(key, 2), epochs=budget.embed_epochs,
      batch=budget.embed_batch, desc="classifier alone", progress=progress)
  q = data.splits["test_query"]
  return float(np.mean(_predict(graphdef, params, data.images[q]).argmax(1)
                       == data.labels[q]))


def _downstream_entries(data, answers_all, answers_train, *, variants,
                        labels_kind, seed, budget, eval_context, tag,
                        progress):
  """Trains the variants on ``answers_train`` and evaluates them on test."""
  entries, info = [], {}
  key = jax.random.fold_in(jax.random.key(seed), 81)
  trained = {}
  need = {v if v != "finetune" else "single" for v in variants}
  for v in [v for v in ("np_attention", "np", "single") if v in need]:
    trained[v], info[v] = train_downstream(
        data, v, answers_train, seed=seed, budget=budget,
        eval_context=eval_context, desc=f"{v} ({tag})", progress=progress)
  for v in variants:
    if v == "finetune":
      steps, lr, scores = select_finetune(trained["single"], data,
                                          answers_train, seed=seed,
                                          eval_context=eval_context)
      info["finetune"] = {"steps": steps, "lr": lr, "validation_scores": [
          {"steps": s, "lr": l, "val_system_accuracy": a}
          for (s, l), a in scores.items()]}
      out = evaluate_finetune(trained["single"], data, answers_all, key=key,
                              lr=lr, steps=steps, eval_context=eval_context)
    else:
      out = evaluate(trained[v], data, answers_all, key=key,
                     eval_context=eval_context)
    entries.append({"variant": v, "labels": labels_kind,
                    **group_metrics(out)})
  return entries, info


def run_seed(data: Data, *, seed: int, budget: config.Budget, budgets_k,
             variants, labels, size_h: int, oracle_sets: str = "cyclic",
             wrong: str = "other", ema: float = 0.0, cache_dir=None,
             eval_context: int = config.EVAL_CONTEXT,
             progress: bool = True) -> dict[str, Any]:
  """Everything of one seed.

  Returns:
    ``{"results": [...], "label_generator": [...], "baselines": {...},
    "info": {...}}`` with the entries of results.json (``budget_k`` and
    ``seed`` filled in; oracle entries repeated under every budget).
  """
  answers = population(data, seed=seed, size_h=size_h, order=oracle_sets,
                       wrong=wrong)
  results, gen_rows = [], []
  info = {"downstream_inputs": budget.downstream_inputs, "budgets": {}}
  on_features = budget.downstream_inputs == "features"
  views = None
  if "pseudo" in labels or on_features:
    phi_def, phi_params, feats, phi_acc = train_embedding(
        data, budget, seed=seed, cache_dir=cache_dir, progress=progress)
    info["embedding_val_accuracy"] = phi_acc
    max_lab = data.num_classes * max(budgets_k)
  down = data  # What the downstream models (and classifier alone) read.
  if on_features:
    down = dataclasses.replace(data, images=feats)
    info["downstream_inputs"] = (
        "features: the cached frozen φ features [N, D] of the un-augmented "
        "images for queries and context points, an MLP backbone")
    if "pseudo" in labels:
      views = feature_views((phi_def, phi_params, feats), data, budget,
                            seed=seed, cache_dir=cache_dir, progress=progress)
  q = data.splits["test_query"]
  base = {"classifier_alone": classifier_alone(down, budget, seed=seed,
                                               progress=progress),
          "expert_alone": float(np.mean(answers[q] == data.labels[q][:, None]))}
  seen = answers[:, :config.NUM_SEEN]
  if "oracle" in labels:
    oracle, info["oracle"] = _downstream_entries(
        down, answers, seen, variants=variants, labels_kind="oracle",
        seed=seed, budget=budget, eval_context=eval_context, tag="oracle",
        progress=progress)
  else:
    oracle = []
  for k in budgets_k:
    lab = labelled_indices(data, k, seed=seed)
    rows = [dict(e) for e in oracle]
    if "pseudo" in labels:
      g_def, g_params, hist = train_label_generator(
          data, (phi_def, phi_params, feats), seen, lab, seed=seed,
          budget=budget, ema=ema, max_labelled=max_lab, views=views,
          progress=progress)
      gen = (g_def, g_params)
      gen_rows.append({"budget_k": k, "seed": seed,
                       "correctness_accuracy": correctness_accuracy(
                           gen, feats, data, answers, seed=seed)})
      pseudo, p_info = pseudo_answers(gen, feats, data, seen, lab, seed=seed,
                                      wrong=wrong, pad_to=max_lab)
      p_info["final_loss"], p_info["final_confident_share"] = (
          float(hist[-1, 0]), float(hist[-1, 1]))
      entries, d_info = _downstream_entries(
          down, answers, pseudo, variants=variants, labels_kind="pseudo",
          seed=seed, budget=budget, eval_context=eval_context,
          tag=f"pseudo, k={k}", progress=progress)
      rows = entries + rows
      info["budgets"][k] = {"label_generator": p_info, "downstream": d_info}
    for r in rows:
      results.append({"variant": r["variant"], "labels": r["labels"],
                      "budget_k": k, "seed": seed,
                      **{m: r[m] for m in ("system_accuracy", "deferral_rate",
                                           "expert_accuracy_on_deferred")}})
  return {"results": results, "label_generator": gen_rows, "baselines": base,
          "info": info}


def run(data: Data, *, seeds, progress: bool = True, **kwargs
        ) -> dict[str, Any]:
  """``run_seed`` for every seed; baselines are the means over seeds.

  In a multi-process job (``l2d_jax.distributed``) the seeds are shared
  out: process ``p`` of ``N`` runs seeds ``p, p + N, ...`` and the results
  are gathered in seed order (``distributed.map_sharded``), so every
  process returns what one process would.
  """
  seeds = list(seeds)
  bar = tqdm(total=len(distributed.shard_items(seeds)), desc="seeds",
             disable=not progress)

  def one(seed):
    r = run_seed(data, seed=seed, progress=progress, **kwargs)
    bar.update()
    return r

  with bar:
    per_seed = distributed.map_sharded(one, seeds)
  results, gen, base, info = [], [], [], {}
  for seed, r in zip(seeds, per_seed):
    results += r["results"]
    gen += r["label_generator"]
    base.append(r["baselines"])
    info[seed] = {**r["info"], "baselines": r["baselines"]}
  baselines = {b: float(np.mean([x[b] for x in base]))
               for b in ("classifier_alone", "expert_alone")}
  return {"results": results, "label_generator": gen, "baselines": baselines,
          "info": info}
