"""Actors: double-buffered collection keeps the Rollout contract per buffer (toy env and envpool's
async send/recv), records split from a pool are whole rollouts, the episode tracker, the record
spec matches what an actor produces, and an actor beats (reports progress, for the stall
detection) after each record it delivers and while it waits for a full queue, and not otherwise."""

import threading

import jax
import ml_collections
import numpy as np
import pytest

from rtrl_rl import envs
from rtrl_rl.agents import impala, registry
from rtrl_rl.agents.rollout import Rollout, batch_slice
from rtrl_rl.system import actors
from rtrl_rl.system.queue import QueueClosed, RolloutQueue, flatten_spec
from tests.test_impala_acting import _ToyEnv


def _agent(env, cell="elstm", use_last_action=True):
  c = impala.get_config()
  c.network.torso, c.network.mlp_hidden_sizes = "mlp", (8,)
  c.network.cell, c.network.hidden_size, c.network.use_last_action = cell, 5, use_last_action
  agent = impala.make_agent(c, env.observation_space, env.action_space)
  return c, agent, impala.init_learner(agent, c, env.observation_space)


def _check_stream(agent, params, rollouts):
  """Overlap by one step; behaviour == learner replay; next carry == replay's outgoing carry."""

  @jax.jit
  def replay(params, r):
    (dist, _), carry = agent.unroll(
      params, r.carry, r.obs[:-1], r.reward[:-1], r.prev_action[:-1], r.first[:-1], outgoing_traces=True
    )
    return dist.log_prob(r.action), carry

  for prev, r in zip(rollouts, rollouts[1:]):
    for name in ("obs", "reward", "terminated", "truncated", "first", "prev_action"):
      np.testing.assert_array_equal(getattr(r, name)[0], getattr(prev, name)[-1], err_msg=name)
    log_prob, carry = replay(params, prev)
    np.testing.assert_allclose(prev.behaviour_log_prob, log_prob, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, w: np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6), r.carry, carry)
  for r in rollouts:
    np.testing.assert_array_equal(r.prev_action[1:], np.where(r.first[1:], 0, r.action))
    np.testing.assert_array_equal(r.first[1:], r.terminated[:-1] | r.truncated[:-1])
    np.testing.assert_array_equal(r.reward[r.first], 0)


def test_double_buffered_collection_keeps_the_contract_per_buffer():
  m, b = 5, 3
  envs = [_ToyEnv(b, seed=1), _ToyEnv(b, seed=2)]
  _, agent, state = _agent(envs[0])
  collector = impala.RolloutCollector(envs, agent, unroll_length=m, seed=0)
  assert collector.num_buffers == 2
  with pytest.raises(ValueError, match="collect_all"):
    collector.collect(state.params)
  batches = [collector.collect_all(state.params, policy_version=i) for i in range(4)]
  for h in range(2):
    stream = [batch[h] for batch in batches]
    assert all(r.obs.shape == (m + 1, b, 3) and r.action.shape == (m, b) for r in stream)
    assert [int(r.policy_version[0]) for r in stream] == [0, 1, 2, 3]
    _check_stream(agent, state.params, stream)
  # the two buffers are different envs (their observations differ)
  assert not np.array_equal(batches[0][0].obs, batches[0][1].obs)
  assert collector.num_steps == 4 * 2 * m * b


def test_envpool_async_pools_and_record_split():
  m = 4
  pools = [envs.make("memory/cartpole-masked", 4, actors.buffer_seed(7, h), num_threads=1) for h in range(2)]
  _, agent, state = _agent(pools[0], cell="rtu", use_last_action=False)
  collector = impala.RolloutCollector(pools, agent, unroll_length=m, seed=0)
  batches = [collector.collect_all(state.params) for _ in range(6)]  # ~25 steps: episodes end
  for pool in pools:
    assert pool._in_flight == 0  # nothing in flight between rollouts (safe to close)
  for h in range(2):
    _check_stream(agent, state.params, [batch[h] for batch in batches])
  assert any(batch[h].first[1:].any() for batch in batches for h in range(2))
  # a pool's rollout split into records: each record is a whole rollout of its envs
  parts = [actors.split_records(batch[0], 2, batch_slice) for batch in batches]
  for k in range(2):
    stream = [p[k] for p in parts]
    assert stream[0].batch_size == 2
    _check_stream(agent, state.params, stream)
  for pool in pools:
    pool.close()


def test_episode_tracker_counts_across_rollouts():
  # one env: an episode of 3 transitions spanning two rollouts (M = 2), then a new one
  def rollout(reward, first, terminated, truncated):
    n = len(reward)
    col = lambda x, dt: np.asarray(x, dt).reshape(n, 1)
    return Rollout(
      obs=np.zeros((n, 1, 1)),
      reward=col(reward, np.float32),
      terminated=col(terminated, bool),
      truncated=col(truncated, bool),
      first=col(first, bool),
      prev_action=np.zeros((n, 1), np.int32),
      action=np.zeros((n - 1, 1), np.int32),
      behaviour_log_prob=np.zeros((n - 1, 1)),
      carry=None,
      policy_version=np.zeros(1, np.int32),
    )

  tracker = actors.EpisodeTracker(1)
  r1 = rollout([0, 1, 2], [1, 0, 0], [0, 0, 0], [0, 0, 0])
  ret, length = tracker.update(r1)
  assert np.isnan(ret).all() and (length == 0).all()
  r2 = rollout([2, 4, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0])  # overlap: obs[0] == r1.obs[2]
  ret, length = tracker.update(r2)
  np.testing.assert_array_equal(ret[:, 0], [7.0, np.nan])  # 1 + 2 + 4, ended at obs[1]
  np.testing.assert_array_equal(length[:, 0], [3, 0])
  r3 = rollout([0, 5, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0])  # a truncated one counts too
  r3 = r3._replace(terminated=np.zeros((3, 1), bool), truncated=np.array([[0], [0], [1]], bool))
  ret, length = tracker.update(r3)
  np.testing.assert_array_equal(ret[:, 0], [np.nan, 6.0])
  np.testing.assert_array_equal(length[:, 0], [0, 2])


def _small_actor_config():
  c = ml_collections.ConfigDict({"algo": "impala"})
  c.env = ml_collections.ConfigDict(
    {"id": "memory/cartpole-masked", "options": ml_collections.ConfigDict({"num_threads": 1})}
  )
  c.agent = impala.get_config()
  c.agent.unroll_length = 3
  c.agent.network.torso, c.agent.network.mlp_hidden_sizes = "mlp", (8,)
  c.agent.network.cell, c.agent.network.hidden_size = "rtu", 4
  c.system = ml_collections.ConfigDict({"envs_per_actor": 2, "actor_pools": 2, "records_per_pool": 2})
  return c


def test_record_spec_matches_what_an_actor_produces():
  c = _small_actor_config()
  assert actors.actor_layout(c) == (2, 2)
  pools = actors.make_actor_envs(c, seed=3)
  assert [p.num_envs for p in pools] == [4, 4]
  parts = registry.get("impala").actor_learner(c, envs.describe(c.env.id))
  state = parts.init_learner(0)
  spec = actors.record_spec(c, parts)
  collector = parts.collector(pools, 0)
  records = [
    actors.ActorRecord(r, *actors.EpisodeTracker(2).update(r))
    for pool_rollout in collector.collect_all(state.params, policy_version=5)
    for r in actors.split_records(pool_rollout, 2, parts.batch_slice)
  ]
  assert len(records) == 4
  want, treedef = flatten_spec(spec)
  with RolloutQueue(spec, capacity=4) as q:
    for rec in records:
      got, got_def = flatten_spec(jax.tree.map(lambda x: np.asarray(x), rec))
      assert got_def == treedef
      assert [(g.shape, g.dtype) for g in got] == [(w.shape, w.dtype) for w in want]
      q.put(rec)
    batch = q.get_batch(4, axis=actors.record_batch_axes(parts))
  assert batch.rollout.obs.shape == (4, 8, 2)
  np.testing.assert_array_equal(batch.rollout.policy_version, 5)
  for p in pools:
    p.close()


def test_actor_jax_env_places_each_actor():
  assert actors.actor_jax_env("cpu", 3) == {"JAX_PLATFORMS": "cpu"}
  envs = [actors.actor_jax_env("gpu", k, ["2", "5"]) for k in range(3)]
  assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "5", "2"]  # round robin
  assert all(e["JAX_PLATFORMS"] == "cuda" and e["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for e in envs)
  with pytest.raises(ValueError, match="expected one of"):
    actors.actor_jax_env("tpu", 0)
  with pytest.raises(ValueError, match="GPU id"):
    actors.actor_jax_env("gpu", 0, [])


def test_local_gpu_ids_follow_the_trainers_visible_devices():
  assert actors.local_gpu_ids(2, environ={}) == ["0", "1"]
  assert actors.local_gpu_ids(2, environ={"CUDA_VISIBLE_DEVICES": "3, 1"}) == ["3", "1"]
  assert actors.local_gpu_ids(1, environ={"CUDA_VISIBLE_DEVICES": "GPU-ab12,GPU-cd34"}) == ["GPU-ab12"]
  with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
    actors.local_gpu_ids(2, environ={"CUDA_VISIBLE_DEVICES": "0"})


def test_gpu_actors_need_a_local_gpu():
  gpus = [d for d in jax.local_devices() if d.platform == "gpu"]
  if gpus:  # a GPU host: one environment per actor, round robin
    envs = actors.actor_envs_for_host("gpu", len(gpus) + 1)
    assert envs[-1]["CUDA_VISIBLE_DEVICES"] == envs[0]["CUDA_VISIBLE_DEVICES"]
  else:
    with pytest.raises(actors.NoAcceleratorError, match=r"actor_device=cpu"):
      actors.actor_envs_for_host("gpu", 2)
  assert actors.actor_envs_for_host("cpu", 2) == [{"JAX_PLATFORMS": "cpu"}] * 2


class _Info:
  """A WorkerInfo stand-in that logs the actor's beats."""

  attempt = 0

  def __init__(self, log):
    self.stop_event, self._log = threading.Event(), log

  def beat(self):
    self._log.append("beat")


class _Queue:
  """Full on the first put; closed on the third record."""

  def __init__(self, log):
    self._log, self._calls = log, 0

  def put(self, record, timeout=None):
    del record, timeout
    self._calls += 1
    if self._calls == 1:
      self._log.append("full")
      raise TimeoutError
    self._log.append("put")
    if self._log.count("put") == 3:
      raise QueueClosed


class _Store:
  def __init__(self, params):
    self._params = params

  def read_if_newer(self, version):
    return (self._params, 0) if version < 0 else None


def test_actor_beats_after_each_delivery_and_while_the_queue_is_full(monkeypatch):
  c = _small_actor_config()
  c.seed = 0
  obs_space, act_space = envs.describe(c.env.id)
  agent = impala.make_agent(c.agent, obs_space, act_space)
  params = jax.device_get(impala.init_learner(agent, c.agent, obs_space).params)
  log = []
  platforms = jax.config.jax_platforms
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # restored afterwards (actor_main sets it)
  try:
    actors.actor_main(_Info(log), c, 0, 0, _Queue(log), _Store(params), {"JAX_PLATFORMS": "cpu"})
  finally:
    jax.config.update("jax_platforms", platforms)
  assert log == ["full", "beat", "put", "beat", "put", "beat", "put"]
