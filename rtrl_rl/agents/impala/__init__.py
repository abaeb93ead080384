"""IMPALA (V-trace actor-critic) with exact-RTRL recurrent cores (Irie et al. 2024).

from rtrl_rl.agents import impala
config = impala.get_config()
agent = impala.make_agent(config, env.observation_space, env.action_space)
state = impala.init_learner(agent, config, env.observation_space)
step = impala.make_learner_step(agent, config, mesh)        # (state, rollout) -> (state, metrics)
actor = impala.RolloutCollector(env, agent, config.unroll_length)
"""

from rtrl_rl.agents.impala.acting import RolloutCollector, make_policy
from rtrl_rl.agents.impala.config import get_config, make_agent, validate
from rtrl_rl.agents.impala.learning import (
  LearnerState,
  init_learner,
  learning_rate_schedule,
  make_learner_step,
  make_loss,
  make_optimizer,
  make_update,
  updates_per_run,
)

__all__ = [
  "LearnerState",
  "RolloutCollector",
  "get_config",
  "init_learner",
  "learning_rate_schedule",
  "make_agent",
  "make_learner_step",
  "make_loss",
  "make_optimizer",
  "make_policy",
  "make_update",
  "updates_per_run",
  "validate",
]
