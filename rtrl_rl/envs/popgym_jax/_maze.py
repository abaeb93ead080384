"""The maze shared by LabyrinthEscape and LabyrinthExplore (``popgym.core.maze``) in JAX.

Maze (the package's ``MazeEnv.reset``: mazelib's ``HuntAndKill`` with its default random hunt
order, then ``generate_entrances(start_outer=True)``): for ``maze_dims = (a, b)`` the lattice has
``h x w = a // 2 x b // 2`` cells and the grid ``H x W = 2h + 1 x 2w + 1`` squares; cell ``(i, j)``
is square ``(2i + 1, 2j + 1)``, the squares between two cells are the walls that passages carve,
squares with two even coordinates are always walls and so is the outer border.

* HuntAndKill: carve a random first cell, random-walk from it (each step moves to a uniformly
  random unvisited neighbour cell, carving it and the wall between) until stuck; then exactly
  ``H * W`` hunts each draw a uniform cell and walk from it (a hunt that draws an unvisited cell,
  or a visited one without unvisited neighbours, does nothing). Cells no walk reached stay walls
  (mazelib's accepted risk; never seen in 20000 mazes of each level), so the free squares form a
  tree, spanning in practice. Here the hunt cells are drawn up front and a bounded loop carves one
  cell per iteration; a stuck walk jumps to the first later hunt cell that can walk, searched in
  windows of ``_HUNT_WINDOW`` hunts (the grid does not change while hunts miss): the same
  algorithm, draw for draw (the tests replay these draws through mazelib), in at most
  ``h * w - 1 + ceil(H * W / _HUNT_WINDOW)`` iterations. Draws are uint32 words of one
  ``jax.random.bits`` call taken modulo their range (bias below ``range / 2**32``).
* Entrances: a uniform side (north, south, west, east) holds the start, the opposite side the end,
  each at a uniform odd coordinate along it, on the border itself (a wall square before the env
  marks it). The start square becomes ``START``; positions are ``(y, x) = (row, col)``.

Cell codes: FREE 0, OBSTACLE 1, START 2, GOAL 3 (HIDDEN 4 never shows). States store the grid
padded with one row and column of walls below and to the right, int32 ``[H + 1, W + 1]``.

Observation: the 3 x 3 view around the agent, row-major, then the previous action (``NONE = 4``
after reset), each one-hot over 5: float32 ``[50]`` (the package's ``MultiDiscrete([5] * 10)``).
Package quirk followed: the view is the slice ``grid[max(y-1, 0) : y+2, max(x-1, 0) : x+2]``
padded with walls at its bottom / right, so on the top row (``y = 0``) or left column
(``x = 0``) it is shifted: the agent's square is the top / left of the view, not its centre.
Actions: ``Discrete(4)``: LEFT 0, RIGHT 1, UP 2, DOWN 3; a move is clamped to the grid, and a
move into a wall (OBSTACLE only) stays put.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space

FREE, OBSTACLE, START, GOAL = 0, 1, 2, 3  # (HIDDEN 4 is never observed)
NONE = 4  # the "previous action" of the first observation
NUM_CODES = 5
_HUNT_WINDOW = 32  # hunts examined per generator iteration

# (dy, dx) of the actions LEFT, RIGHT, UP, DOWN.
_MOVES = np.array([[0, -1], [0, 1], [-1, 0], [1, 0]], np.int32)


class Params(NamedTuple):
  maze_dims: tuple[int, int]
  episode_length: int


LEVELS = {"easy": Params((10, 10), 1024), "medium": Params((14, 14), 1024), "hard": Params((18, 18), 1024)}


def cells(p: Params) -> tuple[int, int]:
  """(h, w): the lattice of maze cells."""
  return p.maze_dims[0] // 2, p.maze_dims[1] // 2


def grid_shape(p: Params) -> tuple[int, int]:
  """(H, W): the grid of squares, walls included."""
  h, w = cells(p)
  return 2 * h + 1, 2 * w + 1


def spaces(p: Params):
  del p
  return Space.box((10 * NUM_CODES,), np.float32, 0.0, 1.0), Space.discrete(4)


def _uniform(bits, m):
  """int32 uniform on {0..m-1} from uint32 words (modulo bias below m / 2**32, negligible)."""
  return (bits % jnp.asarray(m).astype(jnp.uint32)).astype(jnp.int32)


def num_words(h: int, w: int) -> int:
  """uint32 random words :func:`hunt_and_kill` takes for ``h x w`` cells."""
  return h * w + (2 * h + 1) * (2 * w + 1)


def hunt_and_kill(bits, h: int, w: int):
  """bool [2h + 1, 2w + 1]: the free squares of a HuntAndKill maze of ``h x w`` cells.

  ``bits`` uint32 [num_words(h, w)] (one draw for the whole reset compiles faster): the first
  cell (``row * w + col``), the ``H * W`` hunt cells, then one word per carved cell choosing the
  ``(word % k)``-th of the ``k`` unvisited neighbours in mazelib's order (up, down, left, right).
  """
  hh, ww = 2 * h + 1, 2 * w + 1
  n, num_hunts = h * w, hh * ww
  first = _uniform(bits[0], n)
  # Hunt cells, padded with the never-active cell n so a window never runs off the end.
  hunts = jnp.concatenate([_uniform(bits[1 : 1 + num_hunts], n), jnp.full((_HUNT_WINDOW,), n, jnp.int32)])
  choice = bits[1 + num_hunts :]
  rows = jnp.arange(hh, dtype=jnp.int32)[:, None]
  cols = jnp.arange(ww, dtype=jnp.int32)[None, :]
  dirs = _MOVES[[2, 3, 0, 1]]  # up, down, left, right
  dy, dx = jnp.asarray(dirs[:, 0]), jnp.asarray(dirs[:, 1])

  def square(r, c):
    return (rows == r) & (cols == c)

  def body(_, carry):
    free, cur, ptr, done, carved = carry
    vis = free[1::2, 1::2]
    unv = jnp.pad(~vis, 1)  # outside the lattice counts as visited
    # opened[d, cell]: the cell has an unvisited neighbour in direction d (up down left right)
    opened = jnp.stack(
      [unv[0:h, 1 : w + 1], unv[2:, 1 : w + 1], unv[1 : h + 1, 0:w], unv[1 : h + 1, 2:]]
    ).reshape(4, n)
    stuck = ~opened[:, cur].any()
    # Hunt: the first cell of the window from ptr on that is visited and can walk.
    can_walk = jnp.append(vis.reshape(n) & opened.any(0), False)
    window = jax.lax.dynamic_slice(hunts, (ptr,), (_HUNT_WINDOW,))
    can = can_walk[window]
    j = jnp.argmax(can).astype(jnp.int32)
    found = can[j]
    done = done | (stuck & (ptr >= num_hunts))
    walk = ~done & (~stuck | found)
    cur = jnp.where(stuck & found, window[j], cur)
    ptr = jnp.where(stuck, jnp.where(found, ptr + j + 1, jnp.minimum(ptr + _HUNT_WINDOW, num_hunts)), ptr)
    # Walk one step to a uniform unvisited neighbour.
    cand = opened[:, cur]
    k = _uniform(choice[jnp.minimum(carved, n - 2)], jnp.maximum(cand.sum(), 1))
    d = jnp.argmax(cand & (jnp.cumsum(cand) == k + 1))
    r, c = 2 * (cur // w) + 1, 2 * (cur % w) + 1
    carve = square(r + 2 * dy[d], c + 2 * dx[d]) | square(r + dy[d], c + dx[d])
    free = free | (carve & walk)
    cur = jnp.where(walk, cur + dy[d] * w + dx[d], cur)
    return free, cur, ptr, done, carved + walk

  r0, c0 = 2 * (first // w) + 1, 2 * (first % w) + 1
  zero = jnp.zeros((), jnp.int32)
  init = (square(r0, c0), first, zero, jnp.zeros((), bool), zero)
  steps = n - 1 + -(-num_hunts // _HUNT_WINDOW)  # carves + windows passed over, at most
  return jax.lax.fori_loop(0, steps, body, init)[0]


def entrances(bits, hh: int, ww: int):
  """int32 [2] start and end squares (y, x) from ``bits`` uint32 [3]: on opposite sides of the
  border, each at a uniform odd coordinate along it."""
  side = _uniform(bits[0], 4)  # north, south, west, east
  along = jnp.where(side < 2, ww, hh) // 2  # odd positions along that side
  a = 2 * _uniform(bits[1], along) + 1
  b = 2 * _uniform(bits[2], along) + 1
  edge = jnp.where(side < 2, hh, ww) - 1
  near = jnp.where(side % 2 == 0, 0, edge)  # start on north / west: 0
  far = edge - near
  start = jnp.where(side < 2, jnp.stack([near, a]), jnp.stack([a, near]))
  end = jnp.where(side < 2, jnp.stack([far, b]), jnp.stack([b, far]))
  return start.astype(jnp.int32), end.astype(jnp.int32)


def new_maze(key, p: Params, goal: bool):
  """A fresh maze: grid int32 [H, W] of cell codes (START marked; GOAL too where ``goal``),
  start and end int32 [2] (y, x)."""
  h, w = cells(p)
  m = num_words(h, w)
  bits = jax.random.bits(key, (m + 3,), jnp.uint32)
  grid = jnp.where(hunt_and_kill(bits[:m], h, w), FREE, OBSTACLE).astype(jnp.int32)
  start, end = entrances(bits[m:], 2 * h + 1, 2 * w + 1)
  if goal:
    grid = grid.at[end[0], end[1]].set(GOAL)
  return grid.at[start[0], start[1]].set(START), start, end


def pad(grid):
  """The grid [H, W] with a row and a column of walls appended: [H + 1, W + 1]."""
  return jnp.pad(jnp.asarray(grid, jnp.int32), ((0, 1), (0, 1)), constant_values=OBSTACLE)


def move(grid, pos, action):
  """The position after ``action`` from ``pos`` in the padded ``grid`` (clamped; walls block)."""
  hh, ww = grid.shape[0] - 1, grid.shape[1] - 1
  a = jnp.asarray(action, jnp.int32)
  new = pos + jnp.asarray(_MOVES)[a]
  new = jnp.stack([jnp.clip(new[0], 0, hh - 1), jnp.clip(new[1], 0, ww - 1)])
  return jnp.where(grid[new[0], new[1]] == OBSTACLE, pos, new)


def observe(grid, pos, action):
  """float32 [50]: the (package-shifted) 3 x 3 view of the padded ``grid`` and ``action``."""
  y, x = pos[0], pos[1]
  view = jax.lax.dynamic_slice(grid, (jnp.maximum(y - 1, 0), jnp.maximum(x - 1, 0)), (3, 3))
  i = jnp.arange(3)
  view = jnp.where(((i[:, None] == 2) & (y == 0)) | ((i[None, :] == 2) & (x == 0)), OBSTACLE, view)
  codes = jnp.concatenate([view.reshape(9), jnp.asarray(action, jnp.int32)[None]])
  return jax.nn.one_hot(codes, NUM_CODES, dtype=jnp.float32).reshape(-1)
