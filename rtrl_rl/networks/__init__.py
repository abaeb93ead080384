"""Flax torsos and heads; the recurrent core between them comes from ``rtrl_rl.cells``."""

from rtrl_rl.networks.heads import ActorCriticHeads, CategoricalPolicyHead, GaussianPolicyHead, ValueHead
from rtrl_rl.networks.torsos import ImpalaResNetTorso, MLPTorso, ResidualBlock, get_activation

__all__ = [
  'ActorCriticHeads',
  'CategoricalPolicyHead',
  'GaussianPolicyHead',
  'ImpalaResNetTorso',
  'MLPTorso',
  'ResidualBlock',
  'ValueHead',
  'get_activation',
]
