"""The unit of experience that actors send to the learner: a time-major `Rollout` of M+1 env steps.

A rollout holds the M+1 `TimeStep`s an actor saw, exactly as the env contract (rtrl_rl/envs/core.py)
gives them, plus what the actor did between them and the core's carry before the first step:

    obs          [M+1, B, *obs]   obs[t]
    reward       [M+1, B]         reward of the transition INTO obs[t] (0 on first steps); it is also
                                  the core's "last reward" input at step t
    terminated   [M+1, B] bool    obs[t] is terminal (no bootstrap)
    truncated    [M+1, B] bool    obs[t] is the last obs of a cut episode (bootstrap from it)
    first        [M+1, B] bool    obs[t] starts an episode (= the cells' resets)
    prev_action  [M+1, B(, D)]    the action taken before obs[t] (0 on first steps): the core's
                                  "last action" input at step t
    action       [M, B(, D)]      action[t] taken in obs[t]
    behaviour_log_prob [M, B]     log mu(action[t] | obs[t]): the actor's log-probability of the
                                  action it took (any policy)
    carry        cells.Carry      the core's carry (state + RTRL traces) BEFORE obs[0], `[B, ...]`
    policy_version [B] int        the learner step whose parameters the actor used

Transitions and their targets (what the learner computes from a rollout; see `transitions`):
  * transition t = 0..M-1 goes obs[t] -> obs[t+1] with reward r_t = reward[t+1] and discount
    gamma_t = gamma * (1 - terminated[t+1]).
  * Next-step autoreset: if obs[t] ended an episode (terminated[t] | truncated[t]), the env ignored
    action[t] and returned the next episode's first obs as obs[t+1]. Transition t is a DUMMY: it is
    masked out of every loss term and the V-trace recursion is cut there (discount 0, lambda 0).
  * Truncation (truncated[t+1]): obs[t+1] is the real last observation, so transition t bootstraps
    from V(obs[t+1]) (discount gamma) while V-trace's lambda is 0 on it: the trace does not run into
    the dummy transition that follows.
  * The last transition bootstraps from V(obs[M]).
Consecutive rollouts of one actor overlap by one step: obs[M] of one is obs[0] of the next, and the
next rollout's carry is the carry after obs[M-1] (as in IMPALA).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl import cells, parallel


class Rollout(NamedTuple):
  """B time-major rollouts of M+1 env steps (see the module docstring for each field)."""

  obs: Any
  reward: Any
  terminated: Any
  truncated: Any
  first: Any
  prev_action: Any
  action: Any
  behaviour_log_prob: Any
  carry: cells.Carry
  policy_version: Any

  @property
  def unroll_length(self) -> int:
    """M, the number of transitions."""
    return self.action.shape[0]

  @property
  def batch_size(self) -> int:
    return self.reward.shape[1]

  @staticmethod
  def batch_axes() -> "Rollout":
    """The batch axis of each field (a pytree prefix of a Rollout): 1 for time-major arrays, 0 for
    the carry and the policy version. Used to shard / split / concatenate rollouts."""
    return Rollout(
      obs=1,
      reward=1,
      terminated=1,
      truncated=1,
      first=1,
      prev_action=1,
      action=1,
      behaviour_log_prob=1,
      carry=0,
      policy_version=0,
    )


def concatenate(rollouts) -> Rollout:
  """Concatenate rollouts along the batch axis (numpy)."""
  return jax.tree.map(
    lambda axis, *subs: jax.tree.map(lambda *xs: np.concatenate(xs, axis), *subs),
    Rollout.batch_axes(),
    *rollouts,
  )


def batch_slice(rollout: Rollout, start: int, stop: int) -> Rollout:
  """Environments `start:stop` of a rollout."""

  def take(x, axis):
    idx = [slice(None)] * np.ndim(x)
    idx[axis] = slice(start, stop)
    return x[tuple(idx)]

  return parallel.map_with_axes(take, Rollout.batch_axes(), rollout)


class Transitions(NamedTuple):
  """Per-transition learner inputs `[M, B]` derived from a Rollout (see the module docstring)."""

  rewards: jax.Array  # r_t = reward[t+1]
  discounts: jax.Array  # gamma * (1 - terminated[t+1]); 0 on dummy transitions
  lambdas: jax.Array  # V-trace lambda: 0 into a truncated obs and on dummy transitions, else 1
  mask: jax.Array  # 1 on real transitions, 0 on dummy ones (obs[t] ended an episode)


def transitions(rollout: Rollout, gamma: float, dtype=jnp.float32) -> Transitions:
  """Rewards, discounts, V-trace lambdas and the loss mask of the M transitions of `rollout`."""
  terminated = jnp.asarray(rollout.terminated, bool)
  truncated = jnp.asarray(rollout.truncated, bool)
  ended = terminated | truncated  # obs[t] was the last obs of its episode
  valid = ~ended[:-1]  # transition t is real
  rewards = jnp.where(valid, jnp.asarray(rollout.reward, dtype)[1:], 0)
  discounts = jnp.where(valid & ~terminated[1:], jnp.asarray(gamma, dtype), 0).astype(dtype)
  lambdas = (valid & ~truncated[1:]).astype(dtype)
  return Transitions(rewards.astype(dtype), discounts, lambdas, valid.astype(dtype))


def synthetic_rollout(
  seed: int,
  *,
  unroll_length: int,
  batch_size: int,
  obs_shape,
  obs_dtype,
  num_actions: int,
  carry: cells.Carry,
  end_prob: float = 0.1,
  policy_version: int = 0,
) -> Rollout:
  """A random rollout that obeys the env contract (next-step autoreset), for tests and benchmarks.

  Episode ends are drawn with probability `end_prob` per step (half terminations, half
  truncations); the step after an end is a first step with reward 0 and prev_action 0. Actions are
  ignored after an end, as the env would. Returns numpy arrays (the carry is passed through).
  """
  m, b = unroll_length, batch_size
  rng = np.random.default_rng(seed)
  ended = rng.random((m + 1, b)) < end_prob
  term_kind = rng.random((m + 1, b)) < 0.5
  first = np.zeros((m + 1, b), bool)
  first[1:] = ended[:-1]
  ended &= ~first  # a first step never ends its episode in this generator
  terminated, truncated = ended & term_kind, ended & ~term_kind
  reward = np.where(first, 0, rng.normal(size=(m + 1, b)) * 2.0).astype(np.float32)
  action = rng.integers(0, num_actions, (m, b)).astype(np.int32)
  prev_action = np.zeros((m + 1, b), np.int32)
  prev_action[1:] = np.where(first[1:], 0, action)
  if np.issubdtype(np.dtype(obs_dtype), np.integer):
    obs = rng.integers(0, 256, (m + 1, b, *obs_shape)).astype(obs_dtype)
  else:
    obs = rng.normal(size=(m + 1, b, *obs_shape)).astype(obs_dtype)
  logits = rng.normal(size=(m, b, num_actions)).astype(np.float32)
  log_prob = np.take_along_axis(logits - np.log(np.exp(logits).sum(-1, keepdims=True)), action[..., None], -1)
  return Rollout(
    obs=obs,
    reward=reward,
    terminated=terminated,
    truncated=truncated,
    first=first,
    prev_action=prev_action,
    action=action,
    behaviour_log_prob=log_prob[..., 0],
    carry=carry,
    policy_version=np.full((b,), policy_version, np.int32),
  )
