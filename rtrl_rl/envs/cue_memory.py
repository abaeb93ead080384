"""Cue memory: a minimal JAX task that needs memory, written for :class:`FunctionalEnv`.

Episode (``K = num_cues``, ``L = length``)::

    t = 0        obs = [onehot(cue) ; 0]          cue ~ U{0..K-1}
    t = 1..L-1   obs = [0 .. 0      ; 0]          masked
    t = L        obs = [0 .. 0      ; 1]          query flag
    the action taken on the query observation is judged: reward ``+1`` if it equals the cue,
    ``reward_wrong`` (default 0) otherwise; the episode then terminates.

Actions before the query are ignored (reward 0). Observations are float32 ``[K + 1]``; actions are
``Discrete(K)``. An episode has ``L + 1`` decisions; with the package's next-step autoreset
(:mod:`rtrl_rl.envs.core`) the step after the terminal one returns the next episode's cue.

Why a feed-forward agent cannot exceed ``1/K`` expected return (``reward_wrong = 0``): a memoryless
policy acts on the query step from its inputs at that step only, i.e. the query observation
(identical for every cue) and the last reward (always 0 before the query). Its action distribution
``pi(a)`` is therefore the same for every cue, and since the cue is uniform and independent of
everything before it, ``P(a = cue) = sum_k (1/K) pi(k) = 1/K``. (With ``reward_wrong = w`` the
bound is ``1/K + (1 - 1/K) w``.) This holds for any feed-forward agent whose inputs do not include
its own previous action: a policy fed ``a_{t-1}`` can use its actions as an external memory
(repeat the cue as the action for L steps), so memory tests keep ``network.use_last_action=False``.
An agent with memory can reach return 1.
"""

from __future__ import annotations

import functools
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs._jax import FunctionalEnv, JaxVecEnv
from rtrl_rl.envs.core import Space


class CueState(NamedTuple):
  """Single-env state: the cue and the step within the episode (int32 scalars)."""

  cue: jax.Array
  t: jax.Array


def _obs(cue, t, num_cues, length):
  show = (t == 0).astype(jnp.float32)
  cue_part = jax.nn.one_hot(cue, num_cues, dtype=jnp.float32) * show
  query = (t == length).astype(jnp.float32)
  return jnp.concatenate([cue_part, query[None]])


def _reset(key, *, num_cues, length):
  cue = jax.random.randint(key, (), 0, num_cues, dtype=jnp.int32)
  t = jnp.zeros((), jnp.int32)
  return _obs(cue, t, num_cues, length), CueState(cue, t)


def _step(key, state, action, *, num_cues, length, reward_wrong):
  del key
  at_query = state.t == length
  correct = jnp.asarray(action, jnp.int32) == state.cue
  reward = jnp.where(at_query, jnp.where(correct, 1.0, reward_wrong), 0.0).astype(jnp.float32)
  t = jnp.minimum(state.t + 1, length + 1)
  obs = _obs(state.cue, t, num_cues, length)
  return obs, CueState(state.cue, t), reward, at_query, jnp.zeros((), bool)


def cue_memory_functional(
  env_id: str = "jax/cue-memory", *, num_cues: int = 2, length: int = 5, reward_wrong: float = 0.0
):
  """The cue-memory task as a FunctionalEnv (see the module docstring).

  ``params``: ``num_cues``, ``length``, ``reward_wrong`` and ``feedforward_bound``, the best
  expected return of an agent without memory.
  """
  if not isinstance(num_cues, int) or num_cues < 2:
    raise ValueError(f"cue_memory: num_cues must be an int >= 2, got {num_cues!r}")
  if not isinstance(length, int) or length < 1:
    raise ValueError(f"cue_memory: length must be an int >= 1, got {length!r}")
  reward_wrong = float(reward_wrong)
  params = types.SimpleNamespace(
    num_cues=num_cues,
    length=length,
    reward_wrong=reward_wrong,
    feedforward_bound=1.0 / num_cues + (1.0 - 1.0 / num_cues) * reward_wrong,
  )
  obs_space = Space.box((num_cues + 1,), np.float32, 0.0, 1.0)
  return FunctionalEnv(
    env_id,
    functools.partial(_reset, num_cues=num_cues, length=length),
    functools.partial(_step, num_cues=num_cues, length=length, reward_wrong=reward_wrong),
    obs_space,
    Space.discrete(num_cues),
    params,
  )


def make_cue_memory(
  env_id: str, num_envs: int, seed: int, *, describe: bool = False, functional: bool = False, **o
):
  """Registry maker: obs float32 [B, num_cues + 1], Discrete(num_cues) actions."""
  f = cue_memory_functional(env_id, **o)
  if describe:
    return f.observation_space, f.action_space
  return f if functional else JaxVecEnv(f, num_envs, seed)
