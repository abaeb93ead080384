"""The fully-jitted act-and-learn loop ("Anakin", Hessel et al. 2021) for JAX environments.

A :class:`~rtrl_rl.envs._jax.FunctionalEnv` is vmapped over `num_envs`; ONE jitted function per
iteration acts for `num_steps` steps with `lax.scan` (policy step -> env step, the core's carry and
RTRL traces threaded through) and then applies the learner's pure update:

  * PPO (`make_ppo`): `rollout_length` steps into a `PPOBatch` (stored carries, normalised
    observations and rewards), then `rtrl_rl.agents.ppo.learning.make_update`.
  * IMPALA (`make_impala`): `unroll_length` (M) steps into a time-major
    `rtrl_rl.agents.rollout.Rollout` of M + 1 steps that starts with the carry it began from (the
    next iteration's rollout overlaps by one step, as in IMPALA), then the update
    `rtrl_rl.agents.impala.learning.make_update(agent, config)` (or one passed in).

Per-iteration metrics include the returns of the episodes that ended during the iteration:
`episode_return_sum`, `episodes`, `mean_episode_return` (NaN when none ended), `mean_episode_length`.

Data parallelism (`mesh=`, a 1-D mesh from rtrl_rl/parallel.py: the local devices, or all devices of
all processes of a jax.distributed run, each process driving its own; Podracer's Anakin):
the iteration is still ONE jitted function. The envs are split over the mesh's D devices: device d
acts on its own `num_envs / D` envs (all their per-env state, `ActorState.batch_axes()`) with its
own key chain (the actor keys are `fold_in(k, d)`, one per device), inside `jax.shard_map`. The
PPO normalisation statistics fold every device's batch at every step (psums in
`ppo.acting.stats_update`), so they stay identical on all devices and equal those of one device
acting on all envs; the episode metrics are summed over the mesh. The buffer stays split along the
env axis and goes to the learner's existing data-parallel step (`ppo.learning.make_learner_step`,
`parallel.data_parallel_jit` for IMPALA: one gradient all-reduce, learner state replicated). A D-device
iteration equals, up to float summation order, one device acting on each env group with its
folded key and updating on the concatenated buffer (PPO: `make_update(..., num_shards=D)`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rtrl_rl import cells, parallel
from rtrl_rl.agents.ppo import acting as ppo_acting
from rtrl_rl.agents.ppo import learning as ppo_learning
from rtrl_rl.agents.ppo.config import validate as ppo_validate
from rtrl_rl.envs._jax import batched
from rtrl_rl.networks.agent import Agent


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
  norm: ppo_acting.NormState
  episode_return: jax.Array
  episode_length: jax.Array
  key: jax.Array

  @staticmethod
  def batch_axes() -> "ActorState":
    """The env axis of each field (a pytree prefix) when the envs are split over a mesh: 0 for the
    per-env fields, None (replicated) for the normalisation statistics; `key` holds one key per
    device (`[D]` keys, axis 0)."""
    return ActorState(
      env_state=0,
      obs=0,
      reward=0,
      first=0,
      terminated=0,
      truncated=0,
      carry=0,
      prev_action=0,
      norm=ppo_acting.NormState(obs=None, ret=None, ret_acc=0),
      episode_return=0,
      episode_length=0,
      key=0,
    )


class AnakinState(NamedTuple):
  learner: Any
  actor: ActorState


class Anakin(NamedTuple):
  """`init(key) -> AnakinState`; `step(state) -> (state, metrics)` (jitted, one iteration);
  `run(state, num_iterations) -> (state, metrics as numpy arrays [num_iterations])`;
  `place(state) -> state`: a host copy of a state (e.g. a restored checkpoint) put where `step`
  takes it (with a mesh: learner replicated, actor split by `ActorState.batch_axes()`)."""

  init: Callable[[jax.Array], AnakinState]
  step: Callable[[AnakinState], tuple[AnakinState, dict]]
  run: Callable[[AnakinState, int], tuple[AnakinState, dict]]
  agent: Agent
  env: Any
  place: Callable[[Any], AnakinState]


class _NoNorm(NamedTuple):
  normalize_obs: bool = False
  normalize_reward: bool = False
  gamma: float = 0.99
  obs_clip: float = 10.0
  reward_norm_clip: float = 10.0


def _zeros_action(space, num_envs):
  if space.kind == "discrete":
    return jnp.zeros((num_envs,), jnp.int32)
  return jnp.zeros((num_envs, *space.shape), jnp.float32)


def init_actor(env, agent: Agent, norm_config, num_envs: int, key) -> ActorState:
  k_env, k_act = jax.random.split(key)
  env_state, obs = batched(env.reset, num_envs)(jax.random.split(k_env, num_envs))
  obs_shape = env.observation_space.shape
  return ActorState(
    env_state=env_state,
    obs=obs,
    reward=jnp.zeros((num_envs,), jnp.float32),
    first=jnp.ones((num_envs,), bool),
    terminated=jnp.zeros((num_envs,), bool),
    truncated=jnp.zeros((num_envs,), bool),
    carry=agent.initial_carry(num_envs),
    prev_action=_zeros_action(env.action_space, num_envs),
    norm=ppo_acting.norm_init(obs_shape, num_envs),
    episode_return=jnp.zeros((num_envs,), jnp.float32),
    episode_length=jnp.zeros((num_envs,), jnp.int32),
    key=k_act,
  )


class _Decision(NamedTuple):
  """The policy half of a step: what the agent saw and chose before the env moves."""

  norm: ppo_acting.NormState
  obs: Any  # normalised o_t
  prev_action: Any
  out: ppo_acting.PolicyOutput
  key: jax.Array  # the actor's next key
  env_key: jax.Array  # for a JAX env's step


def _decide(agent: Agent, norm_config, params, a: ActorState, axis_name=None) -> _Decision:
  key, k_act, k_env = jax.random.split(a.key, 3)
  norm, obs_n = ppo_acting.normalize_obs(norm_config, a.norm, a.obs, axis_name=axis_name)
  prev_action = jax.tree.map(
    lambda x: jnp.where(a.first.reshape(a.first.shape + (1,) * (x.ndim - 1)), jnp.zeros_like(x), x),
    a.prev_action,
  )
  out = ppo_acting.policy_step(agent, params, a.carry, obs_n, a.reward, prev_action, a.first, k_act)
  return _Decision(norm, obs_n, prev_action, out, key, k_env)


def _record(norm_config, a: ActorState, d: _Decision, ts, env_state, axis_name=None):
  """The env half: fold the env's TimeStep `ts` into the actor state; one stored transition."""
  valid = ~(a.terminated | a.truncated)
  ended = ts.terminated | ts.truncated
  norm, reward_n = ppo_acting.normalize_reward(norm_config, d.norm, ts.reward, ended, valid, axis_name)
  ep_ret = a.episode_return + ts.reward
  ep_len = a.episode_length + valid.astype(jnp.int32)
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
    jnp.where(ended, 0.0, ep_ret),
    jnp.where(ended, 0, ep_len),
    d.key,
  )
  return new, transition, stats


def _episode_metrics(stats, axis_name=None) -> dict:
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
  norm_config,
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
    d = _decide(agent, norm_config, params, a, axis_name)
    env_state, ts = batched(env.step, num_envs)(
      jax.random.split(d.env_key, num_envs), a.env_state, d.out.action
    )
    new, transition, stats = _record(norm_config, a, d, ts, env_state, axis_name)
    if buf is not None:
      buf = jax.tree.map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, i, 0), buf, a.carry)
    return (new, buf, i + 1), (transition, stats)

  (actor, buf, _), (traj, stats) = jax.lax.scan(
    body, (actor, carry_buffer, jnp.int32(0)), None, length=num_steps
  )
  if buf is not None:
    traj = dict(traj, carry=buf)
  return actor, traj, _episode_metrics(stats, axis_name)


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


def host_acting(env, agent: Agent, norm_config) -> HostActing:
  """Acting around a host `env.step` (envpool, POPGym, a user's env) in one jitted call per step.

  Per rollout of T steps: one call decides step 0; each of the T - 1 next calls folds the env's
  TimeStep into the actor state, writes the transition (and the carry it started from) into
  preallocated `[T, B, ...]` buffers in place (donated), and decides the next action; the last call
  only folds and writes (the next rollout decides with the updated parameters). The env's arrays
  go to the jitted calls as they are (numpy), moved once."""
  b = env.num_envs

  def record_row(a, d, ts):
    """The actor state after the env's TimeStep `ts`, and the buffers' row of this step."""
    new, transition, stats = _record(norm_config, a, d, ts, None)
    return new, dict(transition, carry=a.carry, stats=stats)

  def fold(a, d, ts, buf, t):
    new, row = record_row(a, d, ts)
    buf = jax.tree.map(lambda x, v: jax.lax.dynamic_update_index_in_dim(x, v, t, 0), buf, row)
    return new, buf

  decide = jax.jit(lambda params, a: _decide(agent, norm_config, params, a))

  @functools.partial(jax.jit, donate_argnums=(3,))
  def fold_and_decide(params, a, d, buf, t, *ts):
    a, buf = fold(a, d, TimeStepArrays(*ts), buf, t)
    return a, buf, _decide(agent, norm_config, params, a)

  @functools.partial(jax.jit, donate_argnums=(2,))
  def fold_last(a, d, buf, t, *ts):
    a, buf = fold(a, d, TimeStepArrays(*ts), buf, t)
    return a, buf, _episode_metrics(buf["stats"])

  def timestep(ts):
    return (ts.obs, ts.reward, ts.terminated, ts.truncated, ts.first)

  def init(key):
    ts = TimeStepArrays(*jax.device_put(timestep(env.reset())))
    return ActorState(
      env_state=None,
      obs=ts.obs,
      reward=jnp.asarray(ts.reward, jnp.float32),
      first=ts.first,
      terminated=ts.terminated,
      truncated=ts.truncated,
      carry=agent.initial_carry(b),
      prev_action=_zeros_action(env.action_space, b),
      norm=ppo_acting.norm_init(env.observation_space.shape, b),
      episode_return=jnp.zeros((b,), jnp.float32),
      episode_length=jnp.zeros((b,), jnp.int32),
      key=key,
    )

  held = {}

  def buffers(params, a, num_steps):
    """The `[num_steps, B, ...]` buffers: the previous call's (donated again), or new zeros."""
    if num_steps not in held:
      ts = TimeStepArrays(a.obs, a.reward, a.terminated, a.truncated, a.first)
      _, row = jax.eval_shape(record_row, a, jax.eval_shape(decide, params, a), ts)
      held.clear()
      held[num_steps] = _stacked_zeros(row, num_steps)
    return held.pop(num_steps)

  def run(params, actor: ActorState, num_steps: int):
    buf = buffers(params, actor, num_steps)
    d = decide(params, actor)
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


def bootstrap_value(agent: Agent, norm_config, params, actor: ActorState):
  """V(o_T) of the latest observation (normalised with the current statistics, no update)."""
  _, obs_n = ppo_acting.normalize_obs(norm_config, actor.norm, actor.obs, update=False)
  prev_action = jax.tree.map(
    lambda x: jnp.where(actor.first.reshape(actor.first.shape + (1,) * (x.ndim - 1)), jnp.zeros_like(x), x),
    actor.prev_action,
  )
  (_, value), _ = agent.step(params, actor.carry, obs_n, actor.reward, prev_action, actor.first)
  return value


def _make_runner(
  env, agent: Agent, norm_config, num_envs: int, init_learner, collect, update, batch_axes, mesh, scratch=None
) -> Anakin:
  """The loop from its halves. `init_learner(key) -> learner state`; `collect(learner, actor,
  axis_name, buffer) -> (actor, batch, episode metrics)`: the per-env part of an iteration (acting
  and the learner's batch) for `actor`'s envs; `update(learner, batch) -> (learner, metrics)`: the
  learner step on the whole batch, data-parallel over `mesh` when given (the batch split along
  `batch_axes`). With a mesh, `collect` runs per device on its envs (module doc).

  `scratch`: None, or `(make, axes, of_batch)`: a buffer the loop keeps between iterations and
  donates to each (not part of the state: its contents never outlive an iteration). `make(n)` builds
  it for `n` envs, `axes` is its env axis (a pytree prefix), `of_batch(batch)` the buffer after use;
  `collect` receives it as `buffer` (None without scratch)."""
  make_scratch, scratch_axes, of_batch = scratch or (lambda n: None, None, lambda batch: None)
  if mesh is None:
    init_actors = lambda k: init_actor(env, agent, norm_config, num_envs, k)
    collect_all = lambda learner, actor, buf: collect(learner, actor, None, buf)
    jit = lambda fn: jax.jit(fn, donate_argnums=(1,))
    place = jax.device_put
    new_scratch = jax.jit(lambda: make_scratch(num_envs))
  else:
    local_envs = parallel.shard_size(num_envs, mesh, "the number of environments")
    axes = AnakinState(None, ActorState.batch_axes())
    with_key = lambda a: a._replace(key=a.key[None])  # the device's key <-> its row of [D]
    own_key = lambda a: a._replace(key=a.key[0])

    def init_local(k):
      k = jax.random.fold_in(k, jax.lax.axis_index(parallel.DATA_AXIS))
      return with_key(init_actor(env, agent, norm_config, local_envs, k))

    def collect_local(learner, actor, buf):
      actor, batch, ep_metrics = collect(learner, own_key(actor), parallel.DATA_AXIS, buf)
      return with_key(actor), batch, ep_metrics

    init_actors = parallel.per_device(init_local, mesh, (None,), axes.actor)
    collect_all = parallel.per_device(
      collect_local, mesh, (None, axes.actor, scratch_axes), (axes.actor, batch_axes, None)
    )
    jit = lambda fn: parallel.sharded_jit(
      fn, mesh, (axes, scratch_axes), (axes, scratch_axes, None), donate_argnums=(1,)
    )
    new_scratch = parallel.sharded_jit(
      parallel.per_device(lambda: make_scratch(local_envs), mesh, (), scratch_axes), mesh, (), scratch_axes
    )
    place = lambda state: parallel.shard_batch(state, mesh, axes)

  init_actors = jax.jit(init_actors)  # eagerly, each op dispatches alone (seconds at start-up)

  def init(key):
    k_learn, k_act = jax.random.split(key)
    return place(AnakinState(init_learner(k_learn), init_actors(k_act)))

  def iteration(state: AnakinState, buf):
    actor, batch, ep_metrics = collect_all(state.learner, state.actor, buf)
    learner, metrics = update(state.learner, batch)
    return AnakinState(learner, actor), of_batch(batch), dict(metrics, **ep_metrics)

  iteration = jit(iteration)
  held = []

  def step(state: AnakinState):
    buf = held.pop() if held else new_scratch()
    state, buf, metrics = iteration(state, buf)
    held.append(buf)
    return state, metrics

  def run(state, num_iterations: int):
    history = []
    for _ in range(int(num_iterations)):
      state, metrics = step(state)
      history.append(metrics)
    history = jax.device_get(history)
    stacked = {k: np.stack([np.asarray(m[k]) for m in history]) for k in history[0]} if history else {}
    return state, stacked

  return Anakin(init, step, run, agent, env, place)


def _rekey(saved, like):
  """`like`-shaped keys (one per device, or one) split from the first of the `saved` keys; raw
  `uint32[..., 2]` keys or typed key arrays."""
  typed = parallel.is_typed_key(like)
  if typed != parallel.is_typed_key(saved):
    raise ValueError(f"actor keys: {saved.dtype} in the checkpoint vs {like.dtype} here")
  data_shape = () if typed else like.shape[-1:]
  first = jnp.reshape(saved, (-1, *data_shape))[0]
  count = math.prod(like.shape[: like.ndim - len(data_shape)])
  keys = jnp.reshape(jax.random.split(first, count), like.shape)
  return keys if typed else np.asarray(keys)


def relayout(saved: dict, like: AnakinState) -> AnakinState:
  """A checkpointed state written on another number of devices, in the form of `like` (this run's
  host state). `saved`: the checkpoint's leaves by tree path (`jax.tree_util.keystr`). Every leaf
  but the actor keys is global whatever the devices (per-env state `[num_envs, ...]`, replicated
  learner and statistics) and is kept as saved; the keys, one per device (`[D, ...]`, or one key
  without a mesh), are re-derived from the first saved one: `split(first, D_now)`. The resumed run
  then differs from an uninterrupted one only in its random draws.

  Raises ValueError naming the leaves that are missing or have another shape or dtype."""
  key_path = jax.tree_util.keystr((jax.tree_util.GetAttrKey("actor"), jax.tree_util.GetAttrKey("key")))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  names = [jax.tree_util.keystr(path) for path, _ in leaves]
  out, problems = [], []
  for name, (_, want) in zip(names, leaves):
    got = saved.get(name)
    if got is None:
      problems.append(f"{name}: not in the checkpoint")
    elif name == key_path:
      out.append(_rekey(got, want))
      continue
    elif np.shape(got) != np.shape(want) or np.asarray(got).dtype != np.asarray(want).dtype:
      problems.append(
        f"{name}: {np.asarray(got).dtype}{list(np.shape(got))} in the checkpoint vs "
        f"{np.asarray(want).dtype}{list(np.shape(want))} here"
      )
    out.append(got)
  extra = sorted(saved.keys() - set(names))
  if extra:
    problems.append(f"not in this run: {', '.join(extra)}")
  if problems:
    raise ValueError("; ".join(problems[:5]))
  return jax.tree_util.tree_unflatten(treedef, out)


# -- PPO ----------------------------------------------------------------------------------------------
def ppo_batch(traj: dict, bootstrap_value) -> ppo_learning.PPOBatch:
  """The PPO rollout buffer from the acted steps (`_act`'s time-major dict) and V(o_T)."""
  fields = {k: traj[k] for k in ppo_learning.PPOBatch._fields if k != "bootstrap_value"}
  return ppo_learning.PPOBatch(**fields, bootstrap_value=bootstrap_value)


def make_ppo(env, config: ml_collections.ConfigDict, agent: Agent | None = None, mesh=None) -> Anakin:
  """The fully-jitted PPO loop: `config` from `rtrl_rl.agents.ppo.config` (validated here);
  `config.num_envs` copies of `env`, `config.rollout_length` steps per iteration; data-parallel
  over `mesh` when given (module doc; `num_envs` and `minibatch_size / sequence_length` must divide
  over its devices)."""
  ppo_validate(config)
  if agent is None:
    agent = ppo_acting.make_agent(config, env.observation_space, env.action_space)
  if mesh is None:
    update = ppo_learning.make_update(agent, config)
  else:
    update = ppo_learning.make_learner_step(agent, config, mesh)

  @jax.jit  # eagerly, each op of the network's and optimiser's init dispatches alone (seconds)
  def init_learner(key):
    obs_example = jnp.zeros(env.observation_space.shape, jnp.float32)
    return ppo_learning.init_learner(key, agent, config, obs_example)

  def collect(learner, actor, axis_name, buf):
    params = learner.params
    actor, traj, ep_metrics = act(
      env, agent, config, params, actor, config.rollout_length, axis_name, carry_buffer=buf
    )
    return actor, ppo_batch(traj, bootstrap_value(agent, config, params, actor)), ep_metrics

  # The stored carries (RTRL traces) are the buffer's bulk: one allocation, reused every iteration.
  scratch = (
    lambda n: carry_buffer(agent, config.rollout_length, n),
    ppo_learning.PPOBatch.batch_axes().carry,
    lambda batch: batch.carry,
  )
  return _make_runner(
    env,
    agent,
    config,
    config.num_envs,
    init_learner,
    collect,
    update,
    ppo_learning.PPOBatch.batch_axes(),
    mesh,
    scratch,
  )


# -- IMPALA -------------------------------------------------------------------------------------------
def impala_rollout(traj: dict, before: ActorState, after: ActorState, policy_version):
  """The time-major `rtrl_rl.agents.rollout.Rollout` of M + 1 steps for M acted steps: the M
  observations plus the latest one (for bootstrapping), the carry before obs[0], and the actor's
  log-probs as `behaviour_logits` `[M, B]` (see rtrl_rl/agents/rollout.py)."""
  from rtrl_rl.agents.rollout import Rollout  # pylint: disable=g-import-not-at-top

  cat = lambda xs, x: jnp.concatenate([xs, x[None]], 0)
  last_prev_action = jax.tree.map(
    lambda x: jnp.where(after.first.reshape(after.first.shape + (1,) * (x.ndim - 1)), jnp.zeros_like(x), x),
    after.prev_action,
  )
  num_envs = after.reward.shape[0]
  return Rollout(
    obs=cat(traj["obs"], after.obs.astype(traj["obs"].dtype)),
    reward=cat(traj["prev_reward"], after.reward),
    terminated=jnp.concatenate([before.terminated[None], traj["terminated"]], 0),
    truncated=jnp.concatenate([before.truncated[None], traj["truncated"]], 0),
    first=cat(traj["first"], after.first),
    prev_action=cat(traj["prev_action"], last_prev_action),
    action=traj["action"],
    behaviour_logits=traj["log_prob"],
    carry=before.carry,
    policy_version=jnp.broadcast_to(jnp.asarray(policy_version, jnp.int32), (num_envs,)),
  )


def make_impala(
  env, agent: Agent, config: ml_collections.ConfigDict, update_fn=None, init_learner=None, mesh=None
) -> Anakin:
  """The fully-jitted IMPALA loop: `config` from `rtrl_rl.agents.impala.config` (`batch_size`
  envs, `unroll_length` (M) steps per iteration, one update on the resulting `Rollout`).

  update_fn: `(learner_state, Rollout) -> (learner_state, metrics)`; default
    `rtrl_rl.agents.impala.learning.make_update(agent, config)`. With `mesh` it runs on the global
    rollout split over the mesh (`parallel.data_parallel_jit`); `batch_size` must divide over it.
  init_learner: `key -> learner_state` (with `.params` and `.step`); default
    `impala.learning.init_learner(agent, config, env.observation_space, seed)` with the seed drawn
    from the key.
  Observations are not normalised (IMPALA clips rewards in its loss).
  """
  from rtrl_rl.agents.impala import learning as impala_learning  # pylint: disable=g-import-not-at-top
  from rtrl_rl.agents.rollout import Rollout  # pylint: disable=g-import-not-at-top

  if update_fn is None:
    update_fn = impala_learning.make_update(agent, config)
  if mesh is not None:
    update_fn = parallel.data_parallel_jit(update_fn, mesh, Rollout.batch_axes())
  if init_learner is None:

    def init_learner(key):
      seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
      return impala_learning.init_learner(agent, config, env.observation_space, seed=seed)

  norm_config = _NoNorm(gamma=float(config.discount))

  def collect(learner, actor, axis_name, buf):
    del buf  # IMPALA keeps the carry of the rollout's first step only
    after, traj, ep_metrics = act(
      env, agent, norm_config, learner.params, actor, config.unroll_length, axis_name
    )
    return after, impala_rollout(traj, actor, after, learner.step), ep_metrics

  return _make_runner(
    env, agent, norm_config, config.batch_size, init_learner, collect, update_fn, Rollout.batch_axes(), mesh
  )
