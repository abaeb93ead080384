"""popgym's RepeatFirst in JAX: output the suit of the first card at every step.

``N = 52 * num_decks`` cards (easy 1, medium 8, hard 16 decks), dealt in uniformly random order
(:mod:`._cards`: lazily shuffled, one draw per card dealt); reset deals and shows the first card.
Each step judges the action, reward ``+1/(N-1)`` if it equals the first card's suit, ``-1/(N-1)``
otherwise, then deals and shows the next card. ``terminated`` on the step that deals the last
card (the package checks ``len(deck) == 1`` before dealing): ``N - 1`` steps; never truncated.

Observation: one-hot of the dealt card's suit, ``Discrete(4)``, float32 [4]. Action: Discrete(4),
int32 scalar.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs.core import Space
from rtrl_rl.envs.popgym_jax import _cards


class Params(NamedTuple):
  num_decks: int


LEVELS = {"easy": Params(1), "medium": Params(8), "hard": Params(16)}


State = _cards.Deck


def _num_cards(p: Params) -> int:
  return _cards.DECK_SIZE * p.num_decks


def spaces(p: Params):
  return Space.box((_cards.NUM_SUITS,), np.float32, 0.0, 1.0), Space.discrete(_cards.NUM_SUITS)


def _start(j, p: Params):
  """The package's reset, dealing the undealt card at position ``j`` first."""
  deck, card = _cards.fresh(_num_cards(p), j)
  return _cards.one_hot(_cards.suit(card), _cards.NUM_SUITS), deck


def reset(key, p: Params):
  return _start(_cards.draw(key, _num_cards(p)), p)


def step(key, state: State, action, p: Params):
  return _transition(state, action, _cards.draw(key, state.deck_len), p)


def _transition(state: State, action, j, p: Params):
  """:func:`step` with the draw ``j`` of the next card."""
  n = _num_cards(p)
  scale = 1.0 / (n - 1)
  first = _cards.suit(state.idx[n - 1])
  reward = jnp.where(jnp.asarray(action, jnp.int32) == first, scale, -scale)
  deck, card = _cards.deal_next(state, j)
  return (
    _cards.one_hot(_cards.suit(card), _cards.NUM_SUITS),
    deck,
    reward.astype(jnp.float32),
    state.deck_len == 1,
    jnp.zeros((), bool),
  )
