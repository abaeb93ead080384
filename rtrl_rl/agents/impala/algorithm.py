"""IMPALA as the system layer sees it (`ALGORITHM`, rtrl_rl/agents/registry.py): actor processes on
host envs (backend "actors") and the fully-jitted loop's halves on JAX envs (backend "anakin")."""

from __future__ import annotations

import copy
import os

import jax

from rtrl_rl import parallel
from rtrl_rl.agents import actor_loop, registry
from rtrl_rl.agents.impala import acting, learning
from rtrl_rl.agents.impala import config as impala_config
from rtrl_rl.agents.rollout import Rollout, batch_slice


class Impala(registry.Algorithm):
  """Irie et al. 2024's IMPALA (V-trace) with RTRL cores."""

  name = "impala"
  title = "IMPALA"
  backends = ("actors", "anakin")

  def get_config(self):
    return impala_config.get_config()

  def validate(self, config, spaces):
    s, a = config.system, config.agent
    if s.backend == "actors" and isinstance(s.envs_per_actor, int) and s.envs_per_actor > 0:
      processes = max(1, s.num_processes)
      if a.batch_size % processes or (a.batch_size // processes) % s.envs_per_actor:
        raise registry.ConfigError(
          "experiment",
          f"agent.batch_size={a.batch_size} must split into whole actor records: a multiple of "
          f"system.envs_per_actor={s.envs_per_actor} x system.num_processes={s.num_processes}",
        )
    impala_config.validate(a, *(spaces or (None, None)))

  def split_sizes(self, agent_config):
    return {"batch_size": agent_config.batch_size}

  def anakin(self, env, agent_config, mesh=None, agent=None):
    """`batch_size` envs, `unroll_length` (M) steps per iteration into a `Rollout`, then the update
    (`learning.make_update`), data-parallel over `mesh` (`batch_size` must divide over it).
    Observations are not normalised (IMPALA clips rewards in its loss)."""
    config = agent_config
    if agent is None:
      agent = impala_config.make_agent(config, env.observation_space, env.action_space)
    update = learning.make_update(agent, config)
    if mesh is not None:
      update = parallel.data_parallel_jit(update, mesh, Rollout.batch_axes())

    def init_learner(key):  # traceable (the loop takes the state's shapes with jax.eval_shape)
      seed = jax.random.randint(key, (), 0, 2**31 - 1)
      return learning.init_learner(agent, config, env.observation_space, seed=seed)

    def collect(learner, actor, axis_name, buf):
      del buf  # IMPALA keeps the carry of the rollout's first step only
      after, traj, ep_metrics = actor_loop.act(
        env, agent, None, learner.params, actor, config.unroll_length, axis_name
      )
      return after, acting.rollout_of(traj, actor, after, learner.step), ep_metrics

    return registry.AnakinParts(
      agent=agent,
      num_envs=config.batch_size,
      steps_per_iteration=config.batch_size * config.unroll_length,
      total_updates=learning.updates_per_run(config),
      init_learner=init_learner,
      init_actors=lambda n, key: actor_loop.init_actor(env, agent, None, n, key),
      actor_axes=actor_loop.ActorState.batch_axes(),
      collect=collect,
      update=update,
      batch_axes=Rollout.batch_axes(),
    )

  def policy(self, config, spaces, checkpoint):
    """The checkpoint's parameters (a frozen stem's weights are in it: its file is not needed)."""
    a = copy.deepcopy(config.agent)
    n = a.network
    if n.stem_grad == "frozen" and n.stem_checkpoint and not os.path.exists(n.stem_checkpoint):
      n.stem_grad, n.stem_checkpoint = "unroll", None
    from rtrl_rl.io import checkpoint as checkpoints  # noqa: PLC0415 - start-up time: it imports orbax

    observation_space, _ = spaces
    agent = impala_config.make_agent(a, *spaces)
    example = jax.ShapeDtypeStruct(observation_space.shape, observation_space.dtype)
    params = checkpoints.find_subtree(
      checkpoint, jax.eval_shape(agent.init, jax.random.key(0), example), "params"
    )
    return registry.TrainedPolicy(agent, params)

  def actor_learner(self, config, spaces):
    a = config.agent
    observation_space, action_space = spaces
    agent = impala_config.make_agent(a, observation_space, action_space)

    def collector(envs, seed):
      return acting.RolloutCollector(envs, agent, a.unroll_length, seed=seed)

    return registry.ActorLearner(
      agent=agent,
      init_learner=lambda seed: learning.init_learner(agent, a, observation_space, seed=seed),
      learner_step=lambda mesh, donate: learning.make_learner_step(agent, a, mesh, donate=donate),
      total_updates=learning.updates_per_run(a),
      frames_per_update=a.unroll_length * a.batch_size,
      batch_size=a.batch_size,
      unroll_length=a.unroll_length,
      rollout_spec=lambda n: acting.rollout_spec(agent, a.unroll_length, n, observation_space, action_space),
      batch_axes=Rollout.batch_axes(),
      collector=collector,
      batch_slice=batch_slice,
    )


ALGORITHM = Impala()
