"""POPGym LabyrinthExplore in JAX (``popgym.envs.labyrinth_explore``): visit every square of a maze.

The maze, its start, the observation and the moves are :mod:`._maze`'s (mazelib's HuntAndKill
maze; the start on the border; the agent sees the 3 x 3 squares around it, shifted on the top row
/ left column as the package does, and its previous action: one-hot float32 ``[50]``; actions
``Discrete(4)``). Package quirk followed: the maze's end square (on the opposite border) is drawn
but never opened, it stays a wall.

* Reward: ``1 / N`` for a step onto a square not visited before (``N`` = the FREE squares at
  reset, the start excluded, so a full exploration earns 1); else ``-1 / L`` (``L =
  episode_length = 1024``), a step into a wall or onto a visited square alike.
* End: ``terminated`` once every non-wall square (start included) is visited; ``truncated`` on the
  step whose count reaches ``L - 1`` (the package's ``curr_step == max_episode_length - 1`` after
  its increment: at most 1023 steps); both can be ``True``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rtrl_rl.envs.popgym_jax import _maze
from rtrl_rl.envs.popgym_jax._maze import LEVELS, Params, spaces  # noqa: F401  (the contract)


class State(NamedTuple):
  """grid: int32 [H + 1, W + 1] cell codes (padded, see :mod:`._maze`); explored: bool
  [H + 1, W + 1]; pos: int32 [2] (y, x); t: int32 [] steps taken; left: int32 [] non-wall
  squares not yet visited; new_reward: float32 [] ``1 / N``."""

  grid: jax.Array
  explored: jax.Array
  pos: jax.Array
  t: jax.Array
  left: jax.Array
  new_reward: jax.Array


def init_state(grid, start, p: Params):
  """(obs, state) of the episode on ``grid`` int32 [H, W] (START marked) from ``start``."""
  del p
  grid = _maze.pad(grid)
  pos = jnp.asarray(start, jnp.int32)
  explored = jnp.zeros(grid.shape, bool).at[pos[0], pos[1]].set(True)
  left = (grid != _maze.OBSTACLE).sum(dtype=jnp.int32) - 1
  new_reward = 1.0 / (grid == _maze.FREE).sum().astype(jnp.float32)
  state = State(grid, explored, pos, jnp.zeros((), jnp.int32), left, new_reward)
  return _maze.observe(grid, pos, _maze.NONE), state


def reset(key, p: Params):
  grid, start, _ = _maze.new_maze(key, p, goal=False)
  return init_state(grid, start, p)


def step(key, state: State, action, p: Params):
  del key
  pos = _maze.move(state.grid, state.pos, action)
  new = ~state.explored[pos[0], pos[1]]
  explored = state.explored.at[pos[0], pos[1]].set(True)
  left = state.left - new.astype(jnp.int32)
  t = state.t + 1
  reward = jnp.where(new, state.new_reward, jnp.float32(-1.0 / p.episode_length))
  obs = _maze.observe(state.grid, pos, action)
  state = State(state.grid, explored, pos, t, left, state.new_reward)
  return obs, state, reward, left == 0, t == p.episode_length - 1
