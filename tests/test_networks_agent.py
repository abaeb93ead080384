"""The agent network: torso -> core -> heads, stem-gradient modes, and config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl import cells
from rtrl_rl.networks import agent as agent_lib
from rtrl_rl.networks import heads, torsos

T, B, OBS, A = 6, 2, 4, 3


def _agent(cell_name="elstm", **kw):
  torso = torsos.MLPTorso((7,))
  d = agent_lib.core_input_size(torso, (OBS,), A, kw.get("use_last_action", False))
  cell = cells.make(cell_name, 5, input_size=d) if cell_name else None
  agent = agent_lib.Agent(torso, heads.ActorCriticHeads(A), cell, A, (OBS,), **kw)
  params = agent.init(jax.random.key(0), jnp.zeros(OBS))
  return agent, params


def _batch(seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  obs = jax.random.normal(k[0], (T, B, OBS))
  reward = 3 * jax.random.normal(k[1], (T, B))
  action = jax.random.randint(k[2], (T, B), 0, A)
  first = jnp.zeros((T, B), bool).at[0].set(True)
  return obs, reward, action, first


def _torso_grad(agent, params, carry, batch, t_loss):
  """Gradient w.r.t. the torso of the value at step t_loss only."""

  def loss(p):
    (_, values), _ = agent.unroll(p, carry, *batch)
    return values[t_loss].sum()

  return jax.grad(loss)(params)["torso"]


def test_unroll_matches_steps_and_core_input_layout():
  agent, params = _agent(use_last_action=True)
  assert agent.core_input_size == 7 + 1 + A
  batch = _batch()
  carry = agent.initial_carry(B)
  (dist, values), _ = agent.unroll(params, carry, *batch)
  assert dist.logits.shape == (T, B, A) and values.shape == (T, B)
  c = carry
  for t in range(T):
    (d_t, v_t), c = agent.step(params, c, *(x[t] for x in batch))
    np.testing.assert_allclose(d_t.logits, dist.logits[t], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v_t, values[t], rtol=1e-5, atol=1e-6)


def test_last_reward_is_clipped():
  agent, params = _agent()
  obs, reward, action, first = _batch()
  out = lambda r: agent.unroll(params, agent.initial_carry(B), obs, r, action, first)[0][1]
  np.testing.assert_allclose(out(jnp.full((T, B), 5.0)), out(jnp.full((T, B), 1.0)), rtol=1e-6)
  assert not np.allclose(out(jnp.full((T, B), 0.5)), out(jnp.full((T, B), 1.0)))


def test_stem_gradient_modes():
  batch = _batch()
  grads = {}
  for mode in agent_lib.STEM_GRADS:
    agent, params = _agent(stem_grad=mode)
    # the value at the last step: "unroll" also reaches the torso through earlier steps' features
    obs = batch[0]

    def loss(p, obs):
      (_, values), _ = agent.unroll(p, agent.initial_carry(B), obs, *batch[1:])
      return values[-1].sum()

    grads[mode] = jax.grad(loss, argnums=1)(params, obs)
    g_torso = jax.grad(loss)(params, obs)["torso"]
    if mode == "frozen":
      assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_torso))
  # immediate: only the same-step observation gets a gradient; unroll: earlier ones too
  assert float(jnp.abs(grads["immediate"][:-1]).max()) == 0.0
  assert float(jnp.abs(grads["unroll"][:-1]).max()) > 0.0
  np.testing.assert_allclose(grads["immediate"][-1], grads["unroll"][-1], rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(grads["frozen"]).max()) == 0.0


def test_feed_forward_agent_has_no_core():
  agent, params = _agent(cell_name=None)
  assert params["core"] == {}
  batch = _batch()
  (dist, values), carry = agent.unroll(params, agent.initial_carry(B), *batch)
  assert values.shape == (T, B) and carry.traces is None


def test_bad_configurations():
  with pytest.raises(ValueError, match="stem_grad must be one of"):
    _agent(stem_grad="partial")
  with pytest.raises(ValueError, match="core_mode='rtrl' with cell 'gru'.*core_mode='tbptt'"):
    _agent(cell_name="gru")
  with pytest.raises(ValueError, match="use_last_action needs a categorical policy"):
    agent_lib.Agent(
      torsos.MLPTorso((7,)),
      heads.ActorCriticHeads(2, policy="gaussian"),
      None,
      2,
      (OBS,),
      use_last_action=True,
    )
  mlp = torsos.MLPTorso((7,))
  with pytest.raises(
    ValueError, match=r"cell's input_size=None is not the core's input size 8.*input_size=8\)"
  ):
    agent_lib.Agent(mlp, heads.ActorCriticHeads(A), cells.make("rtu", 4), A, (OBS,))
  with pytest.raises(ValueError, match=r"input_size=9 is not the core's input size 11 .* \+ last action 3\)"):
    agent_lib.Agent(
      mlp, heads.ActorCriticHeads(A), cells.make("rtu", 4, input_size=9), A, (OBS,), use_last_action=True
    )
  agent = agent_lib.Agent(mlp, heads.ActorCriticHeads(A), cells.make("rtu", 4, input_size=8), A, (OBS,))
  with pytest.raises(
    ValueError, match=r"shape \(5,\), but the agent was built for observations of shape \(4,\)"
  ):
    agent.init(jax.random.key(0), jnp.zeros(OBS + 1))


def test_sizes_are_known_at_construction():
  """The carry before any init: the cell is built for the core's input size F + 1 (+ A)."""
  mlp = torsos.MLPTorso((7,))
  d = agent_lib.core_input_size(mlp, (OBS,), A, True)
  assert d == 7 + 1 + A
  agent = agent_lib.Agent(
    mlp, heads.ActorCriticHeads(A), cells.make("rtu", 5, input_size=d), A, (OBS,), use_last_action=True
  )
  assert (agent.feature_size, agent.core_input_size) == (7, d)
  carry = agent.initial_carry(B)  # no agent.init before
  params = agent.init(jax.random.key(0), jnp.zeros(OBS))
  (_, values), _ = agent.step(
    params, carry, jnp.zeros((B, OBS)), jnp.zeros(B), jnp.zeros(B, jnp.int32), jnp.ones(B, bool)
  )
  assert values.shape == (B,)
