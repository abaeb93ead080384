"""Elelimy et al. 2024, POPGym (configs/rtu_popgym.py): PPO with budget-matched cores (non-linear
and linear RTU, online LRU, LRU and GRU by T-BPTT) on the paper's 5 tasks x 3 levels, 5 seeds, on
the JAX POPGym (the fully-jitted loop). CPU jobs.

    python -m launch.sweep --sweep=launch/sweeps/rtu_popgym.py --backend=slurm
    python -m launch.sweep --sweep=launch/sweeps/rtu_popgym.py:tasks=Battleship+MineSweeper,levels=easy

Arguments (`+`-separated lists): `tasks` (any of the package's 16), `levels`, `cores`, `seeds`
(a count: seeds 0..n-1), `env_family` (jax | numpy: the package on the host loop).
"""

from launch.sweep import config_arg, grid
from rtrl_rl import experiment
from rtrl_rl.agents.ppo.config import RTU_PAPER_CORES
from rtrl_rl.envs._popgym import LEVELS as ALL_LEVELS
from rtrl_rl.envs._popgym import TASKS as ALL_TASKS

TASKS = ("CountRecall", "RepeatFirst", "Concentration", "Autoencode", "HigherLower")  # the paper's
LEVELS = ("easy", "medium", "hard")
CORES = ("rtu_nonlinear", "rtu_linear", "lru", "lru_tbptt", "gru")
SEEDS = 5


def _names(value: str, valid, what: str):
  names = tuple(filter(None, value.split("+")))
  bad = [n for n in names if n not in valid]
  if bad or not names:
    raise ValueError(f"{what}={value!r}: expected '+'-separated names from {tuple(valid)}")
  return names


def get_sweep(arg=None):
  args = experiment.parse_args(
    arg, tasks="+".join(TASKS), levels="+".join(LEVELS), cores="+".join(CORES), seeds=SEEDS, env_family="jax"
  )
  tasks = _names(args["tasks"], ALL_TASKS, "tasks")
  levels = _names(args["levels"], ALL_LEVELS, "levels")
  cores = _names(args["cores"], RTU_PAPER_CORES, "cores")
  family = args["env_family"]
  return grid(
    {"task": tasks, "level": levels, "core": cores},
    seeds=tuple(range(args["seeds"])),
    name="popgym-{task}-{level}_{core}_seed{seed}",
    config=lambda p: (
      "configs/rtu_popgym.py:"
      + config_arg(task=p["task"], level=p["level"], core=p["core"], seed=p["seed"], env_family=family)
    ),
    seed_override=None,
    resources={"nodes": 1, "gpus_per_node": 0, "cpus": 4, "time_min": 24 * 60},
  )
