"""Subprocess worker for tests/test_anakin_parallel.py (XLA_FLAGS must force 4 CPU devices).

  python tests/_anakin_parallel_worker.py OUT.npz

For PPO (observation and reward normalisation on) and IMPALA on cue memory, one data-parallel
Anakin iteration over a mesh of all devices (`mesh/...`) and its single-device reference
(`ref/...`): device d's envs are `init_actor(..., B / D, fold_in(k_act, d))`, acted with `actor_loop.act`
(PPO: the D env groups in one `jax.vmap` over the data axis, which merges the normalisation
statistics; IMPALA: one group after the other, episode metrics summed here), the buffers
concatenated along the env axis and updated on one device (PPO: `make_update(..., num_shards=D)`).
Also PPO mesh runs of 2 iterations from seeds 0, 0 and 1 (`again0/`, `again1/`, `other_seed/`), and
the second iteration from the first one's state and from its host copy put back by `place` (a
checkpoint's round trip: `step2/`, `step2_restored/`).
"""

import sys

import jax
import numpy as np

from rtrl_rl import parallel
from rtrl_rl.agents import actor_loop, ppo, rollout
from rtrl_rl.agents.impala import acting as impala_acting
from rtrl_rl.agents.impala import config as impala_config
from rtrl_rl.agents.impala import learning as impala_learning
from rtrl_rl.envs.cue_memory import cue_memory_functional
from rtrl_rl.system import anakin

B, T, M = 8, 4, 5  # envs; PPO rollout length; IMPALA unroll length


def flat(tree, prefix):
  return {
    prefix + jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)
  }


def concat_groups(stacked, batch_axes):
  """`[D, ...]`-stacked per-group trees -> the global tree, groups concatenated along `batch_axes`
  (None: replicated, group 0's copy)."""
  join = lambda x, axis: np.asarray(x)[0] if axis is None else np.concatenate(list(np.asarray(x)), axis)
  return jax.tree.map(
    lambda axis, sub: jax.tree.map(lambda x: join(x, axis), sub),
    batch_axes,
    stacked,
    is_leaf=lambda x: x is None,
  )


def group_actors(env, agent, normalizer, k_act, num_devices):
  """Device d's initial actor state, for every d."""
  return [
    actor_loop.init_actor(env, agent, normalizer, B // num_devices, jax.random.fold_in(k_act, d))
    for d in range(num_devices)
  ]


def ppo_problem():
  c = ppo.get_config()
  c.num_envs, c.rollout_length = B, T
  c.num_epochs, c.num_minibatches, c.minibatch_size = 2, 2, 16
  c.network.mlp_hidden_sizes, c.network.head_hidden_sizes, c.network.hidden_size = (8,), (8,), 4
  c.learning_rate, c.entropy_cost = 1e-2, 0.01
  return ppo.validate(c)


def impala_problem(env):
  c = impala_config.get_config()
  c.batch_size, c.unroll_length = B, M
  c.network.torso, c.network.mlp_hidden_sizes = "mlp", (8,)
  c.network.cell, c.network.hidden_size = "elstm", 4
  c.learning_rate = 1e-2
  return c, impala_config.make_agent(c, env.observation_space, env.action_space)


def main(argv):
  out = argv[1]
  d = len(jax.devices())
  mesh = parallel.make_mesh()
  env = cue_memory_functional(num_cues=3, length=2)  # episodes of 3 steps + autoreset
  key = jax.random.PRNGKey(0)
  _, k_act = jax.random.split(key)
  results = {"num_devices": np.asarray(d)}

  # -- PPO ------------------------------------------------------------------------------------------
  c = ppo_problem()
  loop = anakin.make("ppo", env, c, mesh=mesh)
  normalizer = ppo.acting.normalizer(c)
  agent = loop.agent
  s0 = loop.init(key)
  s1, m1 = loop.step(s0)
  learner0 = parallel.fetch(s0.learner)
  actors = group_actors(env, agent, normalizer, k_act, d)
  results.update(flat(s0.actor, "ppo/mesh_init/"))
  stacked = jax.tree.map(lambda *x: np.stack(x), *actors)
  results.update(
    flat(
      concat_groups(stacked, actor_loop.ActorState.batch_axes(normalizer))._replace(key=stacked.key),
      "ppo/ref_init/",
    )
  )

  @jax.jit
  def ppo_collect(params, actors):
    def group(actor):
      buf = actor_loop.carry_buffer(agent, T, actor.reward.shape[0])
      actor, traj, ep = actor_loop.act(
        env, agent, normalizer, params, actor, T, parallel.DATA_AXIS, carry_buffer=buf
      )
      return actor, ppo.ppo_batch(traj, actor_loop.bootstrap_value(agent, normalizer, params, actor)), ep

    return jax.vmap(group, axis_name=parallel.DATA_AXIS)(actors)

  actor, batch, ep = ppo_collect(learner0.params, stacked)
  batch = concat_groups(batch, ppo.PPOBatch.batch_axes())
  learner1, metrics = jax.jit(ppo.make_update(agent, c, num_shards=d))(learner0, batch)
  for name, tree in (
    ("params", s1.learner.params),
    ("metrics", m1),
    ("norm", s1.actor.norm.obs),
    ("ret", s1.actor.norm.ret),
  ):
    results.update(flat(parallel.fetch(tree), f"ppo/mesh/{name}/"))
  norm = jax.tree.map(lambda x: np.asarray(x)[0], actor.norm)
  for name, tree in (
    ("params", learner1.params),
    ("metrics", dict(metrics, **jax.tree.map(lambda x: x[0], ep))),
    ("norm", norm.obs),
    ("ret", norm.ret),
  ):
    results.update(flat(tree, f"ppo/ref/{name}/"))
  results["ppo/norm_copies_equal"] = np.asarray(
    all(np.all(x == x[:1]) for x in jax.tree.leaves((actor.norm.obs, actor.norm.ret)))
  )
  results["ppo/ended"] = np.asarray(np.sum(batch.terminated | batch.truncated))
  results["ppo/valid_steps"] = np.asarray(np.sum(batch.mask))
  results["ppo/initial_params"] = np.concatenate([np.ravel(x) for x in jax.tree.leaves(learner0.params)])
  results["ppo/mesh_obs"] = np.asarray(s1.actor.obs)
  results["ppo/ref_obs"] = concat_groups(actor.obs, 0)

  # A host copy of the state (a checkpoint) put back by `place`: the same placement, the same next step.
  restored = loop.place(parallel.fetch(s1))
  results["ppo/restored_placement_equal"] = np.asarray(
    all(a.sharding == b.sharding for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(restored)))
  )
  results.update(flat(parallel.fetch(loop.step(s1)[0]), "ppo/step2/"))
  results.update(flat(parallel.fetch(loop.step(restored)[0]), "ppo/step2_restored/"))
  for name, seed in (("again0", 0), ("again1", 0), ("other_seed", 1)):
    state, _ = loop.run(loop.init(jax.random.PRNGKey(seed)), 2)
    results.update(flat(parallel.fetch(state.learner.params), f"ppo/{name}/"))

  # -- IMPALA ---------------------------------------------------------------------------------------
  c, agent = impala_problem(env)
  loop = anakin.make("impala", env, c, mesh=mesh, agent=agent)
  s0 = loop.init(key)
  s1, m1 = loop.step(s0)
  learner0 = parallel.fetch(s0.learner)
  act = jax.jit(lambda params, a: actor_loop.act(env, agent, None, params, a, M))
  rollouts, eps = [], []
  for a in group_actors(env, agent, None, k_act, d):
    after, traj, ep = act(learner0.params, a)
    rollouts.append(jax.device_get(impala_acting.rollout_of(traj, a, after, learner0.step)))
    eps.append(ep)
  learner1, metrics = jax.jit(impala_learning.make_update(agent, c))(learner0, rollout.concatenate(rollouts))
  ep = {k: sum(e[k] for e in eps) for k in ("episodes", "episode_return_sum")}
  results.update(flat(parallel.fetch(s1.learner.params), "impala/mesh/params/"))
  results.update(flat(parallel.fetch({k: m1[k] for k in (*metrics, *ep)}), "impala/mesh/metrics/"))
  results.update(flat(learner1.params, "impala/ref/params/"))
  results.update(flat(dict(metrics, **ep), "impala/ref/metrics/"))
  np.savez(out, **results)


if __name__ == "__main__":
  main(sys.argv)
