"""V-trace off-policy targets and policy-gradient advantages.

Espeholt et al. 2018, "IMPALA: Scalable Distributed Deep-RL with Importance Weighted Actor-Learner
Architectures" (arXiv 1802.01561), eq. (1) and Sec. 4.2.

Naming follows the rlax convention: transition ``s`` of a stream takes the agent from ``x_tm1`` (value
``v_tm1``, action ``a_tm1``, importance ratio ``rho_tm1``) to ``x_t`` (reward ``r_t``, discount
``discount_t``, value ``v_t``). A stream of ``T`` transitions therefore has ``v_tm1 = values[:-1]`` and
``v_t = values[1:]`` where ``values`` is ``[T+1]`` and its last entry is the bootstrap value.

Episode ends:
  * termination: ``discount_t = 0`` at the terminal transition (no bootstrap past it, trace cut);
  * truncation (time limit / end of a stream with a non-terminal state): pass ``discount_t = gamma``, the
    value of the true final observation as ``v_t`` of that transition, and ``lambda_ = 0`` for that
    transition so that the trace does not run into the next episode. For the end of the stream this is just
    the bootstrap value ``values[-1]``; nothing else is needed.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Union

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
Numeric = Union[float, Array]


class VTraceOutput(NamedTuple):
  """V-trace outputs, each ``[T]`` (or ``[T, B]`` for the batched helper).

  Attributes:
    vs: V-trace value targets ``v_s`` of eq. (1), for the states ``x_tm1``.
    pg_advantages: ``rho_s (r_s + gamma_s v_{s+1} - V(x_s))`` with ``rho_s = min(rho_pg_bar, pi/mu)``.
    errors: ``vs - v_tm1``; with ``stop_target_gradients`` its gradient reaches ``v_tm1`` only (``-1``).
    rhos: the unclipped importance ratios ``pi(a_s|x_s) / mu(a_s|x_s)`` (for logging).
  """

  vs: Array
  pg_advantages: Array
  errors: Array
  rhos: Array


def vtrace(
  v_tm1: Array,
  v_t: Array,
  r_t: Array,
  discount_t: Array,
  log_rho_tm1: Array,
  lambda_: Numeric = 1.0,
  clip_rho_threshold: float = 1.0,
  clip_c_threshold: float = 1.0,
  clip_pg_rho_threshold: Optional[float] = None,
  stop_target_gradients: bool = True,
) -> VTraceOutput:
  """V-trace targets and pg advantages for one time-major stream of ``T`` transitions.

  Implements eq. (1) of Espeholt et al. (2018) in its recursive form (their Remark 1),
  computed backwards with ``lax.scan``::

    delta_s = rho_s (r_s + gamma_s V(x_{s+1}) - V(x_s)),     rho_s = min(rho_bar, pi_s / mu_s)
    v_s - V(x_s) = delta_s + gamma_s lambda_s c_s (v_{s+1} - V(x_{s+1})),   c_s = min(c_bar, pi_s / mu_s)

  and the policy-gradient advantage of Sec. 4.2::

    A_s = rho_pg_s (r_s + gamma_s q_{s+1} - V(x_s)),
    q_{s+1} = V(x_{s+1}) + lambda_s (v_{s+1} - V(x_{s+1}))   (= v_{s+1} when lambda = 1),

  where ``V(x_{s+1})`` is ``v_t[s]``, so the last target uses the bootstrap value.

  Args:
    v_tm1: ``[T]`` values ``V(x_s)`` of the states the actions were taken in.
    v_t: ``[T]`` values ``V(x_{s+1})`` of the next states (``v_t[-1]`` is the bootstrap value).
    r_t: ``[T]`` rewards.
    discount_t: ``[T]`` discounts ``gamma_s`` (``0`` at termination).
    log_rho_tm1: ``[T]`` log importance ratios ``log pi(a_s|x_s) - log mu(a_s|x_s)``.
    lambda_: scalar or ``[T]`` trace-mixing parameter (1 in IMPALA; 0 at truncated transitions).
    clip_rho_threshold: ``rho_bar``, the clip on the ratios in ``delta_s``.
    clip_c_threshold: ``c_bar``, the clip on the trace coefficients ``c_s``.
    clip_pg_rho_threshold: clip on the ratio of the pg advantage; ``None`` means ``rho_bar``.
    stop_target_gradients: stop gradients through ``vs`` and ``pg_advantages`` (IMPALA does).

  Returns:
    A ``VTraceOutput`` of ``[T]`` arrays.
  """
  chex.assert_rank([v_tm1, v_t, r_t, discount_t, log_rho_tm1], 1)
  chex.assert_equal_shape([v_tm1, v_t, r_t, discount_t, log_rho_tm1])
  chex.assert_type([v_tm1, v_t, r_t, discount_t, log_rho_tm1], float)
  if clip_pg_rho_threshold is None:
    clip_pg_rho_threshold = clip_rho_threshold
  lambda_ = jnp.broadcast_to(jnp.asarray(lambda_, v_tm1.dtype), v_tm1.shape)

  rho_tm1 = jnp.exp(log_rho_tm1)
  clipped_rho_tm1 = jnp.minimum(clip_rho_threshold, rho_tm1)
  c_tm1 = jnp.minimum(clip_c_threshold, rho_tm1) * lambda_
  delta = clipped_rho_tm1 * (r_t + discount_t * v_t - v_tm1)

  def _step(acc, xs):
    delta_s, discount_s, c_s = xs
    acc = delta_s + discount_s * c_s * acc
    return acc, acc

  # acc_s = v_s - V(x_s); acc_{T} = 0 (v_T is the bootstrap value itself).
  _, errors = jax.lax.scan(_step, jnp.zeros((), v_tm1.dtype), (delta, discount_t, c_tm1), reverse=True)
  vs = v_tm1 + errors

  # v_{s+1} - V(x_{s+1}) as seen from transition s: errors[s+1], and 0 after the last one.
  next_errors = jnp.concatenate([errors[1:], jnp.zeros((1,), errors.dtype)])
  q_t = r_t + discount_t * (v_t + lambda_ * next_errors)
  pg_advantages = jnp.minimum(clip_pg_rho_threshold, rho_tm1) * (q_t - v_tm1)

  if stop_target_gradients:
    vs = jax.lax.stop_gradient(vs)
    pg_advantages = jax.lax.stop_gradient(pg_advantages)
    errors = vs - v_tm1
  return VTraceOutput(vs=vs, pg_advantages=pg_advantages, errors=errors, rhos=rho_tm1)


def vtrace_batched(
  v_tm1: Array,
  v_t: Array,
  r_t: Array,
  discount_t: Array,
  log_rho_tm1: Array,
  lambda_: Numeric = 1.0,
  clip_rho_threshold: float = 1.0,
  clip_c_threshold: float = 1.0,
  clip_pg_rho_threshold: Optional[float] = None,
  stop_target_gradients: bool = True,
) -> VTraceOutput:
  """:func:`vtrace` over ``B`` time-major streams: every array is ``[T, B]`` (``lambda_`` may be scalar).

  Returns a ``VTraceOutput`` of ``[T, B]`` arrays.
  """
  chex.assert_rank([v_tm1, v_t, r_t, discount_t, log_rho_tm1], 2)
  chex.assert_equal_shape([v_tm1, v_t, r_t, discount_t, log_rho_tm1])
  lambda_ = jnp.broadcast_to(jnp.asarray(lambda_, v_tm1.dtype), v_tm1.shape)
  fn = functools.partial(
    vtrace,
    clip_rho_threshold=clip_rho_threshold,
    clip_c_threshold=clip_c_threshold,
    clip_pg_rho_threshold=clip_pg_rho_threshold,
    stop_target_gradients=stop_target_gradients,
  )
  return jax.vmap(fn, in_axes=1, out_axes=1)(v_tm1, v_t, r_t, discount_t, log_rho_tm1, lambda_)
