"""The fixed pools of agents of the Top-k / Top-k(x) experiment.

``load_pool`` builds the pool of a data set: it trains the California Housing
regional regressors, or the image main model with simulated experts, and
returns the agents' predictions on the deferral splits (``Pool``). Also the
plain training loop for small NNX models (``fit``: one compiled ``lax.scan``
over epochs, ``jax.vmap``-able over models) that ``run`` reuses for the
rejector and the selectors. No deferral logic; the conventions are those of
``config``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from experiments.topk_l2d import config
from l2d_jax import data as data_lib
from l2d_jax import experts
from l2d_jax import models

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Pool:
  """A fixed pool of agents and the deferral splits.

  Attributes:
    dataset: the data set name.
    task: ``"regression"`` or ``"classification"``.
    features: split -> ``[N, D]`` float32 rejector/selector inputs.
    targets: split -> ``[N]`` targets (float32 values or int32 labels).
    predictions: split -> ``[N, A]`` agent predictions (agent 0 the model).
    beta: ``[A]`` consultation costs.
    alpha: ``[A]`` error weights.
    num_classes: K for classification, ``None`` for regression.
    info: how the pool was built (sizes, regions, agents' training).
  """

  dataset: str
  task: str
  features: dict[str, np.ndarray]
  targets: dict[str, np.ndarray]
  predictions: dict[str, np.ndarray]
  beta: np.ndarray
  alpha: np.ndarray
  num_classes: int | None = None
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_agents(self) -> int:
    return int(self.beta.shape[0])

  @property
  def metrics(self) -> tuple[str, ...]:
    return (config.REGRESSION_METRICS if self.task == "regression"
            else config.CLASSIFICATION_METRICS)

  @property
  def loss(self) -> str:
    return "squared" if self.task == "regression" else "zero_one"

  def metric_alone(self) -> np.ndarray:
    """``[A]`` each agent's test RMSE (regression) or accuracy alone."""
    p, y = self.predictions["test"], self.targets["test"][:, None]
    if self.task == "regression":
      return np.sqrt(np.mean((p - y) ** 2, axis=0))
    return np.mean(p == y, axis=0)


# ---------------------------------------------------------------------------
# A plain training loop for small NNX models (no deferral logic).


def stack_models(make: Callable[[nnx.Rngs], nnx.Module], keys: jax.Array):
  """``(graphdef, params)`` of models built from each key, stacked on axis 0."""
  states = []
  graphdef = None
  for k in keys:
    graphdef, state = nnx.split(make(nnx.Rngs(params=k)))
    states.append(state)
  return graphdef, jax.tree.map(lambda *a: jnp.stack(a), *states)


def apply_model(graphdef, params, x):
  """The outputs of the model ``(graphdef, params)`` on ``x``."""
  return nnx.merge(graphdef, params)(x)


def fit(graphdef, params, loss_fn, train: dict[str, jax.Array],
        val: dict[str, jax.Array], key: jax.Array, *, epochs: int,
        batch_size: int, tx: optax.GradientTransformation):
  """Trains one model; returns the parameters of its best validation epoch.

  One compiled ``lax.scan`` over epochs, each a ``lax.scan`` over shuffled
  batches (the last partial batch of an epoch is dropped). ``jax.vmap`` it to
  train several models at once.

  Args:
    graphdef: the model's ``nnx.GraphDef``.
    params: its ``nnx.State``.
    loss_fn: ``loss_fn(outputs, batch) -> [B]`` per-example losses.
    train: arrays with leading axis N (``"x"`` the model input).
    val: validation arrays (``"x"`` ...), scored with ``loss_fn`` each epoch.
    key: the batch-order key.
    epochs: number of epochs.
    batch_size: batch size (at most N).
    tx: the optax optimiser.

  Returns:
    ``(best_params, history)``: history ``[epochs, 2]`` (mean train loss,
    validation loss).
  """
  n = jax.tree.leaves(train)[0].shape[0]
  batch_size = min(batch_size, n)
  steps = n // batch_size

  def objective(p, batch):
    return jnp.mean(loss_fn(apply_model(graphdef, p, batch["x"]), batch))

  def epoch(carry, ekey):
    p, opt, best_p, best_v = carry
    idx = jax.random.permutation(ekey, n)[:steps * batch_size]

    def step(c, ix):
      p, opt = c
      batch = jax.tree.map(lambda a: a[ix], train)
      loss, grads = jax.value_and_grad(objective)(p, batch)
      updates, opt = tx.update(grads, opt, p)
      return (optax.apply_updates(p, updates), opt), loss

    (p, opt), train_losses = jax.lax.scan(
        step, (p, opt), idx.reshape(steps, batch_size))
    v = objective(p, val)
    better = v < best_v
    best_p = jax.tree.map(lambda a, b: jnp.where(better, a, b), p, best_p)
    return (p, opt, best_p, jnp.where(better, v, best_v)), jnp.stack(
        [jnp.mean(train_losses), v])

  init = (params, tx.init(params), params, jnp.asarray(jnp.inf, jnp.float32))
  (_, _, best, _), history = jax.lax.scan(epoch, init,
                                          jax.random.split(key, epochs))
  return best, history


def adam_cosine(lr: float, steps: int) -> optax.GradientTransformation:
  """Adam with a cosine decay of ``lr`` to 0 over ``steps`` steps."""
  return optax.adam(optax.cosine_decay_schedule(lr, max(1, steps)))


def mlp_maker(in_features: int, hidden, out: int):
  """``rngs -> models.MLP(in_features, hidden, out)``."""
  return lambda rngs: models.MLP(in_features, hidden, out, rngs=rngs)


# ---------------------------------------------------------------------------
# Pools.


def region_bands(coordinate: np.ndarray, *, num_agents: int = config.NUM_AGENTS,
                 width: float = config.REGION_WIDTH,
                 step: float = config.REGION_STEP) -> np.ndarray:
  """``[A, n]`` indices of each agent's band of points ranked by ``coordinate``.

  Band j holds the points of rank quantile ``[step·j, step·j + width)``: all
  bands have the same size, neighbours overlap by ``width - step``.
  """
  n = coordinate.shape[0]
  order = np.argsort(coordinate, kind="stable")
  size = int(round(width * n))
  starts = [int(round(step * j * n)) for j in range(num_agents)]
  if starts[-1] + size > n:
    raise ValueError(f"regions of width {width} and step {step} do not fit "
                     f"{num_agents} agents in [0, 1]")
  return np.stack([order[s:s + size] for s in starts])


def california_pool(features: np.ndarray, targets: np.ndarray, *,
                    budget: config.Budget, seed: int = config.AGENT_SEED,
                    lat_lon_columns: tuple[int, int] = (6, 7),
                    dataset: str = "california_housing",
                    progress: bool = True) -> Pool:
  """Trains the 6 regional MLP regressors and returns the pool.

  Args:
    features: ``[N, D]`` raw features (latitude and longitude among them).
    targets: ``[N]`` median house values ($100,000).
    budget: the agents' training budget.
    seed: seed of the split permutation and of the agents.
    lat_lon_columns: columns of latitude and longitude in ``features``.
    dataset: the name recorded in the pool.
    progress: show a progress line.

  Returns:
    The ``Pool`` (features standardised with the agent-training statistics
    and clipped to ``±config.FEATURE_CLIP``).
  """
  features = np.asarray(features, np.float32)
  targets = np.asarray(targets, np.float32)
  n = features.shape[0]
  rng = np.random.default_rng(seed)
  perm = rng.permutation(n)
  cuts = np.cumsum([int(round(config.CAL_SPLIT[s] * n))
                    for s in ("agents", "train", "val")])
  parts = dict(zip(("agents", "train", "val", "test"), np.split(perm, cuts)))
  mean = features[parts["agents"]].mean(0)
  std = features[parts["agents"]].std(0) + 1e-6
  # Clipped: a few blocks lie > 100 std out (AveOccup up to 1,243), where the
  # agents would extrapolate to squared errors in the thousands.
  z = np.clip((features - mean) / std, -config.FEATURE_CLIP,
              config.FEATURE_CLIP)
  lat, lon = lat_lon_columns
  coast = features[parts["agents"], lat] - features[parts["agents"], lon]
  bands = parts["agents"][region_bands(coast)]  # [A, n_band]
  band_perm = rng.permuted(np.broadcast_to(np.arange(bands.shape[1]),
                                           bands.shape), axis=1)
  bands = np.take_along_axis(bands, band_perm, axis=1)
  n_val = max(1, int(round(config.AGENT_VAL_FRACTION * bands.shape[1])))
  fit_idx, val_idx = bands[:, n_val:], bands[:, :n_val]

  a = config.NUM_AGENTS
  key = jax.random.key(seed)
  graphdef, params = stack_models(
      mlp_maker(z.shape[1], budget.hidden, 1), jax.random.split(key, a))

  def loss_fn(out, batch):
    return (out[:, 0] - batch["y"]) ** 2

  steps = budget.agent_epochs * max(1, fit_idx.shape[1] // budget.agent_batch)
  del steps  # Constant learning rate for the agents (the paper: Adam).
  train_agents = jax.jit(jax.vmap(
      lambda p, tr, va, k: fit(graphdef, p, loss_fn, tr, va, k,
                               epochs=budget.agent_epochs,
                               batch_size=budget.agent_batch,
                               tx=optax.adam(budget.agent_lr))))
  if progress:
    print(f"training {a} regional MLP agents ({budget.agent_epochs} epochs, "
          f"{fit_idx.shape[1]} points each)...", flush=True)
  best, history = train_agents(
      params, {"x": z[fit_idx], "y": targets[fit_idx]},
      {"x": z[val_idx], "y": targets[val_idx]},
      jax.random.split(jax.random.fold_in(key, 1), a))
  predict = jax.jit(jax.vmap(lambda p, x: apply_model(graphdef, p, x)[:, 0],
                             in_axes=(0, None), out_axes=1))
  pool = Pool(
      dataset=dataset, task="regression",
      features={s: z[parts[s]] for s in SPLITS},
      targets={s: targets[parts[s]] for s in SPLITS},
      predictions={s: np.asarray(predict(best, z[parts[s]]))
                   for s in SPLITS},
      beta=np.asarray(config.BETA, np.float32),
      alpha=np.asarray(config.ALPHA, np.float32),
      info={"sizes": {s: int(parts[s].size) for s in parts},
            "agent_band_size": int(bands.shape[1]),
            "agent_fit_size": int(fit_idx.shape[1]),
            "agent_best_val_rmse": np.sqrt(np.asarray(history[:, :, 1]).min(1)),
            "regions": "bands of latitude - longitude rank quantile "
            f"[{config.REGION_STEP}·j, {config.REGION_STEP}·j + "
            f"{config.REGION_WIDTH}) of the agent-training points"})
  return pool


def synthetic_regression(seed: int, n: int = 2000) -> tuple[np.ndarray,
                                                             np.ndarray]:
  """A California-like regression set needing no data (for tests).

  Returns ``(features [n, 8], targets [n])``; columns 6 and 7 are latitude
  and longitude, and the target depends on the position differently along
  the coast, so regional agents differ.
  """
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 8)).astype(np.float32)
  x[:, 6] = rng.uniform(32.5, 42.0, n)
  x[:, 7] = rng.uniform(-124.3, -114.3, n)
  t = x[:, 6] - x[:, 7]
  y = (2.0 + np.sin(t / 3.0) * x[:, 0] + 0.3 * x[:, 1]
       + 0.1 * rng.normal(size=n))
  return x, y.astype(np.float32)


def _check_data(data_dir, folder: str, files: tuple[str, ...], what: str):
  root = pathlib.Path(data_dir)
  missing = [root / folder / f for f in files
             if not (root / folder / f).exists()]
  if missing:
    raise FileNotFoundError(
        f"{what} not found: {missing[0]} does not exist; it is not part of the "
        f"shared data here; place the files under --data-dir DIR/{folder}/")


# SVHN and CIFAR-100 files the loaders read (checked before any work).
IMAGE_FILES = {
    "svhn": ("svhn", ("train_32x32.mat", "test_32x32.mat"), "SVHN (.mat)"),
    "cifar100": ("cifar-100-binary", ("train.bin", "test.bin"),
                 "CIFAR-100 (binary version)"),
}


def check_dataset_files(dataset: str, data_dir) -> None:
  """Raises ``FileNotFoundError`` naming the missing path of ``dataset``."""
  if dataset == "california_housing":
    _check_data(data_dir, "california_housing", ("cal_housing.data",),
                "California Housing")
  elif dataset == "cifar10":
    _check_data(data_dir, "cifar10_images",
                ("cifar10_train_jpg.zip", "cifar10_test_jpg.zip"),
                "CIFAR-10 images")
  else:
    _check_data(data_dir, *IMAGE_FILES[dataset])


def expert_class_masks(num_experts: int, num_classes: int, *,
                       fraction: float = config.EXPERT_CLASS_FRACTION
                       ) -> np.ndarray:
  """``[J, K]`` bool: the classes each simulated expert knows.

  Expert j knows ``round(fraction·K)`` consecutive classes starting at
  ``round(j·K / J)`` (mod K): with K = 10, J = 5, fraction 0.4, expert j
  knows classes 2j .. 2j + 3, sharing two with each neighbour.
  """
  per = max(1, int(round(fraction * num_classes)))
  m = np.zeros((num_experts, num_classes), bool)
  for j in range(num_experts):
    start = int(round(j * num_classes / num_experts))
    m[j, (start + np.arange(per)) % num_classes] = True
  return m


def image_pool(train_images: np.ndarray, train_labels: np.ndarray,
               test_images: np.ndarray, test_labels: np.ndarray, *,
               num_classes: int, budget: config.Budget,
               seed: int = config.AGENT_SEED, dataset: str = "cifar10",
               progress: bool = True) -> Pool:
  """Trains the main SmallCNN, simulates the experts and returns the pool.

  Args:
    train_images: ``uint8 [N, H, W, C]`` images the main model trains on.
    train_labels: ``[N]`` their labels.
    test_images: ``uint8 [M, H, W, C]`` images of the deferral splits.
    test_labels: ``[M]`` their labels.
    num_classes: K.
    budget: the main model's training budget.
    seed: seed of the main model, the experts and the split.
    dataset: the name recorded in the pool.
    progress: show a progress bar over the main model's epochs.

  Returns:
    The ``Pool``; features are the main model's K logits.
  """
  rng = np.random.default_rng(seed)
  if budget.cnn_train_images is not None:
    keep = rng.permutation(train_images.shape[0])[:budget.cnn_train_images]
    train_images, train_labels = train_images[keep], train_labels[keep]
  channels = train_images.shape[-1]
  mean = tuple(float(m) for m in train_images.reshape(-1, channels).mean(0)
               / 255.0)
  std = tuple(float(s) for s in train_images.reshape(-1, channels).std(0)
              / 255.0 + 1e-3)
  xtr = data_lib.normalize_images(train_images, mean=mean, std=std)
  xte = data_lib.normalize_images(test_images, mean=mean, std=std)
  key = jax.random.key(seed)
  model = models.SmallCNN(num_classes, in_channels=channels,
                          image_size=train_images.shape[1:3],
                          rngs=nnx.Rngs(params=jax.random.fold_in(key, 0)))
  graphdef, params = nnx.split(model)
  steps = max(1, xtr.shape[0] // budget.cnn_batch)
  tx = adam_cosine(1e-3, budget.cnn_epochs * steps)
  opt = tx.init(params)

  @jax.jit
  def step(p, o, x, y):
    def obj(p):
      return optax.softmax_cross_entropy_with_integer_labels(
          apply_model(graphdef, p, x), y).mean()
    loss, g = jax.value_and_grad(obj)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  labels = np.asarray(train_labels, np.int32)
  for epoch in tqdm(range(budget.cnn_epochs), desc="main model",
                    disable=not progress):
    order = rng.permutation(xtr.shape[0])
    for i in range(steps):
      ix = order[i * budget.cnn_batch:(i + 1) * budget.cnn_batch]
      params, opt, _ = step(params, opt, xtr[ix], labels[ix])
  logits_fn = jax.jit(lambda p, x: apply_model(graphdef, p, x))
  logits = np.concatenate([np.asarray(logits_fn(params, xte[i:i + 1000]))
                           for i in range(0, xte.shape[0], 1000)])
  labels_te = np.asarray(test_labels, np.int32)
  masks = expert_class_masks(config.NUM_AGENTS - 1, num_classes)
  p_correct = np.where(masks, config.EXPERT_P_CORRECT, 0.0).astype(np.float32)
  expert_preds = np.asarray(experts.noisy_experts(
      jax.random.fold_in(key, 1), labels_te, num_classes=num_classes,
      p_correct=p_correct))
  preds = np.concatenate([logits.argmax(1)[:, None], expert_preds], 1)
  feats = (logits - logits.mean(0)) / (logits.std(0) + 1e-6)
  m = labels_te.shape[0]
  perm = rng.permutation(m)
  cuts = np.cumsum([int(round(config.CIFAR_SPLIT[s] * m))
                    for s in ("train", "val")])
  parts = dict(zip(SPLITS, np.split(perm, cuts)))
  return Pool(
      dataset=dataset, task="classification",
      features={s: feats[parts[s]].astype(np.float32) for s in SPLITS},
      targets={s: labels_te[parts[s]] for s in SPLITS},
      predictions={s: preds[parts[s]].astype(np.int32) for s in SPLITS},
      beta=np.asarray(config.BETA, np.float32),
      alpha=np.asarray(config.ALPHA, np.float32), num_classes=num_classes,
      info={"sizes": {s: int(parts[s].size) for s in parts},
            "main_model_train_images": int(xtr.shape[0]),
            "main_model_epochs": budget.cnn_epochs,
            "expert_classes": [np.flatnonzero(r).tolist() for r in masks],
            "expert_p_correct": config.EXPERT_P_CORRECT,
            "features": "the main model's standardised class logits (frozen; "
            "the paper's selector uses CLIP features, not available here)"})


def load_pool(dataset: str, *, data_dir, budget: config.Budget,
              seed: int = config.AGENT_SEED, cache_dir=None,
              progress: bool = True) -> Pool:
  """Loads ``dataset`` from ``data_dir`` and builds its pool of agents."""
  check_dataset_files(dataset, data_dir)
  if dataset == "california_housing":
    x, y, names = data_lib.load_california_housing(data_dir)
    return california_pool(
        x, y, budget=budget, seed=seed, progress=progress,
        lat_lon_columns=(names.index("Latitude"), names.index("Longitude")))
  if dataset == "cifar10":
    xtr, ytr = data_lib.load_cifar10_images(data_dir, split="train",
                                            cache_dir=cache_dir)
    xte, yte = data_lib.load_cifar10_images(data_dir, split="test",
                                            cache_dir=cache_dir)
    return image_pool(xtr, ytr, xte, yte, num_classes=10, budget=budget,
                      seed=seed, dataset=dataset, progress=progress)
  if dataset == "svhn":
    xtr, ytr = data_lib.load_svhn(data_dir, split="train")
    xte, yte = data_lib.load_svhn(data_dir, split="test")
    return image_pool(xtr, ytr, xte, yte, num_classes=10, budget=budget,
                      seed=seed, dataset=dataset, progress=progress)
  if dataset == "cifar100":
    xtr, ytr, _ = data_lib.load_cifar100(data_dir, split="train")
    xte, yte, _ = data_lib.load_cifar100(data_dir, split="test")
    return image_pool(xtr, ytr, xte, yte, num_classes=100, budget=budget,
                      seed=seed, dataset=dataset, progress=progress)
  raise ValueError(f"--dataset must be one of {config.DATASETS}, got "
                   f"{dataset!r}")
