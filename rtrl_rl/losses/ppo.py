"""The PPO clipped-surrogate loss with value clipping.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv 1707.06347), eq. (7) (L^CLIP) and
eq. (9) (L^CLIP + c1 L^VF - c2 S), with the clipped value loss of the reference implementations
(OpenAI baselines ppo2), which the RTU paper (Elelimy et al. 2024) uses: clip 0.2 for both, vf 0.5, entropy 0::

  ratio = exp(log pi(a|x) - log pi_old(a|x))
  pg_loss    = mean[ max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)) ]
  v_clipped  = V_old + clip(V - V_old, -eps_v, eps_v)
  value_loss = 0.5 mean[ max((V - R)^2, (v_clipped - R)^2) ]
  loss = pg_loss + vf_coef value_loss - ent_coef mean[H]

Data-parallel (`axis_name`, inside `shard_map` or a named `vmap`): each mean is this shard's share of
the global minibatch's masked mean, `sum_local(x * mask) / global_count`, so that the sum over the axis
of the losses (and of their gradients and metrics) is the global minibatch's.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from rtrl_rl.losses.distributions import Distribution

Array = chex.Array


def _mean(x: Array, mask: Optional[Array]) -> Array:
  if mask is None:
    return jnp.mean(x)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1)


def _share(mask: Optional[Array], like: Array, axis_name: str) -> Callable[[Array], Array]:
  """`x -> sum_local(x * mask) / global_count`: this shard's share of the masked mean over every
  member of `axis_name`."""
  mask = jnp.ones(like.shape, like.dtype) if mask is None else mask
  count = jnp.maximum(jax.lax.psum(jnp.sum(mask), axis_name), 1)
  return lambda x: jnp.sum(x * mask) / count


def normalize_advantages(
  advantages: Array, mask: Optional[Array] = None, eps: float = 1e-8, axis_name: Optional[str] = None
) -> Array:
  """``(A - mean A) / (std A + eps)`` over all elements (or the ``mask``-ed ones) of ``advantages``;
  with ``axis_name``, over those of every member of the axis."""
  if axis_name is None:
    mean = _mean(advantages, mask)
    std = jnp.sqrt(_mean(jnp.square(advantages - mean), mask))
  else:
    share = _share(mask, advantages, axis_name)
    mean = jax.lax.psum(share(advantages), axis_name)
    std = jnp.sqrt(jax.lax.psum(share(jnp.square(advantages - mean)), axis_name))
  return (advantages - mean) / (std + eps)


def ppo_loss(
  policy: Distribution,
  actions: Array,
  old_log_probs: Array,
  advantages: Array,
  values: Array,
  old_values: Array,
  value_targets: Array,
  *,
  mask: Optional[Array] = None,
  clip_eps: float = 0.2,
  value_clip_eps: Optional[float] = 0.2,
  vf_coef: float = 0.5,
  ent_coef: float = 0.0,
  normalize_advantage: bool = True,
  axis_name: Optional[str] = None,
) -> Tuple[Array, Dict[str, Array]]:
  """PPO loss on a minibatch of any batch shape ``[...]`` (e.g. ``[B]`` single steps or ``[T, B]``).

  Args:
    policy: current action distribution with batch shape ``[...]``.
    actions: ``[...]`` (categorical) or ``[..., D]`` (Gaussian) actions from the rollout.
    old_log_probs: ``[...]`` log-probs of ``actions`` under the rollout policy.
    advantages: ``[...]`` advantages (e.g. GAE); gradients are stopped.
    values: ``[...]`` current value predictions ``V``.
    old_values: ``[...]`` value predictions at rollout time ``V_old``.
    value_targets: ``[...]`` value targets ``R`` (e.g. GAE lambda-returns); gradients are stopped.
    mask: optional ``[...]`` 0/1 weights of the samples that count.
    clip_eps: policy ratio clip ``eps``.
    value_clip_eps: value clip ``eps_v``; ``None`` for the unclipped ``0.5 (V - R)^2``.
    vf_coef: value-loss coefficient ``c1``.
    ent_coef: entropy coefficient ``c2``.
    normalize_advantage: normalise advantages over the minibatch (mean 0, std 1) first.
    axis_name: the data-parallel axis the minibatch is split over (None: all of it is here); the
      loss and metrics are then this shard's shares (see the module docstring).

  Returns:
    ``(loss, metrics)``: the scalar total loss and a dict of scalar diagnostics.
  """
  chex.assert_equal_shape([old_log_probs, advantages, values, old_values, value_targets])
  shape = advantages.shape
  log_probs = policy.log_prob(actions)
  chex.assert_shape(log_probs, shape)
  if mask is not None:
    chex.assert_shape(mask, shape)
    mask = mask.astype(values.dtype)

  advantages = jax.lax.stop_gradient(advantages)
  value_targets = jax.lax.stop_gradient(value_targets)
  old_log_probs = jax.lax.stop_gradient(old_log_probs)
  old_values = jax.lax.stop_gradient(old_values)
  if normalize_advantage:
    advantages = normalize_advantages(advantages, mask, axis_name=axis_name)
  mean = (lambda x: _mean(x, mask)) if axis_name is None else _share(mask, values, axis_name)

  log_ratio = log_probs - old_log_probs
  ratio = jnp.exp(log_ratio)
  pg_losses = jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps))
  pg_loss = mean(pg_losses)

  value_sq = jnp.square(values - value_targets)
  if value_clip_eps is not None:
    v_clipped = old_values + jnp.clip(values - old_values, -value_clip_eps, value_clip_eps)
    value_sq = jnp.maximum(value_sq, jnp.square(v_clipped - value_targets))
  value_loss = 0.5 * mean(value_sq)

  entropy = mean(policy.entropy())
  loss = pg_loss + vf_coef * value_loss - ent_coef * entropy

  metrics = {
    'loss': loss,
    'pg_loss': pg_loss,
    'value_loss': value_loss,
    'entropy': entropy,
    'approx_kl': mean((ratio - 1.0) - log_ratio),
    'clip_frac': mean((jnp.abs(ratio - 1.0) > clip_eps).astype(values.dtype)),
    'ratio_mean': mean(ratio),
  }
  return loss, metrics
