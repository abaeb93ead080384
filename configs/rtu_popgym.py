"""Elelimy et al. 2024: PPO with RTRL cores on POPGym memory tasks.

    --config=configs/rtu_popgym.py:task=CountRecall,level=easy,core=rtu_nonlinear,seed=0
    (task: CountRecall | RepeatFirst | Concentration | Autoencode | HigherLower;
     level: easy | medium | hard; T: the truncation of the T-BPTT cores lru_tbptt and gru)
"""

from rtrl_rl import experiment
from rtrl_rl.agents.ppo import config as ppo_config

TASKS = ("CountRecall", "RepeatFirst", "Concentration", "Autoencode", "HigherLower")
LEVELS = ("easy", "medium", "hard")


def get_config(arg=None):
  args = experiment.parse_args(arg, task="CountRecall", level="easy", core="rtu_nonlinear", seed=0,
                               steps=5_000_000, T=ppo_config.DEFAULT_TRUNCATION)
  if args["task"] not in TASKS or args["level"] not in LEVELS:
    raise ValueError(f"task={args['task']!r}, level={args['level']!r}: expected a task in {TASKS} "
                     f"and a level in {LEVELS}")
  return experiment.rtu_paper_ppo(f"rtu_popgym_{args['task']}-{args['level']}",
                         f"popgym/{args['task']}-{args['level']}", args["core"], args["seed"],
                         args["steps"], args["T"])
