"""The actor loop every RL algorithm shares: the policy acts on B environments, step after step.

    actor = init_actor(env, agent, normalizer, num_envs, key)          # a JAX env (FunctionalEnv)
    actor, traj, episodes = act(env, agent, normalizer, params, actor, num_steps)   # one lax.scan
    acting = host_acting(env, agent, normalizer)                        # a host env (numpy)

One step: the policy half (`decide`: normalise o_t, zero the previous action on a first step,
sample a_t from the core's carry before o_t) then the env half (`record`: fold the env's TimeStep
into the `ActorState`, one stored transition, the episode statistics). `traj` is time-major
`[T, B, ...]` with the fields of `record`'s transition; an algorithm turns it into its batch (PPO:
`PPOBatch`, IMPALA: `Rollout`).

A `Normalizer` transforms what the agent sees (PPO: running observation and return statistics,
rtrl_rl/agents/ppo/acting.py); None leaves observations as they are and rewards as float32.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl import cells
from rtrl_rl.envs._jax import batched
from rtrl_rl.envs.core import episode_step
from rtrl_rl.networks.agent import Agent


class Normalizer(NamedTuple):
  """How acting transforms observations and rewards, with state in `ActorState.norm`.

  init(observation_shape, num_envs) -> state
  obs(state, obs [B, ...], update: bool, axis_name) -> (state, normalised obs): folds `obs` into the
    statistics first when `update` (over every member of `axis_name` when given)
  reward(state, reward [B], done [B], valid [B], axis_name) -> (state, scaled reward [B] float32)
  axes: the state's env axis as a pytree prefix (None: replicated) when the envs split over a mesh
  """

  init: Callable
  obs: Callable
  reward: Callable
  axes: Any


def _norm_init(normalizer: Normalizer | None, observation_space, num_envs: int):
  return None if normalizer is None else normalizer.init(observation_space.shape, num_envs)


def _normalize_obs(normalizer: Normalizer | None, norm, obs, update: bool = True, axis_name=None):
  if normalizer is None:
    return norm, obs
  return normalizer.obs(norm, obs, update, axis_name)


def zero_where_first(prev_action, first):
  """The previous action as the agent sees it: zeros where `first [B]` (an episode's first step)."""
  return jax.tree.map(
    lambda x: jnp.where(first.reshape(first.shape + (1,) * (jnp.ndim(x) - 1)), jnp.zeros_like(x), x),
    prev_action,
  )


class PolicyOutput(NamedTuple):
  action: Any
  log_prob: jax.Array
  value: jax.Array
  carry: cells.Carry


def policy_step(
  agent: Agent,
  params,
  carry: cells.Carry,
  obs,
  prev_reward,
  prev_action,
  first,
  key: jax.Array,
  greedy: bool = False,
) -> PolicyOutput:
  """Sample an action for B envs from the core's carry BEFORE `obs`; returns the new carry."""
  (dist, value), carry = agent.step(params, carry, obs, prev_reward, prev_action, first)
  action = dist.mode() if greedy else dist.sample(key)
  return PolicyOutput(action, dist.log_prob(action), value, carry)


class ActorState(NamedTuple):
  """What the acting scan threads, per env `[B, ...]`; `obs`/`reward`/`first`/`terminated`/
  `truncated` are the latest TimeStep's (if it ended an episode, the next step is an autoreset)."""

  env_state: Any
  obs: Any
  reward: jax.Array
  first: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  carry: cells.Carry
  prev_action: Any
  norm: Any  # the normalizer's state (`Normalizer.init`; None without one)
  episode_return: jax.Array
  episode_length: jax.Array
  key: jax.Array

  @staticmethod
  def batch_axes(normalizer: "Normalizer | None" = None) -> "ActorState":
    """The env axis of each field (a pytree prefix) when the envs are split over a mesh: 0 for the
    per-env fields, the normalizer's `axes` for its state; `key` holds one key per device (`[D]`
    keys, axis 0)."""
    return ActorState(
      env_state=0,
      obs=0,
      reward=0,
      first=0,
      terminated=0,
      truncated=0,
      carry=0,
      prev_action=0,
      norm=None if normalizer is None else normalizer.axes,
      episode_return=0,
      episode_length=0,
      key=0,
    )


def _zeros_action(space, num_envs):
  if space.kind == "discrete":
    return jnp.zeros((num_envs,), jnp.int32)
  return jnp.zeros((num_envs, *space.shape), jnp.float32)


def _start(env, agent: Agent, normalizer: Normalizer | None, env_state, ts, key) -> ActorState:
  """The actor state of a batch of envs just reset: `ts` their first TimeStep (`[B, ...]`)."""
  num_envs = ts.first.shape[0]
  return ActorState(
    env_state=env_state,
    obs=ts.obs,
    reward=jnp.asarray(ts.reward, jnp.float32),
    first=ts.first,
    terminated=ts.terminated,
    truncated=ts.truncated,
    carry=agent.initial_carry(num_envs),
    prev_action=_zeros_action(env.action_space, num_envs),
    norm=_norm_init(normalizer, env.observation_space, num_envs),
    episode_return=jnp.zeros((num_envs,), jnp.float32),
    episode_length=jnp.zeros((num_envs,), jnp.int32),
    key=key,
  )


def init_actor(env, agent: Agent, normalizer: Normalizer | None, num_envs: int, key) -> ActorState:
  """The actor state of `num_envs` copies of the JAX env `env`, reset with `key`."""
  k_env, k_act = jax.random.split(key)
  env_state, obs = batched(env.reset, num_envs)(jax.random.split(k_env, num_envs))
  no = jnp.zeros((num_envs,), bool)
  first = TimeStepArrays(obs, jnp.zeros((num_envs,), jnp.float32), no, no, jnp.ones((num_envs,), bool))
  return _start(env, agent, normalizer, env_state, first, k_act)


class Decision(NamedTuple):
  """The policy half of a step: what the agent saw and chose before the env moves."""

  norm: Any
  obs: Any  # normalised o_t
  prev_action: Any
  out: PolicyOutput
  key: jax.Array  # the actor's next key
  env_key: jax.Array  # for a JAX env's step


def decide(agent: Agent, normalizer, params, a: ActorState, axis_name=None) -> Decision:
  key, k_act, k_env = jax.random.split(a.key, 3)
  norm, obs_n = _normalize_obs(normalizer, a.norm, a.obs, axis_name=axis_name)
  prev_action = zero_where_first(a.prev_action, a.first)
  out = policy_step(agent, params, a.carry, obs_n, a.reward, prev_action, a.first, k_act)
  return Decision(norm, obs_n, prev_action, out, key, k_env)


def record(normalizer, a: ActorState, d: Decision, ts, env_state, axis_name=None):
  """The env half: fold the env's TimeStep `ts` into the actor state; one stored transition; the
  episode statistics (`envs.core.episode_step`, as the actor processes count them)."""
  valid = ~(a.terminated | a.truncated)
  ended = ts.terminated | ts.truncated
  if normalizer is None:
    norm, reward_n = d.norm, ts.reward.astype(jnp.float32)
  else:
    norm, reward_n = normalizer.reward(d.norm, ts.reward, ended, valid, axis_name)
  (ep_ret, ep_len), (next_ret, next_len) = episode_step(
    a.episode_return, a.episode_length, ts.reward, ended, valid, xp=jnp
  )
  stats = dict(ended=ended, ret=jnp.where(ended, ep_ret, 0.0), len=jnp.where(ended, ep_len, 0))
  transition = dict(
    obs=d.obs,
    first=a.first,
    prev_reward=a.reward,
    prev_action=d.prev_action,
    action=d.out.action,
    log_prob=d.out.log_prob,
    value=d.out.value,
    reward=reward_n,
    raw_reward=ts.reward,
    terminated=ts.terminated,
    truncated=ts.truncated,
    mask=valid,
  )
  new = ActorState(
    env_state,
    ts.obs,
    ts.reward,
    ts.first,
    ts.terminated,
    ts.truncated,
    d.out.carry,
    d.out.action,
    norm,
    next_ret,
    next_len,
    d.key,
  )
  return new, transition, stats


def episode_metrics(stats, axis_name=None) -> dict:
  """Over all envs, and over every member of `axis_name` (psum) when given."""
  episodes, ret_sum, len_sum = (jnp.sum(stats[k]) for k in ("ended", "ret", "len"))
  if axis_name is not None:
    episodes, ret_sum, len_sum = jax.lax.psum((episodes, ret_sum, len_sum), axis_name)
  return dict(
    episodes=episodes,
    episode_return_sum=ret_sum,
    mean_episode_return=jnp.where(episodes > 0, ret_sum / jnp.maximum(episodes, 1), jnp.nan),
    mean_episode_length=jnp.where(episodes > 0, len_sum / jnp.maximum(episodes, 1), jnp.nan),
  )


def act(
  env,
  agent: Agent,
  normalizer: Normalizer | None,
  params,
  actor: ActorState,
  num_steps: int,
  axis_name: str | None = None,
  carry_buffer=None,
):
  """Scan `num_steps` policy+env steps. Returns the new actor state, time-major transitions
  `[num_steps, B, ...]` (dict) and the episode statistics.

  `axis_name`: `actor` is one member's envs inside a map over that axis (shard_map or vmap): the
  normalisation statistics fold every member's batch and the episode statistics are summed over
  the axis (identical on every member).
  `carry_buffer`: a carry-shaped tree `[num_steps, B, ...]` that receives the carry before each step
  (as `transitions["carry"]`), written in place when the caller's jit donates it: the stored
  carries (RTRL traces: `O(D N)` floats per env and step) then reuse one allocation instead of a
  fresh one per call. None: the carries are not kept (`transitions` has no "carry")."""
  num_envs = actor.reward.shape[0]

  def body(carry, _):
    a, buf, i = carry
    d = decide(agent, normalizer, params, a, axis_name)
    env_state, ts = batched(env.step, num_envs)(
      jax.random.split(d.env_key, num_envs), a.env_state, d.out.action
    )
    new, transition, stats = record(normalizer, a, d, ts, env_state, axis_name)
    if buf is not None:
      buf = jax.tree.map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, i, 0), buf, a.carry)
    return (new, buf, i + 1), (transition, stats)

  (actor, buf, _), (traj, stats) = jax.lax.scan(
    body, (actor, carry_buffer, jnp.int32(0)), None, length=num_steps
  )
  if buf is not None:
    traj = dict(traj, carry=buf)
  return actor, traj, episode_metrics(stats, axis_name)


def carry_buffer(agent: Agent, num_steps: int, num_envs: int):
  """Zeros shaped as the stored carries of `num_steps` steps of `num_envs` envs (`act`)."""
  return _stacked_zeros(agent.initial_carry(num_envs), num_steps)


def _stacked_zeros(tree, n: int):
  """Zeros shaped as `n` copies of `tree` stacked on a new leading axis (arrays or shape structs)."""
  return jax.tree.map(lambda x: jnp.zeros((n, *x.shape), x.dtype), tree)


class HostActing(NamedTuple):
  """Acting on a numpy batched env (rtrl_rl.envs contract), with the same math as `act`:
  `init(key) -> ActorState` (env_state None; the env lives on the host) and
  `act(params, actor, num_steps) -> (actor, traj, episode metrics)`; `traj` lives in buffers
  that the next `act` call reuses (donates): use it before acting again."""

  init: Callable
  act: Callable


def host_acting(env, agent: Agent, normalizer: Normalizer | None = None) -> HostActing:
  """Acting around a host `env.step` (envpool, POPGym, a user's env) in one jitted call per step.

  Per rollout of T steps: one call decides step 0; each of the T - 1 next calls folds the env's
  TimeStep into the actor state, writes the transition (and the carry it started from) into
  preallocated `[T, B, ...]` buffers in place (donated), and decides the next action; the last call
  only folds and writes (the next rollout decides with the updated parameters). The env's arrays
  go to the jitted calls as they are (numpy), moved once."""

  def record_row(a, d, ts):
    """The actor state after the env's TimeStep `ts`, and the buffers' row of this step."""
    new, transition, stats = record(normalizer, a, d, ts, None)
    return new, dict(transition, carry=a.carry, stats=stats)

  def fold(a, d, ts, buf, t):
    new, row = record_row(a, d, ts)
    buf = jax.tree.map(lambda x, v: jax.lax.dynamic_update_index_in_dim(x, v, t, 0), buf, row)
    return new, buf

  decide_first = jax.jit(lambda params, a: decide(agent, normalizer, params, a))

  @functools.partial(jax.jit, donate_argnums=(3,))
  def fold_and_decide(params, a, d, buf, t, *ts):
    a, buf = fold(a, d, TimeStepArrays(*ts), buf, t)
    return a, buf, decide(agent, normalizer, params, a)

  @functools.partial(jax.jit, donate_argnums=(2,))
  def fold_last(a, d, buf, t, *ts):
    a, buf = fold(a, d, TimeStepArrays(*ts), buf, t)
    return a, buf, episode_metrics(buf["stats"])

  def timestep(ts):
    return (ts.obs, ts.reward, ts.terminated, ts.truncated, ts.first)

  def init(key):
    return _start(env, agent, normalizer, None, TimeStepArrays(*jax.device_put(timestep(env.reset()))), key)

  held = {}

  def buffers(params, a, num_steps):
    """The `[num_steps, B, ...]` buffers: the previous call's (donated again), or new zeros."""
    if num_steps not in held:
      ts = TimeStepArrays(a.obs, a.reward, a.terminated, a.truncated, a.first)
      _, row = jax.eval_shape(record_row, a, jax.eval_shape(decide_first, params, a), ts)
      held.clear()
      held[num_steps] = _stacked_zeros(row, num_steps)
    return held.pop(num_steps)

  def run(params, actor: ActorState, num_steps: int):
    buf = buffers(params, actor, num_steps)
    d = decide_first(params, actor)
    for t in range(num_steps):
      ts = timestep(env.step(np.asarray(d.out.action)))
      if t + 1 < num_steps:
        actor, buf, d = fold_and_decide(params, actor, d, buf, t, *ts)
      else:
        actor, buf, metrics = fold_last(actor, d, buf, t, *ts)
    held[num_steps] = buf
    return actor, buf, metrics

  return HostActing(init, run)


class TimeStepArrays(NamedTuple):
  obs: Any
  reward: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  first: jax.Array


def bootstrap_value(agent: Agent, normalizer: Normalizer | None, params, actor: ActorState):
  """V(o_T) of the latest observation (normalised with the current statistics, no update)."""
  _, obs_n = _normalize_obs(normalizer, actor.norm, actor.obs, update=False)
  prev_action = zero_where_first(actor.prev_action, actor.first)
  (_, value), _ = agent.step(params, actor.carry, obs_n, actor.reward, prev_action, actor.first)
  return value
