"""Elelimy et al. 2024, POPGym (configs/rtu_popgym.py): PPO with budget-matched cores (non-linear
and linear RTU, online LRU, LRU and GRU by T-BPTT) on the 5 tasks x 3 levels, 5 seeds. CPU jobs.
"""

from launch.sweep import config_arg, grid

TASKS = ("CountRecall", "RepeatFirst", "Concentration", "Autoencode", "HigherLower")
LEVELS = ("easy", "medium", "hard")
CORES = ("rtu_nonlinear", "rtu_linear", "lru", "lru_tbptt", "gru")
SEEDS = (0, 1, 2, 3, 4)


def get_sweep():
  return grid({"task": TASKS, "level": LEVELS, "core": CORES}, seeds=SEEDS,
              name="popgym-{task}-{level}_{core}_seed{seed}",
              config=lambda p: "configs/rtu_popgym.py:" + config_arg(task=p["task"], level=p["level"],
                                                                     core=p["core"], seed=p["seed"]),
              seed_override=None,
              resources={"nodes": 1, "gpus_per_node": 0, "cpus": 4, "time_min": 24 * 60})
