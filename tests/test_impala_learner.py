"""IMPALA learner: exact RTRL gradient of the full loss, episode-boundary masking, determinism,
config validation, and the actor's rollouts."""

import dataclasses

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl.agents import impala, registry
from rtrl_rl.agents.impala import config as config_module
from rtrl_rl.agents.rollout import Rollout, synthetic_rollout, transitions
from rtrl_rl.envs import Space

OBS = Space.box((3,), np.float32)
ACT = Space.discrete(3)


def _config(cell="elstm", hidden=4, m=5, b=3, core_mode="rtrl"):
  c = impala.get_config()
  c.network.torso = "mlp"
  c.network.mlp_hidden_sizes = (5,)
  c.network.cell = cell
  c.network.hidden_size = hidden
  c.network.core_mode = core_mode
  c.network.use_last_action = True
  c.unroll_length, c.batch_size = m, b
  c.total_env_steps = 10_000
  return c


def _slice_time(r: Rollout, start: int, stop: int, carry) -> Rollout:
  """Steps start..stop (inclusive) of a long stream, as a rollout of stop-start transitions."""
  s = slice(start, stop + 1)
  return r._replace(
    obs=r.obs[s],
    reward=r.reward[s],
    terminated=r.terminated[s],
    truncated=r.truncated[s],
    first=r.first[s],
    prev_action=r.prev_action[s],
    action=r.action[start:stop],
    behaviour_log_prob=r.behaviour_log_prob[start:stop],
    carry=carry,
  )


def _assert_tree_close(got, want, rtol, atol=0.0):
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=rtol, atol=atol), got, want)


# -- (a) RTRL gradient of the full IMPALA loss == BPTT through the whole history ---------------------
def test_rtrl_gradient_of_full_impala_loss_equals_bptt_through_history():
  with jax.enable_x64(True):
    m1, m2, b = 4, 5, 3
    config = _config(m=m2, b=b)
    agent = impala.make_agent(config, OBS, ACT)
    f64 = lambda t: jax.tree.map(
      lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, t
    )
    params = f64(jax.jit(agent.init)(jax.random.PRNGKey(1), jnp.zeros((3,), jnp.float64)))
    # One stream of m1 + m2 + 1 steps with episode ends inside both rollouts (and terminations and
    # truncations); rollout 2 overlaps rollout 1 by one step.
    stream = f64(
      synthetic_rollout(
        3,
        unroll_length=m1 + m2,
        batch_size=b,
        obs_shape=(3,),
        obs_dtype=np.float64,
        num_actions=3,
        carry=None,
        end_prob=0.25,
      )
    )
    first = np.array(stream.first)
    first[0] = True
    stream = stream._replace(first=first)
    assert stream.first[1:m1].any() and stream.first[m1 + 1 :].any()
    assert stream.terminated.any() and stream.truncated.any()
    c0 = f64(agent.initial_carry(b))

    # Actor path: agent.step over rollout 1's first m1 steps gives the carry (state + traces)
    # shipped with rollout 2.
    @jax.jit
    def act(params, carry):
      for t in range(m1):
        _, carry = agent.step(
          params, carry, stream.obs[t], stream.reward[t], stream.prev_action[t], stream.first[t]
        )
      return carry

    carry = act(params, c0)
    r2 = _slice_time(stream, m1, m1 + m2, carry)

    loss_fn = impala.make_loss(agent, config)
    got = jax.jit(jax.grad(lambda p: loss_fn(p, r2)[0]))(params)

    # Reference: backprop through the whole history (rollout 1 then rollout 2), core in "bptt".
    # The torso is trained with gradients truncated to the unroll (stem_grad="unroll"), so its
    # outputs on rollout 1 are constants in the reference too.
    ref = dataclasses.replace(agent, core_mode="bptt")
    ref_loss_fn = impala.make_loss(ref, config)

    def ref_loss(p):
      p1 = {**p, "torso": jax.lax.stop_gradient(p["torso"])}
      _, c = ref.unroll(
        p1, c0, stream.obs[:m1], stream.reward[:m1], stream.prev_action[:m1], stream.first[:m1]
      )
      return ref_loss_fn(p, r2._replace(carry=c))[0]

    want_loss, want = jax.jit(jax.value_and_grad(ref_loss))(params)
    _assert_tree_close(got, want, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(jax.jit(loss_fn)(params, r2)[0], want_loss, rtol=1e-10)

    # TBPTT (carry treated as a constant) gives a different recurrent-layer gradient.
    tb = dataclasses.replace(agent, core_mode="tbptt")
    trunc = jax.jit(jax.grad(lambda p: impala.make_loss(tb, config)(p, r2)[0]))(params)
    diff = max(float(jnp.max(jnp.abs(trunc["core"][k] - want["core"][k]))) for k in want["core"])
    assert diff > 1e-6


# -- (f) masking of the dummy transition after an episode end ----------------------------------------
def _ended_rollout(agent, m=7, k=3, seed=0):
  """B=2 rollout where obs[k] ends env 0's episode by termination and env 1's by truncation."""
  r = synthetic_rollout(
    seed,
    unroll_length=m,
    batch_size=2,
    obs_shape=(3,),
    obs_dtype=np.float32,
    num_actions=3,
    carry=agent.initial_carry(2),
    end_prob=0.0,
  )
  terminated, truncated, first = (np.array(r.terminated), np.array(r.truncated), np.array(r.first))
  terminated[k, 0] = truncated[k, 1] = True
  first[k + 1] = True
  reward, prev_action = np.array(r.reward), np.array(r.prev_action)
  reward[k + 1] = 0
  prev_action[k + 1] = 0
  rng = np.random.default_rng(seed)
  carry = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.3, x.dtype), r.carry)
  return r._replace(
    terminated=terminated,
    truncated=truncated,
    first=first,
    reward=reward,
    prev_action=prev_action,
    carry=carry,
  )


def test_transitions_semantics():
  agent = impala.make_agent(_config(), OBS, ACT)
  r = _ended_rollout(agent, m=7, k=3)
  tr = jax.tree.map(np.asarray, transitions(r, 0.9))
  np.testing.assert_array_equal(tr.mask[:, 0], [1, 1, 1, 0, 1, 1, 1])
  np.testing.assert_array_equal(tr.mask[:, 1], [1, 1, 1, 0, 1, 1, 1])
  np.testing.assert_allclose(tr.discounts[:, 0], [0.9, 0.9, 0, 0, 0.9, 0.9, 0.9])  # terminal: no bootstrap
  np.testing.assert_allclose(tr.discounts[:, 1], [0.9, 0.9, 0.9, 0, 0.9, 0.9, 0.9])  # truncated: bootstrap
  np.testing.assert_array_equal(tr.lambdas[:, 1], [1, 1, 0, 0, 1, 1, 1])  # trace cut at the end
  np.testing.assert_allclose(tr.rewards[:3], r.reward[1:4])


def test_dummy_transition_contributes_nothing_and_loss_splits_at_episode_end():
  config = _config(m=7, b=2)
  agent = impala.make_agent(config, OBS, ACT)
  params = jax.jit(agent.init)(jax.random.PRNGKey(0), jnp.zeros((3,)))
  m, k = 7, 3
  r = _ended_rollout(agent, m=m, k=k)
  loss_fn = jax.jit(impala.make_loss(agent, config))
  grad_fn = jax.jit(jax.grad(lambda p, r: impala.make_loss(agent, config)(p, r)[0]))
  loss = float(loss_fn(params, r)[0])

  # Changing the dummy transition's action and behaviour log-prob changes neither loss nor gradient.
  action, log_mu = np.array(r.action), np.array(r.behaviour_log_prob)
  action[k] = (action[k] + 1) % 3
  log_mu[k] = log_mu[k] * 3.0 - 1.0
  r_changed = r._replace(action=action, behaviour_log_prob=log_mu)
  assert float(loss_fn(params, r_changed)[0]) == loss
  jax.tree.map(np.testing.assert_array_equal, grad_fn(params, r_changed), grad_fn(params, r))

  # Hand-built equivalent: the loss of the two episode pieces as separate rollouts (the second
  # piece starts with first=True, so its carry is irrelevant: use zeros).
  piece1 = _slice_time(r, 0, k, r.carry)
  piece2 = _slice_time(r, k + 1, m, agent.initial_carry(2))
  split = float(loss_fn(params, piece1)[0]) + float(loss_fn(params, piece2)[0])
  np.testing.assert_allclose(loss, split, rtol=1e-5)


# -- (d) determinism -------------------------------------------------------------------------------
def test_same_seed_gives_bitwise_identical_parameters_after_20_updates():
  config = _config(m=4, b=2)
  agent = impala.make_agent(config, OBS, ACT)
  step = impala.make_learner_step(agent, config)
  rollouts = [
    synthetic_rollout(
      100 + i,
      unroll_length=4,
      batch_size=2,
      obs_shape=(3,),
      obs_dtype=np.float32,
      num_actions=3,
      carry=agent.initial_carry(2),
    )
    for i in range(20)
  ]

  def run(seed):
    state = impala.init_learner(agent, config, OBS, seed=seed)
    for r in rollouts:
      state, metrics = step(state, r)
    assert np.isfinite(float(metrics["loss"])) and int(state.step) == 20
    return jax.tree.map(np.asarray, state.params)

  a, b, c = run(0), run(0), run(1)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))


# -- optimiser: torch.optim.RMSprop semantics -------------------------------------------------------
def test_optimizer_matches_torch_rmsprop_with_clip_and_linear_decay():
  config = _config(m=2, b=5)
  config.total_env_steps = 40  # 4 updates to decay to 0
  config.max_grad_norm = 1.0
  opt = impala.make_optimizer(config)
  p = {"w": jnp.array([1.0, -2.0, 3.0])}
  g = {"w": jnp.array([0.3, -0.4, 1.2])}
  state = opt.init(p)
  nu = np.zeros(3)
  w = np.array([1.0, -2.0, 3.0])
  for i in range(3):
    upd, state = opt.update(g, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, upd)
    gc = np.array(g["w"]) * min(1.0, 1.0 / np.linalg.norm(g["w"]))
    nu = 0.99 * nu + 0.01 * gc**2
    lr = 6e-4 * (1 - i / 4)
    w = w - lr * gc / (np.sqrt(nu) + 0.01)
    np.testing.assert_allclose(p["w"], w, rtol=1e-5)


# -- (e) config validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
  "changes, fields",
  [
    ({"network.cell": "gru", "network.core_mode": "rtrl"}, ["network.core_mode", "network.cell"]),
    ({"network.cell": "lstm"}, ["network.core_mode", "network.cell"]),
    ({"network.stem_grad": "frozen"}, ["network.stem_grad", "network.stem_checkpoint"]),
    (
      {"network.stem_grad": "frozen", "network.stem_checkpoint": "/nonexistent/stem.msgpack"},
      ["network.stem_checkpoint"],
    ),
    ({"network.cell": "transformer"}, ["network.cell"]),
    ({"network.torso": "vit"}, ["network.torso"]),
    ({"network.hidden_size": 0}, ["network.hidden_size"]),
    ({"unroll_length": -1}, ["unroll_length"]),
    ({"batch_size": 0}, ["batch_size"]),
    ({"network.mlp_hidden_sizes": (64, 0)}, ["network.mlp_hidden_sizes"]),
    ({"network.core_mode": "bptt"}, ["network.core_mode"]),
    ({"network.stem_grad": "sometimes"}, ["network.stem_grad"]),
    ({"network.cell": "rtu", "network.cell_options": {"colour": "red"}}, ["network.cell_options"]),
    ({"network.stem_checkpoint": "/tmp/x.msgpack"}, ["network.stem_checkpoint", "network.stem_grad"]),
    ({"network.torso": "impala_resnet"}, ["network.torso", "observation space"]),
  ],
)
def test_validate_names_the_fields_before_any_compute(changes, fields, monkeypatch):
  config = _config()
  for k, v in changes.items():
    node, name = (config.network, k.split(".")[1]) if k.startswith("network.") else (config, k)
    setattr(node, name, v)

  # Nothing may be built (let alone computed) before validation fails.
  def boom(*a, **k):
    raise AssertionError("built a network before validating the config")

  monkeypatch.setattr(config_module, "Agent", boom)
  monkeypatch.setattr(jax.random, "PRNGKey", boom)
  with pytest.raises(registry.ConfigError) as e:
    impala.make_agent(config, OBS, ACT)
  for f in fields:
    assert f in str(e.value)


def test_valid_configs_pass():
  impala.validate(impala.get_config(), Space.box((4, 84, 84), np.uint8), Space.discrete(6))
  c = _config(cell="gru", core_mode="tbptt")
  impala.validate(c, OBS, ACT)
  c.network.cell = None
  impala.validate(c, OBS, ACT)


def test_frozen_stem_is_loaded_from_the_checkpoint_and_not_trained(tmp_path):
  config = _config(m=3, b=2)
  agent = impala.make_agent(config, OBS, ACT)
  donor = impala.init_learner(agent, config, OBS, seed=5).params
  path = tmp_path / "stem.msgpack"
  path.write_bytes(flax.serialization.to_bytes(donor))
  config.network.stem_grad = "frozen"
  config.network.stem_checkpoint = str(path)
  agent = impala.make_agent(config, OBS, ACT)
  state = impala.init_learner(agent, config, OBS, seed=0)
  jax.tree.map(np.testing.assert_array_equal, state.params["torso"], donor["torso"])
  r = synthetic_rollout(
    1,
    unroll_length=3,
    batch_size=2,
    obs_shape=(3,),
    obs_dtype=np.float32,
    num_actions=3,
    carry=agent.initial_carry(2),
  )
  new, _ = impala.make_learner_step(agent, config)(state, r)
  jax.tree.map(np.testing.assert_array_equal, new.params["torso"], donor["torso"])
  assert not np.array_equal(
    new.params["heads"]["params"]["value"]["value"]["kernel"],
    state.params["heads"]["params"]["value"]["value"]["kernel"],
  )
