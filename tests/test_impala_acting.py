"""IMPALA actors: rollouts follow the env contract, overlap by one step, and carry exactly what the
learner recomputes (state + RTRL traces, and the behaviour policy)."""

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.agents import impala
from rtrl_rl.envs import Space, TimeStep


class _ToyEnv:
  """Numpy batched env with next-step autoreset; episodes of 2..6 steps ending by termination
  (even lengths) or truncation (odd lengths)."""

  def __init__(self, num_envs, seed=0):
    self.num_envs = num_envs
    self.observation_space = Space.box((3,), np.float32)
    self.action_space = Space.discrete(3)
    self._rng = np.random.default_rng(seed)
    self._t = np.zeros(num_envs, int)
    self._len = np.zeros(num_envs, int)
    self._ended = np.zeros(num_envs, bool)

  def _obs(self):
    return np.stack([self._t / 5.0, self._rng.normal(size=self.num_envs), self._len / 6.0], -1).astype(
      np.float32
    )

  def _new(self, mask):
    self._t[mask] = 0
    self._len[mask] = self._rng.integers(2, 7, mask.sum())
    self._ended[mask] = False

  def reset(self):
    self._new(np.ones(self.num_envs, bool))
    b = self.num_envs
    return TimeStep(
      self._obs(), np.zeros(b, np.float32), np.zeros(b, bool), np.zeros(b, bool), np.ones(b, bool), {}
    )

  def step(self, actions):
    first = self._ended.copy()
    self._new(first)
    self._t[~first] += 1
    reward = np.where(first, 0.0, actions.astype(np.float32) - 1.0).astype(np.float32)
    end = ~first & (self._t >= self._len)
    terminated, truncated = end & (self._len % 2 == 0), end & (self._len % 2 == 1)
    self._ended = end
    return TimeStep(self._obs(), reward, terminated, truncated, first, {})


def test_rollouts_overlap_and_match_the_learner_replay():
  c = impala.get_config()
  c.network.torso, c.network.mlp_hidden_sizes = "mlp", (8,)
  c.network.cell, c.network.hidden_size, c.network.use_last_action = "elstm", 5, True
  m, b = 6, 3
  env = _ToyEnv(b)
  agent = impala.make_agent(c, env.observation_space, env.action_space)
  state = impala.init_learner(agent, c, env.observation_space)
  actor = impala.RolloutCollector(env, agent, unroll_length=m, seed=0)
  rollouts = [actor.collect(state.params, policy_version=i) for i in range(3)]

  @jax.jit
  def replay(params, r):
    (dist, _), carry = agent.unroll(
      params, r.carry, r.obs[:-1], r.reward[:-1], r.prev_action[:-1], r.first[:-1], outgoing_traces=True
    )
    return dist.log_prob(r.action), carry

  saw_end = False
  for prev, r in zip(rollouts, rollouts[1:]):
    for name in ("obs", "reward", "terminated", "truncated", "first", "prev_action"):
      np.testing.assert_array_equal(getattr(r, name)[0], getattr(prev, name)[-1], err_msg=name)
    log_prob, carry = replay(state.params, prev)
    # The behaviour policy is the learner's policy at the same parameters (rho = 1) ...
    np.testing.assert_allclose(prev.behaviour_log_prob, log_prob, rtol=1e-5, atol=1e-6)
    # ... and the carry shipped with the next rollout (state + traces) is the replay's outgoing one.
    jax.tree.map(lambda a, w: np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6), r.carry, carry)
    saw_end |= bool(prev.terminated.any() and prev.truncated.any())
  assert saw_end
  for r in rollouts:
    assert r.obs.shape == (m + 1, b, 3) and r.action.shape == (m, b)
    assert r.behaviour_log_prob.shape == (m, b)
    np.testing.assert_array_equal(r.prev_action[1:], np.where(r.first[1:], 0, r.action))
    np.testing.assert_array_equal(r.reward[r.first], 0)
    # next-step autoreset: a step after an episode end is a first step
    ended = r.terminated[:-1] | r.truncated[:-1]
    np.testing.assert_array_equal(r.first[1:], ended)
  assert [int(r.policy_version[0]) for r in rollouts] == [0, 1, 2]

  # The learner accepts the rollouts and every loss term is finite.
  step = impala.make_learner_step(agent, c)
  for r in rollouts:
    state, metrics = step(state, r)
  assert all(np.isfinite(float(v)) for v in metrics.values())


def test_greedy_policy_takes_the_mode():
  c = impala.get_config()
  c.network.torso, c.network.mlp_hidden_sizes, c.network.cell = "mlp", (8,), "rtu"
  c.network.hidden_size = 4
  env = _ToyEnv(4)
  agent = impala.make_agent(c, env.observation_space, env.action_space)
  state = impala.init_learner(agent, c, env.observation_space)
  ts = env.reset()
  policy = impala.make_policy(agent, greedy=True)
  prev_action = jnp.zeros(4, jnp.int32)
  action, log_prob, carry = policy(
    state.params, agent.initial_carry(4), ts.obs, ts.reward, ts.first, prev_action, jax.random.PRNGKey(0)
  )
  (dist, _), _ = agent.step(
    state.params, agent.initial_carry(4), ts.obs, jnp.asarray(ts.reward), prev_action, jnp.asarray(ts.first)
  )
  np.testing.assert_array_equal(action, np.argmax(dist.logits, -1))
  np.testing.assert_allclose(log_prob, dist.log_prob(action), rtol=1e-6)
  assert carry.traces is not None  # rtrl core: the actor maintains the traces
