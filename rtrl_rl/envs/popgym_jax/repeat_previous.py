"""popgym's RepeatPrevious in JAX: output the suit of the card shown ``k - 1`` steps ago.

``N = 52 * num_decks`` cards (easy: 1 deck, k = 4; medium: 2, 32; hard: 3, 64), dealt in
uniformly random order (:mod:`._cards`: lazily shuffled, one draw per card dealt); reset deals and
shows the first card. Step ``t`` (from 1; ``t`` cards dealt so far) judges the action when
``t >= k``: reward ``+1/(N-k)`` if it equals the suit of the card dealt at step ``t - k`` (the
hand's ``[-k]``, the card shown ``k - 1`` observations before the current one), ``-1/(N-k)``
otherwise, and 0 before; then it deals and shows the next card. ``terminated`` on the step that
deals the last card (``len(deck) == 1`` before dealing): ``N - 1`` steps; never truncated.

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
  k: int


LEVELS = {"easy": Params(1, 4), "medium": Params(2, 32), "hard": Params(3, 64)}


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
  scale = 1.0 / (n - p.k)
  # The hand holds n - deck_len cards; its [-k] is idx[deck_len + k - 1].
  target = _cards.suit(state.idx[jnp.minimum(state.deck_len + p.k - 1, n - 1)])
  judged = n - state.deck_len >= p.k
  reward = jnp.where(judged, jnp.where(jnp.asarray(action, jnp.int32) == target, scale, -scale), 0.0)
  deck, card = _cards.deal_next(state, j)
  return (
    _cards.one_hot(_cards.suit(card), _cards.NUM_SUITS),
    deck,
    reward.astype(jnp.float32),
    state.deck_len == 1,
    jnp.zeros((), bool),
  )
