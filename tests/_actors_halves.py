"""The actors backend's deterministic halves, run as `python tests/_actors_halves.py OUT.npz` from
the repository root (tests/test_behaviour_pinned.py): one actor process's collector on its host env
pools (`actors.make_actor_envs`, the seed of actor 0) and the learner's update, alternated for three
updates, each collection with the parameters of the update before (no queue, no processes: what the
backend computes without its timing). Writes the final parameters (`jax.tree.leaves` order) and the
returns of the episodes that ended, as the actor's `EpisodeTracker`s report them."""

import sys

import jax
import numpy as np

from rtrl_rl import envs, experiment
from rtrl_rl.agents import registry
from rtrl_rl.agents.rollout import concatenate
from rtrl_rl.system import actors

UPDATES = 3


def config():
  return experiment.load_config(
    "configs/default.py",
    {
      "agent.unroll_length": 10,
      "agent.batch_size": 8,
      "agent.network.mlp_hidden_sizes": (16,),
      "agent.network.hidden_size": 16,
      "system.envs_per_actor": 4,
      "system.records_per_pool": 2,
    },
  )


def main(out: str) -> None:
  c = config()
  parts = registry.get(c.algo).actor_learner(c, envs.describe(c.env.id, **c.env.options.to_dict()))
  seed = actors.actor_seed(c, 0, 0, 0)
  pools = actors.make_actor_envs(c, seed)
  collector = parts.collector(pools, seed)
  _, per_pool = actors.actor_layout(c)
  records = c.agent.batch_size // c.system.envs_per_actor
  state = parts.init_learner(c.seed)
  update = parts.learner_step(None, donate=False)
  trackers, returns = None, []
  for version in range(UPDATES):
    rollouts = [
      r
      for pool in collector.collect_all(jax.device_put(state.params), policy_version=version)
      for r in actors.split_records(pool, per_pool, parts.batch_slice)
    ]
    trackers = trackers or [actors.EpisodeTracker(c.system.envs_per_actor) for _ in rollouts]
    for rollout, tracker in zip(rollouts, trackers):
      ended, _ = tracker.update(rollout)
      returns.extend(ended[~np.isnan(ended)].tolist())
    state, _ = update(state, concatenate(rollouts[:records]))
  for pool in pools:
    pool.close()
  params = [np.asarray(x) for x in jax.tree.leaves(state.params)]
  np.savez(out, *params, episode_returns=np.asarray(returns, np.float32))


if __name__ == "__main__":
  main(sys.argv[1])
