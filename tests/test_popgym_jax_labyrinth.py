"""POPGym LabyrinthEscape and LabyrinthExplore in JAX against the ``popgym`` package (and mazelib).

* Episodes: the JAX state is built from the package env's maze and start right after its reset
  (the module's ``init_state``); both are stepped with the same random and scripted actions over
  whole episodes (the shortest way out / a depth-first tour of the maze, at once or after bumping
  the border until the last step, which then both terminates and truncates). Seeds are chosen so
  the start lies on each of the four sides (the package's shifted 3 x 3 view on the top row / left
  column shows there).
* Reset: the maze generator's random streams (Python ``random``, numpy) cannot be aligned with
  ``jax.random``, so the JAX reset's random words are replayed through the package's own reset
  (mazelib's ``randrange`` / ``choice`` patched to return them, its ``shuffle`` to keep mazelib's
  neighbour order): the same maze, start, exit and first observation come out. Hunts that run out
  of budget (mazelib's unvisited cells) are replayed with crafted words. The JAX mazes are also
  checked structurally (border and lattice walls, a spanning tree of squares, entrances) and
  against the package's own draws statistically (dead ends, length of the way out).
"""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import mazelib.generate.HuntAndKill as mazelib_hak
import mazelib.generate.MazeGenAlgo as mazelib_algo
import mazelib.mazelib as mazelib_maze
import numpy as np
import pytest
from scipy import stats

from rtrl_rl.envs import _popgym, popgym_jax
from rtrl_rl.envs.popgym_jax import _maze, labyrinth_escape, labyrinth_explore
from tests._popgym_reference import assert_same_episode, encode, jax_episode, reference, reference_episode

TASKS = ("LabyrinthEscape", "LabyrinthExplore")
TASK_LEVELS = [(t, lv) for t in TASKS for lv in _popgym.LEVELS]
MOVES = ((0, -1), (0, 1), (-1, 0), (1, 0))  # LEFT RIGHT UP DOWN as (dy, dx)
BACK = (1, 0, 3, 2)
OUTWARD = (2, 3, 0, 1)  # per start side (north, south, west, east): the move off the border


def _side(start, hh, ww):
  y, x = start
  return 0 if y == 0 else 1 if y == hh - 1 else 2 if x == 0 else 3


def _distances(free, src):
  """int [B, H, W] BFS distances over ``free`` bool [B, H, W] from ``src`` [B, 2] (-1: none)."""
  b = np.arange(len(free))
  dist = np.full(free.shape, -1)
  dist[b, src[:, 0], src[:, 1]] = 0
  front, d = dist == 0, 0
  while front.any():
    d += 1
    nb = np.zeros_like(front)
    nb[:, 1:] |= front[:, :-1]
    nb[:, :-1] |= front[:, 1:]
    nb[:, :, 1:] |= front[:, :, :-1]
    nb[:, :, :-1] |= front[:, :, 1:]
    front = nb & free & (dist < 0)
    dist[front] = d
  return dist


def _way_out(grid, start, end):
  """The actions of the shortest way from ``start`` to ``end``."""
  dist = _distances((grid != _maze.OBSTACLE)[None], np.array([end]))[0]
  (y, x), actions = start, []
  while (y, x) != tuple(end):
    a = next(
      a
      for a, (dy, dx) in enumerate(MOVES)
      if 0 <= y + dy < grid.shape[0]
      and 0 <= x + dx < grid.shape[1]
      and dist[y + dy, x + dx] == dist[y, x] - 1
    )
    actions.append(a)
    y, x = y + MOVES[a][0], x + MOVES[a][1]
  return actions


def _tour(grid, start):
  """A depth-first tour of the non-wall squares from ``start``, cut at its last new square."""
  seen, actions, last = {tuple(start)}, [], [0]

  def visit(y, x):
    for a, (dy, dx) in enumerate(MOVES):
      ny, nx = y + dy, x + dx
      if (
        0 <= ny < grid.shape[0]
        and 0 <= nx < grid.shape[1]
        and grid[ny, nx] != _maze.OBSTACLE
        and (ny, nx) not in seen
      ):
        seen.add((ny, nx))
        actions.append(a)
        last[0] = len(actions)
        visit(ny, nx)
        actions.append(BACK[a])

  visit(*start)
  return actions[: last[0]]


@functools.cache
def _init_state(task, level):
  mod, p = popgym_jax.task_module(task), popgym_jax.params(task, level)
  return jax.jit(lambda grid, start: mod.init_state(grid, start, p))


def _aligned(task, level, seed):
  """The package env reset with ``seed`` and the JAX state of its maze (first obs checked)."""
  env, obs0 = reference(task, level, seed)
  obs, state = _init_state(task, level)(env.maze.grid.astype(np.int32), np.array(env.maze.start, np.int32))
  np.testing.assert_array_equal(np.asarray(obs), obs0)
  if task == "LabyrinthExplore":
    assert state.new_reward == np.float32(env.pos_reward_scale)
    assert state.left == (env.maze.grid != _maze.OBSTACLE).sum() - env.explored.sum()
  return env, state


@pytest.mark.parametrize("task,level", TASK_LEVELS)
def test_spaces(task, level):
  enc = _popgym.encoding(task, level)
  obs_space, act_space = popgym_jax.task_module(task).spaces(popgym_jax.params(task, level))
  assert obs_space == enc.observation_space
  assert act_space == enc.action_space


@pytest.mark.parametrize("task,level", TASK_LEVELS)
def test_episodes_match_package(task, level):
  p = popgym_jax.params(task, level)
  hh, ww = _maze.grid_shape(p)
  horizon = p.episode_length - 1  # the package truncates on curr_step == L - 1
  seeds, seed = {}, 0
  while len(seeds) < 4:  # a start on each side
    env, _ = reference(task, level, seed)
    seeds.setdefault(_side(env.maze.start, hh, ww), seed)
    seed += 1
  for side, seed in sorted(seeds.items()):
    env, state = _aligned(task, level, seed)
    grid, start = env.maze.grid.copy(), env.maze.start
    if task == "LabyrinthEscape":
      route = _way_out(grid, start, env.maze.end)
    else:
      route = _tour(grid, start)
    bump = OUTWARD[side]
    episodes = {
      "random": np.random.default_rng(seed).integers(0, 4, horizon),
      "direct": route,
    }
    if side == min(seeds):
      episodes["late"] = [bump] * (horizon - len(route)) + route
    for name, actions in episodes.items():
      env.reset(seed=seed)
      np.testing.assert_array_equal(env.maze.grid, grid)
      ref = reference_episode(env, task, level, actions)
      padded = np.zeros(horizon, np.int32)
      padded[: len(actions)] = actions
      assert_same_episode(ref, jax_episode(task, level, state, padded))
      _, rew, term, trunc = ref
      if name == "direct":
        assert len(rew) == len(actions) and term[-1] and not trunc[-1]
      elif name == "late":
        assert len(rew) == horizon and term[-1] and trunc[-1]
      else:
        assert term[-1] or (len(rew) == horizon and trunc[-1])
      if name != "random" and task == "LabyrinthExplore":
        assert np.isclose(rew[rew > 0].sum(), 1.0, atol=1e-5)  # all of N squares
      if name != "random" and task == "LabyrinthEscape":
        assert rew[-1] == np.float32(1 - 1 / p.episode_length)


def _replay_draws(words, h, w, with_entrances=True):
  """The ``randrange`` returns and ``choice`` words under which mazelib (and popgym's reset)
  reproduce the JAX maze drawn from ``words`` (uint32, :func:`_maze.hunt_and_kill`'s layout
  then three for the entrances)."""
  words = np.asarray(words, np.uint64)
  n, hw = h * w, (2 * h + 1) * (2 * w + 1)
  cells = words[: 1 + hw] % n
  draws = [int(v) for c in cells for v in (2 * (c // w) + 1, 2 * (c % w) + 1)]
  if with_entrances:
    side = int(words[n + hw] % 4)
    along = w if side < 2 else h
    draws += [side] + [2 * int(v % along) + 1 for v in words[n + hw + 1 : n + hw + 3]]
  return draws, [int(v) for v in words[1 + hw : n + hw]]


def _patch_mazelib(monkeypatch, draws, choices):
  """Make mazelib draw ``draws`` (randrange) and pick ``choices[i] % k`` (choice) in order."""
  d_it, c_it = iter(draws), iter(choices)
  monkeypatch.setattr(mazelib_hak, "randrange", lambda *a: next(d_it))
  monkeypatch.setattr(mazelib_maze, "randrange", lambda *a: next(d_it))
  monkeypatch.setattr(mazelib_hak, "choice", lambda seq: seq[next(c_it) % len(seq)])
  monkeypatch.setattr(mazelib_algo, "shuffle", lambda seq: None)
  return d_it, c_it


@pytest.mark.parametrize("level", _popgym.LEVELS)
def test_reset_replays_package_and_is_a_perfect_maze(level, monkeypatch):
  p = _maze.LEVELS[level]
  h, w = _maze.cells(p)
  hh, ww = _maze.grid_shape(p)
  m = _maze.num_words(h, w)
  num = 256

  @jax.jit
  @jax.vmap
  def resets(key):
    return (
      labyrinth_escape.reset(key, p),
      labyrinth_explore.reset(key, p),
      jax.random.bits(key, (m + 3,), jnp.uint32),
    )

  keys = jax.random.split(jax.random.PRNGKey(list(_popgym.LEVELS).index(level)), num)
  (o_esc, s_esc), (o_exp, s_exp), words = jax.device_get(resets(keys))
  for s in (s_esc, s_exp):
    assert s.grid.shape == (num, hh + 1, ww + 1)
    assert (s.grid[:, hh] == 1).all() and (s.grid[:, :, ww] == 1).all()  # the padding
  g_esc, g_exp = s_esc.grid[:, :hh, :ww], s_exp.grid[:, :hh, :ww]
  start = s_esc.pos
  np.testing.assert_array_equal(s_exp.pos, start)
  b = np.arange(num)
  assert (g_esc[b, start[:, 0], start[:, 1]] == _maze.START).all()
  goal = np.argwhere(g_esc == _maze.GOAL)
  np.testing.assert_array_equal(goal[:, 0], b)  # one GOAL per maze
  end = goal[:, 1:]
  # Explore: the same maze, the end square left a wall.
  assert (g_exp[b, end[:, 0], end[:, 1]] == _maze.OBSTACLE).all()
  np.testing.assert_array_equal(np.where(g_esc == _maze.GOAL, 1, g_esc), g_exp)

  # Entrances: opposite sides, odd coordinates along them; uniform sides and offsets.
  sides = np.array([_side(s, hh, ww) for s in start])
  end_sides = np.array([_side(e, hh, ww) for e in end])
  np.testing.assert_array_equal(end_sides, sides ^ 1)
  along = np.where(
    sides[:, None] < 2, np.stack([start[:, 1], end[:, 1]], 1), np.stack([start[:, 0], end[:, 0]], 1)
  )
  assert (along % 2 == 1).all()
  assert stats.chisquare(np.bincount(sides, minlength=4)).pvalue > 1e-4
  assert stats.chisquare(np.bincount(along.ravel() // 2, minlength=w)).pvalue > 1e-4

  # A perfect maze: walls on the border (but the entrances) and at even-even squares, every
  # cell open, and the open squares a tree.
  walls = g_esc == _maze.OBSTACLE
  border = np.ones((hh, ww), bool)
  border[1:-1, 1:-1] = False
  assert (walls[:, border].sum(1) == border.sum() - 2).all()
  assert walls[:, ::2, ::2].all()
  assert (~walls[:, 1::2, 1::2]).all()  # mazelib's unvisited-cell risk: never in 20000 draws
  free = ~walls
  edges = (free[:, 1:] & free[:, :-1]).sum((1, 2)) + (free[:, :, 1:] & free[:, :, :-1]).sum((1, 2))
  np.testing.assert_array_equal(edges, free.sum((1, 2)) - 1)
  dist = _distances(free, start)
  assert ((dist >= 0) == free).all()

  # Explore's counters; the first obs is the package's get_obs of the maze.
  np.testing.assert_array_equal(s_exp.left, free.sum((1, 2)) - 2)  # the end is a wall there
  np.testing.assert_array_equal(s_exp.new_reward, (1 / (g_exp == 0).sum((1, 2))).astype(np.float32))
  assert (s_exp.explored.sum((1, 2)) == 1).all()
  assert s_exp.explored[b, start[:, 0], start[:, 1]].all()
  for task, grids, obs in (("LabyrinthEscape", g_esc, o_esc), ("LabyrinthExplore", g_exp, o_exp)):
    enc = _popgym.encoding(task, level)
    env = _popgym.env_class(task, level)()
    for i in range(num):
      env.maze, env.position = types.SimpleNamespace(grid=grids[i]), tuple(start[i])
      np.testing.assert_array_equal(obs[i], encode(enc, env.get_obs(_maze.NONE)))

  # The package's own reset, fed the JAX reset's random words, gives the same episode start.
  for i in range(6):
    for task, s, obs in (("LabyrinthEscape", s_esc, o_esc), ("LabyrinthExplore", s_exp, o_exp)):
      env = _popgym.env_class(task, level)()
      d_it, c_it = _patch_mazelib(monkeypatch, *_replay_draws(words[i], h, w))
      o, _ = env.reset()
      assert next(d_it, None) is None and next(c_it, None) is None  # all words used
      np.testing.assert_array_equal(env.maze.grid, s.grid[i, :hh, :ww])
      assert env.maze.start == tuple(start[i]) and env.maze.end == tuple(end[i])
      np.testing.assert_array_equal(encode(_popgym.encoding(task, level), o), obs[i])
      monkeypatch.undo()

  # Against the package's own random draws: dead ends and length of the way out.
  env = _popgym.env_class("LabyrinthEscape", level)()
  ref_grids, ref_start, ref_end = [], [], []
  for seed in range(200):
    env.reset(seed=10_000 + seed)
    ref_grids.append(env.maze.grid.copy())
    ref_start.append(env.maze.start)
    ref_end.append(env.maze.end)
  ref_grids, ref_start, ref_end = np.array(ref_grids), np.array(ref_start), np.array(ref_end)

  def features(grids, starts, ends):
    fr = grids != _maze.OBSTACLE
    pad = np.pad(fr, ((0, 0), (1, 1), (1, 1)))
    degree = pad[:, :-2, 1:-1].astype(int) + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
    dead_ends = ((degree == 1) & fr)[:, 1::2, 1::2].sum((1, 2))
    way_out = _distances(fr, starts)[np.arange(len(grids)), ends[:, 0], ends[:, 1]]
    return dead_ends, way_out

  for ours, theirs in zip(features(g_esc, start, end), features(ref_grids, ref_start, ref_end)):
    se = np.sqrt(ours.var() / len(ours) + theirs.var() / len(theirs))
    assert abs(ours.mean() - theirs.mean()) < 4.5 * se, (ours.mean(), theirs.mean(), se)


def test_hunt_and_kill_budget_replays_mazelib(monkeypatch):
  """Crafted words whose hunts mostly miss: mazelib leaves cells unvisited (walls), exactly as
  the JAX generator does when its ``H * W`` hunts run out."""
  h = w = 5
  n, m = h * w, _maze.num_words(h, w)
  hw = (2 * h + 1) * (2 * w + 1)
  rng = np.random.default_rng(0)
  num = 24
  words = rng.integers(0, 2**32, (num, m), dtype=np.uint64).astype(np.uint32)
  for i in range(num):  # hunts among a few cells (the first one among them); the last one free
    pool = rng.integers(0, n, i % 3 + 1)
    words[i, 1:hw] = rng.choice(np.append(pool, words[i, 0] % n), hw - 1)
  # The same words but for the last hunt (it must matter somewhere: the budget's end is tested).
  other = words.copy()
  other[:, hw] += 1
  grids = np.asarray(
    jax.jit(jax.vmap(lambda b: _maze.hunt_and_kill(b, h, w)))(np.concatenate([words, other]))
  )
  assert (grids[:num] != grids[num:]).any()
  words = np.concatenate([words, other])
  incomplete = 0
  for i in range(len(words)):
    d_it, c_it = _patch_mazelib(monkeypatch, *_replay_draws(words[i], h, w, False))
    ref = mazelib_hak.HuntAndKill(w, h).generate()
    assert next(d_it, None) is None  # exactly H * W hunts
    carved = (ref[1::2, 1::2] == 0).sum() - 1
    assert len(list(c_it)) == h * w - 1 - carved
    np.testing.assert_array_equal(grids[i], ref == 0)
    incomplete += int(carved < h * w - 1)
    monkeypatch.undo()
  assert incomplete >= 3
