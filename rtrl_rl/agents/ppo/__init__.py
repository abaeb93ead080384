"""PPO with RTRL cores (Elelimy et al. 2024), Acme style: config / acting / learning.

    from rtrl_rl.agents import ppo
    config = ppo.get_config(); ppo.validate(config)
    agent = ppo.make_agent(config, observation_space, action_space)
    update = jax.jit(ppo.make_update(agent, config))     # (LearnerState, PPOBatch) -> (state, metrics)
    step = ppo.make_learner_step(agent, config, mesh)    # data-parallel over a mesh (rtrl_rl/parallel.py)
The system layer runs it through `ALGORITHM` (rtrl_rl/agents/ppo/algorithm.py; the fully-jitted
loop: `rtrl_rl.system.anakin.make("ppo", env, config)`).
"""

from rtrl_rl.agents.ppo import acting
from rtrl_rl.agents.ppo.acting import (
  NormState,
  RunningStats,
  make_agent,
  norm_init,
  normalize_obs,
  normalize_reward,
  stats_init,
  stats_update,
)
from rtrl_rl.agents.ppo.config import get_config, validate
from rtrl_rl.agents.ppo.learning import (
  LearnerState,
  PPOBatch,
  advantages,
  global_minibatch_indices,
  init_learner,
  make_learner_step,
  make_loss,
  make_optimizer,
  make_update,
  minibatch_indices,
  ppo_batch,
  recompute_carries,
)

__all__ = [
  "acting",
  "LearnerState",
  "NormState",
  "PPOBatch",
  "RunningStats",
  "advantages",
  "get_config",
  "global_minibatch_indices",
  "init_learner",
  "make_agent",
  "make_learner_step",
  "make_loss",
  "make_optimizer",
  "make_update",
  "minibatch_indices",
  "ppo_batch",
  "norm_init",
  "normalize_obs",
  "normalize_reward",
  "recompute_carries",
  "stats_init",
  "stats_update",
  "validate",
]
