"""POPGym MultiarmedBandit in JAX (``popgym.envs.multiarmed_bandit``): find the best arm.

Rules (the package's): at reset each of ``K`` arms gets a payout probability ``b_i ~ U[0, 1)``
(float32). Each step the agent pulls an arm ``a``; it pays out when a fresh uniform draw
``u < b_a``.

* Observation: the payout of the last pull, one-hot float32 ``[2]`` (``[1, 0]`` none,
  ``[0, 1]`` paid); the first observation is "none".
* Action: the arm, ``Discrete(K)``.
* Reward: ``+1 / L`` on a payout, ``-1 / L`` otherwise (``L`` the episode length).
* End: never ``terminated``; ``truncated`` on the ``L``-th pull.

The package draws ``b`` with 24 random bits and ``u`` in float64; here both are float32 draws of
``jax.random.uniform`` (23 bits), so payout probabilities differ from the package's by at most
``2**-23``. :func:`_transition` is the step given the draw ``u`` (any float dtype: a float64
``u`` under x64 compares exactly as the package does).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space


class Params(NamedTuple):
  num_bandits: int
  episode_length: int


LEVELS = {"easy": Params(10, 200), "medium": Params(20, 400), "hard": Params(30, 600)}


class State(NamedTuple):
  """bandits: float32 [K] payout probabilities; num_steps: int32 []."""

  bandits: jax.Array
  num_steps: jax.Array


def spaces(p: Params):
  return Space.box((2,), np.float32, 0.0, 1.0), Space.discrete(p.num_bandits)


def _obs(paid):
  return jax.nn.one_hot(paid.astype(jnp.int32), 2, dtype=jnp.float32)


def reset(key, p: Params):
  bandits = jax.random.uniform(key, (p.num_bandits,), jnp.float32)
  return _obs(jnp.zeros((), bool)), State(bandits, jnp.zeros((), jnp.int32))


def _transition(state: State, action, u, p: Params):
  """The step given the uniform draw ``u`` (the package's ``np_random.random()``)."""
  paid = u < state.bandits[jnp.asarray(action, jnp.int32)]
  r = 1.0 / p.episode_length
  reward = jnp.where(paid, np.float32(r), np.float32(-r))
  truncated = state.num_steps >= p.episode_length - 1
  nxt = State(state.bandits, state.num_steps + 1)
  return _obs(paid), nxt, reward, jnp.zeros((), bool), truncated


def step(key, state: State, action, p: Params):
  return _transition(state, action, jax.random.uniform(key, (), jnp.float32), p)
