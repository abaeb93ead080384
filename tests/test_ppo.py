"""PPO with RTRL cores: stored-carry alignment, fresh recompute, exact single-step RTRL gradients,
determinism and config validation. (The PPO loss and GAE themselves: tests/test_losses_*.py.)"""

import dataclasses
import functools

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl import envs, experiment
from rtrl_rl.agents import actor_loop, ppo
from rtrl_rl.agents.ppo import learning
from rtrl_rl.envs._jax import gymnax_functional
from rtrl_rl.envs.cue_memory import cue_memory_functional
from rtrl_rl.losses import ppo_loss
from rtrl_rl.system import anakin


def set_fields(c, **fields):
  """Sets the fields of a PPO config `c`, a network field (`cell`, `core_mode`, ...) in `c.network`;
  a name that is a field of neither is an error (a ConfigDict would add it silently)."""
  for k, v in fields.items():
    where = c.network if k in c.network else c
    assert k in where, f"{k} is not a field of the PPO config"
    where[k] = v
  return c


def small_config(cell="rtu", **overrides):
  c = ppo.get_config()
  c.num_envs, c.rollout_length = 3, 8
  c.num_epochs, c.num_minibatches, c.minibatch_size = 2, 3, 8
  c.network.mlp_hidden_sizes, c.network.head_hidden_sizes, c.network.hidden_size = (8,), (8,), 6
  c.network.cell = cell
  c.learning_rate = 1e-2
  return ppo.validate(set_fields(c, **overrides))


def assert_trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


def trees_close(a, b, **kw):
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.allclose(x, y, **kw)), a, b)))


@pytest.fixture(scope="module")
def rollout():
  """A PPO batch acted by actor_loop.act on cue memory (episodes of 3 steps + autoreset: several
  resets inside the 8-step rollout), with the agent and the acting params."""
  env = cue_memory_functional(num_cues=3, length=2)
  c = small_config()
  agent = ppo.make_agent(c, env.observation_space, env.action_space)
  params = agent.init(jax.random.key(1), jnp.zeros(env.observation_space.shape))
  normalizer = ppo.acting.normalizer(c)
  actor = actor_loop.init_actor(env, agent, normalizer, c.num_envs, jax.random.key(2))

  @jax.jit
  def collect(params, actor):
    buf = actor_loop.carry_buffer(agent, c.rollout_length, c.num_envs)
    actor, traj, _ = actor_loop.act(env, agent, normalizer, params, actor, c.rollout_length, carry_buffer=buf)
    return actor, ppo.ppo_batch(traj, actor_loop.bootstrap_value(agent, normalizer, params, actor))

  # Two rollouts: the second starts from a non-zero carry.
  actor, _ = collect(params, actor)
  actor_end, batch = collect(params, actor)
  return dict(env=env, config=c, agent=agent, params=params, batch=batch, actor_end=actor_end)


def test_stored_carry_at_t_is_the_carry_that_processes_o_t(rollout):
  agent, params, b = rollout["agent"], rollout["params"], rollout["batch"]
  t_len = b.value.shape[0]
  assert b.first.any() and not b.first.all()  # resets inside the rollout
  assert not trees_close(jax.tree.map(lambda x: x[0], b.carry), agent.initial_carry(3))
  for t in range(t_len):
    carry_t = jax.tree.map(lambda x: x[t], b.carry)
    (dist, value), nxt = agent.step(params, carry_t, b.obs[t], b.prev_reward[t], b.prev_action[t], b.first[t])
    np.testing.assert_allclose(value, b.value[t], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dist.log_prob(b.action[t]), b.log_prob[t], rtol=1e-5, atol=1e-6)
    want_next = rollout["actor_end"].carry if t == t_len - 1 else jax.tree.map(lambda x: x[t + 1], b.carry)
    assert_trees_close(nxt, want_next, rtol=1e-5, atol=1e-6)
  # Inputs are aligned too: the last-reward/last-action inputs are 0 on first steps, the mask is
  # False exactly on the indices whose observation ended an episode (the step before a first).
  assert not np.asarray(b.prev_reward)[np.asarray(b.first)].any()
  assert not np.asarray(b.prev_action)[np.asarray(b.first)].any()
  np.testing.assert_array_equal(~np.asarray(b.mask)[:-1], np.asarray(b.first)[1:])


def _perturbed(params, seed=0, scale=0.3):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
    tree, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  )


def _from_scratch(agent, params, b):
  """Carries before each o_t, recomputed step by step from the rollout's initial carry."""
  carry = jax.tree.map(lambda x: x[0], b.carry)
  step = jax.jit(agent.step)
  before, after = [], []
  for t in range(b.value.shape[0]):
    before.append(carry)
    _, carry = step(params, carry, b.obs[t], b.prev_reward[t], b.prev_action[t], b.first[t])
    after.append(carry)
  stack = lambda cs: jax.tree.map(lambda *x: jnp.stack(x), *cs)
  return stack(before), stack(after)


def test_fresh_carries_are_aligned_with_a_rollout_recomputed_from_scratch(rollout):
  agent, b = rollout["agent"], rollout["batch"]
  new_params = _perturbed(rollout["params"])
  fresh = jax.jit(functools.partial(learning.recompute_carries, agent))(new_params, b)
  before, after = _from_scratch(agent, new_params, b)
  assert_trees_close(fresh, before, rtol=1e-5, atol=1e-6)
  # Not the stale carries, and not shifted by one step (the authors' off-by-one).
  assert not trees_close(fresh, b.carry, rtol=1e-3, atol=1e-4)
  assert not trees_close(
    jax.tree.map(lambda x: x[1:], fresh), jax.tree.map(lambda x: x[1:], after), rtol=1e-3, atol=1e-4
  )


def test_fresh_update_uses_recomputed_carries_in_the_next_epoch(rollout):
  """The fresh update = epoch 1 on the stored carries, recompute with the new params, epoch 2 on
  the recomputed carries (same minibatch permutations)."""
  agent, b, params = rollout["agent"], rollout["batch"], rollout["params"]
  c = small_config(gradient="fresh")
  state = learning.init_learner(jax.random.key(5), agent, c, b.obs[0, 0], params=params)
  got, _ = jax.jit(learning.make_update(agent, c))(state, b)

  opt = learning.make_optimizer(c)
  loss_fn = learning.make_loss(agent, c)
  adv, target = learning.advantages(c, b)
  n = b.value.size
  flat = lambda tree: jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), tree)
  fields = flat(
    dict(
      obs=b.obs,
      first=b.first,
      prev_reward=b.prev_reward,
      prev_action=b.prev_action,
      action=b.action,
      log_prob=b.log_prob,
      value=b.value,
      mask=b.mask,
      advantage=adv,
      target=target,
    )
  )
  _, sub = jax.random.split(state.key)
  p, o, carries = state.params, state.opt_state, b.carry

  @jax.jit
  def sgd_step(p, o, sample):
    grads = jax.grad(lambda q: loss_fn(q, sample)[0])(p)
    updates, o = opt.update(grads, o, p)
    return jax.tree.map(lambda a, u: a + u, p, updates), o

  for epoch_key in jax.random.split(sub, c.num_epochs):
    perm = jax.random.permutation(epoch_key, n).reshape(c.num_minibatches, c.minibatch_size)
    for idx in perm:
      sample = jax.tree.map(lambda x: x[idx], fields)
      sample["carry"] = jax.tree.map(lambda x: x[idx], flat(carries))
      p, o = sgd_step(p, o, sample)
    new_carries = _from_scratch(agent, p, b)[0]
    assert not trees_close(new_carries, carries, rtol=1e-4, atol=1e-6)
    carries = new_carries
  assert_trees_close(got.params, p, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("cell", ["rtu", "elstm"])
def test_stale_single_step_gradient_is_exact_rtrl(cell):
  """The gradient of a single-step minibatch loss from the stored carry (forward RTRL e_t . T_t
  through cells.step) equals BPTT of the same one-step loss through the whole history (core), with
  the immediate gradient for the torso and ordinary backprop for the heads. float64."""
  with jax.enable_x64(True):
    c = small_config(cell)
    env = cue_memory_functional(num_cues=3, length=4)
    agent = ppo.make_agent(c, env.observation_space, env.action_space)
    t_len, b = 7, 4
    params = agent.init(jax.random.key(0), jnp.zeros(env.observation_space.shape))
    params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(t_len, b, 4)))
    first = np.zeros((t_len, b), bool)
    first[0] = True
    first[3, 1] = True  # a reset inside one env's history
    first = jnp.asarray(first)
    prev_reward = jnp.asarray(rng.normal(size=(t_len, b)) * 0.5)
    prev_action = jnp.asarray(rng.integers(0, 3, (t_len, b)), jnp.int32)
    carry = agent.cell.initial_carry(b, dtype=jnp.float64)
    carry0 = carry
    step = jax.jit(agent.step)
    for t in range(t_len - 1):
      _, carry = step(params, carry, obs[t], prev_reward[t], prev_action[t], first[t])
    t = t_len - 1
    (dist, value), _ = step(params, carry, obs[t], prev_reward[t], prev_action[t], first[t])
    action = jnp.asarray(rng.integers(0, 3, (b,)), jnp.int32)
    sample = dict(
      carry=carry,
      obs=obs[t],
      first=first[t],
      prev_reward=prev_reward[t],
      prev_action=prev_action[t],
      action=action,
      log_prob=dist.log_prob(action) + jnp.asarray(rng.normal(size=b) * 0.05),
      value=value + 0.05,
      mask=jnp.ones((b,), bool),
      advantage=jnp.asarray(rng.normal(size=b)),
      target=jnp.asarray(rng.normal(size=b)),
    )
    loss_fn = learning.make_loss(agent, c)
    g_rtrl = jax.jit(jax.grad(lambda p: loss_fn(p, sample)[0]))(params)

    ref_agent = dataclasses.replace(agent, core_mode="bptt")

    def ref_loss(p):
      (dists, values), _ = ref_agent.unroll(p, carry0, obs, prev_reward, prev_action, first)
      last = jax.tree.map(lambda x: x[-1], dists)
      return ppo_loss(
        last,
        action,
        sample["log_prob"],
        sample["advantage"],
        values[-1],
        sample["value"],
        sample["target"],
        mask=sample["mask"],
        clip_eps=c.clip_eps,
        value_clip_eps=c.value_clip_eps,
        vf_coef=c.value_cost,
        ent_coef=c.entropy_cost,
      )[0]

    g_ref = jax.jit(jax.grad(ref_loss))(params)
    assert_trees_close(g_rtrl, g_ref, rtol=1e-9, atol=1e-12)
    # The history matters: a one-step-truncated gradient of the core is different.
    tb_agent = dataclasses.replace(agent, core_mode="tbptt")
    g_tb = jax.jit(jax.grad(lambda p: learning.make_loss(tb_agent, c)(p, sample)[0]))(params)
    assert not trees_close(g_tb["core"], g_ref["core"], rtol=1e-3)


def _history_problem(cell, core_mode, t_len=8, b=4, **overrides):
  """float64: a small PPO agent, a history of `t_len` steps for `b` envs (a reset at step 0 for all
  envs and at step 3 of env 1), the carries before each step acted by `agent.step`, and random
  targets for a loss on every step."""
  c = small_config(cell, core_mode=core_mode, **overrides)
  env = cue_memory_functional(num_cues=3, length=4)
  agent = ppo.make_agent(c, env.observation_space, env.action_space)
  params = agent.init(jax.random.key(0), jnp.zeros(env.observation_space.shape))
  params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
  rng = np.random.default_rng(0)
  first = np.zeros((t_len, b), bool)
  first[0] = True
  first[3, 1] = True
  h = dict(
    obs=jnp.asarray(rng.normal(size=(t_len, b, 4))),
    first=jnp.asarray(first),
    prev_reward=jnp.asarray(rng.normal(size=(t_len, b)) * 0.5),
    prev_action=jnp.asarray(rng.integers(0, 3, (t_len, b)), jnp.int32),
  )
  carry = agent.cell.initial_carry(b, dtype=jnp.float64)
  if core_mode != "rtrl":
    carry = carry._replace(traces=None)
  carries, step = [], jax.jit(agent.step)
  outs = []
  for t in range(t_len):
    carries.append(carry)
    out, carry = step(params, carry, h["obs"][t], h["prev_reward"][t], h["prev_action"][t], h["first"][t])
    outs.append(out)
  action = jnp.asarray(rng.integers(0, 3, (t_len, b)), jnp.int32)
  log_prob = jnp.stack([d.log_prob(a) for (d, _), a in zip(outs, action)])
  h.update(
    carry=jax.tree.map(lambda *x: jnp.stack(x), *carries),
    action=action,
    log_prob=log_prob + jnp.asarray(rng.normal(size=(t_len, b)) * 0.05),
    value=jnp.stack([v for _, v in outs]) + 0.05,
    mask=jnp.ones((t_len, b), bool),
    advantage=jnp.asarray(rng.normal(size=(t_len, b))),
    target=jnp.asarray(rng.normal(size=(t_len, b))),
  )
  return c, env, agent, params, h


def _window(h, lo, hi):
  """Steps lo..hi-1 of the history as a sequence sample (time-major), replayed from carry[lo]."""
  out = {k: v[lo:hi] for k, v in h.items() if k != "carry"}
  out["carry"] = jax.tree.map(lambda x: x[lo], h["carry"])
  return out


def _window_loss(c, dists, values, s):
  return ppo_loss(
    dists,
    s["action"],
    s["log_prob"],
    s["advantage"],
    values,
    s["value"],
    s["target"],
    mask=s["mask"],
    clip_eps=c.clip_eps,
    value_clip_eps=c.value_clip_eps,
    vf_coef=c.value_cost,
    ent_coef=c.entropy_cost,
  )[0]


@pytest.mark.parametrize("cell", ["rtu", "elstm"])
def test_stale_sequence_gradient_is_exact_rtrl(cell):
  """sequence_length L > 1 with an RTRL core: the gradient of the loss on the last L steps, replayed
  from the stored carry, equals BPTT of the same loss through the whole history. float64."""
  with jax.enable_x64(True):
    c, env, agent, params, h = _history_problem(cell, "rtrl", sequence_length=4)
    t_len = h["value"].shape[0]
    sample = _window(h, t_len - 4, t_len)
    g_rtrl = jax.jit(jax.grad(lambda p: learning.make_loss(agent, c)(p, sample)[0]))(params)

    ref_agent = dataclasses.replace(agent, core_mode="bptt")
    carry0 = jax.tree.map(lambda x: x[0], h["carry"])

    def ref_loss(p):
      (dists, values), _ = ref_agent.unroll(
        p, carry0, h["obs"], h["prev_reward"], h["prev_action"], h["first"]
      )
      return _window_loss(c, jax.tree.map(lambda x: x[t_len - 4 :], dists), values[t_len - 4 :], sample)

    assert_trees_close(g_rtrl, jax.jit(jax.grad(ref_loss))(params), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cell", ["gru", "lru"])
def test_tbptt_sequence_gradient_is_bptt_truncated_to_the_sequence(cell):
  """sequence_length L with network.core_mode='tbptt' (the RTU paper's GRU / LRU baselines): the
  gradient equals backprop through L steps replayed one by one from the stored carry held constant;
  it equals full-history BPTT when the sequence starts an episode, and differs from it otherwise.
  (network.stem_grad='unroll', as rtu_paper_core sets for these variants: the torso is
  backpropagated through the same window.)"""
  with jax.enable_x64(True):
    c, env, agent, params, h = _history_problem(cell, "tbptt", sequence_length=4, stem_grad="unroll")
    loss = learning.make_loss(agent, c)
    ref_agent = dataclasses.replace(agent, core_mode="bptt")

    def stepwise_loss(p, s):
      carry, dists, values = jax.lax.stop_gradient(s["carry"]), [], []
      for t in range(s["obs"].shape[0]):
        (d, v), carry = ref_agent.step(
          p, carry, s["obs"][t], s["prev_reward"][t], s["prev_action"][t], s["first"][t]
        )
        dists.append(d)
        values.append(v)
      return _window_loss(c, jax.tree.map(lambda *x: jnp.stack(x), *dists), jnp.stack(values), s)

    def full_history_loss(p, lo, s):
      (dists, values), _ = ref_agent.unroll(
        p, jax.tree.map(lambda x: x[0], h["carry"]), h["obs"], h["prev_reward"], h["prev_action"], h["first"]
      )
      return _window_loss(c, jax.tree.map(lambda x: x[lo : lo + 4], dists), values[lo : lo + 4], s)

    g_loss = jax.jit(jax.grad(lambda p, s: loss(p, s)[0]))
    g_stepwise = jax.jit(jax.grad(stepwise_loss))
    g_history = jax.jit(jax.grad(full_history_loss), static_argnums=1)
    for lo in (0, 4):  # steps 0..3 start every episode; 4..7 continue them
      sample = _window(h, lo, lo + 4)
      g = g_loss(params, sample)
      assert_trees_close(g, g_stepwise(params, sample), rtol=1e-9, atol=1e-12)
      g_full = g_history(params, lo, sample)
      assert trees_close(g["core"], g_full["core"], rtol=1e-9, atol=1e-12) == (lo == 0)
    # The truncation length matters: single steps give a different core gradient.
    c1 = small_config(cell, core_mode="tbptt", sequence_length=1, stem_grad="unroll")
    one = jax.tree.map(lambda x: x[-1], _window(h, 7, 8))
    one["carry"] = jax.tree.map(lambda x: x[7], h["carry"])
    g1 = jax.grad(lambda p: learning.make_loss(agent, c1)(p, one)[0])(params)
    g4 = jax.grad(
      lambda p: stepwise_loss(p, jax.tree.map(lambda x: x[3:], _window(h, 4, 8)) | {"carry": one["carry"]})
    )(params)
    assert_trees_close(g1, g4, rtol=1e-9, atol=1e-12)  # a 1-step window is the 1-step loss


def test_sequence_update_replays_each_sequence_from_its_stored_carry(rollout):
  """The update with sequence_length L = a reference loop: each epoch permutes the T/L * B
  sequences (sequence k * B + b = steps kL..kL+L-1 of env b), cuts them into minibatches of
  minibatch_size / L, and takes an Adam step on the loss of each, replayed from carry[kL, b]."""
  agent, b, params = rollout["agent"], rollout["batch"], rollout["params"]
  seq = 4
  c = small_config(sequence_length=seq, minibatch_size=8, num_minibatches=3)
  state = learning.init_learner(jax.random.key(5), agent, c, b.obs[0, 0], params=params)
  got, _ = jax.jit(learning.make_update(agent, c))(state, b)

  t_len, n_env = b.value.shape
  adv, target = learning.advantages(c, b)
  fields = dict(
    obs=b.obs,
    first=b.first,
    prev_reward=b.prev_reward,
    prev_action=b.prev_action,
    action=b.action,
    log_prob=b.log_prob,
    value=b.value,
    mask=b.mask,
    advantage=adv,
    target=target,
  )
  opt, loss_fn = learning.make_optimizer(c), learning.make_loss(agent, c)

  @jax.jit
  def sgd_step(p, o, sample):
    grads = jax.grad(lambda q: loss_fn(q, sample)[0])(p)
    updates, o = opt.update(grads, o, p)
    return jax.tree.map(lambda a, u: a + u, p, updates), o

  _, sub = jax.random.split(state.key)
  p, o = state.params, state.opt_state
  num_seq = t_len // seq * n_env
  for epoch_key in jax.random.split(sub, c.num_epochs):
    perm = np.asarray(jax.random.permutation(epoch_key, num_seq)).reshape(c.num_minibatches, -1)
    for row in perm:
      ks, env_ids = row // n_env, row % n_env
      steps = ks[None] * seq + np.arange(seq)[:, None]  # [L, n]
      sample = {k: v[steps, env_ids[None]] for k, v in fields.items()}
      sample["carry"] = jax.tree.map(lambda x: x[ks * seq, env_ids], b.carry)
      p, o = sgd_step(p, o, sample)
  assert_trees_close(got.params, p, rtol=2e-4, atol=1e-6)
  assert not trees_close(got.params, params, rtol=1e-3)


def test_continuous_actions_gaussian_head_with_obs_and_reward_normalisation():
  env = gymnax_functional("gymnax/Pendulum-v1", "Pendulum-v1")
  c = small_config("rtu", num_envs=2, rollout_length=8, num_minibatches=2, minibatch_size=8)
  runner = anakin.make("ppo", env, c)
  assert runner.agent.heads.policy == "gaussian"
  state, metrics = runner.step(runner.init(jax.random.key(0)))
  assert all(np.isfinite(np.asarray(v)) for k, v in metrics.items() if "episode" not in k)
  norm = state.actor.norm
  assert float(norm.obs.count) > 16 and np.any(np.asarray(norm.obs.mean) != 0)
  assert float(norm.ret.count) > 1 and float(norm.ret.var) != 1.0


def test_running_stats_match_numpy():
  x = np.random.default_rng(0).normal(2.0, 3.0, size=(50, 3)).astype(np.float32)
  s = ppo.stats_init((3,))
  for chunk in np.split(x, 5):
    s = ppo.stats_update(s, jnp.asarray(chunk))
  np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-4)
  np.testing.assert_allclose(s.var, x.var(0), rtol=1e-3)
  w = np.array([1, 0] * 5, bool)
  s = ppo.stats_update(ppo.stats_init(()), jnp.asarray(x[:10, 0]), jnp.asarray(w))
  np.testing.assert_allclose(s.mean, x[:10, 0][w].mean(), rtol=1e-3)


@pytest.mark.parametrize(
  "overrides, fields",
  [
    (dict(stem_grad="frozen"), ["network.stem_grad", "network.stem_checkpoint"]),
    (dict(stem_grad="frozen", stem_checkpoint="/nonexistent/stem.msgpack"), ["network.stem_checkpoint"]),
    (dict(stem_checkpoint="/tmp/stem.msgpack"), ["network.stem_checkpoint", "network.stem_grad"]),
    (dict(cell="gru", core_mode="rtrl"), ["network.core_mode", "network.cell"]),
    (dict(cell="lstm"), ["network.core_mode", "network.cell"]),
    (dict(minibatch_size=63), ["num_minibatches", "minibatch_size", "rollout_length", "num_envs"]),
    (dict(gradient="fresher"), ["gradient"]),
    (dict(cell=None, gradient="fresh"), ["gradient", "network.cell"]),
    (dict(stem_grad="sideways"), ["network.stem_grad"]),
    (dict(cell="rnn"), ["network.cell"]),
    (dict(core_mode="bptt"), ["network.core_mode"]),
    (dict(torso="impala_resnet"), ["network.torso"]),
    (dict(mlp_hidden_sizes=(8, 0)), ["network.mlp_hidden_sizes"]),
    (dict(sequence_length=3), ["sequence_length", "rollout_length", "minibatch_size"]),
    (dict(sequence_length=0), ["sequence_length"]),
  ],
)
def test_config_validation_names_the_fields(overrides, fields):
  c = set_fields(ppo.get_config(), **overrides)
  with pytest.raises(ValueError) as e:
    ppo.validate(c)
  for f in fields:
    assert f in str(e.value), (f, str(e.value))
  # The Anakin builder fails the same way, before any compute.
  with pytest.raises(ValueError):
    anakin.make("ppo", cue_memory_functional(), c)


def test_default_config_is_the_papers():
  c = ppo.validate(ppo.get_config())
  assert (c.rollout_length, c.num_epochs, c.num_minibatches, c.minibatch_size) == (2048, 4, 32, 64)
  assert (c.gae_lambda, c.discount, c.clip_eps, c.value_clip_eps, c.value_cost, c.entropy_cost) == (
    0.95,
    0.99,
    0.2,
    0.2,
    0.5,
    0.0,
  )
  assert (c.max_grad_norm, c.learning_rate, c.adam_eps) == (0.5, 1e-4, 1e-5)
  assert c.normalize_obs and c.normalize_reward and c.gradient == "stale"
  n = c.network
  assert (n.torso, n.cell, n.hidden_size, n.mlp_hidden_sizes, n.head_hidden_sizes) == (
    "mlp",
    "rtu",
    192,
    (64,),
    (64,),
  )


def test_frozen_stem_is_loaded_and_gets_no_gradient(rollout, tmp_path):
  agent, b = rollout["agent"], rollout["batch"]
  donor = _perturbed(rollout["params"], seed=3)
  path = tmp_path / "stem.msgpack"
  path.write_bytes(flax.serialization.to_bytes(donor))
  c = small_config(stem_grad="frozen", stem_checkpoint=str(path))
  frozen = dataclasses.replace(agent, stem_grad="frozen")
  state = learning.init_learner(jax.random.key(0), frozen, c, b.obs[0, 0])
  assert_trees_close(state.params["torso"], donor["torso"], rtol=0, atol=0)
  adv, target = learning.advantages(c, b)
  t = int(np.argmax(np.asarray(b.mask).all(1)))  # a step where every env's sample counts
  sample = dict(jax.tree.map(lambda x: x[t], b._asdict()), advantage=adv[t], target=target[t])
  grads = jax.jit(jax.grad(lambda p: learning.make_loss(frozen, c)(p, sample)[0]))(state.params)
  assert all(not np.any(g) for g in jax.tree.leaves(grads["torso"]))
  assert any(np.any(g) for g in jax.tree.leaves(grads["core"]))
  wrong = {
    "torso": {
      "params": {"dense_0": {"kernel": np.zeros((4, 5), np.float32), "bias": np.zeros((5,), np.float32)}}
    }
  }
  path.write_bytes(flax.serialization.to_bytes(wrong))
  with pytest.raises(ValueError, match="stem_checkpoint"):
    learning.init_learner(jax.random.key(0), frozen, c, b.obs[0, 0])


def test_paper_iteration_memory_is_within_twice_its_stored_carries():
  """Issue 14, point 5: at the paper's settings (non-linear RTU, d_rec 192, the 2048-step buffer,
  here shared by 64 envs, whose carries are in the state too) the stored carries dominate (~400
  MB), and one iteration of the jitted loop holds at most 2x their size: its arguments (the loop's
  state and the donated buffer) + outputs + XLA's temporaries - what the outputs reuse of the
  donated arguments (XLA's memory analysis of the compiled program; nothing is run). Rereading the
  buffer into fresh arrays (a per-iteration copy of the carries, all minibatches gathered at once)
  would add >= 1x."""
  config = experiment.load_config("configs/rtu_popgym.py:core=rtu_nonlinear,num_envs=64")
  a = config.agent
  buffer = ppo.config.stored_carry_bytes(a, *envs.describe(config.env.id))
  assert buffer > 350 * 2**20  # the paper's size: the carries dominate
  loop = anakin.make("ppo", envs.make_functional(config.env.id), a)
  shapes = jax.eval_shape(loop.init, jax.random.PRNGKey(0))
  m = loop.lower(shapes).compile().memory_analysis()
  assert m.alias_size_in_bytes >= buffer  # the buffer is donated and rewritten in place
  total = anakin.iteration_bytes(loop, shapes)
  assert total <= 2 * buffer, (total / 2**20, buffer / 2**20)
