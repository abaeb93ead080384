"""The cue-memory task and the fully-jitted Anakin loop's IMPALA path (PPO: tests/test_ppo.py,
tests/test_learning.py)."""

import logging
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl import envs
from rtrl_rl.agents import actor_loop, ppo
from rtrl_rl.agents.impala import config as impala_config
from rtrl_rl.agents.impala import learning as impala_learning
from rtrl_rl.agents.ppo import acting as ppo_acting
from rtrl_rl.agents.rollout import transitions
from rtrl_rl.envs.cue_memory import cue_memory_functional
from rtrl_rl.system import anakin


def _play(env, num_envs, num_steps, policy, seed=0):
  """Vmapped env steps; policy(state) -> actions. Returns stacked TimeSteps and cues."""
  state, obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(seed), num_envs))

  def body(carry, key):
    state = carry
    action = policy(state)
    state, ts = jax.vmap(env.step)(jax.random.split(key, num_envs), state, action)
    return state, (ts, state.core.cue)

  _, (ts, cues) = jax.lax.scan(body, state, jax.random.split(jax.random.key(seed + 1), num_steps))
  return obs, ts, cues


def test_cue_memory_episode_structure():
  k, length = 3, 4
  env = cue_memory_functional(num_cues=k, length=length)
  assert env.observation_space.shape == (k + 1,) and env.action_space.num_values == k
  obs0, ts, cues = _play(env, 5, 2 * (length + 2), lambda s: s.core.cue)  # always answer the cue
  obs0, obs = np.asarray(obs0), np.asarray(ts.obs)
  np.testing.assert_array_equal(obs0[:, :k].argmax(1), np.asarray(cues)[0])
  np.testing.assert_array_equal(obs0[:, k], 0)
  for t in range(length - 1):  # masked steps
    np.testing.assert_array_equal(obs[t], 0)
  np.testing.assert_array_equal(obs[length - 1, :, k], 1)  # the query
  np.testing.assert_array_equal(obs[length - 1, :, :k], 0)
  reward, term, first = np.asarray(ts.reward), np.asarray(ts.terminated), np.asarray(ts.first)
  np.testing.assert_array_equal(reward[length], 1.0)  # the answer to the query
  assert term[length].all() and not term[:length].any() and not np.asarray(ts.truncated).any()
  assert first[length + 1].all() and reward.sum() == 2 * 5  # autoreset, next episode, solved again
  np.testing.assert_array_equal(obs[length + 1, :, :k].argmax(1), np.asarray(cues)[length + 1])


def test_cue_memory_memoryless_policy_gets_one_over_k():
  k, length = 4, 2
  env = cue_memory_functional(num_cues=k, length=length)
  assert env.params.feedforward_bound == pytest.approx(1 / k)
  _, ts, _ = _play(env, 4000, length + 1, lambda s: jnp.full(s.core.cue.shape, 2, jnp.int32))
  assert abs(float(ts.reward[length].mean()) - 1 / k) < 0.03
  wrong = cue_memory_functional(num_cues=2, length=3, reward_wrong=-1.0)
  assert wrong.params.feedforward_bound == pytest.approx(0.0)
  with pytest.raises(ValueError, match="num_cues"):
    cue_memory_functional(num_cues=1)


def test_impala_anakin_builds_the_rollout_of_the_contract_and_updates():
  """One jitted IMPALA iteration: the Rollout has M + 1 steps, starts with the carry before obs[0],
  overlaps the next one by one step, and its transitions mask the autoreset steps."""
  env = cue_memory_functional(num_cues=2, length=2)
  c = impala_config.get_config()
  c.batch_size, c.unroll_length = 3, 5
  c.network.torso, c.network.mlp_hidden_sizes = "mlp", (8,)
  c.network.cell, c.network.hidden_size = "elstm", 4
  agent = impala_config.make_agent(c, env.observation_space, env.action_space)
  real_update = impala_learning.make_update(agent, c)

  def update(state, rollout):
    state, metrics = real_update(state, rollout)
    return state, dict(metrics, rollout=rollout)

  runner = anakin.make("impala", env, c, agent=agent, update=update)
  s0 = runner.init(jax.random.key(0))
  s1, m1 = runner.step(s0)
  s2, m2 = runner.step(s1)
  r1, r2 = m1["rollout"], m2["rollout"]
  assert r1.obs.shape == (6, 3, 3) and r1.action.shape == (5, 3)
  assert int(s2.learner.step) == 2 and np.isfinite(float(m2["loss"]))
  assert not all(
    np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(s0.learner.params), jax.tree.leaves(s1.learner.params))
  )
  # Carries: r1 starts from the zero carry, r2 from the carry after r1's obs[M-1].
  jax.tree.map(lambda x: np.testing.assert_array_equal(x, 0), r1.carry)
  np.testing.assert_array_equal(r2.obs[0], r1.obs[-1])
  np.testing.assert_array_equal(r2.first[0], r1.first[-1])
  (_, _), carry = agent.unroll(
    s0.learner.params,
    r1.carry,
    r1.obs[:-1],
    r1.reward[:-1],
    r1.prev_action[:-1],
    r1.first[:-1],
    outgoing_traces=True,
  )
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), carry, r2.carry)
  # The contract: reward into obs[t] is 0 on first steps; episodes of 3 steps + one autoreset.
  first = np.asarray(r1.first)
  assert first[0].all() and not np.asarray(r1.reward)[first].any()
  tr = transitions(r1, c.discount)
  ended = np.asarray(r1.terminated | r1.truncated)
  np.testing.assert_array_equal(np.asarray(tr.mask), (~ended[:-1]).astype(np.float32))
  np.testing.assert_array_equal(ended[:-1], first[1:])


def _small_impala_loop(batch_size, cell):
  """IMPALA's Anakin loop on cue memory: `batch_size` envs, unroll 3, an MLP torso, a `cell` of 4."""
  c = impala_config.get_config()
  c.batch_size, c.unroll_length = batch_size, 3
  c.network.torso, c.network.mlp_hidden_sizes = "mlp", (8,)
  c.network.cell, c.network.hidden_size = cell, 4
  return anakin.make("impala", cue_memory_functional(num_cues=2, length=2), c)


def test_init_compiles_the_iteration_in_the_background_and_the_first_step_reuses_it(caplog):
  """`init` starts compiling the iteration for its state's shapes in another thread (start-up: it
  overlaps the initialisation's own compilation); the first `step` compiles nothing of it again."""
  runner = _small_impala_loop(batch_size=2, cell="elstm")
  jax.config.update("jax_log_compiles", True)  # globally: the context manager is per thread
  try:
    with caplog.at_level(logging.WARNING):
      state = runner.init(jax.random.key(1))
      runner.step(state)
  finally:
    jax.config.update("jax_log_compiles", False)
  compiled = [
    (r.threadName, r.getMessage()) for r in caplog.records if "Finished XLA compilation of" in r.getMessage()
  ]
  iteration = [thread for thread, message in compiled if "jit(iteration)" in message]
  assert len(iteration) == 1 and iteration[0] != threading.main_thread().name, compiled


@pytest.fixture(scope="module")
def host_state():
  """A host copy of a small IMPALA Anakin state (one device)."""
  return jax.device_get(_small_impala_loop(batch_size=4, cell="rtu").init(jax.random.PRNGKey(0)))


@pytest.mark.parametrize("saved_keys,like_keys", [((4,), ()), ((), (4,)), ((2,), (3,))])
@pytest.mark.parametrize("typed", [False, True])
def test_relayout_keeps_every_global_leaf_and_splits_new_device_keys(
  host_state, saved_keys, like_keys, typed
):
  """A checkpoint of D devices resumed on D' (`()`: one device, no mesh): every leaf but the actor
  keys is kept bitwise; the keys take this run's layout, split from the first saved key, so they
  are distinct and reproducible."""
  state = host_state
  make = (
    (lambda n: jax.random.split(jax.random.key(7), n) if n else jax.random.key(7))
    if typed
    else (lambda n: np.asarray(jax.random.split(jax.random.PRNGKey(7), n) if n else jax.random.PRNGKey(7)))
  )
  with_keys = lambda s, shape: s._replace(actor=s.actor._replace(key=make(*shape) if shape else make(0)))
  saved_state, like = with_keys(state, saved_keys), with_keys(state, like_keys)
  saved = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(saved_state)}

  got = anakin.relayout(saved, like)

  key_data = lambda k: np.asarray(jax.random.key_data(k) if typed else k)
  assert key_data(got.actor.key).shape == key_data(like.actor.key).shape
  first = jnp.reshape(saved_state.actor.key, (-1, *(() if typed else (2,))))[0]
  np.testing.assert_array_equal(
    key_data(got.actor.key).reshape(-1, 2),
    key_data(jax.random.split(first, max(1, int(np.prod(like_keys))))).reshape(-1, 2),
  )
  assert len({tuple(k) for k in key_data(got.actor.key).reshape(-1, 2)}) == max(1, int(np.prod(like_keys)))
  rest = lambda s: jax.tree.leaves(s._replace(actor=s.actor._replace(key=None)))
  for a, b in zip(rest(got), rest(saved_state), strict=True):
    np.testing.assert_array_equal(a, b)


def test_relayout_names_the_leaves_that_do_not_fit(host_state):
  """A checkpoint of another config (here: fewer envs, a missing leaf) is not relaid: ValueError
  naming the leaves."""
  state = host_state
  saved = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(state)}
  saved[".actor.episode_return"] = np.zeros((2,), np.float32)
  saved[".actor.extra"] = saved.pop(".actor.reward")
  with pytest.raises(
    ValueError,
    match=r"\.actor\.reward: not in the checkpoint; \.actor\.episode_return: "
    r"float32\[2\] in the checkpoint vs float32\[4\] here; not in "
    r"this run: \.actor\.extra",
  ):
    anakin.relayout(saved, state)


# -- PPO acting on a host env (backend "sync") ---------------------------------------------------
def _reference_host_act(env, agent, config, params, actor, num_steps):
  """The plain host loop: a jitted policy half, the host env, a jitted record half per step, the
  transitions stacked at the end (what `actor_loop.host_acting` does in one call per step)."""
  normalizer = ppo_acting.normalizer(config)
  decide = jax.jit(lambda p, a: actor_loop.decide(agent, normalizer, p, a))
  record = jax.jit(lambda a, d, ts: actor_loop.record(normalizer, a, d, ts, None))
  rows, stats = [], []
  for _ in range(num_steps):
    d = decide(params, actor)
    ts = env.step(np.asarray(d.out.action))
    carry = actor.carry
    actor, transition, st = record(
      actor,
      d,
      actor_loop.TimeStepArrays(
        *map(jnp.asarray, (ts.obs, ts.reward, ts.terminated, ts.truncated, ts.first))
      ),
    )
    rows.append(dict(transition, carry=carry))
    stats.append(st)
  stack = lambda *xs: np.stack(xs)
  return actor, jax.tree.map(stack, *rows), actor_loop.episode_metrics(jax.tree.map(stack, *stats))


def test_host_acting_in_one_call_per_step_equals_the_plain_host_loop():
  """Two rollouts of PPO acting on a host env (the numpy form of cue memory, episodes crossing the
  rollout boundary): the fused, buffer-reusing host path gives bitwise the plain loop's
  transitions, stored carries, actor state and episode metrics; the second rollout reuses (donates)
  the first one's buffers."""
  c = ppo.get_config()
  c.num_envs, c.rollout_length, c.num_minibatches, c.minibatch_size = 3, 7, 3, 7
  c.network.hidden_size, c.network.mlp_hidden_sizes, c.network.head_hidden_sizes = 8, (8,), (8,)
  ppo.validate(c)
  make_env = lambda: envs.make("jax/cue-memory", num_envs=3, seed=4, num_cues=3, length=2)
  env, ref_env = make_env(), make_env()
  agent = ppo.make_agent(c, env.observation_space, env.action_space)
  params = agent.init(jax.random.key(1), jnp.zeros(env.observation_space.shape))
  acting = actor_loop.host_acting(env, agent, ppo_acting.normalizer(c))
  actor = acting.init(jax.random.PRNGKey(2))
  ref_actor = actor_loop.host_acting(ref_env, agent, ppo_acting.normalizer(c)).init(jax.random.PRNGKey(2))
  buffers = []
  for _ in range(2):
    actor, traj, metrics = acting.act(params, actor, c.rollout_length)
    ref_actor, ref_traj, ref_metrics = _reference_host_act(
      ref_env, agent, c, params, ref_actor, c.rollout_length
    )
    for key, value in ref_traj.items():
      jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), b, err_msg=key), traj[key], value
      )
    jax.tree.map(
      lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
      (actor, metrics),
      (ref_actor, ref_metrics),
    )
    buffers.append(jax.tree.leaves(traj["carry"])[0])
  assert buffers[0].is_deleted() and not buffers[1].is_deleted()  # donated to the second rollout
  assert int(np.sum(traj["first"])) > 0 and int(metrics["episodes"]) > 0
