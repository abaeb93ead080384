"""RL math: return estimators (V-trace, GAE), action distributions and the IMPALA / PPO losses."""

from rtrl_rl.losses.distributions import Categorical, DiagGaussian, Distribution
from rtrl_rl.losses.gae import GAEOutput, gae, gae_batched
from rtrl_rl.losses.impala import impala_loss
from rtrl_rl.losses.ppo import normalize_advantages, ppo_loss
from rtrl_rl.losses.vtrace import VTraceOutput, vtrace, vtrace_batched

__all__ = [
  'Categorical',
  'DiagGaussian',
  'Distribution',
  'GAEOutput',
  'VTraceOutput',
  'gae',
  'gae_batched',
  'impala_loss',
  'normalize_advantages',
  'ppo_loss',
  'vtrace',
  'vtrace_batched',
]
