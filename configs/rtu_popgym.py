"""Elelimy et al. 2024: PPO with RTRL cores on POPGym memory tasks.

--config=configs/rtu_popgym.py:task=CountRecall,level=easy,core=rtu_nonlinear,seed=0
task:  any of the package's 16 (the paper: CountRecall, RepeatFirst, Concentration, Autoencode,
       HigherLower); level: easy | medium | hard; core: a key of ppo.config.RTU_PAPER_CORES;
T:     the truncation of the T-BPTT cores lru_tbptt and gru;
env_family: jax (default: `popgym/` ids, our JAX port, on the fully-jitted `anakin` backend, as
       the paper's code ran) | numpy (`popgym-numpy/` ids, the package itself, on the host
       `sync` backend).
gradient: stale (default) | fresh;  num_envs: environments sharing the paper's 2048-step buffer
       (experiment.rtu_paper_ppo)
"""

from rtrl_rl import experiment
from rtrl_rl.agents.ppo import config as ppo_config
from rtrl_rl.envs._popgym import LEVELS, TASKS

FAMILIES = {"jax": ("popgym", "anakin"), "numpy": ("popgym-numpy", "sync")}


def get_config(arg=None):
  args = experiment.parse_args(
    arg,
    task="CountRecall",
    level="easy",
    core="rtu_nonlinear",
    seed=0,
    steps=5_000_000,
    T=ppo_config.DEFAULT_TRUNCATION,
    env_family="jax",
    gradient="stale",
    num_envs=1,
  )
  if args["task"] not in TASKS or args["level"] not in LEVELS:
    raise ValueError(
      f"task={args['task']!r}, level={args['level']!r}: expected a task in {TASKS} and a level in {LEVELS}"
    )
  return experiment.rtu_paper_ppo(
    f"rtu_popgym_{args['task']}-{args['level']}",
    f"{args['task']}-{args['level']}",
    args["core"],
    args["seed"],
    args["steps"],
    args["T"],
    args["env_family"],
    FAMILIES,
    gradient=args["gradient"],
    num_envs=args["num_envs"],
  )
