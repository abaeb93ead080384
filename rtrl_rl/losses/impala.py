"""The IMPALA actor-critic loss with V-trace targets.

Espeholt et al. 2018 (arXiv 1802.01561), Sec. 4.2: the policy gradient
``rho_s grad log pi(a_s|x_s) (r_s + gamma_s v_{s+1} - V(x_s))``, the baseline regression towards the V-trace
targets ``v_s`` and an entropy bonus. Reductions follow the reference implementation (torchbeast), which the
RTRL paper (Irie et al. 2024) uses: losses are SUMMED over time and batch, and

  total = pg_loss + baseline_cost * baseline_loss + entropy_cost * entropy_loss,
  pg_loss = -sum_{s,b} A_s log pi(a_s|x_s),     baseline_loss = 0.5 sum_{s,b} (v_s - V(x_s))^2,
  entropy_loss = -sum_{s,b} H[pi(.|x_s)].

``reduction='mean'`` divides every sum by the number of (valid) steps instead.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import chex
import jax
import jax.numpy as jnp

from rtrl_rl.losses.distributions import Distribution
from rtrl_rl.losses.vtrace import vtrace_batched

Array = chex.Array


def _reduce(x: Array, mask: Optional[Array], reduction: str) -> Array:
  if mask is not None:
    x = x * mask
  total = jnp.sum(x)
  if reduction == 'sum':
    return total
  count = jnp.sum(mask) if mask is not None else x.size
  return total / jnp.maximum(count, 1)


def impala_loss(
  policy: Distribution,
  behaviour: Union[Distribution, Array],
  actions: Array,
  rewards: Array,
  discounts: Array,
  values: Array,
  *,
  next_values: Optional[Array] = None,
  mask: Optional[Array] = None,
  lambda_: Union[float, Array] = 1.0,
  clip_rho_threshold: float = 1.0,
  clip_c_threshold: float = 1.0,
  clip_pg_rho_threshold: Optional[float] = None,
  baseline_cost: float = 0.5,
  entropy_cost: float = 0.01,
  reward_clip: Optional[float] = None,
  reduction: str = 'sum',
) -> Tuple[Array, Dict[str, Array]]:
  """IMPALA loss on a time-major batch of ``B`` rollouts of ``T`` transitions.

  Args:
    policy: learner's action distribution with batch shape ``[T, B]`` (e.g. ``Categorical(logits [T, B, A])``
      or ``DiagGaussian(mean [T, B, D], log_std)``), differentiable w.r.t. the learner's parameters.
    behaviour: the actors' distribution (batch shape ``[T, B]``) or their log-probs ``[T, B]`` of ``actions``.
    actions: ``[T, B]`` (categorical) or ``[T, B, D]`` (Gaussian) actions taken by the actors.
    rewards: ``[T, B]`` rewards ``r_t`` received after ``actions``.
    discounts: ``[T, B]`` per-step discounts (``gamma``, ``0`` at termination).
    values: ``[T+1, B]`` learner's values ``V(x_0 .. x_T)``; the last row is the bootstrap value.
    next_values: optional ``[T, B]`` values of the next observations, default ``values[1:]``; at a truncated
      transition pass the value of the true final observation here and ``lambda_ = 0`` there.
    mask: optional ``[T, B]`` 0/1 weights of the steps that count in the loss.
    lambda_: scalar or ``[T, B]`` V-trace lambda.
    clip_rho_threshold, clip_c_threshold, clip_pg_rho_threshold: V-trace clips (``rho_bar``, ``c_bar``,
      pg clip; ``None`` means ``rho_bar``).
    baseline_cost: weight of ``baseline_loss`` (0.5 in IMPALA; the loss already carries a factor 0.5).
    entropy_cost: weight of ``entropy_loss`` (= minus the summed entropy).
    reward_clip: if set, rewards are clipped to ``[-reward_clip, reward_clip]`` here.
    reduction: ``'sum'`` over time and batch (IMPALA, Irie et al.) or ``'mean'`` over valid steps.

  Returns:
    ``(loss, metrics)``: the scalar total loss and a dict of scalar diagnostics.
  """
  if reduction not in ('sum', 'mean'):
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
  chex.assert_rank([rewards, discounts, values], 2)
  chex.assert_equal_shape([rewards, discounts])
  t, b = rewards.shape
  chex.assert_shape(values, (t + 1, b))
  chex.assert_equal_shape_prefix([rewards, actions], 2)

  log_pi = policy.log_prob(actions)
  if isinstance(behaviour, Distribution):
    log_mu = behaviour.log_prob(actions)
  else:
    log_mu = behaviour
  chex.assert_shape([log_pi, log_mu], (t, b))

  if reward_clip is not None:
    rewards = jnp.clip(rewards, -reward_clip, reward_clip)
  v_tm1 = values[:-1]
  v_t = values[1:] if next_values is None else next_values
  chex.assert_shape(v_t, (t, b))
  if mask is not None:
    chex.assert_shape(mask, (t, b))
    mask = mask.astype(v_tm1.dtype)

  log_rho = jax.lax.stop_gradient(log_pi - log_mu)
  vt = vtrace_batched(
    v_tm1,
    v_t,
    rewards,
    discounts,
    log_rho,
    lambda_=lambda_,
    clip_rho_threshold=clip_rho_threshold,
    clip_c_threshold=clip_c_threshold,
    clip_pg_rho_threshold=clip_pg_rho_threshold,
    stop_target_gradients=True,
  )

  entropy = policy.entropy()
  pg_loss = _reduce(-vt.pg_advantages * log_pi, mask, reduction)
  baseline_loss = _reduce(0.5 * jnp.square(vt.errors), mask, reduction)
  entropy_loss = _reduce(-entropy, mask, reduction)
  loss = pg_loss + baseline_cost * baseline_loss + entropy_cost * entropy_loss

  mean = lambda x: _reduce(x, mask, 'mean')
  metrics = {
    'loss': loss,
    'pg_loss': pg_loss,
    'baseline_loss': baseline_loss,
    'entropy_loss': entropy_loss,
    'entropy': mean(entropy),
    'rho_mean': mean(vt.rhos),
    'rho_clip_frac': mean((vt.rhos > clip_rho_threshold).astype(v_tm1.dtype)),
    'vs_mean': mean(vt.vs),
    'value_mean': mean(v_tm1),
    'pg_advantage_mean': mean(vt.pg_advantages),
  }
  return loss, metrics
