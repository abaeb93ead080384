"""Actor processes: step a batch of environments with the current policy and stream rollouts.

Each actor (a spawned process, see system/processes.py) owns `system.envs_per_actor` environments,
runs the jitted policy on its CPU, carries each env's recurrent state and RTRL traces, and puts one
`ActorRecord` per rollout of M+1 steps into the shared-memory `RolloutQueue` (blocking when the
learner falls behind). Parameters come from the `ParamStore` with their version, which the record
carries so the learner can log the policy lag (V-trace corrects for it).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from rtrl_rl.system.queue import ArraySpec, QueueClosed


class ActorRecord(NamedTuple):
  """What an actor sends per rollout: the Rollout and the episodes that ended inside it.

  episode_return [M, B] float32: return of the episode whose last observation is obs[t+1]; NaN
                 where no episode ended (t + 1 indexes obs[1..M], so the overlap step obs[0] of
                 the next rollout is never counted twice).
  episode_length [M, B] int32: its length in agent steps (0 where none ended).
  """
  rollout: Any
  episode_return: Any
  episode_length: Any


def record_batch_axes() -> ActorRecord:
  from rtrl_rl.agents.rollout import Rollout  # pylint: disable=g-import-not-at-top
  return ActorRecord(Rollout.batch_axes(), 1, 1)


def record_spec(config, observation_space, action_space, agent) -> ActorRecord:
  """The `ArraySpec` tree of one actor's record (numpy shapes, no batch of records)."""
  import jax  # pylint: disable=g-import-not-at-top
  from rtrl_rl.agents.rollout import Rollout  # pylint: disable=g-import-not-at-top
  m, b = config.agent.unroll_length, config.system.envs_per_actor
  carry = agent.initial_carry(b)
  spec = lambda shape, dtype: ArraySpec(tuple(shape), np.dtype(dtype))
  act = (*action_space.shape,)
  # categorical policies ship their logits [A]; others the log-prob of the action taken
  behaviour = (action_space.num_values,) if action_space.kind == "discrete" else ()
  rollout = Rollout(
      obs=spec((m + 1, b, *observation_space.shape), observation_space.dtype),
      reward=spec((m + 1, b), np.float32), terminated=spec((m + 1, b), bool),
      truncated=spec((m + 1, b), bool), first=spec((m + 1, b), bool),
      prev_action=spec((m + 1, b, *act), action_space.dtype),
      action=spec((m, b, *act), action_space.dtype),
      behaviour_logits=spec((m, b, *behaviour), np.float32),
      carry=jax.tree.map(lambda x: spec(x.shape, x.dtype), carry),
      policy_version=spec((b,), np.int32))
  return ActorRecord(rollout, spec((m, b), np.float32), spec((m, b), np.int32))


class EpisodeTracker:
  """Running return and length per env across rollouts (next-step autoreset contract)."""

  def __init__(self, num_envs: int):
    self.ret = np.zeros(num_envs, np.float64)
    self.length = np.zeros(num_envs, np.int64)

  def update(self, rollout) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(episode_return [M, B], episode_length [M, B])` for episodes ending at obs[1..M]."""
    m = rollout.action.shape[0]
    out_ret = np.full((m, self.ret.shape[0]), np.nan, np.float32)
    out_len = np.zeros((m, self.ret.shape[0]), np.int32)
    for t in range(1, m + 1):
      first = rollout.first[t]
      self.ret = np.where(first, 0.0, self.ret + rollout.reward[t])
      self.length = np.where(first, 0, self.length + 1)
      ended = rollout.terminated[t] | rollout.truncated[t]
      out_ret[t - 1] = np.where(ended, self.ret, np.nan)
      out_len[t - 1] = np.where(ended, self.length, 0)
    return out_ret, out_len


def actor_seed(config, process_index: int, actor_index: int, attempt: int) -> int:
  """Distinct per process, actor and restart (a restarted actor does not replay its episodes)."""
  return int(config.seed) * 1_000_003 + process_index * 10_007 + actor_index * 101 + attempt * 7_919


def actor_main(info, config, process_index: int, actor_index: int, queue, param_store) -> None:
  """Entry point of one actor process (called by the Supervisor as `target(info, *args)`)."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # actors infer on host CPUs
  import jax  # pylint: disable=g-import-not-at-top
  from rtrl_rl import envs  # pylint: disable=g-import-not-at-top
  from rtrl_rl.agents.impala import acting, config as impala_config  # pylint: disable=g-import-not-at-top

  seed = actor_seed(config, process_index, actor_index, info.attempt)
  env = envs.make(config.env.id, config.system.envs_per_actor, seed, **config.env.options.to_dict())
  agent = impala_config.make_agent(config.agent, env.observation_space, env.action_space)
  agent.init(jax.random.key(0), np.zeros(env.observation_space.shape, env.observation_space.dtype))
  collector = acting.RolloutCollector(env, agent, config.agent.unroll_length, seed=seed)
  tracker = EpisodeTracker(env.num_envs)
  version, params = -1, None
  try:
    while not info.stop_event.is_set():
      newer = param_store.read_if_newer(version)
      if newer is not None:
        host_params, version = newer
        params = jax.device_put(host_params)
      if params is None:                      # the learner has not published yet
        info.stop_event.wait(0.05)
        continue
      rollout = collector.collect(params, policy_version=version)
      record = ActorRecord(rollout, *tracker.update(rollout))
      while not info.stop_event.is_set():
        try:
          queue.put(record, timeout=0.5)      # blocks while the learner is behind
          break
        except TimeoutError:
          continue
  except QueueClosed:
    pass
  finally:
    env.close()
