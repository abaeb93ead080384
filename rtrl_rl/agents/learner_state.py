"""The state every RL learner (IMPALA, PPO) carries from one update to the next."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax


class LearnerState(NamedTuple):
  params: Any  # the agent's parameters {"torso", "core", "heads"}
  opt_state: Any  # the optimiser's state (optax)
  step: jax.Array  # int32 scalar: updates applied
  key: jax.Array  # the learner's PRNG key (minibatch shuffling; IMPALA keeps a raw uint32[2] key)
