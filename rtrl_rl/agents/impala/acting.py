"""IMPALA acting: a jitted policy step and a rollout collector for a numpy batched env.

The policy step runs `agent.step` (in core_mode="rtrl" the core updates its RTRL traces every
step, so the carry shipped with each rollout holds the traces the learner needs).

    policy = make_policy(agent)                       # or make_policy(agent, greedy=True)
    action, behaviour, carry = policy(params, carry, obs, reward, first, prev_action, key)

    actor = RolloutCollector(env, agent, unroll_length=50, seed=0)
    rollout = actor.collect(params, policy_version=step)      # a Rollout of numpy arrays
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.agents.rollout import Rollout
from rtrl_rl.losses import Categorical
from rtrl_rl.networks.agent import Agent


def make_policy(agent: Agent, greedy: bool = False):
  """Jitted `(params, carry, obs [B,...], reward [B], first [B], prev_action [B], key)
  -> (action [B(,D)], behaviour, carry)`.

  `reward` is the reward INTO obs (the TimeStep's), `prev_action` the action taken before obs
  (zeroed here on first steps). `behaviour` is the policy's logits `[B, A]` for a categorical
  policy, else the log-prob `[B]` of the chosen action. `greedy=True` takes the mode.
  """

  @jax.jit
  def policy(params, carry, obs, reward, first, prev_action, key):
    first = jnp.asarray(first, bool)
    prev_action = jnp.where(first.reshape(first.shape + (1,) * (jnp.ndim(prev_action) - 1)),
                            jnp.zeros_like(prev_action), prev_action)
    (dist, _), carry = agent.step(params, carry, obs, jnp.asarray(reward), prev_action, first)
    action = dist.mode() if greedy else dist.sample(key)
    behaviour = dist.logits if isinstance(dist, Categorical) else dist.log_prob(action)
    return action, behaviour, carry

  return policy


class RolloutCollector:
  """Collects overlapping rollouts of M+1 steps from a numpy batched env (rtrl_rl.envs contract).

  Keeps, per env, the core's carry, the last TimeStep and the last action between calls: rollout
  k+1 starts at the last obs of rollout k (obs[M] == next obs[0]) with the carry after obs[M-1].
  """

  def __init__(self, env, agent: Agent, unroll_length: int, seed: int = 0, greedy: bool = False,
               policy=None):
    self.env, self.agent, self.unroll_length = env, agent, int(unroll_length)
    self.policy = policy if policy is not None else make_policy(agent, greedy)
    self._key = jax.random.PRNGKey(seed)
    self._timestep = None
    self._carry = None
    self._last_action = None
    self.num_steps = 0

  def _reset(self):
    ts = self.env.reset()
    self._timestep = ts
    self._carry = self.agent.initial_carry(self.env.num_envs)
    space = self.env.action_space
    shape = (self.env.num_envs, *space.shape)
    self._last_action = np.zeros(shape, space.dtype)

  def collect(self, params, policy_version: int = 0) -> Rollout:
    """One Rollout (numpy arrays; carry as numpy) acting with `params`."""
    if self._timestep is None:
      self._reset()
    m = self.unroll_length
    carry0 = jax.device_get(self._carry)
    steps = [self._timestep]
    prev_actions = [np.where(_expand(self._timestep.first, self._last_action), 0, self._last_action)]
    actions, behaviours = [], []
    carry, ts = self._carry, self._timestep
    for _ in range(m):
      self._key, key = jax.random.split(self._key)
      action, behaviour, carry = self.policy(params, carry, ts.obs, ts.reward, ts.first,
                                             prev_actions[-1], key)
      action = np.asarray(action).astype(self.env.action_space.dtype)
      actions.append(action)
      behaviours.append(np.asarray(behaviour))
      ts = self.env.step(action)
      steps.append(ts)
      prev_actions.append(np.where(_expand(ts.first, action), 0, action))
    self._timestep, self._carry, self._last_action = ts, carry, actions[-1]
    self.num_steps += m * self.env.num_envs
    stack = lambda xs, dtype=None: np.stack([np.asarray(x, dtype) for x in xs])
    return Rollout(
        obs=stack([s.obs for s in steps]), reward=stack([s.reward for s in steps], np.float32),
        terminated=stack([s.terminated for s in steps], bool),
        truncated=stack([s.truncated for s in steps], bool), first=stack([s.first for s in steps], bool),
        prev_action=stack(prev_actions), action=stack(actions), behaviour_logits=stack(behaviours),
        carry=carry0, policy_version=np.full((self.env.num_envs,), policy_version, np.int32))


def _expand(flag, like):
  flag = np.asarray(flag, bool)
  return flag.reshape(flag.shape + (1,) * (np.ndim(like) - flag.ndim))
