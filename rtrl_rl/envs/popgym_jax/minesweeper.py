"""POPGym MineSweeper in JAX (``popgym.envs.minesweeper``): click the free tiles of a hidden board.

Rules (the package's): ``k`` mines lie on an ``h x w`` board, a uniform random set of ``k``
tiles (here the ``k`` largest of ``h * w`` float32 uniforms; a tie at the boundary, of
probability about ``2**-23``, favours the lower tile). Each step the agent clicks one tile. A
mine ends the episode; a new free tile becomes viewed; a viewed tile is a wasted click.
``L = h * w - k`` is the episode length limit.

* Observation: the clicked tile's count, one-hot float32 ``[min(k + 1, 10)]``; the first
  observation is count 0. Package quirk followed: the count is the number of mines in the 3 x 3
  block around the tile *including the tile itself* (so a mine shows at least 1), and it is shown
  for every click (mine, repeated or new).
* Action: the tile, ``Discrete(h * w)`` row-major (``a = row * w + col``; the package's
  ``MultiDiscrete([h, w])``).
* Reward: ``1 / L`` for a new free tile, ``-0.5 / (L - 2)`` for a viewed one, ``-0.5 - 1 / L``
  for a mine.
* End: ``terminated`` on a mine or once every free tile is viewed; ``truncated`` on the
  ``L``-th click if not terminated (never both).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space


class Params(NamedTuple):
  dims: tuple[int, int]
  num_mines: int


LEVELS = {"easy": Params((4, 4), 2), "medium": Params((6, 6), 6), "hard": Params((8, 8), 10)}


class State(NamedTuple):
  """mines, viewed: bool [h * w] (tile ``(r, c)`` at ``r * w + c``); counts: int32 [h * w]
  (mines in each tile's 3 x 3 block, itself included); num_viewed, timestep: int32 []."""

  mines: jax.Array
  viewed: jax.Array
  counts: jax.Array
  num_viewed: jax.Array
  timestep: jax.Array


def _obs_size(p: Params) -> int:
  return min(p.num_mines + 1, 10)


def _max_len(p: Params) -> int:
  return p.dims[0] * p.dims[1] - p.num_mines


def spaces(p: Params):
  return (Space.box((_obs_size(p),), np.float32, 0.0, 1.0), Space.discrete(p.dims[0] * p.dims[1]))


def _obs(count, p: Params):
  return jax.nn.one_hot(count, _obs_size(p), dtype=jnp.float32)


def _counts(mines, p: Params):
  """int32 [h * w]: mines in the 3 x 3 block around each tile (itself included)."""
  h, w = p.dims
  pad = jnp.pad(mines.reshape(h, w).astype(jnp.int32), 1)
  return sum(pad[i : i + h, j : j + w] for i in range(3) for j in range(3)).reshape(-1)


def _state(mines, p: Params) -> State:
  """The initial state of a board with ``mines`` bool [h * w]."""
  zero = jnp.zeros((), jnp.int32)
  return State(mines, jnp.zeros_like(mines), _counts(mines, p), zero, zero)


def reset(key, p: Params):
  size = p.dims[0] * p.dims[1]
  idx = jax.lax.top_k(jax.random.uniform(key, (size,)), p.num_mines)[1]
  mines = jnp.zeros((size,), bool).at[idx].set(True)
  return _obs(jnp.zeros((), jnp.int32), p), _state(mines, p)


def step(key, state: State, action, p: Params):
  del key
  max_len = _max_len(p)
  success = 1.0 / max_len
  a = jnp.asarray(action, jnp.int32)
  mine, seen = state.mines[a], state.viewed[a]
  new = ~mine & ~seen
  num_viewed = state.num_viewed + new.astype(jnp.int32)
  timestep = state.timestep + 1
  reward = jnp.where(
    mine, np.float32(-0.5 - success), jnp.where(seen, np.float32(-0.5 / (max_len - 2)), np.float32(success))
  )
  terminated = mine | (num_viewed == max_len)
  truncated = (timestep == max_len) & ~terminated
  nxt = State(state.mines, state.viewed.at[a].set(seen | new), state.counts, num_viewed, timestep)
  return _obs(state.counts[a], p), nxt, reward, terminated, truncated
