"""Generalized advantage estimation.

Schulman, Moritz, Levine, Jordan, Abbeel 2016, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation" (arXiv 1506.02438), eq. (16) in its recursive form.

Naming as in :mod:`rtrl_rl.losses.vtrace`: transition ``s`` goes from ``x_tm1`` (value ``v_tm1``) to
``x_t`` (reward ``r_t``, discount ``discount_t``, value ``v_t``; ``v_t[-1]`` is the bootstrap value).
Termination: ``discount_t = 0``. Truncation: ``discount_t = gamma``, ``v_t`` = value of the true final
observation and ``lambda_ = 0`` at that transition.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Union

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
Numeric = Union[float, Array]


class GAEOutput(NamedTuple):
  """``advantages`` ``A_s`` and value targets ``A_s + V(x_s)`` (lambda-returns), each ``[T]``/``[T, B]``."""

  advantages: Array
  targets: Array


def gae(
  v_tm1: Array,
  v_t: Array,
  r_t: Array,
  discount_t: Array,
  lambda_: Numeric = 0.95,
  stop_target_gradients: bool = True,
) -> GAEOutput:
  """GAE for one time-major stream of ``T`` transitions, computed backwards with ``lax.scan``::

    delta_s = r_s + gamma_s V(x_{s+1}) - V(x_s)
    A_s     = delta_s + gamma_s lambda_s A_{s+1},     A_T = 0          (Schulman et al. 2016, eq. 16)
    target_s = A_s + V(x_s)

  Args:
    v_tm1: ``[T]`` values ``V(x_s)``.
    v_t: ``[T]`` values ``V(x_{s+1})`` (``v_t[-1]`` is the bootstrap value).
    r_t: ``[T]`` rewards.
    discount_t: ``[T]`` discounts (``0`` at termination).
    lambda_: scalar or ``[T]``.
    stop_target_gradients: stop gradients through both outputs.

  Returns:
    A ``GAEOutput`` of ``[T]`` arrays.
  """
  chex.assert_rank([v_tm1, v_t, r_t, discount_t], 1)
  chex.assert_equal_shape([v_tm1, v_t, r_t, discount_t])
  chex.assert_type([v_tm1, v_t, r_t, discount_t], float)
  lambda_ = jnp.broadcast_to(jnp.asarray(lambda_, v_tm1.dtype), v_tm1.shape)
  delta = r_t + discount_t * v_t - v_tm1

  def _step(acc, xs):
    delta_s, discount_s, lambda_s = xs
    acc = delta_s + discount_s * lambda_s * acc
    return acc, acc

  _, advantages = jax.lax.scan(_step, jnp.zeros((), v_tm1.dtype), (delta, discount_t, lambda_), reverse=True)
  targets = advantages + v_tm1
  if stop_target_gradients:
    advantages = jax.lax.stop_gradient(advantages)
    targets = jax.lax.stop_gradient(targets)
  return GAEOutput(advantages=advantages, targets=targets)


def gae_batched(
  v_tm1: Array,
  v_t: Array,
  r_t: Array,
  discount_t: Array,
  lambda_: Numeric = 0.95,
  stop_target_gradients: bool = True,
) -> GAEOutput:
  """:func:`gae` over ``B`` time-major streams: every array is ``[T, B]`` (``lambda_`` may be scalar)."""
  chex.assert_rank([v_tm1, v_t, r_t, discount_t], 2)
  chex.assert_equal_shape([v_tm1, v_t, r_t, discount_t])
  lambda_ = jnp.broadcast_to(jnp.asarray(lambda_, v_tm1.dtype), v_tm1.shape)
  fn = functools.partial(gae, stop_target_gradients=stop_target_gradients)
  return jax.vmap(fn, in_axes=1, out_axes=1)(v_tm1, v_t, r_t, discount_t, lambda_)
