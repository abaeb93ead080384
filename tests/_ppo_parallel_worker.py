"""Subprocess worker for tests/test_ppo_parallel.py (XLA_FLAGS must be set by the caller).

python tests/_ppo_parallel_worker.py devices OUT.npz
    one process, 4 (forced) CPU devices; for gradient in (stale, fresh): one PPO update over a
    mesh of all devices vs the single-device update with the same minibatch composition
    (`make_update(..., num_shards=4)`) on the same global buffer; stale: NUM_UPDATES mesh updates.
python tests/_ppo_parallel_worker.py multiprocess OUT.npz PORT NUM_PROCESSES PROCESS_ID
    this process's envs of each global buffer; NUM_UPDATES stale updates over all processes' devices.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl import parallel
from rtrl_rl.agents import ppo
from rtrl_rl.envs import Space

NUM_UPDATES = 2
T, B, OBS, ACTIONS = 4, 8, 3, 3


def problem():
  """A small RTU PPO agent, its learner state and NUM_UPDATES synthetic global buffers [T, B]; the
  config for each gradient option."""
  c = ppo.get_config()
  c.num_envs, c.rollout_length = B, T
  c.num_epochs, c.num_minibatches, c.minibatch_size = 2, 2, 16
  c.network.mlp_hidden_sizes, c.network.head_hidden_sizes, c.network.hidden_size = (8,), (8,), 4
  c.learning_rate, c.entropy_cost = 1e-2, 0.01
  configs = {}
  for name, gradient, seq_len in (("stale", "stale", 1), ("fresh", "fresh", 1), ("sequence", "stale", 2)):
    configs[name] = c.copy_and_resolve_references()
    configs[name].gradient, configs[name].sequence_length = gradient, seq_len
    ppo.validate(configs[name])
  agent = ppo.make_agent(c, Space.box((OBS,), np.float32), Space.discrete(ACTIONS))
  # Raw uint32 key (PRNGKey): replicates across processes as plain data.
  state = jax.jit(lambda k: ppo.init_learner(k, agent, c, jnp.zeros((OBS,), jnp.float32)))(
    jax.random.PRNGKey(0)
  )
  rng = np.random.default_rng(3)
  batches = []
  for _ in range(NUM_UPDATES):
    carry = jax.tree.map(
      lambda x: (rng.normal(size=(T,) + x.shape) * 0.3).astype(x.dtype), agent.initial_carry(B)
    )
    first = rng.random((T, B)) < 0.2
    batches.append(
      ppo.PPOBatch(
        obs=rng.normal(size=(T, B, OBS)).astype(np.float32),
        first=first,
        prev_reward=(rng.normal(size=(T, B)) * ~first).astype(np.float32),
        prev_action=(rng.integers(0, ACTIONS, (T, B)) * ~first).astype(np.int32),
        carry=carry,
        action=rng.integers(0, ACTIONS, (T, B)).astype(np.int32),
        log_prob=np.log(rng.uniform(0.2, 0.5, (T, B))).astype(np.float32),
        value=rng.normal(size=(T, B)).astype(np.float32),
        reward=rng.normal(size=(T, B)).astype(np.float32),
        terminated=rng.random((T, B)) < 0.1,
        truncated=rng.random((T, B)) < 0.05,
        mask=rng.random((T, B)) < 0.85,
        bootstrap_value=rng.normal(size=(B,)).astype(np.float32),
      )
    )
  return configs, agent, state, batches


def flat(tree, prefix):
  return {
    prefix + jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)
  }


def env_slice(batch, lo, hi):
  return jax.tree.map(
    lambda axis, sub: jax.tree.map(lambda x: np.take(x, np.arange(lo, hi), axis=axis), sub),
    ppo.PPOBatch.batch_axes(),
    batch,
  )


def main(argv):
  mode, out = argv[1], argv[2]
  if mode == "multiprocess":
    port, nproc, pid = int(argv[3]), int(argv[4]), int(argv[5])
    parallel.initialize_distributed(f"127.0.0.1:{port}", nproc, pid)
  mesh = parallel.make_mesh()
  axes = ppo.PPOBatch.batch_axes()
  results = {"num_devices": np.asarray(len(jax.devices()))}
  if mode == "devices":
    configs, agent, state0, batches = problem()
    results.update(flat(state0.params, "initial/"))
    for gradient, c in configs.items():
      ref = jax.jit(ppo.make_update(agent, c, num_shards=len(jax.devices())))
      s1, m1 = ref(state0, batches[0])
      results.update(flat(s1.params, f"{gradient}/single1/"))
      results.update(flat(m1, f"{gradient}/single1_metrics/"))
      step = ppo.make_learner_step(agent, c, mesh)
      state = parallel.replicate(state0, mesh)
      for i, batch in enumerate(batches if gradient == "stale" else batches[:1]):
        state, metrics = step(state, parallel.shard_batch(batch, mesh, axes))
        if i == 0:
          leaf = jax.tree.leaves(state.params)[0]
          assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == len(jax.devices())
          results.update(flat(parallel.fetch(state.params), f"{gradient}/mesh1/"))
          results.update(flat(parallel.fetch(metrics), f"{gradient}/mesh1_metrics/"))
      results.update(flat(parallel.fetch(state.params), f"{gradient}/final/"))
  else:
    configs, agent, state0, batches = problem()
    c = configs["stale"]
    step = ppo.make_learner_step(agent, c, mesh)
    per = B // jax.process_count()
    lo = jax.process_index() * per
    state = parallel.replicate(state0, mesh)
    for batch in batches:
      local = env_slice(batch, lo, lo + per)  # different envs on each process
      state, metrics = step(state, parallel.global_batch(local, mesh, axes))
    results.update(flat(parallel.fetch(state.params), "stale/final/"))
    results.update(flat(parallel.fetch(metrics), "stale/final_metrics/"))
  np.savez(out, **results)
  if mode == "multiprocess":
    parallel.shutdown_distributed()


if __name__ == "__main__":
  main(sys.argv)
