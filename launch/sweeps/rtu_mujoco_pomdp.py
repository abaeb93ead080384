"""Elelimy et al. 2024, MuJoCo POMDPs (configs/rtu_mujoco_pomdp.py) and the Reacher POMDP
(configs/rtu_reacher_pomdp.py): PPO with the paper's cores, 1M steps, 5 seeds. CPU jobs.

    python -m launch.sweep --sweep=launch/sweeps/rtu_mujoco_pomdp.py --backend=slurm
    python -m launch.sweep --sweep=launch/sweeps/rtu_mujoco_pomdp.py:envs=Reacher-POMDP,fresh=rtu_linear

Arguments (`+`-separated lists): `envs` (the 8 MuJoCo POMDPs and Reacher-POMDP), `cores`, `fresh`
(cores also run with fresh gradients; default none), `seeds` (a count: seeds 0..n-1), `steps`
(agent steps per run), `num_envs` (environments sharing the paper's 2048-step buffer).
"""

from launch.sweep import config_arg, grid, list_arg
from rtrl_rl import experiment
from rtrl_rl.agents.ppo.config import RTU_PAPER_CORES

MUJOCO = tuple(f"{r}-{m}" for r in ("Ant", "HalfCheetah", "Hopper", "Walker2d") for m in ("P", "V"))
REACHER = "Reacher-POMDP"
CORES = ("rtu_nonlinear", "rtu_linear", "lru", "lru_tbptt", "gru")
SEEDS = 5
RESOURCES = {"nodes": 1, "gpus_per_node": 0, "cpus": 4, "time_min": 24 * 60}


def _config(env: str, **kwargs) -> str:
  if env == REACHER:
    return "configs/rtu_reacher_pomdp.py:" + config_arg(**kwargs)
  return "configs/rtu_mujoco_pomdp.py:" + config_arg(env=env, **kwargs)


def get_sweep(arg=None):
  args = experiment.parse_args(
    arg,
    envs="+".join(MUJOCO + (REACHER,)),
    cores="+".join(CORES),
    fresh="",
    seeds=SEEDS,
    steps=1_000_000,
    num_envs=1,
  )
  envs = list_arg(args["envs"], MUJOCO + (REACHER,), "envs")
  cores = list_arg(args["cores"], RTU_PAPER_CORES, "cores")
  fresh = list_arg(args["fresh"], cores, "fresh", empty=True)
  return grid(
    {"env": envs, "core": cores, "gradient": ("stale", "fresh")},
    seeds=tuple(range(args["seeds"])),
    where=lambda p: p["gradient"] == "stale" or p["core"] in fresh,
    name=lambda p: (
      f"{'reacher-pomdp' if p['env'] == REACHER else 'mujoco-' + p['env']}_{p['core']}"
      f"{'_fresh' * (p['gradient'] == 'fresh')}_seed{p['seed']}"
    ),
    config=lambda p: _config(
      p["env"],
      core=p["core"],
      seed=p["seed"],
      steps=args["steps"],
      gradient=p["gradient"],
      num_envs=args["num_envs"],
    ),
    seed_override=None,
    resources=RESOURCES,
  )
