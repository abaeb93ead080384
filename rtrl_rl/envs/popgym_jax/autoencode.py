"""popgym's Autoencode in JAX: watch a sequence of card suits, then repeat it in reverse.

``N = 52 * num_decks`` cards (easy 1, medium 2, hard 3 decks), dealt in uniformly random order
(:mod:`._cards`: lazily shuffled, one draw per card dealt).

* Watch phase: reset deals the first card; each of the next ``N - 1`` steps deals one more card
  (the action is ignored, reward 0). The observation is ``(mode, suit)``: mode 1 (WATCH) with the
  dealt card's suit, and mode 0 (PLAY) on the step that deals the last card.
* Play phase: ``N`` steps; step ``j`` (from 0) must output the suit of the ``j``-th card dealt
  counted from the LAST one (the hand is popped from its end): reward ``+1/N`` if the action equals
  it, ``-1/N`` otherwise. The observation is ``(0, 0)`` (package quirk: ``make_obs`` indexes the
  suit table at card 0, whose suit is 0).
* ``terminated`` on the last play step (hand of one card): ``2N - 1`` steps; never truncated.

Observation: one-hot of ``Tuple(Discrete(2), Discrete(4))``, float32 [6]. Action: Discrete(4),
int32 scalar (a suit).
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


LEVELS = {"easy": Params(1), "medium": Params(2), "hard": Params(3)}


class State(NamedTuple):
  """idx: int32 [N] deck order (the dealt cards are ``idx[N - hand:]``, the first at the end);
  hand: int32 cards in the system hand (dealt in the watch phase, popped in the play phase);
  play: bool, the play phase (mode PLAY)."""

  idx: jax.Array
  hand: jax.Array
  play: jax.Array


def _num_cards(p: Params) -> int:
  return _cards.DECK_SIZE * p.num_decks


def spaces(p: Params):
  obs_space = Space.box((2 + _cards.NUM_SUITS,), np.float32, 0.0, 1.0)
  return obs_space, Space.discrete(_cards.NUM_SUITS)


def _obs(watch, suit):
  return jnp.concatenate([_cards.one_hot(watch, 2), _cards.one_hot(suit, _cards.NUM_SUITS)])


def _start(j, p: Params):
  """The package's reset, dealing the undealt card at position ``j`` first: watch phase."""
  n = _num_cards(p)
  idx, card = _cards.deal(_cards.new_deck(n), n, j)
  state = State(idx, jnp.ones((), jnp.int32), jnp.zeros((), bool))
  return _obs(jnp.ones((), jnp.int32), _cards.suit(card)), state


def reset(key, p: Params):
  return _start(_cards.draw(key, _num_cards(p)), p)


def step(key, state: State, action, p: Params):
  return _transition(state, action, _cards.draw(key, _num_cards(p) - state.hand), p)


def _transition(state: State, action, j, p: Params):
  """:func:`step` with the draw ``j`` of the card dealt in the watch phase (unused in play)."""
  n = _num_cards(p)
  play = state.play
  hand = jnp.where(play, state.hand - 1, state.hand + 1)
  # Watch: deal (n - state.hand cards left). Play: pop the hand's last card, idx[n - state.hand].
  dealt_idx, dealt = _cards.deal(state.idx, n - state.hand, j)
  idx = jnp.where(play, state.idx, dealt_idx)
  suit = _cards.suit(jnp.where(play, state.idx[jnp.minimum(n - state.hand, n - 1)], dealt))
  scale = 1.0 / n
  reward = jnp.where(play, jnp.where(jnp.asarray(action, jnp.int32) == suit, scale, -scale), 0.0).astype(
    jnp.float32
  )
  terminated = play & (state.hand == 1)
  new_play = play | (hand == n)
  obs = _obs(jnp.where(new_play, 0, 1), jnp.where(play, 0, suit))
  return obs, State(idx, hand, new_play), reward, terminated, jnp.zeros((), bool)
