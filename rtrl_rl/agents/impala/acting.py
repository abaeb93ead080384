"""IMPALA acting: a jitted policy step and a rollout collector for numpy batched envs.

The policy step runs `agent.step` (in core_mode="rtrl" the core updates its RTRL traces every
step, so the carry shipped with each rollout holds the traces the learner needs).

    policy = make_policy(agent)                       # or make_policy(agent, greedy=True)
    action, behaviour, carry = policy(params, carry, obs, reward, first, prev_action, key)

    actor = RolloutCollector(env, agent, unroll_length=50, seed=0)
    rollout = actor.collect(params, policy_version=step)      # a Rollout of numpy arrays

    actor = RolloutCollector([env_a, env_b], agent, unroll_length=50)   # double buffered
    rollout_a, rollout_b = actor.collect_all(params, policy_version=step)

Double buffering. With several envs ("buffers", each a batch of `num_envs` environments), the
collector interleaves them: it sends buffer h's actions to its env (envpool `send`, whose worker
threads step the envs) and, while they step, runs the policy on the next buffer, then `recv`s buffer
h's TimeStep just before its next policy step. Each buffer is its own stream of rollouts with its own
carry, so every Rollout it returns satisfies the Rollout contract (rtrl_rl/agents/rollout.py) on its
own: the same `num_envs` envs for all M+1 steps, overlap by one step with that buffer's previous
rollout. Envs with `send(actions, env_ids)` / `recv()` (rtrl_rl.envs envpool families, used with
batch_size == num_envs so that a recv returns the whole buffer) are stepped asynchronously; other
envs (`step(actions)` only) are stepped synchronously at the point of the recv.

Per step the host does one jitted call per buffer: the PRNG key is split inside it (no per-step
`jax.random.split` dispatch), the carry and key stay on the device between steps and are donated to
the step (updated in place: with RTRL traces the carry is most of the step's memory traffic), the
carry is fetched once per rollout (the one the rollout starts from), and TimeSteps, actions and
behaviour are written straight into preallocated rollout arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.agents.actor_loop import zero_where_first
from rtrl_rl.agents.rollout import Rollout
from rtrl_rl.networks.agent import Agent


def _act(agent: Agent, greedy: bool, params, carry, obs, reward, first, prev_action, key):
  first = jnp.asarray(first, bool)
  prev_action = zero_where_first(prev_action, first)
  (dist, _), carry = agent.step(params, carry, obs, jnp.asarray(reward), prev_action, first)
  action = dist.mode() if greedy else dist.sample(key)
  behaviour = dist.log_prob(action)
  return action, behaviour, carry


def make_policy(agent: Agent, greedy: bool = False):
  """Jitted `(params, carry, obs [B,...], reward [B], first [B], prev_action [B], key)
  -> (action [B(,D)], behaviour, carry)`.

  `reward` is the reward INTO obs (the TimeStep's), `prev_action` the action taken before obs
  (zeroed here on first steps). `behaviour` is the log-prob `[B]` of the chosen action.
  `greedy=True` takes the mode.
  """

  @jax.jit
  def policy(params, carry, obs, reward, first, prev_action, key):
    return _act(agent, greedy, params, carry, obs, reward, first, prev_action, key)

  return policy


def make_actor_step(agent: Agent, greedy: bool = False, donate: bool = True):
  """Jitted `(params, carry, key, obs, reward, first, prev_action) -> (action, behaviour, carry,
  key)`: `make_policy` with the key split inside (the returned key is the next step's).

  donate: the carry and key buffers are donated (updated in place; the caller must use the returned
  ones). On CPU this cuts the step's cost by 1.3-4x for RTRL carries (the traces are most of it).
  """

  def step(params, carry, key, obs, reward, first, prev_action):
    key, sub = jax.random.split(key)
    action, behaviour, carry = _act(agent, greedy, params, carry, obs, reward, first, prev_action, sub)
    return action, behaviour, carry, key

  return jax.jit(step, donate_argnums=(1, 2) if donate else ())


def _from_policy(policy):
  """A `make_actor_step`-style step from a `make_policy`-style policy (key split on the host)."""

  def step(params, carry, key, obs, reward, first, prev_action):
    key, sub = jax.random.split(key)
    action, behaviour, carry = policy(params, carry, obs, reward, first, prev_action, sub)
    return action, behaviour, carry, key

  return step


class _Stepper:
  """`send(actions)` / `recv() -> TimeStep` over one batched env (all of its envs at once)."""

  def __init__(self, env):
    self.env = env
    self.num_envs = int(env.num_envs)
    self._async = hasattr(env, "send") and hasattr(env, "recv")
    if self._async and int(getattr(env, "batch_size", self.num_envs)) != self.num_envs:
      raise ValueError(
        f"RolloutCollector: env batch_size={env.batch_size} != num_envs="
        f"{self.num_envs}; each buffer is received whole (use one env per buffer "
        "with batch_size == num_envs)"
      )
    self._ids = np.arange(self.num_envs, dtype=np.int32)
    self._pending = None

  def reset(self):
    return self.env.reset()

  def send(self, actions) -> None:
    if self._async:
      self.env.send(actions, self._ids)
    else:
      self._pending = actions

  def recv(self):
    if not self._async:
      actions, self._pending = self._pending, None
      return self.env.step(actions)
    ts, ids = self.env.recv()
    if not np.array_equal(ids, self._ids):  # envpool returns a whole pool (sync size) in id order
      raise RuntimeError(f"RolloutCollector: recv() returned env ids {ids}, expected 0..{self.num_envs - 1}")
    return ts


class _Buffer:
  """Per-buffer state kept between rollouts: the last TimeStep (not yet acted on), the carry
  (device), the last action; and the arrays of the rollout being written."""

  def __init__(self, stepper: _Stepper):
    self.io = stepper
    self.ts = None
    self.carry = None
    self.last_action = None
    self.arrays = None

  def write_step(self, t: int, ts, prev_action) -> None:
    a = self.arrays
    a["obs"][t] = ts.obs
    a["reward"][t] = ts.reward
    a["terminated"][t] = ts.terminated
    a["truncated"][t] = ts.truncated
    first = a["first"][t]
    first[...] = ts.first
    pa = a["prev_action"][t]
    pa[...] = prev_action
    pa[first] = 0  # no "last action" across an episode start


class RolloutCollector:
  """Collects overlapping rollouts of M+1 steps from one or more numpy batched envs
  (rtrl_rl.envs contract); see the module docstring for double buffering.

  Keeps, per env, the core's carry, the last TimeStep and the last action between calls: rollout
  k+1 of a buffer starts at the last obs of its rollout k (obs[M] == next obs[0]) with the carry
  after obs[M-1].

  env: a batched env, or a sequence of them (one buffer each; all with the same spaces).
  policy: optional `make_policy`-style jitted policy (the key is then split on the host).
  """

  def __init__(self, env, agent: Agent, unroll_length: int, seed: int = 0, greedy: bool = False, policy=None):
    envs = list(env) if isinstance(env, (list, tuple)) else [env]
    if not envs:
      raise ValueError("RolloutCollector: no env given")
    self.envs = envs
    self.env = envs[0]
    self.agent, self.unroll_length = agent, int(unroll_length)
    self.policy = policy if policy is not None else make_policy(agent, greedy)
    self._step = _from_policy(policy) if policy is not None else make_actor_step(agent, greedy)
    self._key = jnp.array(jax.random.PRNGKey(seed))
    self._buffers = [_Buffer(_Stepper(e)) for e in envs]
    self._behaviour = None
    self.num_steps = 0

  @property
  def num_buffers(self) -> int:
    return len(self._buffers)

  def _reset(self):
    for buf in self._buffers:
      buf.ts = buf.io.reset()
      n = buf.io.num_envs
      # own buffers per env batch: the jitted step donates (overwrites) them
      buf.carry = jax.tree.map(lambda x: jnp.array(np.asarray(x)), self.agent.initial_carry(n))
      space = self.env.action_space
      buf.last_action = np.zeros((n, *space.shape), space.dtype)

  def _allocate(self, buf: _Buffer, behaviour_shape, behaviour_dtype) -> None:
    m, ts = self.unroll_length, buf.ts
    n, act = buf.io.num_envs, self.env.action_space
    buf.arrays = dict(
      obs=np.empty((m + 1, *np.shape(ts.obs)), np.asarray(ts.obs).dtype),
      reward=np.empty((m + 1, n), np.float32),
      terminated=np.empty((m + 1, n), bool),
      truncated=np.empty((m + 1, n), bool),
      first=np.empty((m + 1, n), bool),
      prev_action=np.empty((m + 1, n, *act.shape), act.dtype),
      action=np.empty((m, n, *act.shape), act.dtype),
      behaviour_log_prob=np.empty((m, n, *behaviour_shape[1:]), behaviour_dtype),
    )

  def collect(self, params, policy_version: int = 0) -> Rollout:
    """One Rollout (numpy arrays; carry as numpy) acting with `params` (one env only)."""
    if len(self._buffers) != 1:
      raise ValueError(f"RolloutCollector.collect: {len(self._buffers)} buffers; use collect_all")
    return self.collect_all(params, policy_version)[0]

  def collect_all(self, params, policy_version: int = 0) -> list[Rollout]:
    """One Rollout per buffer (numpy arrays; carry as numpy), acting with `params`."""
    if self._buffers[0].ts is None:
      self._reset()
    m, bufs, step = self.unroll_length, self._buffers, self._step
    key = self._key
    if self._behaviour is None:  # shape/dtype of the behaviour output
      b0 = bufs[0]
      self._behaviour = jax.eval_shape(
        step, params, b0.carry, key, b0.ts.obs, b0.ts.reward, b0.ts.first, b0.last_action
      )[1]
    carry0 = [jax.tree.map(np.array, buf.carry) for buf in bufs]  # copies: the step donates it
    for buf in bufs:  # fresh arrays: rollouts never alias
      self._allocate(buf, self._behaviour.shape, self._behaviour.dtype)
      buf.write_step(0, buf.ts, buf.last_action)
    for t in range(m):
      for buf in bufs:
        arrays = buf.arrays
        if t > 0:
          buf.ts = buf.io.recv()  # stepped while the other buffers acted
          buf.write_step(t, buf.ts, arrays["action"][t - 1])
        ts = buf.ts
        action, behaviour, buf.carry, key = step(
          params, buf.carry, key, ts.obs, ts.reward, ts.first, arrays["prev_action"][t]
        )
        a = arrays["action"][t]
        a[...] = np.asarray(action)
        arrays["behaviour_log_prob"][t] = np.asarray(behaviour)
        buf.io.send(a)
    out = []
    for buf, c0 in zip(bufs, carry0):
      buf.ts = buf.io.recv()
      buf.write_step(m, buf.ts, buf.arrays["action"][m - 1])
      buf.last_action = buf.arrays["action"][m - 1].copy()
      n = buf.io.num_envs
      self.num_steps += m * n
      out.append(Rollout(carry=c0, policy_version=np.full((n,), policy_version, np.int32), **buf.arrays))
      buf.arrays = None
    self._key = key
    return out


def rollout_of(traj: dict, before, after, policy_version) -> Rollout:
  """The time-major `Rollout` of M + 1 steps for M steps acted by `actor_loop.act` (the fully-jitted
  loop): the M observations plus the latest one (for bootstrapping), the carry before obs[0], and
  the actor's log-probs as `behaviour_log_prob` `[M, B]`. `before`, `after`: the `ActorState`s the
  M steps started and ended at."""
  cat = lambda xs, x: jnp.concatenate([xs, x[None]], 0)
  num_envs = after.reward.shape[0]
  return Rollout(
    obs=cat(traj["obs"], after.obs.astype(traj["obs"].dtype)),
    reward=cat(traj["prev_reward"], after.reward),
    terminated=jnp.concatenate([before.terminated[None], traj["terminated"]], 0),
    truncated=jnp.concatenate([before.truncated[None], traj["truncated"]], 0),
    first=cat(traj["first"], after.first),
    prev_action=cat(traj["prev_action"], zero_where_first(after.prev_action, after.first)),
    action=traj["action"],
    behaviour_log_prob=traj["log_prob"],
    carry=before.carry,
    policy_version=jnp.broadcast_to(jnp.asarray(policy_version, jnp.int32), (num_envs,)),
  )


def rollout_spec(agent: Agent, unroll_length: int, num_envs: int, observation_space, action_space) -> Rollout:
  """The shapes of one `RolloutCollector` rollout of `num_envs` envs (`jax.ShapeDtypeStruct` leaves)."""
  m, b = unroll_length, num_envs
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
  act = (*action_space.shape,)
  return Rollout(
    obs=spec((m + 1, b, *observation_space.shape), observation_space.dtype),
    reward=spec((m + 1, b), np.float32),
    terminated=spec((m + 1, b), bool),
    truncated=spec((m + 1, b), bool),
    first=spec((m + 1, b), bool),
    prev_action=spec((m + 1, b, *act), action_space.dtype),
    action=spec((m, b, *act), action_space.dtype),
    behaviour_log_prob=spec((m, b), np.float32),
    carry=jax.tree.map(lambda x: spec(x.shape, x.dtype), agent.initial_carry(b)),
    policy_version=spec((b,), np.int32),
  )
