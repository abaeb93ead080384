"""popgym's HigherLower in JAX: guess whether the next card's rank is higher or lower.

``N = 52 * num_decks`` cards (easy 1, medium 2, hard 3 decks), dealt in uniformly random order
(:mod:`._cards`: lazily shuffled, one draw per card dealt); reset deals the first card. Each step
deals the next card and judges the action against the previous card's rank: action 0 guesses
higher, 1 lower; reward 0 on equal ranks, ``+1/N`` for a right guess, ``-1/N`` for a wrong one
(package quirk: the scale is ``1/N`` though an episode has ``N - 1`` guesses). ``terminated`` on
the step that deals the last card (the package checks ``len(deck) <= 1`` before dealing):
``N - 1`` steps; never truncated.

Observation: one-hot of the dealt card's rank, ``Discrete(13)``, float32 [13]. Action:
Discrete(2), int32 scalar.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space
from rtrl_rl.envs.popgym_jax import _cards


class Params(NamedTuple):
  num_decks: int


LEVELS = {"easy": Params(1), "medium": Params(2), "hard": Params(3)}


State = _cards.Deck


def _num_cards(p: Params) -> int:
  return _cards.DECK_SIZE * p.num_decks


def spaces(p: Params):
  return Space.box((_cards.NUM_RANKS,), np.float32, 0.0, 1.0), Space.discrete(2)


def _start(j, p: Params):
  """The package's reset, dealing the undealt card at position ``j`` first."""
  deck, card = _cards.fresh(_num_cards(p), j)
  return _cards.one_hot(_cards.rank(card), _cards.NUM_RANKS), deck


def reset(key, p: Params):
  return _start(_cards.draw(key, _num_cards(p)), p)


def step(key, state: State, action, p: Params):
  return _transition(state, action, _cards.draw(key, state.deck_len), p)


def _transition(state: State, action, j, p: Params):
  """:func:`step` with the draw ``j`` of the next card."""
  n = _num_cards(p)
  terminated = state.deck_len <= 1
  curr = _cards.rank(state.idx[state.deck_len])
  deck, card = _cards.deal_next(state, j)
  nxt = _cards.rank(card)
  guess_higher = jnp.asarray(action, jnp.int32) == 0
  scale = 1.0 / n
  reward = jnp.where(nxt == curr, 0.0, jnp.where((nxt > curr) == guess_higher, scale, -scale))
  return (
    _cards.one_hot(nxt, _cards.NUM_RANKS),
    deck,
    reward.astype(jnp.float32),
    terminated,
    jnp.zeros((), bool),
  )
