"""popgym's Concentration in JAX: flip face-down cards two at a time to find matching pairs.

``N = 52 * num_decks`` cards laid out face down in uniformly random order; cards match on color
(easy: 1 deck; medium: 2 decks) or rank (hard: 1 deck). The action flips the card at a position;
a turn is one or two flips:

* flipping a card that is already face up (matched): reward ``-1/L`` times the number of cards in
  play (1, or 2 when it is the second flip: package quirk), the turn ends;
* a first flip of a face-down card: reward 0, the card stays in play;
* a second flip: a match of two different positions stays face up, reward ``+1/(N/2)``; otherwise
  (no match, or the same position twice) reward ``-2/L`` and both go face down again.

The observation of a step shows every face-up card and the cards in play of that step (even
those turned back down at its end) by their value, and ``F`` (the number of values) for the others.
``terminated`` when the last pair is matched; ``truncated`` on step ``L = ceil(2N - N/(2N-1))``
(104 for 52 cards, 208 for 104), both possibly on the same step.

The layout is drawn lazily (:mod:`._cards`): a position gets its card the first time it is
flipped, a uniform draw among the cards not yet placed, which gives every observation the law of a
uniformly shuffled layout; reset draws nothing.

Observation: one-hot of ``MultiDiscrete([F + 1] * N)`` (position-major), float32 [N (F + 1)]
(easy 156, medium 312, hard 728). Action: Discrete(N), int32 scalar (a position).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space
from rtrl_rl.envs.popgym_jax import _cards


class Params(NamedTuple):
  num_decks: int
  deck_type: str  # "colors" | "ranks"


LEVELS = {"easy": Params(1, "colors"), "medium": Params(2, "colors"), "hard": Params(1, "ranks")}


class State(NamedTuple):
  """card: int32 [N] card at each position (-1: not placed yet); pool: int32 [N] deck of the
  cards not placed (the first ``pool_len``); pool_len: int32; face_up: bool [N] matched
  positions; first: int32 the position flipped first in the current turn (-1: none); t: int32
  steps taken."""

  card: jax.Array
  pool: jax.Array
  pool_len: jax.Array
  face_up: jax.Array
  first: jax.Array
  t: jax.Array


def _sizes(p: Params):
  """(N cards, F values = the face-down code, value function of a card, episode length L)."""
  fn, f = _cards.FIELDS[p.deck_type]
  n = _cards.DECK_SIZE * p.num_decks
  return n, f, fn, math.ceil(2 * n - (n / (2 * n - 1)))


def spaces(p: Params):
  n, f, _, _ = _sizes(p)
  return Space.box((n * (f + 1),), np.float32, 0.0, 1.0), Space.discrete(n)


def _obs(values, shown, f):
  return _cards.one_hot(jnp.where(shown, values, f), f + 1).reshape(-1)


def reset(key, p: Params):
  """All face down, nothing placed nor in play (draws nothing)."""
  del key
  n, f, _, _ = _sizes(p)
  state = State(
    jnp.full((n,), -1, jnp.int32),
    _cards.new_deck(n),
    jnp.asarray(n, jnp.int32),
    jnp.zeros((n,), bool),
    jnp.asarray(-1, jnp.int32),
    jnp.zeros((), jnp.int32),
  )
  return _obs(state.card, state.face_up, f), state


def step(key, state: State, action, p: Params):
  return _transition(state, action, _cards.draw(key, state.pool_len), p)


def _transition(state: State, action, j, p: Params):
  """:func:`step` with the draw ``j`` of the card placed at ``action`` if it has none yet."""
  n, f, fn, length = _sizes(p)
  success, failure = 1 / (n // 2), -1 / length
  a = jnp.asarray(action, jnp.int32)
  new = state.card[a] < 0
  pool, drawn = _cards.deal(state.pool, state.pool_len, j)
  card = state.card.at[a].set(jnp.where(new, drawn, state.card[a]))
  first = state.first
  has_first = first >= 0
  pos = jnp.arange(n, dtype=jnp.int32)
  in_play = (pos == a) | (pos == first)
  values = fn(card)
  obs = _obs(values, state.face_up | in_play, f)
  # The first card in play is never face up (a match ends the turn), so only the flip can be.
  already_up = state.face_up[a]
  match = has_first & (first != a) & (values[jnp.maximum(first, 0)] == values[a])
  reward = jnp.where(
    already_up,
    jnp.where(has_first, 2 * failure, failure),
    jnp.where(has_first, jnp.where(match, success, 2 * failure), 0.0),
  )
  face_up = state.face_up | (in_play & match & ~already_up)
  terminated = match & ~already_up & jnp.all(face_up)
  truncated = state.t >= length - 1
  state = State(
    card,
    jnp.where(new, pool, state.pool),
    state.pool_len - new.astype(jnp.int32),
    face_up,
    jnp.where(already_up | has_first, -1, a),
    state.t + 1,
  )
  return obs, state, reward.astype(jnp.float32), terminated, truncated
