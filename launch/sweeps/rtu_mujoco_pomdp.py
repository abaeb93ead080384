"""Elelimy et al. 2024, MuJoCo POMDPs (configs/rtu_mujoco_pomdp.py) and the Reacher POMDP
(configs/rtu_reacher_pomdp.py): PPO with the paper's cores, 1M steps, 5 seeds. CPU jobs.
"""

from launch.sweep import config_arg, grid

ENVS = tuple(f"{r}-{m}" for r in ("Ant", "HalfCheetah", "Hopper", "Walker2d") for m in ("P", "V"))
CORES = ("rtu_nonlinear", "rtu_linear", "lru", "lru_tbptt", "gru")
SEEDS = (0, 1, 2, 3, 4)
RESOURCES = {"nodes": 1, "gpus_per_node": 0, "cpus": 4, "time_min": 24 * 60}


def get_sweep():
  mujoco = grid(
    {"env": ENVS, "core": CORES},
    seeds=SEEDS,
    name="mujoco-{env}_{core}_seed{seed}",
    config=lambda p: (
      "configs/rtu_mujoco_pomdp.py:" + config_arg(env=p["env"], core=p["core"], seed=p["seed"])
    ),
    seed_override=None,
    resources=RESOURCES,
  )
  reacher = grid(
    {"core": CORES},
    seeds=SEEDS,
    name="reacher-pomdp_{core}_seed{seed}",
    config=lambda p: "configs/rtu_reacher_pomdp.py:" + config_arg(core=p["core"], seed=p["seed"]),
    seed_override=None,
    resources=RESOURCES,
  )
  return mujoco + reacher
