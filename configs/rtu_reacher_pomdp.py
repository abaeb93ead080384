"""Elelimy et al. 2024: PPO with RTRL cores on the Reacher POMDP (the target is shown only at the
first step; the agent must remember it). The paper: the non-linear RTU is clearly best.

    --config=configs/rtu_reacher_pomdp.py:core=rtu_nonlinear,seed=0
    T:     the truncation of the T-BPTT cores lru_tbptt and gru
    env_family: brax (default: `brax/Reacher-POMDP` on the fully-jitted `anakin` backend) | envpool
           (`mujoco/Reacher-POMDP`, MuJoCo through envpool on the host `sync` backend)
    gradient: stale (default) | fresh;  num_envs: environments sharing the paper's 2048-step buffer
           (experiment.rtu_paper_ppo)

The PPO settings are the paper's (configs/rtu_mujoco_pomdp.py); which observation dims are hidden
after the first step is stated in rtrl_rl/envs/pomdp.py.
"""

from rtrl_rl import experiment
from rtrl_rl.agents.ppo import config as ppo_config

FAMILIES = {"brax": ("brax", "anakin"), "envpool": ("mujoco", "sync")}


def get_config(arg=None):
  args = experiment.parse_args(
    arg,
    core="rtu_nonlinear",
    seed=0,
    steps=1_000_000,
    T=ppo_config.DEFAULT_TRUNCATION,
    env_family="brax",
    gradient="stale",
    num_envs=1,
  )
  return experiment.rtu_paper_ppo(
    "rtu_reacher_pomdp",
    "Reacher-POMDP",
    args["core"],
    args["seed"],
    args["steps"],
    args["T"],
    args["env_family"],
    FAMILIES,
    gradient=args["gradient"],
    num_envs=args["num_envs"],
  )
