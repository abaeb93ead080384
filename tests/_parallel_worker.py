"""Subprocess worker for tests/test_parallel.py (XLA_FLAGS must be set by the caller).

python tests/_parallel_worker.py devices OUT.npz
    one process, all its (forced) CPU devices: 1 update on the default device vs 1 update over
    a mesh of all devices (same global batch); then NUM_UPDATES updates over the mesh.
python tests/_parallel_worker.py multiprocess OUT.npz PORT NUM_PROCESSES PROCESS_ID
    this process's share of each global batch; NUM_UPDATES updates over all processes' devices.
"""

import sys

import jax
import numpy as np

from rtrl_rl import parallel
from rtrl_rl.agents import impala
from rtrl_rl.agents.rollout import Rollout, batch_slice, synthetic_rollout
from rtrl_rl.envs import Space

NUM_UPDATES = 3
GLOBAL_BATCH = 8
M = 5


def problem():
  obs, act = Space.box((3,), np.float32), Space.discrete(3)
  c = impala.get_config()
  c.network.torso, c.network.mlp_hidden_sizes = "mlp", (8,)
  c.network.cell, c.network.hidden_size = "elstm", 6
  c.unroll_length, c.batch_size, c.total_env_steps = M, GLOBAL_BATCH, 10_000
  agent = impala.make_agent(c, obs, act)
  state = impala.init_learner(agent, c, obs, seed=0)
  rng = np.random.default_rng(7)
  rollouts = []
  for i in range(NUM_UPDATES):
    carry = jax.tree.map(
      lambda x: (rng.normal(size=x.shape) * 0.3).astype(x.dtype), agent.initial_carry(GLOBAL_BATCH)
    )
    rollouts.append(
      synthetic_rollout(
        100 + i,
        unroll_length=M,
        batch_size=GLOBAL_BATCH,
        obs_shape=(3,),
        obs_dtype=np.float32,
        num_actions=3,
        carry=carry,
        end_prob=0.2,
      )
    )
  return c, agent, state, rollouts


def flat(params):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


def main(argv):
  mode, out = argv[1], argv[2]
  if mode == "multiprocess":
    port, nproc, pid = int(argv[3]), int(argv[4]), int(argv[5])
    parallel.initialize_distributed(f"127.0.0.1:{port}", nproc, pid)
  c, agent, state0, rollouts = problem()
  mesh = parallel.make_mesh()
  step = impala.make_learner_step(agent, c, mesh)
  results = {}
  if mode == "devices":
    single = impala.make_learner_step(agent, c)  # default device, no mesh
    s1, m1 = single(state0, rollouts[0])
    results.update({"single1" + k: v for k, v in flat(s1.params).items()})
    results["single1_loss"] = np.asarray(m1["loss"])
    state = parallel.replicate(state0, mesh)
    for i, r in enumerate(rollouts):
      state, metrics = step(state, parallel.shard_batch(r, mesh, Rollout.batch_axes()))
      if i == 0:
        assert len(state.params["core"]["W_z"].sharding.device_set) == len(jax.devices())
        results.update({"mesh1" + k: v for k, v in flat(parallel.fetch(state.params)).items()})
        results["mesh1_loss"] = np.asarray(parallel.fetch(metrics["loss"]))
  else:
    per = GLOBAL_BATCH // jax.process_count()
    lo = jax.process_index() * per
    state = parallel.replicate(state0, mesh)
    for r in rollouts:
      local = batch_slice(r, lo, lo + per)  # different data on each process
      state, metrics = step(state, parallel.global_batch(local, mesh, Rollout.batch_axes()))
  results.update({"final" + k: v for k, v in flat(parallel.fetch(state.params)).items()})
  results["final_loss"] = np.asarray(parallel.fetch(metrics["loss"]))
  results["num_devices"] = np.asarray(len(jax.devices()))
  np.savez(out, **results)
  if mode == "multiprocess":
    parallel.shutdown_distributed()


if __name__ == "__main__":
  main(sys.argv)
