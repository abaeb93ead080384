"""popgym's CountRecall in JAX: count how often a queried card value has been dealt.

Two independent decks of ``N = 52 * num_decks`` cards, a value deck and a query deck, each dealt
one card per step in uniformly random order (:mod:`._cards`: lazily shuffled, one draw per card
dealt). A card's value is its color (easy: 1 deck, 2 values), suit (medium: 2 decks, 4 values)
or rank (hard: 4 decks, 13 values). Reset deals the first pair. Each step then answers the
PREVIOUS query: reward ``+1/(N-1)`` if the action equals the number of dealt value cards (the card
shown with that query included) whose value equals that query, ``-1/(N-1)`` otherwise; then deals
the next pair. ``terminated`` when the value deck is empty: ``N - 1`` steps; never truncated.

Observation: one-hot of ``MultiDiscrete([D, D])`` (dealt value, queried value), float32 [2D].
Action: Discrete(N / D + 1), int32 scalar (a count).

Cheap for the speed target: a step (and a reset) is one 2-word random draw, two swaps in the deck
orders, a compare and a [D] add; a card's value is arithmetic on its index.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space
from rtrl_rl.envs.popgym_jax import _cards


class Params(NamedTuple):
  num_decks: int
  deck_type: str  # "colors" | "suits" | "ranks"


LEVELS = {"easy": Params(1, "colors"), "medium": Params(2, "suits"), "hard": Params(4, "ranks")}


class State(NamedTuple):
  """value_idx, query_idx: int32 [N] deck orders; deck_len: int32 cards left in each deck (the
  current pair is at ``[deck_len]``); counts: int32 [D] dealt value cards per value."""

  value_idx: jax.Array
  query_idx: jax.Array
  deck_len: jax.Array
  counts: jax.Array


def _sizes(p: Params):
  """(N cards, D distinct values, the value function of a card index)."""
  fn, d = _cards.FIELDS[p.deck_type]
  return _cards.DECK_SIZE * p.num_decks, d, fn


def spaces(p: Params):
  n, d, _ = _sizes(p)
  return Space.box((2 * d,), np.float32, 0.0, 1.0), Space.discrete(n // d + 1)


def _obs(value, query, d):
  return jnp.concatenate([_cards.one_hot(value, d), _cards.one_hot(query, d)])


def _start(j, p: Params):
  """The package's reset, dealing the undealt cards at positions ``j`` (int32 [2]: value deck,
  query deck) first; the first value card is counted."""
  n, d, fn = _sizes(p)
  value_idx, value = _cards.deal(_cards.new_deck(n), n, j[0])
  query_idx, query = _cards.deal(_cards.new_deck(n), n, j[1])
  value = fn(value)
  counts = (jnp.arange(d, dtype=jnp.int32) == value).astype(jnp.int32)
  state = State(value_idx, query_idx, jnp.asarray(n - 1, jnp.int32), counts)
  return _obs(value, fn(query), d), state


def reset(key, p: Params):
  return _start(_cards.draw(key, _sizes(p)[0], (2,)), p)


def step(key, state: State, action, p: Params):
  return _transition(state, action, _cards.draw(key, state.deck_len, (2,)), p)


def _transition(state: State, action, j, p: Params):
  """:func:`step` with the draws ``j`` (int32 [2]) of the next value and query cards."""
  n, d, fn = _sizes(p)
  prev_count = state.counts[fn(state.query_idx[state.deck_len])]
  value_idx, value = _cards.deal(state.value_idx, state.deck_len, j[0])
  query_idx, query = _cards.deal(state.query_idx, state.deck_len, j[1])
  value, query = fn(value), fn(query)
  counts = state.counts + (jnp.arange(d, dtype=jnp.int32) == value)
  scale = 1.0 / (n - 1)
  reward = jnp.where(jnp.asarray(action, jnp.int32) == prev_count, scale, -scale)
  deck_len = state.deck_len - 1
  return (
    _obs(value, query, d),
    State(value_idx, query_idx, deck_len, counts),
    reward.astype(jnp.float32),
    deck_len == 0,
    jnp.zeros((), bool),
  )
