"""The frozen embedding φ, the fallible downstream backbone and their training.

``train_embedding`` trains φ with cross-entropy on the ground truth (the best
validation epoch) and caches it (CIFAR-10 and the other image sets: ``.npy``
files under a folder keyed by ``embedding_spec``); ``feature_views`` caches
φ of weak and strong augmentations of the training images (FixMatch on
features); ``train_classifier`` is the shared cross-entropy loop.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from experiments.population_l2d import config
from experiments.population_l2d.data import Data
from l2d_jax import data as data_lib


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
    kind = "strong" if strong else "weak"
    for v in tqdm(range(views), desc=f"φ views ({kind})",
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
