"""POPGym LabyrinthEscape in JAX (``popgym.envs.labyrinth_escape``): find the maze's exit.

The maze, its start and exit, the observation and the moves are :mod:`._maze`'s (mazelib's
HuntAndKill maze; start and exit on opposite sides of the border; the agent sees the 3 x 3
squares around it, shifted on the top row / left column as the package does, and its previous
action: one-hot float32 ``[50]``; actions ``Discrete(4)``). The exit square is marked GOAL (code
3) and is passable.

* Reward: ``-1 / L`` each step (``L = episode_length = 1024``), plus ``1`` on the step that
  reaches the exit.
* End: ``terminated`` on reaching the exit; ``truncated`` on the step whose count reaches
  ``L - 1`` (the package's ``curr_step == max_episode_length - 1`` after its increment: at most
  1023 steps). Both are ``True`` when the exit is reached on that step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rtrl_rl.envs.popgym_jax import _maze
from rtrl_rl.envs.popgym_jax._maze import LEVELS, Params, spaces  # noqa: F401  (the contract)


class State(NamedTuple):
  """grid: int32 [H + 1, W + 1] cell codes (padded, see :mod:`._maze`); pos: int32 [2] (y, x);
  t: int32 [] steps taken."""

  grid: jax.Array
  pos: jax.Array
  t: jax.Array


def init_state(grid, start, p: Params):
  """(obs, state) of an episode on ``grid`` int32 [H, W] (START, GOAL marked) from ``start``."""
  del p
  grid = _maze.pad(grid)
  pos = jnp.asarray(start, jnp.int32)
  return _maze.observe(grid, pos, _maze.NONE), State(grid, pos, jnp.zeros((), jnp.int32))


def reset(key, p: Params):
  grid, start, _ = _maze.new_maze(key, p, goal=True)
  return init_state(grid, start, p)


def step(key, state: State, action, p: Params):
  del key
  pos = _maze.move(state.grid, state.pos, action)
  t = state.t + 1
  terminated = state.grid[pos[0], pos[1]] == _maze.GOAL
  reward = jnp.float32(-1.0 / p.episode_length) + jnp.where(terminated, 1.0, 0.0)
  truncated = t == p.episode_length - 1
  obs = _maze.observe(state.grid, pos, action)
  return obs, State(state.grid, pos, t), reward.astype(jnp.float32), terminated, truncated
