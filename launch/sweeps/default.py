"""The smallest sweep: configs/default.py (RTRL eLSTM on masked CartPole) over 2 seeds, a few
thousand agent steps each. A smoke test of the launcher, not an experiment.

    python -m launch.sweep --sweep=launch/sweeps/default.py --backend=local --max_parallel=2
"""

from launch.sweep import grid

TOTAL_ENV_STEPS = 3200  # 10 learner updates of 16 rollouts x 20 steps


def get_sweep():
  return grid(
    {},
    seeds=(0, 1),
    name="default_elstm_seed{seed}",
    config="configs/default.py:elstm",
    overrides={
      "agent.total_env_steps": TOTAL_ENV_STEPS,
      "agent.batch_size": 16,
      "agent.network.hidden_size": 16,
      "system.num_actors": 1,
      "system.envs_per_actor": 16,
      "system.log_every_s": 2.0,
      "system.plot": False,
    },
    resources={"gpus_per_node": 0, "cpus": 2, "time_min": 30},
  )
