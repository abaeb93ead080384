"""Agents (Acme style: config / acting / learning per agent) and the shared Rollout."""

from rtrl_rl.agents.rollout import Rollout, Transitions, transitions

__all__ = ["Rollout", "Transitions", "transitions"]
