"""POPGym card tasks in JAX (Autoencode, CountRecall, HigherLower, RepeatFirst, RepeatPrevious,
Concentration) against the ``popgym`` package, card for card.

The JAX decks are shuffled lazily (a Fisher-Yates draw per card dealt; Concentration places a
card when its position is first flipped). An episode is aligned with the package's by feeding the
modules' ``_start`` / ``_transition`` the draws that deal the package env's cards (its shuffled
``Deck.idx`` right after reset, dealt from the end); both are stepped with the same random and
scripted actions over whole episodes, which must match exactly (obs, reward, flags) and leave the
JAX deck in the package's order. Package quirks followed (and checked through the exact match):
Autoencode's play-phase observation ``(0, 0)``; HigherLower's ``1/N`` reward scale over ``N - 1``
guesses; Concentration's ``-2/L`` for flipping a face-up card as the second card of a turn and its
observation showing the cards of the turn that are then turned back down. The draws of ``reset``
and ``step`` themselves are checked to deal uniform permutations, and episode returns of the
wrapped JAX env (autoreset) to agree with the package's within confidence bounds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from popgym.core.deck import Deck
from scipy import stats

from rtrl_rl import envs
from rtrl_rl.envs import _popgym, popgym_jax
from rtrl_rl.envs.popgym_jax import _cards
from tests._popgym_reference import assert_same_episode, reference, reference_episode

TASKS = ("Autoencode", "CountRecall", "HigherLower", "RepeatFirst", "RepeatPrevious", "Concentration")
TASK_LEVELS = [(t, lv) for t in TASKS for lv in _popgym.LEVELS]
SEEDS = (0, 1, 2)


def _decks(task, env):
  """The package env's shuffled deck order(s) (dealt from the end)."""
  if task == "CountRecall":
    return env.value_deck.idx, env.query_deck.idx
  return (env.deck.idx,)


class _Deck:
  """Bookkeeping of a JAX deck dealt by ``_cards.deal`` (Fisher-Yates swaps to the end of the
  undealt part): the draw that deals a given card next."""

  def __init__(self, n):
    self.idx, self.pos, self.left = np.arange(n), np.arange(n), n

  def draw_for(self, card):
    j, last = self.pos[card], self.left - 1
    other = self.idx[last]
    self.idx[j], self.idx[last] = other, card
    self.pos[other], self.pos[card] = j, last
    self.left -= 1
    return j


def _aligned_draws(task, env, actions):
  """The draws that make the JAX env deal the package env's cards: (reset draw, step draws
  [T(, 2)]) for the dealing tasks; (None, step draws) for Concentration, whose layout is drawn
  when a position is first flipped."""
  if task == "Concentration":
    deck, seen, draws = _Deck(len(env.deck.idx)), set(), []
    for a in actions:
      draws.append(0 if a in seen else deck.draw_for(env.deck.idx[a]))
      seen.add(a)
    return None, np.array(draws, np.int32)
  per_deck = []
  for order in _decks(task, env):
    deck = _Deck(len(order))
    per_deck.append([deck.draw_for(c) for c in order[::-1]])
    np.testing.assert_array_equal(deck.idx, order)  # the whole order is the package's
  draws = np.stack(per_deck, axis=-1).astype(np.int32)  # [N, decks]: CountRecall has two
  draws = draws if task == "CountRecall" else draws[:, 0]
  steps = np.zeros((len(actions),) + draws.shape[1:], np.int32)
  steps[: len(draws) - 1] = draws[1:]
  return draws[0], steps


@functools.cache
def _aligned_run(task, level):
  """Jitted: the start (reset draw ``j0``) and a scan of ``_transition`` with given draws."""
  mod, p = popgym_jax.task_module(task), popgym_jax.params(task, level)

  def run(j0, actions, draws):
    obs, state = mod.reset(jax.random.PRNGKey(0), p) if j0 is None else mod._start(j0, p)

    def body(s, xs):
      o, s, r, te, tr = mod._transition(s, xs[0], xs[1], p)
      return s, (o, r, te, tr)

    return obs, *jax.lax.scan(body, state, (actions, draws))

  return jax.jit(run)


def _aligned_episode(task, level, env, actions):
  """The JAX env dealing the package env's cards: (first obs, final state, episode outputs)."""
  j0, draws = _aligned_draws(task, env, actions)
  obs, final, out = _aligned_run(task, level)(j0, jnp.asarray(actions, jnp.int32), draws)
  return np.asarray(obs), final, tuple(np.asarray(x) for x in out)


def _length(task, env):
  """The longest episode of the task-level (the package's own constants)."""
  if task == "Concentration":
    return env.episode_length
  n = len(_decks(task, env)[0])
  return 2 * n - 1 if task == "Autoencode" else n - 1


def _noisy(actions, rng, n_actions, p_err=0.2):
  """``actions`` with a fraction replaced by random ones (reach both reward branches)."""
  actions = np.array(actions)
  err = rng.random(actions.shape) < p_err
  actions[err] = rng.integers(0, n_actions, err.sum())
  return actions


def _concentration_scripts(env, length, rng):
  """Perfect play (terminates at step N); one matched pair, then exactly L - N steps of wasted
  turns (flip a face-up card first / second, the same card twice, a mismatch), then perfect play
  (terminated and truncated on the same step L); perfect play of half the pairs, then random."""
  n = len(env.deck.idx)
  values = env.deck_idx_type[env.deck.idx]
  pairs = [pair for v in np.unique(values) for pair in np.flatnonzero(values == v).reshape(-1, 2)]
  perfect = np.concatenate(pairs)
  u1, u2 = pairs[0]
  x = pairs[1][0]
  y = next(i for i in range(n) if values[i] != values[x] and i not in (u1, u2))
  units, waste = [[u1], [x, u2], [x, x], [x, y]], []
  for i in range((length - n) // 7 * 4):  # 7 steps per cycle through the units
    waste += units[i % 4]
  waste += [u1] * (length - n - len(waste))
  wasteful = np.concatenate([[u1, u2], waste, perfect[2:]])
  half = np.concatenate([perfect[: n // 2], rng.integers(0, n, length - n // 2)])
  return [np.pad(perfect, (0, length - n)), wasteful, half]


def _scripts(task, env, rng):
  """Random actions and scripted ones for the package env just reset; each [length]."""
  n_act = int(env.action_space.n)
  length = _length(task, env)
  out = [rng.integers(0, n_act, length)]
  if task == "Concentration":
    return out + _concentration_scripts(env, length, rng)
  dealt = _decks(task, env)[0][::-1]  # cards in the order they are dealt
  n = len(dealt)
  if task == "Autoencode":
    recite = env.deck.suits_idx[dealt[::-1]]  # play step j: the j-th card from the last
    correct = np.concatenate([rng.integers(0, 4, n - 1), recite])
  elif task == "CountRecall":
    vals = env.deck_idx_type[dealt]
    qs = env.deck_idx_type[env.query_deck.idx[::-1]]
    correct = np.array([np.sum(vals[:t] == qs[t - 1]) for t in range(1, n)])
  elif task == "HigherLower":
    ranks = env.deck.ranks_idx[dealt]
    correct = np.where(ranks[1:] > ranks[:-1], 0, 1)
  elif task == "RepeatFirst":
    correct = np.full(n - 1, env.deck.suits_idx[dealt[0]])
  else:  # RepeatPrevious: step t (from 1) answers the card dealt at t - k
    suits, k = env.deck.suits_idx[dealt], env.k
    correct = np.array([suits[t - k] if t >= k else 0 for t in range(1, n)])
  return out + [correct, _noisy(correct, rng, n_act)]


@pytest.mark.parametrize("task,level", TASK_LEVELS)
def test_spaces_equal_package_encoding(task, level):
  mod, p = popgym_jax.task_module(task), popgym_jax.params(task, level)
  enc = _popgym.encoding(task, level)
  obs_space, act_space = mod.spaces(p)
  assert obs_space == enc.observation_space
  assert act_space == enc.action_space


def test_card_tables_are_the_package_decks():
  for num_decks in (1, 2, 3, 4, 8, 16):
    deck, c = Deck(num_decks), np.arange(52 * num_decks)
    np.testing.assert_array_equal(_cards.rank(c), deck.ranks_idx)
    np.testing.assert_array_equal(_cards.suit(c), deck.suits_idx)
    np.testing.assert_array_equal(_cards.color(c), deck.colors_idx)
    assert set(_cards.FIELDS) <= set(deck.keys)


@pytest.mark.parametrize("task,level", TASK_LEVELS)
def test_whole_episodes_match_the_package(task, level):
  rng = np.random.default_rng(TASK_LEVELS.index((task, level)))
  lengths, rewards = [], set()
  for seed in SEEDS:
    env, _ = reference(task, level, seed)
    for actions in _scripts(task, env, rng):
      env, obs0 = reference(task, level, seed)
      obs, final, ours = _aligned_episode(task, level, env, actions)
      np.testing.assert_array_equal(obs, obs0)
      ref = reference_episode(env, task, level, actions)
      assert_same_episode(ref, ours)
      if task == "Concentration":  # the positions flipped hold the package's cards
        flipped = np.unique(actions[: len(ref[1])])
        np.testing.assert_array_equal(final.card[flipped], env.deck.idx[flipped])
      else:  # the whole deck was dealt as the package's
        for ours_idx, ref_idx in zip(final[:2], _decks(task, env)):
          np.testing.assert_array_equal(ours_idx, ref_idx)
      lengths.append((len(ref[1]), ref[2][-1], ref[3][-1]))
      assert not ref[2][:-1].any() and not ref[3][:-1].any()
      rewards |= set(ref[1].tolist())
  # every reward branch was reached: 0 (no judgement / push), right, wrong (Concentration:
  # 0, a match, -1/L for a face-up first flip, -2/L)
  assert len(rewards) == {"CountRecall": 2, "RepeatFirst": 2, "Concentration": 4}.get(task, 3)
  env, _ = reference(task, level, 0)
  length, n = _length(task, env), len(_decks(task, env)[0])
  if task != "Concentration":  # fixed length, terminated at its last step
    assert lengths == [(length, True, False)] * len(lengths)
  else:  # random: truncated; perfect: terminated at N; both at L
    assert lengths == [
      (length, False, True),
      (n, True, False),
      (length, True, True),
      (length, False, True),
    ] * len(SEEDS)


def test_reward_sums_of_perfect_play():
  """Perfect answers earn 1 (Autoencode's play phase, RepeatFirst/Previous, CountRecall)."""
  for task in ("Autoencode", "CountRecall", "RepeatFirst", "RepeatPrevious"):
    env, _ = reference(task, "medium", 5)
    correct = _scripts(task, env, np.random.default_rng(0))[1]
    rew = _aligned_episode(task, "medium", env, correct)[2][1]
    np.testing.assert_allclose(rew.sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("task", TASKS)
def test_reset_and_step_deal_uniform_permutations(task):
  """``reset`` and ``step`` with their own draws (2000 keys, one whole episode each; Concentration
  flips every position once): every card dealt once, episodes of the package's length, the
  first dealt card, the 10th and card 0's place uniform; CountRecall's two decks independent."""
  mod, p = popgym_jax.task_module(task), popgym_jax.params(task, "easy")
  env, _ = reference(task, "easy", 0)
  length, batch = _length(task, env), 2000
  actions = jnp.arange(52) if task == "Concentration" else jnp.zeros(length, jnp.int32)

  def run(key):
    k0, k1 = jax.random.split(key)
    obs, state = mod.reset(k0, p)

    def body(s, xs):
      o, s, r, te, tr = mod.step(xs[0], s, xs[1], p)
      return s, te | tr

    final, done = jax.lax.scan(body, state, (jax.random.split(k1, len(actions)), actions))
    return obs, final, done

  obs, final, done = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(3), batch))
  assert obs.shape == (batch,) + mod.spaces(p)[0].shape and obs.dtype == np.float32
  if task == "Concentration":
    decks = [np.asarray(final.card)]
    assert not np.asarray(done).any()
  else:
    decks = [np.asarray(final[0])] + ([np.asarray(final[1])] if task == "CountRecall" else [])
    np.testing.assert_array_equal(np.asarray(done).argmax(1), length - 1)
  for idx in decks:
    assert idx.dtype == np.int32 and idx.shape == (batch, 52)
    np.testing.assert_array_equal(np.sort(idx, axis=1), np.tile(np.arange(52), (batch, 1)))
    for x in (idx[:, -1], idx[:, -10], np.argmax(idx == 0, axis=1)):
      assert stats.chisquare(np.bincount(x, minlength=52)).pvalue > 1e-4
  if task == "CountRecall":
    # cards dealt at the same step by independent decks: Poisson(1) many per episode
    same = np.sum(decks[0] == decks[1], axis=1)
    assert abs(same.mean() - 1.0) < 4.5 / np.sqrt(batch)


def _package_returns(task, level, policy, episodes):
  enc = _popgym.encoding(task, level)
  out = []
  for seed in range(episodes):
    env, obs = reference(task, level, 1000 + seed)
    total, done = 0.0, False
    while not done:
      o, r, te, tr, _ = env.step(enc.action(int(policy(obs))))
      obs = np.zeros(enc.observation_space.shape, np.float32)
      enc.obs(o, obs)
      total, done = total + r, te or tr
    out.append(total)
  return np.array(out)


def _jax_returns(task, level, policy, batch, episodes):
  """Returns of ``episodes`` consecutive episodes in each of ``batch`` wrapped envs (autoreset:
  an episode of length L and its reset step take L + 1 steps)."""
  fenv = envs.make_functional(f"popgym/{task}-{level}")
  env, _ = reference(task, level, 0)
  length = _length(task, env)

  def run(key):
    k0, k1 = jax.random.split(key)
    state, obs = fenv.reset(k0)

    def body(carry, k):
      state, obs = carry
      state, ts = fenv.step(k, state, policy(obs))
      return (state, ts.obs), (ts.reward, ts.terminated | ts.truncated)

    return jax.lax.scan(body, (state, obs), jax.random.split(k1, episodes * (length + 1)))[1]

  rew, done = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(7), batch))
  rew = np.asarray(rew).reshape(batch, episodes, length + 1)
  done = np.asarray(done).reshape(batch, episodes, length + 1)
  assert done.sum() == batch * episodes and done[:, :, length - 1].all()
  return rew.sum(-1).ravel()


@pytest.mark.parametrize(
  "task,policy",
  [
    ("HigherLower", lambda obs: (obs.argmax() >= 6).astype(np.int32)),  # higher on a..6
    ("CountRecall", lambda obs: 12 + (obs[2] > 0).astype(np.int32)),  # 13 if queried color 0
  ],
)
def test_scripted_returns_match_package_statistically(task, policy):
  ours = _jax_returns(task, "easy", policy, batch=256, episodes=4)
  ref = _package_returns(task, "easy", policy, episodes=300)
  se = np.sqrt(ours.var() / ours.size + ref.var() / ref.size)
  assert ours.std() > 0 and abs(ours.mean() - ref.mean()) < 4.5 * se
