"""POPGym's CartPole tasks: PositionOnly, VelocityOnly and NoisyPositionOnly CartPole.

gymnasium's ``CartPoleEnv`` dynamics (Barto, Sutton & Anderson): state
``(x, x_dot, theta, theta_dot)``, initial state ``U(-0.05, 0.05)^4``, force
``+10`` for action 1 and ``-10`` for action 0, explicit Euler with ``tau = 0.02``;
``terminated`` when ``|x| > 2.4`` or ``|theta| > 12 deg``.

* Observations: float32 ``[2]``. PositionOnly / Noisy: ``(x, theta)`` in
  ``Box(-(4.8, 0.4189), (4.8, 0.4189))``; VelocityOnly: ``(x_dot, theta_dot)``
  in ``Box(-inf, inf)``. The state is cast to float32 before it is observed.
* Actions: ``Discrete(2)`` (int32 scalar).
* Reward: ``1 / max_episode_length`` per step, the failing step included.
* Episode: ``truncated`` once ``max_episode_length`` steps were taken (200 /
  400 / 600 for easy / medium / hard; 200 at every level of the Noisy task),
  returned raw, possibly together with ``terminated``.
* Noisy: ``noise_sigma`` (0.1 / 0.2 / 0.3) times a standard normal, drawn at
  reset and at every step, is added to the float32 observation only (the
  physics stays noise-free) and the sum is clipped to the observation box.

Package quirks followed:

* VelocityOnlyCartPole's first observation (at reset) is the positions
  ``(x, theta)``, not the velocities; its steps observe the velocities.
* gymnasium rewards the failing step 1 (not 0), so popgym's ``-1 on failure``
  transform only fires when the env is stepped again after ``terminated``
  without a reset, on steps that end outside the bounds again (``fallen``).

The physics run in the dtype of the state (float32 from :func:`reset`; a
float64 state built from the package's state follows it up to XLA's rounding:
fused multiply-adds, division by a constant as a product with its reciprocal).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space

GRAVITY, MASSCART, MASSPOLE, LENGTH, FORCE_MAG, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = MASSPOLE + MASSCART
POLEMASS_LENGTH = MASSPOLE * LENGTH
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
RESET_HIGH = 0.05


class Params(NamedTuple):
  """max_episode_length; obs_offset: 0 observes (x, theta), 1 (x_dot, theta_dot);
  noise_sigma: std of the observation noise (0: none)."""

  max_episode_length: int
  obs_offset: int
  noise_sigma: float


_LENGTHS = {"easy": 200, "medium": 400, "hard": 600}
_SIGMAS = {"easy": 0.1, "medium": 0.2, "hard": 0.3}
LEVELS = {
  **{("PositionOnlyCartPole", lv): Params(n, 0, 0.0) for lv, n in _LENGTHS.items()},
  **{("VelocityOnlyCartPole", lv): Params(n, 1, 0.0) for lv, n in _LENGTHS.items()},
  **{("NoisyPositionOnlyCartPole", lv): Params(200, 0, s) for lv, s in _SIGMAS.items()},
}


class CartPoleState(NamedTuple):
  """physics: float [4] (x, x_dot, theta, theta_dot); t: int32 steps taken;
  fallen: bool, a step has terminated (gymnasium's ``steps_beyond_terminated``)."""

  physics: jax.Array
  t: jax.Array
  fallen: jax.Array


def _obs_high(p: Params) -> np.ndarray:
  if p.obs_offset:
    return np.full(2, np.inf, np.float32)
  return np.array([X_THRESHOLD * 2, THETA_THRESHOLD * 2], np.float32)


def spaces(p: Params):
  high = _obs_high(p)
  return Space.box((2,), np.float32, -high, high), Space.discrete(2)


def _observe(physics, offset: int, noise, p: Params):
  """Components ``offset::2`` of the state as float32, plus clipped noise (Noisy task)."""
  obs = physics[offset::2].astype(jnp.float32)
  if not p.noise_sigma:
    return obs
  high = _obs_high(p)
  return jnp.clip(obs + noise.astype(jnp.float32), -high, high)


def _noise(key, p: Params, dtype):
  if not p.noise_sigma:
    return None
  return p.noise_sigma * jax.random.normal(key, (2,), dtype)


def _init(physics, noise, p: Params):
  """The reset observation and state of ``physics`` (obs noise ``noise`` [2] or None)."""
  obs = _observe(physics, 0, noise, p)  # quirk: positions at reset, for every variant
  return obs, CartPoleState(physics, jnp.zeros((), jnp.int32), jnp.zeros((), bool))


def reset(key, p: Params):
  k_state, k_noise = jax.random.split(key)
  physics = jax.random.uniform(k_state, (4,), jnp.float32, -RESET_HIGH, RESET_HIGH)
  return _init(physics, _noise(k_noise, p, jnp.float32), p)


def _transition(state: CartPoleState, action, noise, p: Params):
  """One step with the observation noise given (``[2]`` or None): ``step`` without randomness."""
  x, x_dot, theta, theta_dot = state.physics
  force = jnp.where(action == 1, FORCE_MAG, -FORCE_MAG).astype(x.dtype)
  costheta, sintheta = jnp.cos(theta), jnp.sin(theta)
  temp = (force + POLEMASS_LENGTH * jnp.square(theta_dot) * sintheta) / TOTAL_MASS
  thetaacc = (GRAVITY * sintheta - costheta * temp) / (
    LENGTH * (4.0 / 3.0 - MASSPOLE * jnp.square(costheta) / TOTAL_MASS)
  )
  xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
  x, x_dot = x + TAU * x_dot, x_dot + TAU * xacc
  theta, theta_dot = theta + TAU * theta_dot, theta_dot + TAU * thetaacc
  physics = jnp.stack([x, x_dot, theta, theta_dot])
  terminated = (x < -X_THRESHOLD) | (x > X_THRESHOLD) | (theta < -THETA_THRESHOLD) | (theta > THETA_THRESHOLD)
  reward = jnp.where(terminated & state.fallen, -1.0, 1.0 / p.max_episode_length).astype(jnp.float32)
  t = state.t + 1
  obs = _observe(physics, p.obs_offset, noise, p)
  return (
    obs,
    CartPoleState(physics, t, state.fallen | terminated),
    reward,
    terminated,
    t >= p.max_episode_length,
  )


def step(key, state: CartPoleState, action, p: Params):
  return _transition(state, action, _noise(key, p, state.physics.dtype), p)
