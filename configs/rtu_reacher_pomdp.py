"""Elelimy et al. 2024: PPO with RTRL cores on the Reacher POMDP (the target is shown only at the
first step; the agent must remember it). The paper: the non-linear RTU is clearly best.

    --config=configs/rtu_reacher_pomdp.py:core=rtu_nonlinear,seed=0
"""

from rtrl_rl import experiment


def get_config(arg=None):
  args = experiment.parse_args(arg, core="rtu_nonlinear", seed=0, steps=1_000_000)
  return experiment.rtu_paper_ppo("rtu_reacher_pomdp", "mujoco/Reacher-POMDP", args["core"], args["seed"],
                         args["steps"])
