"""Elelimy et al. 2024, POPGym (configs/rtu_popgym.py): PPO with budget-matched cores (non-linear
and linear RTU, online LRU, LRU and GRU by T-BPTT) on the paper's 5 tasks x 3 levels, 5 seeds, on
the JAX POPGym (the fully-jitted loop). CPU jobs.

    python -m launch.sweep --sweep=launch/sweeps/rtu_popgym.py --backend=slurm
    python -m launch.sweep --sweep=launch/sweeps/rtu_popgym.py:tasks=Battleship+MineSweeper,levels=easy

Arguments (`+`-separated lists): `tasks` (any of the package's 16), `levels`, `cores`, `fresh` (cores
also run with fresh gradients; default none), `seeds` (a count: seeds 0..n-1), `steps` (agent steps
per run; default the config's 5M), `num_envs` (environments sharing the paper's 2048-step buffer),
`env_family` (jax | numpy: the package on the host loop).
"""

from launch.sweep import config_arg, grid, list_arg
from rtrl_rl import experiment
from rtrl_rl.agents.ppo.config import RTU_PAPER_CORES
from rtrl_rl.envs._popgym import LEVELS as ALL_LEVELS
from rtrl_rl.envs._popgym import TASKS as ALL_TASKS

TASKS = ("CountRecall", "RepeatFirst", "Concentration", "Autoencode", "HigherLower")  # the paper's
LEVELS = ("easy", "medium", "hard")
CORES = ("rtu_nonlinear", "rtu_linear", "lru", "lru_tbptt", "gru")
SEEDS = 5
STEPS = 5_000_000


def get_sweep(arg=None):
  args = experiment.parse_args(
    arg,
    tasks="+".join(TASKS),
    levels="+".join(LEVELS),
    cores="+".join(CORES),
    fresh="",
    seeds=SEEDS,
    steps=STEPS,
    num_envs=1,
    env_family="jax",
  )
  tasks = list_arg(args["tasks"], ALL_TASKS, "tasks")
  levels = list_arg(args["levels"], ALL_LEVELS, "levels")
  cores = list_arg(args["cores"], RTU_PAPER_CORES, "cores")
  fresh = list_arg(args["fresh"], cores, "fresh", empty=True)
  return grid(
    {"task": tasks, "level": levels, "core": cores, "gradient": ("stale", "fresh")},
    seeds=tuple(range(args["seeds"])),
    where=lambda p: p["gradient"] == "stale" or p["core"] in fresh,
    name=lambda p: (
      f"popgym-{p['task']}-{p['level']}_{p['core']}{'_fresh' * (p['gradient'] == 'fresh')}_seed{p['seed']}"
    ),
    config=lambda p: (
      "configs/rtu_popgym.py:"
      + config_arg(
        task=p["task"],
        level=p["level"],
        core=p["core"],
        seed=p["seed"],
        steps=args["steps"],
        gradient=p["gradient"],
        num_envs=args["num_envs"],
        env_family=args["env_family"],
      )
    ),
    seed_override=None,
    resources={"nodes": 1, "gpus_per_node": 0, "cpus": 4, "time_min": 24 * 60},
  )
