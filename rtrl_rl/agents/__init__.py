"""Agents (Acme style: config / acting / learning per agent), each exporting one `ALGORITHM` that the
system layer finds through `rtrl_rl.agents.registry`; the actor loop and the Rollout they share
(rtrl_rl/agents/actor_loop.py, rtrl_rl/agents/rollout.py). Importing this package loads nothing
else: the registry (and so every config file) stays free of JAX until an algorithm is used."""
