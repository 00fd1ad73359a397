"""Tests for l2d_jax.models: shapes, parameter counts, modes, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from l2d_jax.models import MLP
from l2d_jax.models import SmallCNN
from l2d_jax.models import WideResNet
from l2d_jax.models import count_params


@nnx.jit
def _apply(model, x):
  return model(x)


def _build(make):
  """Builds a model with numpy-initialised variables.

  Eager flax initialisation compiles one XLA program per parameter shape,
  which costs seconds for a ResNet on a shared CPU; the forward-pass tests
  only need some finite weights.
  """
  graphdef, state = nnx.split(nnx.eval_shape(make))
  rng = np.random.default_rng(0)

  def fill(path, x):
    name = str(path[-1].key) if hasattr(path[-1], "key") else str(path[-1])
    if name in ("scale", "var"):
      return jnp.ones(x.shape, x.dtype)
    if name in ("bias", "mean"):
      return jnp.zeros(x.shape, x.dtype)
    fan_in = max(1, int(np.prod(x.shape[:-1])))
    return jnp.asarray(rng.normal(size=x.shape) * np.sqrt(2.0 / fan_in),
                       x.dtype)

  return nnx.merge(graphdef, jax.tree.map_with_path(fill, state))


@pytest.mark.parametrize("num_experts", [0, 1, 3])
def test_mlp_shapes_and_dtype(num_experts):
  model = MLP(5, (8, 8), 4, num_experts=num_experts, rngs=nnx.Rngs(0))
  out = _apply(model, jnp.ones((6, 5)))
  assert out.shape == (6, 4 + num_experts)
  assert out.dtype == jnp.float32
  # 5*8+8 + 8*8+8 + 8*(4+J)+(4+J)
  assert count_params(model) == 48 + 72 + 9 * (4 + num_experts)


def test_mlp_linear_model_without_hidden_layers():
  model = nnx.eval_shape(lambda: MLP(3, (), 2, num_experts=1,
                                     rngs=nnx.Rngs(0)))
  assert nnx.eval_shape(lambda m: m(jnp.ones((2, 3))), model).shape == (2, 3)


@pytest.mark.parametrize("shape", [(6,), (2, 4), (2, 5, 1)])
def test_mlp_bad_input_shape_raises(shape):
  model = nnx.eval_shape(lambda: MLP(5, (8,), 4, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"\[batch, 5\]"):
    nnx.eval_shape(lambda m: m(jnp.ones(shape)), model)


def test_mlp_bad_sizes_raise():
  with pytest.raises(ValueError, match="num_experts"):
    MLP(5, (8,), 4, num_experts=-1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_classes"):
    MLP(5, (8,), 0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="dropout"):
    MLP(5, (8,), 2, dropout=1.0, rngs=nnx.Rngs(0))


def test_mlp_dropout_train_vs_eval():
  model = MLP(4, (32,), 2, dropout=0.5, rngs=nnx.Rngs(0))
  x = jnp.ones((3, 4))  # (dropout needs real rng keys: eager init)
  a, b = _apply(model, x), _apply(model, x)
  assert not np.allclose(a, b)  # a fresh dropout mask each call
  model.eval()
  np.testing.assert_array_equal(_apply(model, x), _apply(model, x))


@pytest.mark.parametrize("num_experts", [0, 2])
def test_small_cnn_cifar_shapes_and_params(num_experts):
  model = nnx.eval_shape(
      lambda: SmallCNN(10, num_experts=num_experts, rngs=nnx.Rngs(0)))
  out = nnx.eval_shape(lambda m: m(jnp.zeros((2, 32, 32, 3))), model)
  assert out.shape == (2, 10 + num_experts) and out.dtype == jnp.float32
  # LeNet-5 on CIFAR-10: 62,006 parameters; 85 per extra output.
  assert count_params(model) == 62_006 + 85 * num_experts


def test_small_cnn_grayscale_28():
  model = _build(lambda: SmallCNN(10, num_experts=1, in_channels=1,
                                  image_size=28, rngs=nnx.Rngs(0)))
  out = _apply(model, jnp.ones((3, 28, 28, 1)))
  assert out.shape == (3, 11) and bool(jnp.isfinite(out).all())


@pytest.mark.parametrize("shape, match", [
    ((2, 3, 32, 32), "channels"),      # NCHW
    ((32, 32, 3), "NHWC"),             # no batch axis
    ((2, 28, 28, 3), "built for"),     # wrong spatial size
])
def test_small_cnn_bad_inputs(shape, match):
  model = nnx.eval_shape(lambda: SmallCNN(10, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=match):
    nnx.eval_shape(lambda m: m(jnp.zeros(shape)), model)


@pytest.mark.parametrize("depth, k, expected", [
    (28, 10, 36_479_194),  # "36.5M" in Zagoruyko & Komodakis (2016)
    (28, 2, 1_467_610),
    (16, 4, 2_748_890),
])
def test_wide_resnet_param_counts(depth, k, expected):
  model = nnx.eval_shape(lambda: WideResNet(depth, k, 10, rngs=nnx.Rngs(0)))
  assert count_params(model) == expected


def test_wide_resnet_deferral_heads_add_params():
  base = nnx.eval_shape(lambda: WideResNet(28, 10, 10, rngs=nnx.Rngs(0)))
  l2d = nnx.eval_shape(
      lambda: WideResNet(28, 10, 10, num_experts=3, rngs=nnx.Rngs(0)))
  assert count_params(l2d) - count_params(base) == 3 * (640 + 1)


def test_wide_resnet_forward_and_batchnorm_modes():
  model = _build(lambda: WideResNet(10, 1, 4, num_experts=2,
                                    rngs=nnx.Rngs(0)))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 3)),
                  jnp.float32)
  mean0 = np.asarray(model.bn.mean[...]).copy()
  out = _apply(model, x)  # train mode: batch statistics, running stats move
  assert out.shape == (4, 6) and out.dtype == jnp.float32
  assert not np.allclose(model.bn.mean[...], mean0)
  # Train mode: an example's output depends on the rest of the batch.
  x2 = x.at[2:].set(0.0)
  assert not np.allclose(_apply(model, x2)[:2], _apply(model, x)[:2],
                         atol=1e-5)
  model.eval()
  mean1 = np.asarray(model.bn.mean[...]).copy()
  np.testing.assert_allclose(_apply(model, x2)[:2], _apply(model, x)[:2],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(model.bn.mean[...], mean1)  # frozen


def test_wide_resnet_bfloat16_returns_float32():
  model = nnx.eval_shape(
      lambda: WideResNet(10, 1, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  model.eval()
  out = nnx.eval_shape(lambda m: m(jnp.zeros((2, 8, 8, 3))), model)
  assert out.dtype == jnp.float32


def test_wide_resnet_bad_depth_and_inputs():
  with pytest.raises(ValueError, match="6n \\+ 4"):
    WideResNet(27, 2, 10, rngs=nnx.Rngs(0))
  model = nnx.eval_shape(lambda: WideResNet(10, 1, 10, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="channels"):
    nnx.eval_shape(lambda m: m(jnp.zeros((2, 3, 16, 16))), model)
  with pytest.raises(ValueError, match="NHWC"):
    nnx.eval_shape(lambda m: m(jnp.zeros((16, 16, 3))), model)


def test_small_cnn_space_to_depth_matches_plain_conv_pool():
  """The fast space-to-depth block is the same function, with the same grads."""
  from l2d_jax.models import _cnn  # pylint: disable=g-import-not-at-top
  m = _build(lambda: _cnn.SmallCNN(10, num_experts=4, rngs=nnx.Rngs(0)))
  x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))

  def plain(model, x):
    for conv in (model.conv1, model.conv2):
      x = _cnn._pool(nnx.relu(conv(x)))  # pylint: disable=protected-access
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(model.fc2(nnx.relu(model.fc1(x))))
    return model.head(x)

  # One compiled program for both formulations and their gradients (eager
  # dispatch compiles every op of the two backward passes separately).
  @nnx.jit
  def outputs_and_grads(model, x):
    g_fast = nnx.grad(lambda mm: mm(x).sum())(model)
    g_plain = nnx.grad(lambda mm: plain(mm, x).sum())(model)
    return model(x), plain(model, x), g_fast, g_plain

  fast, slow, g_fast, g_plain = outputs_and_grads(m, x)
  np.testing.assert_allclose(fast, slow, atol=1e-5)
  leaves_fast, leaves_plain = jax.tree.leaves(g_fast), jax.tree.leaves(g_plain)
  assert len(leaves_fast) == len(leaves_plain) == 10
  for a, b in zip(leaves_fast, leaves_plain):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # 32x32 takes the space-to-depth path (no max-pool in the graph); odd
  # sizes fall back to the plain path.
  assert "reduce_window" not in str(jax.make_jaxpr(lambda v: m(v))(x))
  odd = _build(lambda: _cnn.SmallCNN(3, image_size=31, rngs=nnx.Rngs(0)))
  x_odd = jnp.zeros((2, 31, 31, 3))
  assert "reduce_window" in str(jax.make_jaxpr(lambda v: odd(v))(x_odd))
  assert _apply(odd, x_odd).shape == (2, 3)
