"""Data, simulated experts, training of EA-L2D and the baselines, evaluation.

``load_data`` reads a data set as fixed input vectors and cuts the splits of
``config``; ``run_study`` runs one study (``rq1``, ``rq2``, ``rq3``,
``lcb-ablation``) over seeds and overlaps and returns result rows and mean
curves. Every L2D quantity (expert simulators, context sets, Beta profiles,
rejector features, losses, priorities, AURSAC/AURDAC) comes from
``l2d_jax``; this module trains small NNX models with jitted optax loops
(``lax.scan`` over steps) and bookkeeps. See ``config`` for the conventions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from experiments.ea_l2d import config
from l2d_jax import data as data_lib
from l2d_jax import deferral
from l2d_jax import distributed
from l2d_jax import experts
from l2d_jax import losses
from l2d_jax import metrics
from l2d_jax import models

CURVE_GRID = np.linspace(0.0, 1.0, 101)


@dataclasses.dataclass
class Data:
  """Input vectors, labels and index splits of one data set.

  Attributes:
    dataset: the data set name.
    x: ``float32 [N, D]`` inputs of every method's classifier.
    y: ``int32 [N]`` labels in ``[0, K)``.
    splits: ``train``, ``val``, ``test_ctx``, ``test_query`` -> indices.
    num_classes: K.
    model: a short description of the classifier's input, for titles.
  """

  dataset: str
  x: np.ndarray
  y: np.ndarray
  splits: dict[str, np.ndarray]
  num_classes: int
  model: str


# ---------------------------------------------------------------------------
# Data.


def _pool(images: np.ndarray, factor: int) -> np.ndarray:
  n, h, w, c = images.shape
  h2, w2 = h // factor, w // factor
  x = images[:, :h2 * factor, :w2 * factor].reshape(n, h2, factor, w2,
                                                     factor, c)
  return x.mean(axis=(2, 4)).reshape(n, -1)


def _standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
  mu, sd = x[train].mean(0), x[train].std(0)
  return ((x - mu) / np.where(sd > 1e-6, sd, 1.0)).astype(np.float32)


def _cut(n: int, rng) -> dict[str, np.ndarray]:
  perm = rng.permutation(n)
  cuts = np.cumsum([int(round(config.SPLIT[s] * n)) for s in ("train",
                                                             "val")])
  train, val, test = np.split(perm, cuts)
  half = test.size // 2
  return {"train": np.sort(train), "val": np.sort(val),
          "test_ctx": np.sort(test[:half]), "test_query": np.sort(test[half:])}


def check_dataset_files(dataset: str, data_dir) -> None:
  """Raises ``FileNotFoundError`` naming the missing input of ``dataset``."""
  if dataset == "digits":
    return
  if dataset == "cifar10":
    from experiments.population_l2d import run as pop_run  # pylint: disable=g-import-not-at-top
    pop_run.check_dataset_files("cifar10", data_dir)
    return
  path = data_lib.medmnist_path(data_dir, dataset)
  if not path.is_file():
    raise FileNotFoundError(
        f"{dataset} not found: {path} does not exist (MedMNIST is not part "
        f"of the shared data here); download {path.name} from "
        f"https://medmnist.com into --data-dir")


def load_data(dataset: str, *, data_dir, budget: config.Budget,
              cache_dir=None, max_images: int | None = None,
              progress: bool = True) -> Data:
  """Loads ``dataset`` as input vectors and cuts its splits.

  Args:
    dataset: one of ``config.DATASETS``.
    data_dir: the data folder (unused for digits).
    budget: CIFAR-10's embedding budget and image caps.
    cache_dir: CIFAR-10: folder of the cached frozen embedding.
    max_images: digits only: keep this many images (tests).
    progress: show progress bars.
  """
  check_dataset_files(dataset, data_dir)
  rng = np.random.default_rng(config.DATA_SEED)
  if dataset == "digits":
    images, y = data_lib.load_digits()
    if max_images is not None and max_images < y.size:
      keep = np.sort(rng.permutation(y.size)[:max_images])
      images, y = images[keep], y[keep]
    splits = _cut(y.size, rng)
    x = _standardise(_pool(images, 2), splits["train"])
    return Data(dataset, x, y.astype(np.int32), splits, 10,
                "MLP on 4x4-pooled pixels")
  if dataset == "cifar10":
    return _load_cifar10(data_dir, budget, cache_dir, progress)
  parts = [data_lib.load_medmnist(data_dir, dataset, s)
           for s in ("train", "val", "test")]
  images = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
  y = np.concatenate([p[1] for p in parts]).astype(np.int32)
  sizes = np.cumsum([p[1].size for p in parts])
  test = rng.permutation(np.arange(sizes[1], sizes[2]))
  half = test.size // 2
  splits = {"train": np.arange(sizes[0]), "val": np.arange(sizes[0],
                                                          sizes[1]),
            "test_ctx": np.sort(test[:half]),
            "test_query": np.sort(test[half:])}
  x = _standardise(_pool(images, 4), splits["train"])
  return Data(dataset, x, y, splits, data_lib.MEDMNIST_CLASSES[dataset],
              "MLP on 7x7-pooled pixels")


def _load_cifar10(data_dir, budget, cache_dir, progress) -> Data:
  """CIFAR-10 through ``experiments.population_l2d``'s cached embedding."""
  from experiments.population_l2d import config as pop_config  # pylint: disable=g-import-not-at-top
  from experiments.population_l2d import run as pop_run  # pylint: disable=g-import-not-at-top
  pop_budget = dataclasses.replace(
      pop_config.CIFAR_CPU, embed_epochs=budget.embed_epochs,
      train_images=budget.train_images, test_images=budget.test_images)
  d = pop_run.load_data("cifar10", data_dir=data_dir, budget=pop_budget,
                        cache_dir=cache_dir)
  _, _, feats, _ = pop_run.train_embedding(d, pop_budget, seed=0,
                                           cache_dir=cache_dir,
                                           progress=progress)
  s = d.splits
  splits = {"train": s["train"], "val": np.sort(np.concatenate(
      [s["val_ctx"], s["val_query"]])), "test_ctx": s["test_ctx"],
            "test_query": s["test_query"]}
  x = _standardise(np.asarray(feats, np.float32), splits["train"])
  return Data("cifar10", x, d.labels, splits, 10,
              "MLP on a frozen small-CNN embedding")


# ---------------------------------------------------------------------------
# Models.


class Backbone(nnx.Module):
  """Two ReLU layers: ``[B, D]`` -> ``[B, hidden]``."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(in_dim, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, hidden, rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.l2(nnx.relu(self.l1(x))))


class EAL2D(nnx.Module):
  """MLP classifier and the expert-agnostic rejector."""

  def __init__(self, in_dim, num_classes, *, hidden, rejector_hidden, rngs):
    self.backbone = Backbone(in_dim, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)
    self.rejector = models.EARejector(hidden_sizes=rejector_hidden,
                                      rngs=rngs)

  def __call__(self, x):
    return self.head(self.backbone(x))

  def defer_logits(self, logits, mean, var, key):
    """``[J, B]`` deferral logits from class logits and ``[J, K]`` profiles."""
    z = experts.ea_rejector_features(jax.nn.softmax(logits), mean[:, None],
                                     var[:, None], key=key)
    return self.rejector(z)


class MultiL2D(nnx.Module):
  """MLP with ``K + J`` outputs (multi-expert softmax L2D)."""

  def __init__(self, in_dim, num_classes, num_experts, *, hidden, rngs):
    self.backbone = Backbone(in_dim, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes + num_experts, rngs=rngs)

  def __call__(self, x):
    return self.head(self.backbone(x))


def make_model(method: str, data: Data, budget: config.Budget, key,
               num_experts: int):
  rngs = nnx.Rngs(params=key)
  d, k = data.x.shape[1], data.num_classes
  if method == "ea_l2d":
    return EAL2D(d, k, hidden=budget.hidden,
                 rejector_hidden=budget.rejector_hidden, rngs=rngs)
  if method == "multi_l2d":
    return MultiL2D(d, k, num_experts, hidden=budget.hidden, rngs=rngs)
  return models.PopulationL2D(
      Backbone(d, budget.hidden, rngs=rngs), budget.hidden, k,
      encoder_kind="attention" if method == "l2d_pop" else None, rngs=rngs,
      embed_dim=budget.embed_dim, hidden_dim=budget.hidden)


def _pop_logits(m, xq, ctx):
  """L2D-Pop logits ``[B, K+1]`` of queries sharing one context ``[C, D]``."""
  one = jax.tree.map(lambda a: a[None], ctx)
  feats = m.context_features(xq[:1], one)
  return m(xq, jax.tree.map(lambda a: jnp.broadcast_to(
      a, (xq.shape[0],) + a.shape[1:]), feats))


# ---------------------------------------------------------------------------
# Context sets and profiles (traced).


def _contexts(key, x, y, answers, pool, size, counts, *, capacity,
              num_classes, by_counts):
  """One context per expert (``answers [N, J]``): a ``Context`` ``[J, C]``."""
  num_experts = answers.shape[1]
  keys = jax.random.split(key, num_experts)
  px, py, pa = x[pool], y[pool], answers[pool].T
  if by_counts:
    return jax.vmap(lambda k, a, c: experts.sample_class_context(
        k, px, py, a, counts=c, capacity=capacity,
        num_classes=num_classes))(keys, pa, counts)
  return jax.vmap(lambda k, a: experts.sample_context(
      k, px, py, a, size=size, capacity=capacity,
      num_classes=num_classes))(keys, pa)


def _profiles(ctx, prior_a, prior_b, num_classes):
  correct, total = experts.class_counts(ctx, num_classes=num_classes)
  post = experts.beta_posterior(correct, total, prior_a=prior_a,
                                prior_b=prior_b)
  return post.mean, post.var


@functools.lru_cache(maxsize=None)
def _adam(lr: float):
  return optax.adam(lr)


STATIC = ("graphdef", "tx", "steps", "batch", "capacity", "num_classes",
          "method", "weighting", "by_counts", "noise")


@functools.partial(jax.jit, static_argnames=STATIC)
def _train_chunk(params, opt, key, x, y, answers, mode, train_idx, counts,
                 prior_a, prior_b, size, *, graphdef, tx, steps, batch,
                 capacity, num_classes, method, weighting, by_counts, noise):
  """``steps`` Adam steps of ``method`` on the training experts ``answers``."""

  def step(carry, k):
    p, o = carry
    ks = jax.random.split(k, 4)
    qi = train_idx[jax.random.randint(ks[0], (batch,), 0,
                                      train_idx.shape[0])]
    xq = x[qi] + noise * jax.random.normal(ks[1], (batch, x.shape[1]))
    yq = y[qi]
    if method in ("ea_l2d", "l2d_pop"):
      ctx = _contexts(ks[2], x, y, answers, train_idx, size, counts,
                      capacity=capacity, num_classes=num_classes,
                      by_counts=by_counts)

    def objective(p):
      m = nnx.merge(graphdef, p)
      if method == "ea_l2d":
        mean, var = _profiles(ctx, prior_a, prior_b, num_classes)
        logits = m(xq)
        g = m.defer_logits(logits, mean, var, ks[3])  # [J, B]
        shape = g.shape + (num_classes,)
        mean_b = jnp.broadcast_to(mean[:, None], shape)
        loss = losses.ea_lce_loss(
            jnp.broadcast_to(logits, shape), g,
            jnp.broadcast_to(yq, g.shape), mean_b,
            jnp.sqrt(jnp.broadcast_to(var[:, None], shape)),
            weighting=weighting, key=ks[3])
        return loss.mean()
      if method == "l2d_pop":
        def one(c, a):
          return losses.population_l2d_loss(_pop_logits(m, xq, c), yq,
                                            a).mean()
        return jax.vmap(one)(ctx, answers[qi].T).mean()
      if method == "pop_avg":
        return losses.population_l2d_loss(m(xq), yq, mode[qi]).mean()
      return losses.multi_expert_softmax_loss(m(xq), yq, answers[qi]).mean()

    loss, g = jax.value_and_grad(objective)(p)
    u, o = tx.update(g, o, p)
    return (optax.apply_updates(p, u), o), loss

  (params, opt), hist = jax.lax.scan(step, (params, opt),
                                     jax.random.split(key, steps))
  return params, opt, hist.mean()


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "capacity", "num_classes", "method", "by_counts"))
def _priorities(params, key, x, y, answers, pool, query, counts, prior_a,
                prior_b, size, *, graphdef, capacity, num_classes, method,
                by_counts):
  """``(P [Q, J], class_logits [Q, K])`` for the experts ``answers [N, J]``."""
  m = nnx.merge(graphdef, params)
  xq = x[query]
  num_experts = answers.shape[1]
  k_ctx, k_tie = jax.random.split(key)
  if method == "ea_l2d":
    ctx = _contexts(k_ctx, x, y, answers, pool, size, counts,
                    capacity=capacity, num_classes=num_classes,
                    by_counts=by_counts)
    mean, var = _profiles(ctx, prior_a, prior_b, num_classes)
    logits = m(xq)
    g = m.defer_logits(logits, mean, var, k_tie)
    return deferral.expert_priorities(logits, g.T), logits
  if method == "l2d_pop":
    ctx = _contexts(k_ctx, x, y, answers, pool, size, counts,
                    capacity=capacity, num_classes=num_classes,
                    by_counts=by_counts)
    out = jax.lax.map(lambda c: _pop_logits(m, xq, c), ctx)  # [J, Q, K+1]
    return (jax.vmap(deferral.deferral_priority)(out).T,
            out[0, :, :num_classes])
  out = m(xq)
  if method == "pop_avg":
    pr = deferral.deferral_priority(out)
    return (jnp.broadcast_to(pr[:, None], (xq.shape[0], num_experts)),
            out[:, :num_classes])
  return (deferral.expert_priorities(out[:, :num_classes],
                                     out[:, num_classes:]),
          out[:, :num_classes])


def _areas_of(p, m, e):
  out = {}
  for name, iv in config.INTERVALS.items():
    out[name] = (metrics.aursac(p, m, e, interval=iv),
                 metrics.aurdac(p, m, e, interval=iv))
  return out


@jax.jit
def _areas(priority, model_right, expert_right, route):
  """Routed and per-expert areas and the routed curves."""
  rows = jnp.arange(priority.shape[0])
  p, e = priority[rows, route], expert_right[rows, route]
  routed = _areas_of(p, model_right, e)
  per = jax.vmap(_areas_of, in_axes=(1, None, 1))(priority, model_right,
                                                   expert_right)
  return routed, per, metrics.deferral_curves(p, model_right, e)


def _grid(curve: np.ndarray) -> np.ndarray:
  return np.interp(CURVE_GRID, np.linspace(0, 1, curve.size), curve)


def score(priority, class_logits, y, answers, *, route=None,
          pop_avg_key=None) -> dict[str, Any]:
  """Areas of both aggregations and the routed curves on a 101-point grid.

  Args:
    priority: ``[Q, J]`` priorities of the test experts.
    class_logits: ``[Q, K]``.
    y: ``[Q]`` labels.
    answers: ``[Q, J]`` the test experts' answers.
    route: ``[Q]`` expert index per query (default: highest priority).
    pop_avg_key: route uniformly at random with this key (Pop-Avg).
  """
  priority = np.asarray(priority, np.float32)
  y = np.asarray(y)
  model_right = (np.asarray(class_logits).argmax(1) == y).astype(np.float32)
  expert_right = (np.asarray(answers) == y[:, None]).astype(np.float32)
  if pop_avg_key is not None:
    route = np.asarray(jax.random.randint(pop_avg_key, (y.size,), 0,
                                          priority.shape[1]))
  elif route is None:
    route = priority.argmax(1)
  routed, per, curves = _areas(priority, model_right, expert_right,
                               jnp.asarray(route, jnp.int32))
  out = {}
  for agg, src, reduce in (("routed", routed, float),
                           ("per_expert", per, lambda v: float(np.mean(v)))):
    out[agg] = {"aursac": reduce(src["0-1"][0]), "aurdac": reduce(src["0-1"][1]),
                "aursac_intervals": {k: reduce(src[k][0])
                                     for k in ("0-0.2", "0.8-1")},
                "aurdac_intervals": {k: reduce(src[k][1])
                                     for k in ("0-0.2", "0.8-1")}}
  out["per_expert_aurdac"] = np.asarray(per["0-1"][1])
  out["curves"] = (_grid(np.asarray(curves.system_accuracy)),
                   _grid(np.asarray(curves.expert_accuracy)))
  out["model_accuracy"] = float(model_right.mean())
  return out


# ---------------------------------------------------------------------------
# Training.


@dataclasses.dataclass
class Trained:
  """A trained model: NNX graph, the kept parameters, bookkeeping."""

  method: str
  graphdef: Any
  params: Any
  best_step: int
  val_aursac: float


def _mode(answers: np.ndarray, num_classes: int) -> np.ndarray:
  """Mode of each row of ``answers [N, J]`` (ties: the lowest class id)."""
  counts = np.zeros((answers.shape[0], num_classes), np.int32)
  for j in range(answers.shape[1]):
    counts[np.arange(answers.shape[0]), answers[:, j]] += 1
  return counts.argmax(1).astype(np.int32)


def _prior(prior, num_experts, num_classes):
  if prior is None:
    return (jnp.ones((num_experts, num_classes)),) * 2
  return tuple(jnp.broadcast_to(jnp.asarray(p, jnp.float32),
                                (num_experts, num_classes)) for p in prior)


def train(method: str, data: Data, answers: np.ndarray, *, key,
          budget: config.Budget, weighting: str = "lcb", counts=None,
          progress: bool = False, desc: str = "") -> Trained:
  """Trains ``method`` on the training experts ``answers [N, J]``.

  Args:
    method: one of ``config.METHODS``.
    data: the data set.
    answers: ``[N, J]`` answers of the training experts on every image.
    key: the ``jax.random`` key of this model.
    budget: steps, batch, widths.
    weighting: EA-L2D's loss weighting (the LCB ablation).
    counts: ``[J, K]`` per-class context counts (LCB ablation) instead of
      ``budget.context_size`` uniform points.
    progress: show a progress bar.
    desc: its label.
  """
  num_experts = answers.shape[1]
  k = data.num_classes
  model = make_model(method, data, budget, jax.random.fold_in(key, 0),
                     num_experts)
  graphdef, params = nnx.split(model)
  tx = _adam(budget.lr)
  opt = tx.init(params)
  by_counts = counts is not None
  capacity = (int(np.asarray(counts).sum(1).max()) if by_counts
              else budget.context_size)
  capacity = min(capacity, data.splits["train"].size)
  cnt = jnp.asarray(counts if by_counts else np.zeros((num_experts, k)),
                    jnp.int32)
  prior_a, prior_b = _prior(None, num_experts, k)
  x, y, a = jnp.asarray(data.x), jnp.asarray(data.y), jnp.asarray(answers)
  mode = jnp.asarray(_mode(answers, k))
  train_idx = jnp.asarray(data.splits["train"])
  val_idx = jnp.asarray(data.splits["val"])
  size = jnp.int32(min(capacity, budget.context_size))
  chunks = max(1, math.ceil(budget.steps / budget.eval_every))
  best = (params, 0, -np.inf)
  for c in tqdm(range(chunks), desc=desc, disable=not progress, leave=False):
    params, opt, _ = _train_chunk(
        params, opt, jax.random.fold_in(key, 1000 + c), x, y, a, mode,
        train_idx, cnt, prior_a, prior_b, size, graphdef=graphdef, tx=tx,
        steps=budget.eval_every, batch=budget.batch, capacity=capacity,
        num_classes=k, method=method, weighting=weighting,
        by_counts=by_counts, noise=budget.noise)
    pr, logits = _priorities(
        params, jax.random.fold_in(key, 7), x, y, a, train_idx, val_idx, cnt,
        prior_a, prior_b, size, graphdef=graphdef, capacity=capacity,
        num_classes=k, method=method, by_counts=by_counts)
    s = score(pr, logits, data.y[data.splits["val"]],
              answers[data.splits["val"]],
              pop_avg_key=(jax.random.fold_in(key, 8) if method == "pop_avg"
                           else None))["routed"]["aursac"]
    if s > best[2]:
      best = (params, (c + 1) * budget.eval_every, s)
  return Trained(method, graphdef, best[0], best[1], best[2])


def evaluate(model: Trained, data: Data, answers: np.ndarray, *, key,
             budget: config.Budget, counts=None, prior=None,
             size: int | None = None) -> dict[str, Any]:
  """Scores ``model`` on the test experts ``answers [N, J]``.

  Contexts come from the test context pool, queries are the test queries.
  ``prior``: optional ``(a0, b0)`` broadcast to ``[J, K]`` (EA-L2D);
  ``size``: context size (default ``budget.context_size``).
  """
  num_experts = answers.shape[1]
  k = data.num_classes
  by_counts = counts is not None
  size = budget.context_size if size is None else size
  capacity = min(int(np.asarray(counts).sum(1).max()) if by_counts
                 else max(1, size), data.splits["test_ctx"].size)
  cnt = jnp.asarray(counts if by_counts else np.zeros((num_experts, k)),
                    jnp.int32)
  prior_a, prior_b = _prior(prior, num_experts, k)
  query = data.splits["test_query"]
  pr, logits = _priorities(
      model.params, jax.random.fold_in(key, 1), jnp.asarray(data.x),
      jnp.asarray(data.y), jnp.asarray(answers),
      jnp.asarray(data.splits["test_ctx"]), jnp.asarray(query), cnt, prior_a,
      prior_b, jnp.int32(size), graphdef=model.graphdef, capacity=capacity,
      num_classes=k, method=model.method, by_counts=by_counts)
  return score(pr, logits, data.y[query], answers[query],
               pop_avg_key=(jax.random.fold_in(key, 2)
                            if model.method == "pop_avg" else None))


# ---------------------------------------------------------------------------
# Studies.


def id_ood_classes(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """ID = the first ``ceil(K/2)`` classes, OOD the rest."""
  return experts.split_classes(num_classes,
                               num_id=(num_classes + 1) // 2)


def _rows(result, base) -> list[dict[str, Any]]:
  return [dict(base, aggregation=agg, **result[agg])
          for agg in config.AGGREGATIONS]


def _add_curve(curves, name, result):
  curves.setdefault(name, []).append(result["curves"])


def run_rq1(data: Data, *, seed: int, overlaps, budget, progress=True,
            methods=config.METHODS):
  """Table 5.1: each overlap, ID and both OOD readings."""
  k = data.num_classes
  ids, oods = id_ood_classes(k)
  rows, curves, info = [], {}, {}
  mask = experts.expertise_mask(np.arange(k), num_classes=k)
  for oi, p in enumerate(overlaps):
    key = jax.random.fold_in(jax.random.key(seed), oi)
    answers = np.asarray(experts.overlap_experts(
        jax.random.fold_in(key, 0), jnp.asarray(data.y), num_classes=k,
        expertise=jnp.asarray(mask), overlap=p))
    a_id, a_ood = answers[:, ids], answers[:, oods]
    for method in methods:
      mkey = jax.random.fold_in(key, 1 + config.METHODS.index(method))
      base = {"method": method, "overlap": p, "seed": seed}
      model = train(method, data, a_id, key=mkey, budget=budget,
                    progress=progress, desc=f"{method} p={p} ID")
      info[f"{method}/p={p}/train_id"] = {"best_step": model.best_step,
                                          "val_aursac": model.val_aursac}
      r = evaluate(model, data, a_id, key=jax.random.fold_in(mkey, 9),
                   budget=budget)
      info[f"{method}/p={p}/model_accuracy"] = r["model_accuracy"]
      rows += _rows(r, dict(base, split="id", ood_reading=None))
      _add_curve(curves, (method, p, "id"), r)
      if method == "multi_l2d":
        continue  # fixed experts: N/A for OOD experts.
      r = evaluate(model, data, a_ood, key=jax.random.fold_in(mkey, 10),
                   budget=budget)
      rows += _rows(r, dict(base, split="ood",
                            ood_reading="train_id_eval_ood"))
      _add_curve(curves, (method, p, "train_id_eval_ood"), r)
      model = train(method, data, a_ood, key=jax.random.fold_in(mkey, 11),
                    budget=budget, progress=progress,
                    desc=f"{method} p={p} OOD")
      info[f"{method}/p={p}/train_ood"] = {"best_step": model.best_step,
                                           "val_aursac": model.val_aursac}
      r = evaluate(model, data, a_id, key=jax.random.fold_in(mkey, 12),
                   budget=budget)
      rows += _rows(r, dict(base, split="ood",
                            ood_reading="train_ood_eval_id"))
      _add_curve(curves, (method, p, "train_ood_eval_id"), r)
  return rows, curves, info


def run_rq2(data: Data, *, seed: int, overlaps, budget, progress=True):
  """Number of expertise classes: one ID and one OOD expert per cohort."""
  k = data.num_classes
  ids, oods = id_ood_classes(k)
  rows, curves, info = [], {}, {}
  top = min(budget.max_expertise, ids.size, oods.size)
  for oi, p in enumerate(overlaps):
    for e in range(1, top + 1):
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), oi),
                               100 + e)
      mask = np.concatenate([
          experts.sample_expertise(jax.random.fold_in(key, 0), ids,
                                   num_experts=1, classes_per_expert=e,
                                   num_classes=k),
          experts.sample_expertise(jax.random.fold_in(key, 1), oods,
                                   num_experts=1, classes_per_expert=e,
                                   num_classes=k)])
      answers = np.asarray(experts.overlap_experts(
          jax.random.fold_in(key, 2), jnp.asarray(data.y), num_classes=k,
          expertise=jnp.asarray(mask), overlap=p))
      for method in ("ea_l2d", "l2d_pop", "pop_avg"):
        mkey = jax.random.fold_in(key, 3 + config.METHODS.index(method))
        model = train(method, data, answers[:, :1], key=mkey, budget=budget,
                      progress=progress, desc=f"{method} p={p} E={e}")
        base = {"method": method, "overlap": p, "seed": seed,
                "classes_per_expert": e,
                "expertise": {"id": np.flatnonzero(mask[0]).tolist(),
                              "ood": np.flatnonzero(mask[1]).tolist()}}
        for j, split in ((0, "id"), (1, "ood")):
          r = evaluate(model, data, answers[:, j:j + 1],
                       key=jax.random.fold_in(mkey, 20 + j), budget=budget)
          rows += _rows(r, dict(base, split=split,
                                ood_reading=None if j == 0
                                else "train_id_eval_ood"))
          _add_curve(curves, (method, p, split, e), r)
  return rows, curves, info


def run_rq3(data: Data, *, seed: int, overlaps, budget, progress=True):
  """Prior x context size for one test expert (expertise ``RQ3_CLASS``)."""
  k = data.num_classes
  ids, _ = id_ood_classes(k)
  rows, curves, info = [], {}, {}
  p = overlaps[0]
  key = jax.random.key(seed)
  train_mask = experts.expertise_mask(ids, num_classes=k)
  train_answers = np.asarray(experts.overlap_experts(
      jax.random.fold_in(key, 0), jnp.asarray(data.y), num_classes=k,
      expertise=jnp.asarray(train_mask), overlap=p))
  model = train("ea_l2d", data, train_answers, key=jax.random.fold_in(key, 1),
                budget=budget, progress=progress, desc="ea_l2d RQ3")
  info["best_step"] = model.best_step
  test_mask = experts.expertise_mask([config.RQ3_CLASS % k], num_classes=k)
  test_answers = np.asarray(experts.overlap_experts(
      jax.random.fold_in(key, 2), jnp.asarray(data.y), num_classes=k,
      expertise=jnp.asarray(test_mask), overlap=p))
  acc = experts.true_accuracy(test_mask, overlap=p)
  sizes = [s for s in config.RQ3_CONTEXT_SIZES
           if s <= data.splits["test_ctx"].size]
  for kind in experts.PRIOR_KINDS:
    prior = experts.self_assessed_prior(
        kind, acc, strength=config.RQ3_STRENGTH,
        wrong_class=config.RQ3_WRONG_CLASS)
    for s in sizes:
      r = evaluate(model, data, test_answers,
                   key=jax.random.fold_in(key, 3), budget=budget,
                   prior=prior, size=s)
      rows += _rows(r, {"method": "ea_l2d", "overlap": p, "seed": seed,
                        "split": "id", "ood_reading": None, "prior": kind,
                        "context_size": s})
  return rows, curves, info


def run_lcb(data: Data, *, seed: int, overlaps, budget, progress=True):
  """LCB ablation: five expert types, four loss variants."""
  del overlaps
  k = data.num_classes
  names = list(experts.LCB_EXPERT_TYPES)
  per = config.LCB_EXPERTS_PER_TYPE
  key = jax.random.key(seed)

  def population(sub):
    cls = np.asarray(jax.random.randint(jax.random.fold_in(key, sub),
                                        (len(names) * per,), 0, k))
    types = [experts.LCB_EXPERT_TYPES[n] for n in names for _ in range(per)]
    answers = np.asarray(experts.per_class_accuracy_experts(
        jax.random.fold_in(key, sub + 1), jnp.asarray(data.y),
        num_classes=k, expertise_class=cls,
        accuracy_expertise=np.array([t.accuracy_expertise for t in types]),
        accuracy_other=np.array([t.accuracy_other for t in types])))
    counts = np.concatenate([experts.type_counts([c], t, num_classes=k)
                             for c, t in zip(cls, types)])
    return answers, counts

  a_train, c_train = population(10)
  a_test, c_test = population(20)
  rows, curves, info = [], {}, {}
  for variant, weighting in config.LCB_VARIANTS.items():
    mkey = jax.random.fold_in(key, 30 + list(config.LCB_VARIANTS).index(
        variant))
    model = train("ea_l2d", data, a_train, key=mkey, budget=budget,
                  weighting=weighting, counts=c_train, progress=progress,
                  desc=f"ea_l2d {variant}")
    r = evaluate(model, data, a_test, key=jax.random.fold_in(mkey, 1),
                 budget=budget, counts=c_test)
    by_type = {n: float(np.mean(r["per_expert_aurdac"][i * per:(i + 1) *
                                                       per]))
               for i, n in enumerate(names)}
    rows += _rows(r, {"method": "ea_l2d", "variant": variant,
                      "weighting": weighting, "overlap": None, "seed": seed,
                      "split": "id", "ood_reading": None,
                      "aurdac_by_type": by_type})
    _add_curve(curves, (variant,), r)
  return rows, curves, info


STUDIES = {"rq1": run_rq1, "rq2": run_rq2, "rq3": run_rq3,
           "lcb-ablation": run_lcb}


def run(data: Data, *, study: str, seeds, overlaps, budget,
        progress: bool = True, **kwargs) -> dict[str, Any]:
  """Every seed of ``study``: ``{"rows", "curves", "info"}``.

  ``curves`` maps a setting to ``[(SysAcc, ExpAcc), ...]`` per seed on
  ``CURVE_GRID``. In a multi-process job (``l2d_jax.distributed``) the
  seeds are shared out: process ``p`` of ``N`` runs seeds ``p, p + N, ...``
  and the results are gathered in seed order
  (``distributed.map_sharded``), so every process returns what one process
  would.
  """
  seeds = list(seeds)
  bar = tqdm(total=len(distributed.shard_items(seeds)),
             desc=f"{study} seeds", disable=not progress)

  def one(seed):
    out = STUDIES[study](data, seed=seed, overlaps=tuple(overlaps),
                         budget=budget, progress=progress, **kwargs)
    bar.update()
    return out

  with bar:
    per_seed = distributed.map_sharded(one, seeds)
  rows, curves, info = [], {}, {}
  for seed, (r, c, i) in zip(seeds, per_seed):
    rows += r
    for name, v in c.items():
      curves.setdefault(name, []).extend(v)
    info[str(seed)] = i
  return {"rows": rows, "curves": curves, "info": info}

