"""Action distributions shared by the IMPALA and PPO losses and the policy heads.

Each distribution is an immutable ``NamedTuple`` (hence a JAX pytree: it can cross ``jit``/``vmap``/``scan``
boundaries and be indexed leaf-wise) with a batch shape ``[...]`` given by its leading dims and the methods

  ``log_prob(actions) -> [...]``, ``entropy() -> [...]``, ``sample(key) -> actions``, ``mode() -> actions``.

Actions are ``[...]`` integers for :class:`Categorical` and ``[..., D]`` floats for :class:`DiagGaussian`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
PRNGKey = chex.PRNGKey

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@runtime_checkable
class Distribution(Protocol):
  """What the losses need from a policy's action distribution."""

  def log_prob(self, actions: Array) -> Array: ...

  def entropy(self) -> Array: ...

  def sample(self, key: PRNGKey) -> Array: ...

  def mode(self) -> Array: ...


class Categorical(NamedTuple):
  """Softmax distribution over ``A`` actions from unnormalised ``logits`` ``[..., A]``."""

  logits: Array

  @property
  def batch_shape(self):
    return self.logits.shape[:-1]

  def log_probs(self) -> Array:
    """``[..., A]`` log-softmax of the logits."""
    return jax.nn.log_softmax(self.logits, axis=-1)

  def log_prob(self, actions: Array) -> Array:
    """``log softmax(logits)[a]``: ``[...]`` for integer ``actions`` ``[...]``."""
    chex.assert_equal_shape_prefix([self.logits, actions], actions.ndim)
    chex.assert_rank(actions, self.logits.ndim - 1)
    chex.assert_type(actions, int)
    logp = self.log_probs()
    return jnp.take_along_axis(logp, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]

  def entropy(self) -> Array:
    """``-sum_a p(a) log p(a)``: ``[...]`` (actions with ``-inf`` logits contribute 0)."""
    logp = self.log_probs()
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)

  def sample(self, key: PRNGKey) -> Array:
    """``[...]`` int32 actions drawn from the softmax."""
    return jax.random.categorical(key, self.logits, axis=-1).astype(jnp.int32)

  def mode(self) -> Array:
    """``[...]`` int32 greedy (argmax) actions."""
    return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)


class DiagGaussian(NamedTuple):
  """Diagonal Gaussian over ``D``-dim actions: ``mean`` ``[..., D]``, ``log_std`` broadcastable to it.

  A state-independent log-std is a ``[D]`` parameter; heads broadcast it to ``mean.shape`` so that all
  leaves share the batch shape.
  """

  mean: Array
  log_std: Array

  @property
  def batch_shape(self):
    return self.mean.shape[:-1]

  def _log_std(self) -> Array:
    return jnp.broadcast_to(self.log_std, self.mean.shape)

  def log_prob(self, actions: Array) -> Array:
    """``sum_d [-(a_d - mu_d)^2 / (2 sigma_d^2) - log sigma_d - log(2 pi) / 2]``: ``[...]``."""
    chex.assert_equal_shape([self.mean, actions])
    log_std = self._log_std()
    z = (actions - self.mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI, axis=-1)

  def entropy(self) -> Array:
    """``sum_d [1/2 + log(2 pi) / 2 + log sigma_d]``: ``[...]``."""
    return jnp.sum(0.5 + _HALF_LOG_2PI + self._log_std(), axis=-1)

  def sample(self, key: PRNGKey) -> Array:
    """``[..., D]`` actions ``mu + sigma * eps``, ``eps ~ N(0, I)``."""
    eps = jax.random.normal(key, self.mean.shape, self.mean.dtype)
    return self.mean + jnp.exp(self._log_std()) * eps

  def mode(self) -> Array:
    """``[..., D]`` the mean."""
    return self.mean
