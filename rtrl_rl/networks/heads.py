"""Policy and value heads: features ``[..., F]`` -> outputs with the same leading dims ``[...]``.

Policy heads return a distribution from :mod:`rtrl_rl.losses.distributions` (a pytree), so the losses and
actors use them directly. Every head has an optional hidden MLP (``hidden_sizes``): the RTU paper
(Elelimy et al. 2024) uses separate actor and critic heads with one Dense(64) + tanh layer each
(``hidden_sizes=(64,)``); IMPALA (Espeholt et al. 2018; Irie et al. 2024) uses linear heads (``()``).
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from rtrl_rl.losses.distributions import Categorical, DiagGaussian
from rtrl_rl.networks.torsos import Activation, MLPTorso

_default_init = nn.linear.default_kernel_init


def _hidden(x, hidden_sizes, activation, kernel_init):
  if hidden_sizes:
    x = MLPTorso(tuple(hidden_sizes), activation, True, kernel_init, name='hidden')(x)
  return x


class CategoricalPolicyHead(nn.Module):
  """``[..., F]`` -> ``Categorical(logits [..., num_actions])``."""

  num_actions: int
  hidden_sizes: Sequence[int] = ()
  activation: Activation = 'tanh'
  kernel_init: Callable = _default_init
  output_kernel_init: Callable = _default_init

  @nn.compact
  def __call__(self, x) -> Categorical:
    x = _hidden(x, self.hidden_sizes, self.activation, self.kernel_init)
    logits = nn.Dense(self.num_actions, kernel_init=self.output_kernel_init, name='logits')(x)
    return Categorical(logits=logits)


class GaussianPolicyHead(nn.Module):
  """``[..., F]`` -> ``DiagGaussian(mean [..., action_dim], log_std [..., action_dim])``.

  The log-std is a state-independent ``[action_dim]`` parameter (``log_std``, initialised to
  ``init_log_std``) broadcast to the mean's shape.
  """

  action_dim: int
  hidden_sizes: Sequence[int] = ()
  activation: Activation = 'tanh'
  init_log_std: float = 0.0
  kernel_init: Callable = _default_init
  output_kernel_init: Callable = _default_init

  @nn.compact
  def __call__(self, x) -> DiagGaussian:
    x = _hidden(x, self.hidden_sizes, self.activation, self.kernel_init)
    mean = nn.Dense(self.action_dim, kernel_init=self.output_kernel_init, name='mean')(x)
    log_std = self.param(
      'log_std', nn.initializers.constant(self.init_log_std), (self.action_dim,), mean.dtype
    )
    return DiagGaussian(mean=mean, log_std=jnp.broadcast_to(log_std, mean.shape))


class ValueHead(nn.Module):
  """``[..., F]`` -> values ``[...]``."""

  hidden_sizes: Sequence[int] = ()
  activation: Activation = 'tanh'
  kernel_init: Callable = _default_init
  output_kernel_init: Callable = _default_init

  @nn.compact
  def __call__(self, x):
    x = _hidden(x, self.hidden_sizes, self.activation, self.kernel_init)
    return nn.Dense(1, kernel_init=self.output_kernel_init, name='value')(x)[..., 0]


class ActorCriticHeads(nn.Module):
  """Separate policy and value heads on the same features: ``[..., F]`` -> ``(distribution, values [...])``.

  Attributes:
    num_actions: number of discrete actions, or the action dimension for ``policy='gaussian'``.
    policy: ``'categorical'`` or ``'gaussian'``.
    hidden_sizes: hidden MLP of EACH head (``()`` for IMPALA's linear heads, ``(64,)`` for the RTU paper).
    activation: activation of the hidden layers.
    init_log_std: initial state-independent log-std (Gaussian only).
  """

  num_actions: int
  policy: str = 'categorical'
  hidden_sizes: Sequence[int] = ()
  activation: Activation = 'tanh'
  init_log_std: float = 0.0
  kernel_init: Callable = _default_init
  policy_kernel_init: Callable = _default_init
  value_kernel_init: Callable = _default_init

  @nn.compact
  def __call__(self, x) -> Tuple[object, jnp.ndarray]:
    if self.policy == 'categorical':
      dist = CategoricalPolicyHead(
        self.num_actions,
        self.hidden_sizes,
        self.activation,
        self.kernel_init,
        self.policy_kernel_init,
        name='policy',
      )(x)
    elif self.policy == 'gaussian':
      dist = GaussianPolicyHead(
        self.num_actions,
        self.hidden_sizes,
        self.activation,
        self.init_log_std,
        self.kernel_init,
        self.policy_kernel_init,
        name='policy',
      )(x)
    else:
      raise ValueError(f"policy must be 'categorical' or 'gaussian', got {self.policy!r}")
    value = ValueHead(
      self.hidden_sizes, self.activation, self.kernel_init, self.value_kernel_init, name='value'
    )(x)
    return dist, value
