"""Elelimy et al. 2024: PPO with RTRL cores on MuJoCo POMDPs (velocities removed: -P; positions and
angles removed: -V), 1M steps, a single environment, the paper's PPO hyper-parameters.

    --config=configs/rtu_mujoco_pomdp.py:env=Ant-P,core=rtu_nonlinear,seed=0
    env:   Ant|HalfCheetah|Hopper|Walker2d + -P|-V
    core:  rtu_nonlinear | rtu_linear | lru | lru_tbptt | gru | ff
    T:     the truncation of the T-BPTT cores lru_tbptt and gru (PPO minibatches of T-step sequences)
    env_family: brax (default: `brax/` ids, Brax's positional backend with episodes of 1000 steps,
           on the fully-jitted `anakin` backend, as the paper's code ran) | envpool (`mujoco/` ids,
           MuJoCo physics through envpool on the host `sync` backend)
    gradient: stale (default) | fresh;  num_envs: environments sharing the paper's 2048-step buffer
           (experiment.rtu_paper_ppo)

The paper's settings: 1M agent steps, one environment, rollout 2048, 4 epochs x 32 minibatches of 64
single steps from stored carries (stale gradients), GAE 0.95, gamma 0.99, clip 0.2, Adam 1e-4,
obs/reward normalisation, d_rec 192 for the RTU (rtrl_rl/agents/ppo/config.py). The authors' released
code differs in places: its Ant-P configuration uses the linear RTU and 5M steps (here: `core=
rtu_linear,steps=5000000`); the -P/-V index sets are stated in rtrl_rl/envs/pomdp.py with their source.
"""

from rtrl_rl import experiment
from rtrl_rl.agents.ppo import config as ppo_config

ENVS = tuple(f"{r}-{m}" for r in ("Ant", "HalfCheetah", "Hopper", "Walker2d") for m in ("P", "V"))
FAMILIES = {"brax": ("brax", "anakin"), "envpool": ("mujoco", "sync")}


def get_config(arg=None):
  args = experiment.parse_args(
    arg,
    env="Ant-P",
    core="rtu_nonlinear",
    seed=0,
    steps=1_000_000,
    T=ppo_config.DEFAULT_TRUNCATION,
    env_family="brax",
    gradient="stale",
    num_envs=1,
  )
  if args["env"] not in ENVS:
    raise ValueError(f"env={args['env']!r}: expected one of {ENVS}")
  return experiment.rtu_paper_ppo(
    f"rtu_mujoco_{args['env']}",
    args["env"],
    args["core"],
    args["seed"],
    args["steps"],
    args["T"],
    args["env_family"],
    FAMILIES,
    gradient=args["gradient"],
    num_envs=args["num_envs"],
  )
