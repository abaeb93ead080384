"""The PPO clipped-surrogate loss with value clipping.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv 1707.06347), eq. (7) (L^CLIP) and
eq. (9) (L^CLIP + c1 L^VF - c2 S), with the clipped value loss of the reference implementations
(OpenAI baselines ppo2), which the RTU paper (Elelimy et al. 2024) uses: clip 0.2 for both, vf 0.5, entropy 0::

  ratio = exp(log pi(a|x) - log pi_old(a|x))
  pg_loss    = mean[ max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)) ]
  v_clipped  = V_old + clip(V - V_old, -eps_v, eps_v)
  value_loss = 0.5 mean[ max((V - R)^2, (v_clipped - R)^2) ]
  loss = pg_loss + vf_coef value_loss - ent_coef mean[H]
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from rtrl_rl.losses.distributions import Distribution

Array = chex.Array


def _mean(x: Array, mask: Optional[Array]) -> Array:
  if mask is None:
    return jnp.mean(x)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1)


def normalize_advantages(advantages: Array, mask: Optional[Array] = None, eps: float = 1e-8) -> Array:
  """``(A - mean A) / (std A + eps)`` over all elements (or the ``mask``-ed ones) of ``advantages``."""
  mean = _mean(advantages, mask)
  std = jnp.sqrt(_mean(jnp.square(advantages - mean), mask))
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
    advantages = normalize_advantages(advantages, mask)

  log_ratio = log_probs - old_log_probs
  ratio = jnp.exp(log_ratio)
  pg_losses = jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps))
  pg_loss = _mean(pg_losses, mask)

  value_sq = jnp.square(values - value_targets)
  if value_clip_eps is not None:
    v_clipped = old_values + jnp.clip(values - old_values, -value_clip_eps, value_clip_eps)
    value_sq = jnp.maximum(value_sq, jnp.square(v_clipped - value_targets))
  value_loss = 0.5 * _mean(value_sq, mask)

  entropy = _mean(policy.entropy(), mask)
  loss = pg_loss + vf_coef * value_loss - ent_coef * entropy

  metrics = {
    'loss': loss,
    'pg_loss': pg_loss,
    'value_loss': value_loss,
    'entropy': entropy,
    'approx_kl': _mean((ratio - 1.0) - log_ratio, mask),
    'clip_frac': _mean((jnp.abs(ratio - 1.0) > clip_eps).astype(values.dtype), mask),
    'ratio_mean': _mean(ratio, mask),
  }
  return loss, metrics
