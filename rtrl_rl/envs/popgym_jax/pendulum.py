"""POPGym's Pendulum tasks: PositionOnlyPendulum and NoisyPositionOnlyPendulum.

gymnasium's ``PendulumEnv`` (``g = 10``, ``m = l = 1``, ``dt = 0.05``): state
``(theta, theta_dot)``, initial state ``theta ~ U(-pi, pi)``,
``theta_dot ~ U(-1, 1)``; the torque ``u`` is the action clipped to
``[-2, 2]``; ``theta_dot += (15 sin(theta) + 3 u) dt`` clipped to ``[-8, 8]``,
then ``theta += theta_dot dt`` (semi-implicit Euler). ``theta`` is never
wrapped; only the cost normalises it to ``[-pi, pi)``.

* Observations: float32 ``[2]`` = ``(cos(theta), sin(theta))`` (the angular
  velocity is dropped), ``Box(-1, 1)``.
* Actions: float32 ``[1]``, ``Box(-2, 2)``.
* Reward: gymnasium's ``-(norm(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2)`` (of
  the state before the step) mapped from ``[-16.2736044, 0]`` to ``[-1, 1]``
  and divided by ``max_episode_length``: per-step rewards in
  ``[-1/L, 1/L]``.
* Episode: never terminates; ``truncated`` once ``max_episode_length`` steps
  were taken (PositionOnly: 200 / 150 / 100 for easy / medium / hard; Noisy:
  200 at every level).
* Noisy: ``noise_sigma`` (0.1 / 0.2 / 0.3) times a standard normal, drawn at
  reset and at every step, is added to the float32 observation only and the
  sum is clipped to ``[-1, 1]``.

The dynamics run in the dtype of the state (float32 from :func:`reset`; a
float64 state built from the package's state follows it up to XLA's rounding,
~1e-12 over an episode). As in
the package, the torque keeps the action's dtype (float32): ``3 u`` and
``0.001 u^2`` are float32 products.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space

MAX_SPEED, MAX_TORQUE, DT, G, M, L = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0
REWARD_LOW = -16.2736044  # the package's bounds of gymnasium's reward: [REWARD_LOW, 0]
_HALF_RANGE = (0 - REWARD_LOW) / 2


class Params(NamedTuple):
  """max_episode_length; noise_sigma: std of the observation noise (0: none)."""

  max_episode_length: int
  noise_sigma: float


LEVELS = {
  ("PositionOnlyPendulum", "easy"): Params(200, 0.0),
  ("PositionOnlyPendulum", "medium"): Params(150, 0.0),
  ("PositionOnlyPendulum", "hard"): Params(100, 0.0),
  ("NoisyPositionOnlyPendulum", "easy"): Params(200, 0.1),
  ("NoisyPositionOnlyPendulum", "medium"): Params(200, 0.2),
  ("NoisyPositionOnlyPendulum", "hard"): Params(200, 0.3),
}


class PendulumState(NamedTuple):
  """theta, theta_dot: float scalars; t: int32 steps taken."""

  theta: jax.Array
  theta_dot: jax.Array
  t: jax.Array


def spaces(p: Params):
  return (
    Space.box((2,), np.float32, np.full(2, -1.0, np.float32), np.full(2, 1.0, np.float32)),
    Space.box((1,), np.float32, np.full(1, -MAX_TORQUE, np.float32), np.full(1, MAX_TORQUE, np.float32)),
  )


def _observe(theta, noise, p: Params):
  obs = jnp.stack([jnp.cos(theta), jnp.sin(theta)]).astype(jnp.float32)
  if not p.noise_sigma:
    return obs
  return jnp.clip(obs + noise.astype(jnp.float32), -1.0, 1.0)


def _noise(key, p: Params, dtype):
  if not p.noise_sigma:
    return None
  return p.noise_sigma * jax.random.normal(key, (2,), dtype)


def _init(theta, theta_dot, noise, p: Params):
  """The reset observation and state of ``(theta, theta_dot)`` (obs noise [2] or None)."""
  return _observe(theta, noise, p), PendulumState(theta, theta_dot, jnp.zeros((), jnp.int32))


def reset(key, p: Params):
  k_state, k_noise = jax.random.split(key)
  high = jnp.array([math.pi, 1.0], jnp.float32)
  theta, theta_dot = jax.random.uniform(k_state, (2,), jnp.float32, -high, high)
  return _init(theta, theta_dot, _noise(k_noise, p, jnp.float32), p)


def _angle_normalize(x):
  return jnp.mod(x + math.pi, 2 * math.pi) - math.pi


def _transition(state: PendulumState, action, noise, p: Params):
  """One step with the observation noise given ([2] or None): ``step`` without randomness."""
  th, thdot = state.theta, state.theta_dot
  u = jnp.clip(jnp.asarray(action).reshape(-1)[0], -MAX_TORQUE, MAX_TORQUE)
  costs = _angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)
  newthdot = thdot + (3 * G / (2 * L) * jnp.sin(th) + 3.0 / (M * L**2) * u) * DT
  newthdot = jnp.clip(newthdot, -MAX_SPEED, MAX_SPEED).astype(thdot.dtype)
  newth = (th + newthdot * DT).astype(th.dtype)
  reward = ((-costs + _HALF_RANGE) / _HALF_RANGE / p.max_episode_length).astype(jnp.float32)
  t = state.t + 1
  return (
    _observe(newth, noise, p),
    PendulumState(newth, newthdot, t),
    reward,
    jnp.zeros((), bool),
    t >= p.max_episode_length,
  )


def step(key, state: PendulumState, action, p: Params):
  return _transition(state, action, _noise(key, p, state.theta.dtype), p)
