"""Elelimy et al. 2024: PPO with RTRL cores on MuJoCo POMDPs (velocities removed: -P; positions and
angles removed: -V), 1M steps, a single environment, the paper's PPO hyper-parameters.

    --config=configs/rtu_mujoco_pomdp.py:env=Ant-P,core=rtu_nonlinear,seed=0
    (env: Ant|HalfCheetah|Hopper|Walker2d + -P|-V; core: rtu_nonlinear | rtu_linear | lru |
     lru_tbptt | gru | ff; T: the truncation of the T-BPTT cores lru_tbptt and gru, whose PPO
     minibatches are sequences of T steps)
"""

from rtrl_rl import experiment
from rtrl_rl.agents.ppo import config as ppo_config

ENVS = tuple(f"{r}-{m}" for r in ("Ant", "HalfCheetah", "Hopper", "Walker2d") for m in ("P", "V"))


def get_config(arg=None):
  args = experiment.parse_args(arg, env="Ant-P", core="rtu_nonlinear", seed=0, steps=1_000_000,
                               T=ppo_config.DEFAULT_TRUNCATION)
  if args["env"] not in ENVS:
    raise ValueError(f"env={args['env']!r}: expected one of {ENVS}")
  return experiment.rtu_paper_ppo(f"rtu_mujoco_{args['env']}", f"mujoco/{args['env']}", args["core"],
                         args["seed"], args["steps"], args["T"])
