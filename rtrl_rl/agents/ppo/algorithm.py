"""PPO as the system layer sees it (`ALGORITHM`, rtrl_rl/agents/registry.py): the fully-jitted loop's
halves on JAX envs (backend "anakin") and the host loop (backend "sync": envpool, POPGym, ...)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl import envs, experiment, parallel
from rtrl_rl.agents import actor_loop, registry
from rtrl_rl.agents.ppo import acting, learning
from rtrl_rl.agents.ppo import config as ppo_config


class PPO(registry.Algorithm):
  """Elelimy et al. 2024's PPO with RTRL cores."""

  name = "ppo"
  title = "PPO"
  backends = ("sync", "anakin")

  def get_config(self):
    return ppo_config.get_config()

  def configure(self, config):
    config.system.backend = "sync"

  def validate(self, config, spaces):
    ppo_config.validate(config.agent)
    if spaces is not None:
      _check_buffer_fits(config, spaces)

  def split_sizes(self, agent_config):
    a = agent_config
    return learning.split_sizes(a.num_envs, a.minibatch_size, a.sequence_length)

  def anakin(self, env, agent_config, mesh=None, agent=None):
    """`num_envs` copies of `env`, `rollout_length` steps per iteration into a `PPOBatch`, then the
    update; data-parallel over `mesh` (`num_envs` and `minibatch_size / sequence_length` must
    divide over its devices)."""
    config = agent_config
    ppo_config.validate(config)
    if agent is None:
      agent = acting.make_agent(config, env.observation_space, env.action_space)
    normalizer = acting.normalizer(config)
    update = (
      learning.make_update(agent, config) if mesh is None else learning.make_learner_step(agent, config, mesh)
    )

    @jax.jit  # eagerly, each op of the network's and optimiser's init dispatches alone (seconds)
    def init_learner(key):
      obs_example = jnp.zeros(env.observation_space.shape, jnp.float32)
      return learning.init_learner(key, agent, config, obs_example)

    def collect(learner, actor, axis_name, buf):
      params = learner.params
      actor, traj, ep_metrics = actor_loop.act(
        env, agent, normalizer, params, actor, config.rollout_length, axis_name, carry_buffer=buf
      )
      bootstrap = actor_loop.bootstrap_value(agent, normalizer, params, actor)
      return actor, learning.ppo_batch(traj, bootstrap), ep_metrics

    # The stored carries (RTRL traces) are the buffer's bulk: one allocation, reused every iteration.
    scratch = (
      lambda n: actor_loop.carry_buffer(agent, config.rollout_length, n),
      learning.PPOBatch.batch_axes().carry,
      lambda batch: batch.carry,
    )
    return registry.AnakinParts(
      agent=agent,
      num_envs=config.num_envs,
      steps_per_iteration=config.num_envs * config.rollout_length,
      total_updates=updates_per_run(config, config.num_envs * config.rollout_length),
      init_learner=init_learner,
      init_actors=lambda n, key: actor_loop.init_actor(env, agent, normalizer, n, key),
      actor_axes=actor_loop.ActorState.batch_axes(normalizer),
      collect=collect,
      update=update,
      batch_axes=learning.PPOBatch.batch_axes(),
      scratch=scratch,
    )

  def policy(self, config, spaces, checkpoint):
    """The checkpoint's parameters; observations normalised with its running statistics (frozen),
    by the function that normalised them in training."""
    a = config.agent
    from rtrl_rl.io import checkpoint as checkpoints  # noqa: PLC0415 - start-up time: it imports orbax

    observation_space, _ = spaces
    agent = acting.make_agent(a, *spaces)
    example = jax.ShapeDtypeStruct(observation_space.shape, jnp.float32)
    params = checkpoints.find_subtree(
      checkpoint, jax.eval_shape(agent.init, jax.random.key(0), example), "params"
    )
    if not a.normalize_obs:
      return registry.TrainedPolicy(agent, params)
    stats = checkpoints.find_subtree(checkpoint, acting.stats_init(observation_space.shape), "norm.obs")
    norm = acting.NormState(obs=stats, ret=None, ret_acc=None)
    return registry.TrainedPolicy(
      agent, params, lambda obs: acting.normalize_obs(a, norm, obs, update=False)[1]
    )

  def host_loop(self, config, mesh=None):
    """Act `rollout_length` steps on a host env, then one jitted update. A checkpoint holds the
    learner and the normalisation statistics; a resumed run starts new episodes.

    With a mesh (the local devices; `num_envs` and the sequences per minibatch divisible by their
    number) the update is data-parallel (`learning.make_learner_step`): the learner state stays
    replicated, the buffer is split along the env axis, and the actor uses the first device's
    replica of the parameters. On one device the update is the plain jitted one."""
    a = config.agent
    env = envs.make(config.env.id, a.num_envs, config.seed, **config.env.options.to_dict())
    agent = acting.make_agent(a, env.observation_space, env.action_space)
    normalizer = acting.normalizer(a)
    host = actor_loop.host_acting(env, agent, normalizer)
    update = learning.make_learner_step(agent, a, mesh)
    bootstrap = jax.jit(lambda params, actor: actor_loop.bootstrap_value(agent, normalizer, params, actor))
    place = (lambda learner: learner) if mesh is None else (lambda learner: parallel.replicate(learner, mesh))
    acting_params = (lambda params: params) if mesh is None else parallel.local_replica

    def init():
      k_learn, k_act = jax.random.split(jax.random.PRNGKey(config.seed))
      obs = np.zeros(env.observation_space.shape, np.float32)
      return place(learning.init_learner(k_learn, agent, a, obs)), host.init(k_act)

    def step(state):
      learner, actor = state
      params = acting_params(learner.params)
      actor, traj, ep_metrics = host.act(params, actor, a.rollout_length)
      batch = learning.ppo_batch(traj, bootstrap(params, actor))
      if mesh is not None:
        batch = parallel.shard_batch(batch, mesh, learning.PPOBatch.batch_axes())
      learner, metrics = update(learner, batch)
      return (learner, actor), dict(metrics, **ep_metrics)

    return registry.Iterations(
      init,
      step,
      a.num_envs * a.rollout_length,
      saved=lambda state: SavedHostLoop(learner=state[0], norm=state[1].norm),
      resume=lambda state, tree, counters: (place(tree.learner), state[1]._replace(norm=tree.norm)),
      params=lambda state: state[0].params,
      total_updates=updates_per_run(a, a.num_envs * a.rollout_length),
    )


class SavedHostLoop(NamedTuple):
  """What a checkpoint of the host loop holds (a resumed run starts new episodes)."""

  learner: Any
  norm: Any  # the normalisation statistics (`acting.NormState`)


def updates_per_run(agent_config, steps_per_update: int) -> int:
  """Updates of a run of `agent_config.total_env_steps` agent steps (at least one)."""
  return max(1, math.ceil(agent_config.total_env_steps / steps_per_update))


def _check_buffer_fits(config, spaces) -> None:
  """Refuse a PPO config whose rollout buffer cannot fit: its stored carries (RTRL traces) are
  written once per rollout and read by the update, and the run's peak is about twice them."""
  a = config.agent
  need = 2 * ppo_config.stored_carry_bytes(a, *spaces)
  have = experiment.device_memory_bytes()
  if need > have:
    raise registry.ConfigError(
      "experiment",
      f"the PPO rollout stores agent.rollout_length x agent.num_envs = {a.rollout_length} x "
      f"{a.num_envs} carries of the {a.network.cell} core ({need / 2 / 2**30:.1f} GiB; with the "
      f"update's working copies ~{need / 2**30:.1f} GiB) but the devices have {have / 2**30:.1f} "
      f"GiB: lower agent.rollout_length or agent.num_envs (with several envs the paper's 2048 steps "
      f"per update are rollout_length = 2048 / num_envs), or agent.network.hidden_size",
    )


ALGORITHM = PPO()
