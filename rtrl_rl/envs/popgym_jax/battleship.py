"""POPGym Battleship in JAX (``popgym.envs.battleship``): guess ship tiles on a hidden board.

Rules (the package's): an ``n x n`` board holds ships of sizes ``(2, 3, 3, 4)`` (12 tiles), each
a straight line along a row or a column; ships may touch but not overlap. Each step the agent
guesses one tile; it is a hit when the tile holds a ship and was not guessed before (a repeated
guess of a ship tile is a miss).

* Observation: the outcome of the last guess, one-hot float32 ``[2]`` (``[1, 0]`` miss,
  ``[0, 1]`` hit); the first observation is a miss.
* Action: the tile, ``Discrete(n * n)`` row-major (``a = row * n + col``; the package's
  ``MultiDiscrete([n, n])``).
* Reward: ``+1 / 12`` for a hit, ``-1 / (n * n - 12)`` for a miss (all hits sum to 1; guessing
  every tile once sums to 0).
* End: ``terminated`` when all 12 ship tiles are hit; ``truncated`` after ``n * n`` guesses.
  Both are returned raw: the package can return both True on the ``n * n``-th guess.

Ship placement at reset: the package places the ships in order, each by rejection (a start tile
uniform on the board, an axis and a sign uniform, retried until the ship is in bounds and
overlaps no earlier ship). Each legal placement is reached by exactly two accepted draws (either
end as the start; every size is at least 2), so the package samples each ship uniformly among its
legal placements given the earlier ships; :func:`_place_ships` samples that distribution directly
(one 32-bit draw modulo the number of legal placements: relative bias below ``2**-23``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space


class Params(NamedTuple):
  board_size: int
  ship_sizes: tuple[int, ...] = (2, 3, 3, 4)


LEVELS = {"easy": Params(8), "medium": Params(10), "hard": Params(12)}


class State(NamedTuple):
  """board, guesses: bool [n * n] (tile ``(r, c)`` at ``r * n + c``); hits, num_steps:
  int32 []."""

  board: jax.Array
  guesses: jax.Array
  hits: jax.Array
  num_steps: jax.Array


def spaces(p: Params):
  return Space.box((2,), np.float32, 0.0, 1.0), Space.discrete(p.board_size**2)


def _legal(board, size: int, n: int):
  """bool [2, n, n]: a ship of ``size`` along axis ``k`` (0: down a column, 1: along a row)
  with its top/left end at ``(r, c)`` is in bounds and overlaps no ship of ``board`` [n, n]."""
  pad = jnp.pad(board, ((0, size - 1), (0, size - 1)), constant_values=True)
  down = pad[:n, :n]
  right = pad[:n, :n]
  for k in range(1, size):
    down = down | pad[k : k + n, :n]
    right = right | pad[:n, k : k + n]
  return ~jnp.stack([down, right])


def _prefix_sums(x):
  """Inclusive prefix sums of a short int32 vector (a masked sum: cheaper than cumsum on CPU)."""
  m = x.shape[0]
  return jnp.sum(jnp.where(np.tri(m, dtype=bool), x[None, :], 0), 1)


def _place_ships(key, p: Params):
  """The package's reset distribution of boards: returns the board bool [n, n] and the ships
  int32 [num_ships, 3] as ``(axis, row, col)`` of their top/left ends."""
  n = p.board_size
  rows, cols = np.indices((n, n))
  board = jnp.zeros((n, n), bool)
  ships = []
  bits = jax.random.bits(key, (len(p.ship_sizes),), jnp.uint32)
  for b, size in zip(bits, p.ship_sizes):
    # the j-th legal placement (j uniform) in (axis, row) lines of n, then along its line
    legal = _legal(board, size, n).reshape(2 * n, n).astype(jnp.int32)
    upto = _prefix_sums(legal.sum(1))
    j = (b % upto[-1].astype(jnp.uint32)).astype(jnp.int32)
    line = jnp.sum(upto <= j).astype(jnp.int32)
    j = j - upto[line] + legal[line].sum()
    c = jnp.sum(_prefix_sums(legal[line]) <= j).astype(jnp.int32)
    axis, r = line // n, line % n
    down = (cols == c) & (rows >= r) & (rows < r + size)
    right = (rows == r) & (cols >= c) & (cols < c + size)
    board = board | jnp.where(axis == 0, down, right)
    ships.append(jnp.stack([axis, r, c]))
  return board, jnp.stack(ships)


def _obs(hit):
  return jax.nn.one_hot(hit.astype(jnp.int32), 2, dtype=jnp.float32)


def reset(key, p: Params):
  board, _ = _place_ships(key, p)
  zero = jnp.zeros((), jnp.int32)
  state = State(board.reshape(-1), jnp.zeros((p.board_size**2,), bool), zero, zero)
  return _obs(jnp.zeros((), bool)), state


def step(key, state: State, action, p: Params):
  del key
  needed, max_len = sum(p.ship_sizes), p.board_size**2
  a = jnp.asarray(action, jnp.int32)
  hit = state.board[a] & ~state.guesses[a]
  hits = state.hits + hit.astype(jnp.int32)
  num_steps = state.num_steps + 1
  reward = jnp.where(hit, np.float32(1.0 / needed), np.float32(-1.0 / (max_len - needed)))
  new = State(state.board, state.guesses.at[a].set(True), hits, num_steps)
  return _obs(hit), new, reward, hits == needed, num_steps >= max_len
