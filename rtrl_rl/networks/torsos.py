"""Observation encoders ("torsos"): features ``[..., F]`` from observations with arbitrary leading dims.

* :class:`ImpalaResNetTorso` -- the deep ResNet of Espeholt et al. 2018 (IMPALA, Fig. 3 right), used by
  Irie et al. 2024 for Atari / ProcGen / DMLab: per stage conv3x3 -> maxpool 3x3 stride 2 -> 2 residual
  blocks; then ReLU -> Dense(256) -> ReLU.
* :class:`MLPTorso` -- a dense stack for vector observations (Elelimy et al. 2024: Dense(64) + tanh).

The recurrent core (``rtrl_rl.cells``) and the heads (:mod:`rtrl_rl.networks.heads`) are composed by the
agents; nothing here knows about time or recurrence.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

Activation = Union[str, Callable]

_ACTIVATIONS = {'tanh': nn.tanh, 'relu': nn.relu, 'elu': nn.elu, 'gelu': nn.gelu, 'silu': nn.silu}


def get_activation(activation: Activation) -> Callable:
  """An activation function from its name (``tanh``, ``relu``, ``elu``, ``gelu``, ``silu``) or itself."""
  if callable(activation):
    return activation
  try:
    return _ACTIVATIONS[activation]
  except KeyError:
    raise ValueError(f'unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}') from None


class ResidualBlock(nn.Module):
  """``x + conv(relu(conv(relu(x))))`` with 3x3 SAME convolutions keeping ``channels``."""

  channels: int

  @nn.compact
  def __call__(self, x):
    y = nn.relu(x)
    y = nn.Conv(self.channels, (3, 3), padding='SAME', name='conv_0')(y)
    y = nn.relu(y)
    y = nn.Conv(self.channels, (3, 3), padding='SAME', name='conv_1')(y)
    return x + y


class ImpalaResNetTorso(nn.Module):
  """IMPALA deep ResNet: frames ``[..., H, W, C]`` -> features ``[..., hidden_size]``.

  Frames (typically uint8) are cast to ``dtype`` and multiplied by ``input_scale`` (1/255). Any leading dims
  are flattened into one batch dim for the convolutions and restored on the output. For channel-first frames
  ``[..., C, H, W]`` (e.g. envpool Atari's stacked gray frames ``[..., 4, 84, 84]``) set
  ``channels_first=True``; they are transposed to channel-last.

  Attributes:
    channels: output channels of each stage ((16, 32, 32) in IMPALA).
    num_blocks: residual blocks per stage (2).
    hidden_size: width of the final Dense layer (256); ``0`` returns the flattened conv features.
    channels_first: input layout is ``[..., C, H, W]`` instead of ``[..., H, W, C]``.
    input_scale: factor applied to the (cast) input, 1/255 for uint8 frames.
    dtype: computation dtype.
  """

  channels: Sequence[int] = (16, 32, 32)
  num_blocks: int = 2
  hidden_size: int = 256
  channels_first: bool = False
  input_scale: float = 1.0 / 255.0
  dtype: jnp.dtype = jnp.float32

  def output_size(self, observation_shape: Sequence[int]) -> int:
    """Features per frame of ``observation_shape`` (``[H, W, C]``, or ``[C, H, W]`` if ``channels_first``):
    ``hidden_size``, or with ``hidden_size=0`` the flattened conv features (each stage's stride-2 SAME
    max-pool halves the height and width, rounding up)."""
    if len(observation_shape) != 3:
      raise ValueError(f'expected frames [H, W, C], got observation shape {tuple(observation_shape)}')
    if self.hidden_size:
      return self.hidden_size
    if self.channels_first:
      c, h, w = observation_shape
    else:
      h, w, c = observation_shape
    for _ in self.channels:
      h, w = -(-h // 2), -(-w // 2)
    return h * w * (self.channels[-1] if self.channels else c)

  @nn.compact
  def __call__(self, frames):
    if frames.ndim < 3:
      raise ValueError(f'expected frames [..., H, W, C], got shape {frames.shape}')
    if self.channels_first:
      frames = jnp.moveaxis(frames, -3, -1)
    lead = frames.shape[:-3]
    x = frames.reshape((-1,) + frames.shape[-3:]).astype(self.dtype) * self.input_scale
    for i, ch in enumerate(self.channels):
      x = nn.Conv(ch, (3, 3), padding='SAME', dtype=self.dtype, name=f'stage_{i}_conv')(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
      for j in range(self.num_blocks):
        x = ResidualBlock(ch, name=f'stage_{i}_block_{j}')(x)
    x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    if self.hidden_size:
      x = nn.relu(nn.Dense(self.hidden_size, dtype=self.dtype, name='fc')(x))
    return x.reshape(lead + x.shape[-1:])


class MLPTorso(nn.Module):
  """Dense stack for vector observations: ``[..., D]`` -> ``[..., hidden_sizes[-1]]``.

  Attributes:
    hidden_sizes: widths of the Dense layers ((64,) in the RTU paper).
    activation: ``'tanh'`` (RTU paper), ``'relu'``, ... or a callable.
    activate_final: apply the activation after the last layer too.
    kernel_init: initializer of the Dense kernels (flax default: lecun normal).
  """

  hidden_sizes: Sequence[int] = (64,)
  activation: Activation = 'tanh'
  activate_final: bool = True
  kernel_init: Callable = nn.linear.default_kernel_init

  def output_size(self, observation_shape: Sequence[int]) -> int:
    """Features per observation of ``observation_shape`` (``[D]``)."""
    if len(observation_shape) != 1:
      raise ValueError(f'MLPTorso: expected vector observations [D], got shape {tuple(observation_shape)}')
    return self.hidden_sizes[-1] if self.hidden_sizes else math.prod(observation_shape)

  @nn.compact
  def __call__(self, x):
    act = get_activation(self.activation)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(jnp.float32)
    for i, size in enumerate(self.hidden_sizes):
      x = nn.Dense(size, kernel_init=self.kernel_init, name=f'dense_{i}')(x)
      if i < len(self.hidden_sizes) - 1 or self.activate_final:
        x = act(x)
    return x
