"""PyTorch twins of l2d_jax's SmallCNN, MLP and multi-expert softmax loss.

Used by ``benchmarks/train_step.py`` and ``benchmarks/train_loop.py`` to
compare speed against the same computation in PyTorch. PyTorch is not a dependency of l2d_jax:
install the CPU wheel into the environment to run the comparison
(``pip install torch``).

Weights are copied from a Flax NNX model, so one step of each framework from
the same weights and batch must give the same loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

try:
  import torch
  from torch import nn
  from torch.nn import functional as F
except ImportError as e:  # pragma: no cover - exercised only without torch
  raise ImportError(
      "benchmarks/train_step.py compares against PyTorch, which is not a "
      "dependency of l2d_jax. Install the CPU wheel into this environment "
      "first, e.g. `.venv/bin/pip install torch`.") from e


class TorchSmallCNN(nn.Module):
  """l2d_jax.models.SmallCNN in PyTorch (NCHW, VALID 5x5 convs, ReLU).

  ``conv 5x5 -> 6, maxpool 2 -> conv 5x5 -> 16, maxpool 2 -> flatten ->
  fc 120 -> fc 84 -> fc (K + J)``. The flatten is PyTorch's usual
  channel-major ``(c, h, w)`` order; :func:`load_small_cnn` permutes the first
  fully connected layer's columns so that it matches the JAX model's
  ``(h, w, c)`` flatten exactly.
  """

  def __init__(self, num_outputs: int, in_channels: int = 3,
               image_size: int = 32):
    super().__init__()
    side = ((image_size - 4) // 2 - 4) // 2
    self.conv1 = nn.Conv2d(in_channels, 6, 5)
    self.conv2 = nn.Conv2d(6, 16, 5)
    self.fc1 = nn.Linear(16 * side * side, 120)
    self.fc2 = nn.Linear(120, 84)
    self.head = nn.Linear(84, num_outputs)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = torch.flatten(x, 1)
    x = F.relu(self.fc1(x))
    x = F.relu(self.fc2(x))
    return self.head(x)


class TorchMLP(nn.Module):
  """l2d_jax.models.MLP (ReLU, no dropout) in PyTorch."""

  def __init__(self, in_features: int, hidden_sizes: Sequence[int],
               num_outputs: int):
    super().__init__()
    sizes = [in_features, *hidden_sizes]
    self.hidden = nn.ModuleList(
        nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
    self.head = nn.Linear(sizes[-1], num_outputs)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for layer in self.hidden:
      x = F.relu(layer(x))
    return self.head(x)


def multi_expert_softmax_loss(logits: torch.Tensor, labels: torch.Tensor,
                              expert_predictions: torch.Tensor) -> torch.Tensor:
  """Per-example ``-log q_y - sum_j 1[m_j = y] log q_⊥j`` over K + J outputs."""
  num_classes = logits.shape[-1] - expert_predictions.shape[-1]
  log_q = F.log_softmax(logits, dim=-1)
  targets = torch.cat([F.one_hot(labels, num_classes).bool(),
                       expert_predictions == labels[:, None]], dim=-1)
  return -torch.where(targets, log_q, torch.zeros((), dtype=log_q.dtype)).sum(-1)


def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, np.float32))  # a writable copy


def _copy_linear(dst: nn.Linear, kernel, bias) -> None:
  dst.weight.data.copy_(_t(np.asarray(kernel).T))  # [in, out] -> [out, in]
  dst.bias.data.copy_(_t(bias))


def _copy_conv(dst: nn.Conv2d, kernel, bias) -> None:
  dst.weight.data.copy_(_t(np.asarray(kernel).transpose(3, 2, 0, 1)))  # HWIO->OIHW
  dst.bias.data.copy_(_t(bias))


def load_small_cnn(jax_model) -> TorchSmallCNN:
  """A TorchSmallCNN holding the weights of an l2d_jax ``SmallCNN``."""
  h, w = jax_model.image_size
  if h != w:
    raise ValueError("TorchSmallCNN supports square images only.")
  net = TorchSmallCNN(jax_model.num_classes + jax_model.num_experts,
                      in_channels=jax_model.in_channels, image_size=h)
  _copy_conv(net.conv1, jax_model.conv1.kernel[...], jax_model.conv1.bias[...])
  _copy_conv(net.conv2, jax_model.conv2.kernel[...], jax_model.conv2.bias[...])
  # JAX flattens [h, w, c]; PyTorch flattens [c, h, w]: permute fc1's inputs.
  fc1 = np.asarray(jax_model.fc1.kernel[...])
  side = int(round((fc1.shape[0] // 16) ** 0.5))
  fc1 = fc1.reshape(side, side, 16, -1).transpose(2, 0, 1, 3).reshape(
      fc1.shape[0], -1)
  _copy_linear(net.fc1, fc1, jax_model.fc1.bias[...])
  _copy_linear(net.fc2, jax_model.fc2.kernel[...], jax_model.fc2.bias[...])
  _copy_linear(net.head, jax_model.head.kernel[...], jax_model.head.bias[...])
  return net


def load_mlp(jax_model) -> TorchMLP:
  """A TorchMLP holding the weights of an l2d_jax ``MLP`` (no dropout)."""
  if jax_model.dropout is not None:
    raise ValueError("load_mlp supports MLPs without dropout only.")
  hidden = [int(layer.kernel.shape[1]) for layer in jax_model.hidden]
  net = TorchMLP(jax_model.in_features, hidden,
                 jax_model.num_classes + jax_model.num_experts)
  for dst, src in zip(net.hidden, jax_model.hidden):
    _copy_linear(dst, src.kernel[...], src.bias[...])
  _copy_linear(net.head, jax_model.head.kernel[...], jax_model.head.bias[...])
  return net


def make_train_step(net: nn.Module, *, learning_rate: float, momentum: float):
  """``step(batch) -> loss``: forward, mean loss, backward, SGD-momentum update.

  ``batch`` maps ``image`` (NCHW for the CNN) or ``x``, ``label`` and
  ``experts`` to tensors; the update matches ``optax.sgd(lr, momentum)``.
  """
  opt = torch.optim.SGD(net.parameters(), lr=learning_rate, momentum=momentum)

  def step(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    logits = net(batch["inputs"])
    loss = multi_expert_softmax_loss(logits, batch["label"],
                                     batch["experts"]).mean()
    loss.backward()
    opt.step()
    return loss.detach()

  return step


def to_torch_batch(batch: Mapping[str, np.ndarray], *, nchw: bool,
                   channels_last: bool = False) -> dict[str, torch.Tensor]:
  """Converts a numpy batch (NHWC images) to torch tensors (NCHW shape when ``nchw``).

  With ``channels_last`` the NCHW tensor is stored NHWC in memory
  (``torch.channels_last``), PyTorch's faster CPU convolution layout.
  """
  x = np.asarray(batch["inputs"], np.float32)
  if nchw:
    x = x.transpose(0, 3, 1, 2)
  x = torch.from_numpy(np.ascontiguousarray(x))
  if channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
  return {"inputs": x,
          "label": torch.from_numpy(np.asarray(batch["label"], np.int64)),
          "experts": torch.from_numpy(np.asarray(batch["experts"], np.int64))}


def state_arrays(net: nn.Module) -> dict[str, np.ndarray]:
  """Parameters as numpy arrays (for comparisons)."""
  return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
