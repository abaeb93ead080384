"""The card deck of popgym's card tasks (``popgym.core.deck.Deck``) in JAX.

A deck of ``num_decks`` 52-card decks holds card indices ``0 .. 52 * num_decks - 1``; the package
builds its per-card tables by tiling, which amounts to (for card ``c``)

* rank ``(c % 52) // 4`` (13 ranks: a, 2, .., 10, j, q, k),
* suit ``c % 4`` (4 suits: s, d, c, h),
* color ``c % 2`` (2 colors: b, r).

The package shuffles a deck order ``idx`` at reset (a uniform permutation, drawn with the env's
``np_random``) and deals from its END: with ``deck_len`` cards left, the next card is
``idx[deck_len - 1]``, so the dealt cards are ``idx[deck_len:]``, the first one at the end.

Here the shuffle is done lazily, one Fisher-Yates step per card dealt (:func:`deal`): the undealt
part ``idx[:deck_len]`` is kept in any order, and a deal swaps a uniformly drawn undealt card
into ``idx[deck_len - 1]`` and takes it. The dealt sequence is a uniform random order, as the
package's, at O(1) cost per deal (no sort of the whole deck at reset); the dealt part of ``idx``
is laid out as the package's. A draw (:func:`draw`) is one 32-bit word modulo ``deck_len``
(bias below ``deck_len / 2**32 < 2**-22``). Tests align a deal with the package's by feeding the
position of the package's next card in ``idx`` as the draw.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

DECK_SIZE = 52
NUM_RANKS = 13
NUM_SUITS = 4
NUM_COLORS = 2


def rank(card):
  """Rank index (0..12) of card index ``card`` (any int array)."""
  return (card % DECK_SIZE) // NUM_SUITS


def suit(card):
  """Suit index (0..3) of card index ``card``."""
  return card % NUM_SUITS


def color(card):
  """Color index (0..1) of card index ``card``."""
  return card % NUM_COLORS


# deck_type name of the package -> (value function of a card index, number of values)
FIELDS = {"ranks": (rank, NUM_RANKS), "suits": (suit, NUM_SUITS), "colors": (color, NUM_COLORS)}


def new_deck(num_cards: int) -> jax.Array:
  """A full deck ``idx`` (int32 [num_cards]), none dealt; its order is drawn as it is dealt."""
  return jnp.arange(num_cards, dtype=jnp.int32)


def draw(key: jax.Array, deck_len, shape=()) -> jax.Array:
  """Uniform position(s) in ``[0, deck_len)`` of the undealt cards: the next card(s) to deal."""
  bits = jax.random.bits(key, shape, jnp.uint32)
  return (bits % jnp.maximum(deck_len, 1).astype(jnp.uint32)).astype(jnp.int32)


def deal(idx: jax.Array, deck_len, j):
  """Deal the undealt card at position ``j``: swap it to ``idx[deck_len - 1]`` (where
  ``Deck.deal`` takes from) and take it. Returns (idx, card); ``deck_len`` drops by one."""
  last = deck_len - 1
  card = idx[j]
  return idx.at[j].set(idx[last]).at[last].set(card), card


def one_hot(x, n: int) -> jax.Array:
  """float32 one-hot of int ``x`` over ``n`` values (``[..., n]``)."""
  return (jnp.asarray(x)[..., None] == jnp.arange(n, dtype=jnp.int32)).astype(jnp.float32)


class Deck(NamedTuple):
  """The state of a one-deck task: idx int32 [N] deck order (the first card dealt is idx[N - 1]);
  deck_len int32, the cards left."""

  idx: jax.Array
  deck_len: jax.Array


def fresh(num_cards: int, j) -> tuple[Deck, jax.Array]:
  """The package's reset of a one-deck task: a full deck with its first card (the undealt card
  at position ``j``) dealt. Returns (deck, card)."""
  idx, card = deal(new_deck(num_cards), num_cards, j)
  return Deck(idx, jnp.asarray(num_cards - 1, jnp.int32)), card


def deal_next(deck: Deck, j) -> tuple[Deck, jax.Array]:
  """Deal the undealt card at position ``j`` of ``deck``. Returns (deck, card)."""
  idx, card = deal(deck.idx, deck.deck_len, j)
  return Deck(idx, deck.deck_len - 1), card
