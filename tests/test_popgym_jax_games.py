"""POPGym in JAX, Battleship / MineSweeper / MultiarmedBandit: equal to the package transition by
transition from the package's own boards and draws, and resets distributed like the package's."""

from __future__ import annotations

import collections
import copy
import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from rtrl_rl.envs import _popgym
from rtrl_rl.envs.popgym_jax import battleship, minesweeper, multiarmed_bandit
from tests._popgym_reference import assert_same_episode, jax_episode, reference, reference_episode

LEVELS = ("easy", "medium", "hard")
MODULES = {"Battleship": battleship, "MineSweeper": minesweeper, "MultiarmedBandit": multiarmed_bandit}
SEEDS = (0, 1, 2, 3)


@pytest.mark.parametrize("task", MODULES)
@pytest.mark.parametrize("level", LEVELS)
def test_spaces_and_dtypes(task, level):
  """Spaces equal the package's encoding; reset/step give float32 obs of that shape, a float32
  reward, bool flags and a state of fixed int32/float32/bool leaves."""
  mod = MODULES[task]
  p = mod.LEVELS[level]
  enc = _popgym.encoding(task, level)
  obs_space, act_space = mod.spaces(p)
  assert (obs_space, act_space) == (enc.observation_space, enc.action_space)
  key = jax.random.PRNGKey(0)
  obs, state = jax.eval_shape(functools.partial(mod.reset, p=p), key)
  out = jax.eval_shape(functools.partial(mod.step, p=p), key, state, jnp.zeros((), jnp.int32))
  for o in (obs, out[0]):
    assert (o.shape, o.dtype) == (obs_space.shape, np.float32)
  assert [(x.shape, x.dtype) for x in out[2:]] == [((), np.float32), ((), bool), ((), bool)]
  assert jax.tree.structure(out[1]) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(out[1])):
    assert (a.shape, a.dtype) == (b.shape, b.dtype) and a.dtype in (np.int32, np.float32, bool)


@functools.cache
def _reset_fn(mod, p):
  return jax.jit(functools.partial(mod.reset, p=p))


def _first_obs(mod, p):
  return np.asarray(_reset_fn(mod, p)(jax.random.PRNGKey(0))[0])


def _check(task, level, seed, state_of, actions_of):
  """Reset the package with ``seed``, build our state from it, and compare whole episodes."""
  mod = MODULES[task]
  p = mod.LEVELS[level]
  env, obs0 = reference(task, level, seed)
  np.testing.assert_array_equal(_first_obs(mod, p), obs0)
  state = state_of(env)
  actions = actions_of(env)
  ref = reference_episode(env, task, level, actions)
  assert_same_episode(ref, jax_episode(task, level, state, actions))
  return ref


# ----------------------------------------------------------------------------- Battleship


def _bs_state(env):
  n = env.board_size
  z = jnp.zeros((), jnp.int32)
  return battleship.State(jnp.asarray(env.board.reshape(-1) == 1), jnp.zeros((n * n,), bool), z, z)


def _bs_scripts(n, rng):
  """Action sequences (length n * n) given the board: name -> f(board flat) -> actions."""

  def ships_first(b):  # hits with a repeated hit and a miss in between: a quick win
    s, e = np.flatnonzero(b), np.flatnonzero(~b)
    return np.concatenate([s[:3], s[:1], e[:1], s[3:], e[1:]])[: n * n]

  def ship_last(b):  # every tile once, the last ship tile last: terminated and truncated
    s, e = rng.permutation(np.flatnonzero(b)), rng.permutation(np.flatnonzero(~b))
    return np.concatenate([s[:-1], e, s[-1:]])

  return {
    "random": lambda b: rng.integers(0, n * n, n * n),
    "permutation": lambda b: rng.permutation(n * n),
    "ships_first": ships_first,
    "ship_last": ship_last,
  }


@pytest.mark.parametrize("level", LEVELS)
def test_battleship_equals_package(level):
  n = battleship.LEVELS[level].board_size
  rng = np.random.default_rng(1)
  ends = collections.Counter()
  for seed in SEEDS:
    for name, script in _bs_scripts(n, rng).items():
      _, rew, te, tr = _check(
        "Battleship", level, seed, _bs_state, lambda env: script(env.board.reshape(-1) == 1)
      )
      assert te[-1] or tr[-1]
      assert not (te[:-1].any() or tr[:-1].any())
      ends[name, bool(te[-1]), bool(tr[-1]), len(rew) == n * n] += 1
  for seed_count in (
    ends["ships_first", True, False, False],
    ends["ship_last", True, True, True],
    ends["random", False, True, True],
  ):
    assert seed_count == len(SEEDS)


class _Rejected(Exception):
  pass


class _OneDraw:
  """A stand-in ``np_random`` whose first two ``integers`` calls return a given start and
  direction and whose third (the package retrying a rejected placement) raises."""

  def __init__(self, start, direction):
    self._draws = [np.array(start), np.array(direction)]

  def integers(self, *args, **kwargs):
    if not self._draws:
      raise _Rejected
    return self._draws.pop(0)


@pytest.mark.parametrize("level", LEVELS)
def test_battleship_placement_is_the_package_distribution(level):
  """For partial boards drawn by the package, run the package's ``place_ship`` on every one of
  its equally likely (start, direction) draws: the accepted ones give each placement allowed by
  ``_legal`` exactly twice and nothing else, so both sample uniformly over the same set."""
  p = battleship.LEVELS[level]
  n = p.board_size
  cls = _popgym.env_class("Battleship", level)
  gen = cls()
  gen.reset(seed=5)
  for _ in range(2):
    board = np.zeros((n, n), np.int8)
    for size in p.ship_sizes:
      accepted = collections.Counter()
      for start in np.ndindex(n, n):
        for direction in np.ndindex(2, 2):
          fake = types.SimpleNamespace(board_size=n, np_random=_OneDraw(start, direction))
          try:
            placed = cls.place_ship(fake, board.copy(), size)
          except _Rejected:
            continue
          accepted[frozenset(map(tuple, np.argwhere(placed != board)))] += 1
      legal = np.asarray(battleship._legal(jnp.asarray(board == 1), size, n))
      ours = set()
      for axis, r, c in np.argwhere(legal):
        cells = [(r + k, c) if axis == 0 else (r, c + k) for k in range(size)]
        ours.add(frozenset(cells))
      assert len(ours) == legal.sum() > 0
      assert set(accepted) == ours and set(accepted.values()) == {2}
      board = gen.place_ship(board, size)


def _adjacent_pairs(boards):
  return (boards[:, 1:, :] & boards[:, :-1, :]).sum((1, 2)) + (boards[:, :, 1:] & boards[:, :, :-1]).sum(
    (1, 2)
  )


@pytest.mark.parametrize("level", LEVELS)
def test_battleship_reset_distribution(level):
  """Our boards hold legal ships (in bounds, not overlapping) and match the package's boards in
  per-tile occupancy and in how often ship tiles touch, within 5 standard errors."""
  p = battleship.LEVELS[level]
  n, m = p.board_size, 6000
  keys = jax.random.split(jax.random.PRNGKey(3), m)
  boards, ships = jax.jit(jax.vmap(lambda k: battleship._place_ships(k, p)))(keys)
  boards, ships = np.asarray(boards), np.asarray(ships)
  for i in range(3):  # reset's board is _place_ships'
    state = _reset_fn(battleship, p)(keys[i])[1]
    np.testing.assert_array_equal(np.asarray(state.board), boards[i].reshape(-1))
  sizes = np.array(p.ship_sizes)
  axis, r, c = ships[..., 0], ships[..., 1], ships[..., 2]
  assert set(np.unique(axis)) == {0, 1} and (r >= 0).all() and (c >= 0).all()
  assert (np.where(axis == 0, r, c) + sizes <= n).all()
  assert (boards.sum((1, 2)) == sizes.sum()).all()  # in bounds and no overlap
  for i in range(0, m, 997):  # the board is the union of the ships
    b = np.zeros((n, n), bool)
    for (a, rr, cc), s in zip(ships[i], sizes):
      b[rr : rr + (s if a == 0 else 1), cc : cc + (s if a == 1 else 1)] = True
    np.testing.assert_array_equal(b, boards[i])

  env = _popgym.env_class("Battleship", level)()
  env.reset(seed=11)
  ref = []
  for _ in range(1500):
    env.reset()
    ref.append(env.board == 1)
  ref = np.array(ref)
  for ours, theirs in (
    (boards.reshape(m, -1), ref.reshape(len(ref), -1)),
    (_adjacent_pairs(boards)[:, None], _adjacent_pairs(ref)[:, None]),
  ):
    se = np.sqrt(ours.var(0) / len(ours) + theirs.var(0) / len(theirs))
    assert (np.abs(ours.mean(0) - theirs.mean(0)) < 5 * se + 1e-9).all()


# ----------------------------------------------------------------------------- MineSweeper


def _ms_state(env, p):
  state = minesweeper._state(jnp.asarray(env.hidden_grid.reshape(-1) == 1), p)
  # the quirk: counts include the tile itself, as the package's neighbor_grid
  np.testing.assert_array_equal(np.asarray(state.counts), env.neighbor_grid.reshape(-1))
  return state


def _ms_scripts(size, max_len, rng):
  def free(g):
    return rng.permutation(np.flatnonzero(g.reshape(-1) != 1))

  def mines(g):
    return np.flatnonzero(g.reshape(-1) == 1)

  def pad(a):
    return np.concatenate([a, rng.integers(0, size, max_len)])[:max_len]

  def repeat(g):  # one wasted click: the last free tile is never reached
    f = free(g)
    return pad(np.concatenate([f[:2], f[:1], f[2:]]))

  return {
    "random": lambda g: rng.integers(0, size, max_len),
    "win": free,  # every free tile once: terminated on the last, not truncated
    "repeat": repeat,
    "mine": lambda g: pad(np.concatenate([free(g)[:3], mines(g)[:1]])),
    "free_random": lambda g: free(g)[rng.integers(0, max_len, max_len)],
  }


@pytest.mark.parametrize("level", LEVELS)
def test_minesweeper_equals_package(level):
  p = minesweeper.LEVELS[level]
  size, max_len = p.dims[0] * p.dims[1], minesweeper._max_len(p)
  rng = np.random.default_rng(2)
  ends = collections.Counter()
  for seed in SEEDS:
    for name, script in _ms_scripts(size, max_len, rng).items():
      _, rew, te, tr = _check(
        "MineSweeper", level, seed, lambda env: _ms_state(env, p), lambda env: script(env.hidden_grid)
      )
      assert te[-1] != tr[-1] and not (te[:-1].any() or tr[:-1].any())
      ends[name, bool(te[-1]), len(rew)] += 1
  assert ends["win", True, max_len] == len(SEEDS)
  assert ends["repeat", False, max_len] == len(SEEDS)  # one wasted click: truncated
  assert ends["mine", True, 4] == len(SEEDS)


@pytest.mark.parametrize("level", LEVELS)
def test_minesweeper_reset_distribution(level):
  """Exactly ``k`` mines, a uniformly random set (the package's choice without replacement):
  per-tile frequency ``k / (h * w)`` within 5 standard errors, and (easy) a chi-square test of
  the frequencies of all mine sets."""
  p = minesweeper.LEVELS[level]
  size, k, m = p.dims[0] * p.dims[1], p.num_mines, 12000
  keys = jax.random.split(jax.random.PRNGKey(4), m)
  obs, states = jax.jit(jax.vmap(lambda key: minesweeper.reset(key, p)))(keys)
  mines = np.asarray(states.mines)
  assert (mines.sum(1) == k).all()
  assert (np.asarray(obs)[:, 0] == 1).all()
  freq = mines.mean(0)
  assert (np.abs(freq - k / size) < 5 * np.sqrt(k / size * (1 - k / size) / m)).all()
  if level == "easy":
    counts = collections.Counter(map(tuple, np.argwhere(mines)[:, 1].reshape(m, k)))
    observed = np.array(list(counts.values()) + [0] * (math.comb(size, k) - len(counts)))
    assert stats.chisquare(observed).pvalue > 1e-4


# ----------------------------------------------------------------------------- MultiarmedBandit


@functools.cache
def _bandit_scan(level):
  p = multiarmed_bandit.LEVELS[level]

  def run(state, actions, draws):
    def body(s, xs):
      o, s, r, te, tr = multiarmed_bandit._transition(s, xs[0], xs[1], p)
      return s, (o, r, te, tr)

    return jax.lax.scan(body, state, (actions, draws))[1]

  return jax.jit(run)


@pytest.mark.parametrize("level", LEVELS)
def test_bandit_equals_package_given_its_draws(level):
  """The package's recorded uniform draws (float64, compared exactly under x64) fed to
  ``_transition``; the production float32 step ends its episodes at the same step."""
  p = multiarmed_bandit.LEVELS[level]
  k, length = p.num_bandits, p.episode_length
  rng = np.random.default_rng(3)
  for seed in SEEDS:
    env, obs0 = reference("MultiarmedBandit", level, seed)
    np.testing.assert_array_equal(_first_obs(multiarmed_bandit, p), obs0)
    draws = copy.deepcopy(env.np_random).random(length)
    best = int(np.argmax(env.bandits))
    for actions in (rng.integers(0, k, length), np.full(length, best)):
      ref = reference_episode(env, "MultiarmedBandit", level, actions)
      with jax.enable_x64(True):
        state = multiarmed_bandit.State(jnp.asarray(env.bandits, jnp.float32), jnp.zeros((), jnp.int32))
        ours = _bandit_scan(level)(state, jnp.asarray(actions, jnp.int32), jnp.asarray(draws, jnp.float64))
        ours = tuple(np.asarray(x) for x in ours)
      assert_same_episode(ref, ours)
      assert len(ref[1]) == length and ref[3][-1] and not ref[3][:-1].any()
      assert not ref[2].any()
      env.reset(seed=seed)
      draws = copy.deepcopy(env.np_random).random(length)
    state = multiarmed_bandit.State(jnp.asarray(env.bandits), jnp.zeros((), jnp.int32))
    _, rew, te, tr = jax_episode("MultiarmedBandit", level, state, np.full(length, best))
    assert not te.any() and tr[-1] and not tr[:-1].any()
    assert set(np.unique(rew)) <= {np.float32(1 / length), np.float32(-1 / length)}


@pytest.mark.parametrize("level", LEVELS)
def test_bandit_draws_distribution(level):
  """Reset: payout probabilities uniform on [0, 1) like the package's (two-sample KS test);
  step: each arm pays out at its probability (within 5 standard errors)."""
  p = multiarmed_bandit.LEVELS[level]
  k = p.num_bandits
  keys = jax.random.split(jax.random.PRNGKey(5), 4000)
  _, states = jax.jit(jax.vmap(lambda key: multiarmed_bandit.reset(key, p)))(keys)
  ours = np.asarray(states.bandits)
  assert ours.dtype == np.float32 and (ours >= 0).all() and (ours < 1).all()
  env = _popgym.env_class("MultiarmedBandit", level)()
  env.reset(seed=12)
  theirs = np.concatenate([env.reset()[1]["bandits"] for _ in range(1000)])
  assert stats.ks_2samp(ours.reshape(-1), theirs).pvalue > 1e-4

  state = multiarmed_bandit.State(states.bandits[0], jnp.zeros((), jnp.int32))
  m = 4000
  step = jax.vmap(lambda key, a: multiarmed_bandit.step(key, state, a, p)[2])
  rew = np.asarray(
    jax.jit(step)(jax.random.split(jax.random.PRNGKey(6), m * k), jnp.tile(jnp.arange(k), m))
  ).reshape(m, k)
  paid = (rew > 0).mean(0)
  b = ours[0]
  assert (np.abs(paid - b) < 5 * np.sqrt(b * (1 - b) / m) + 1e-3).all()
