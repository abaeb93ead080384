"""The actors backend's pipelined learner (`trainer._PipelinedLearner`, run by the loop driver's core
`trainer._drive`) against the serial loop.

The loop dispatches update k, takes the records of k+1 while it computes, then publishes the
parameters of k. These tests drive it with a fixed sequence of batches and a real jitted update
(state donated, as in the trainer) and check, without timing, that it computes exactly what the
serial loop (take, update, publish) computes, in the same order, and that it keeps the two rules
the trainer relies on: the host buffer of update k is refilled only after update k finished, and
the multi-host collective (the driver's agreement) is called exactly where the serial loop calls it.
"""

import multiprocessing
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl import envs, experiment, parallel
from rtrl_rl.agents import registry
from rtrl_rl.system import actors
from rtrl_rl.system.queue import RolloutQueue, flatten_spec, unflatten
from rtrl_rl.system.trainer import _Backend, _drive, _PipelinedLearner


class State(NamedTuple):
  params: dict
  step: jax.Array


def _update(state, batch):
  w = state.params["w"] * 0.9 + jnp.tanh(batch["x"]).sum(0) + state.step
  return State({"w": w}, state.step + 1), {"loss": jnp.sum(w**2), "step": state.step}


STEP = jax.jit(_update, donate_argnums=(0,))


def _init():
  return State({"w": jnp.arange(8, dtype=jnp.float32)}, jnp.zeros((), jnp.int32))


def _batches(n):
  rng = np.random.default_rng(0)
  return [rng.normal(size=(4, 8)).astype(np.float32) for _ in range(n)]


def _serial(batches):
  """The reference: the serial loop's published versions and parameters, and its final state."""
  state, published = _init(), []
  for k, x in enumerate(batches):
    state, _ = _update(state, {"x": jnp.asarray(x)})
    published.append((k + 1, np.asarray(state.params["w"])))
  return published, state


class Harness:
  """Records every call the loop makes, in order, and serves `batches` through two reused host
  buffers as the trainer does (`stop_at`: the call of `next_records` that returns None)."""

  def __init__(self, batches, stop_at=None, remote_stop_at=None):
    self.batches, self.stop_at, self.remote_stop_at = batches, stop_at, remote_stop_at
    self.buffers = [{"x": np.empty((4, 8), np.float32)} for _ in range(2)]
    self.events, self.published, self.taken, self.any_calls = [], [], 0, 0

  def next_records(self):
    j = self.taken + 1  # the update these records are for (1-based)
    self.events.append(("take", j))
    if self.stop_at is not None and j >= self.stop_at:
      return None
    # buffer (j - 1) % 2 was last read by update j - 2: it must have finished (been published)
    assert j <= 2 or self.published[-1][0] >= j - 2, (j, self.published[-1][0])
    buf = self.buffers[(j - 1) % 2]
    buf["x"][...] = self.batches[j - 1]
    self.taken = j
    return buf

  def to_device(self, records):
    self.events.append(("to_device", self.taken))
    return {"x": jax.device_put(records["x"])}

  def publish(self, params, version):
    self.events.append(("publish", version))
    self.published.append((version, np.array(params["w"])))

  def after_update(self, state, metrics, records):
    version = self.published[-1][0]
    self.events.append(("after", version))
    assert int(metrics["step"]) == version - 1
    np.testing.assert_array_equal(records["x"], self.batches[version - 1])  # not yet overwritten

  def agree(self, flags):
    """The collective before each update: [stop requested, checkpoint due, input ended]."""
    self.any_calls += 1
    stop, save, ended = flags
    self.events.append(("any", bool(ended)))
    return [stop, save, bool(ended) or self.any_calls == self.remote_stop_at]

  def run(self, total_updates, counters=None):
    counters = counters or {"updates": 0, "frames": 0}
    learner = _PipelinedLearner(STEP, self.next_records, self.to_device, self.publish)
    learner.version, learner.total = counters["updates"], total_updates
    it = registry.Iterations(
      _init, learner.step, 10, saved=None, resume=None, params=None, total_updates=total_updates
    )
    state = _drive(
      _init(),
      _Backend(it, ready=learner.ready),
      counters,
      10 * total_updates,
      stop_requested=lambda: False,
      save_due=lambda: False,
      save=None,
      on_step=lambda state, metrics: self.after_update(state, metrics, learner.records),
      agree=self.agree,
    )
    return state, counters


def test_pipelined_loop_publishes_the_serial_sequence_and_ends_with_the_serial_state():
  batches = _batches(7)
  h = Harness(batches)
  state, counters = h.run(total_updates=7)
  want, want_state = _serial(batches)
  assert [v for v, _ in h.published] == list(range(1, 8))
  for (v, w), (wv, ww) in zip(h.published, want):
    assert v == wv
    np.testing.assert_allclose(w, ww, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(state.params["w"]), np.asarray(want_state.params["w"]), rtol=1e-6)
  assert int(state.step) == 7 and counters == {"updates": 7, "frames": 70}
  # no records are taken after the last update (none is lost), and the pipelined order:
  # the records of k+1 are taken (and put on the device) before update k is published
  assert h.taken == 7 and [e for e in h.events if e[0] == "take"] == [("take", j) for j in range(1, 8)]
  assert h.events[:6] == [
    ("take", 1),
    ("to_device", 1),
    ("any", False),
    ("take", 2),
    ("to_device", 2),
    ("publish", 1),
  ]
  # multi-host lockstep: one `any_process` before each update, as in the serial loop, none after the last
  assert [e for e in h.events if e[0] == "any"] == [("any", False)] * 7
  assert h.events[-2:] == [("publish", 7), ("after", 7)]


def test_a_local_stop_finishes_the_dispatched_update_and_publishes_it():
  batches = _batches(9)
  h = Harness(batches, stop_at=4)  # the 4th `next_records` call sees the stop
  state, counters = h.run(total_updates=9)
  want, want_state = _serial(batches[:3])
  assert [v for v, _ in h.published] == [1, 2, 3] and counters == {"updates": 3, "frames": 30}
  np.testing.assert_allclose(h.published[-1][1], want[-1][1], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(state.params["w"]), np.asarray(want_state.params["w"]), rtol=1e-6)
  assert [e for e in h.events if e[0] == "any"] == [("any", False)] * 3 + [("any", True)]
  assert h.events[-3:] == [("publish", 3), ("after", 3), ("any", True)]


def test_a_stop_on_another_process_stops_every_process_after_the_same_update():
  batches = _batches(9)
  h = Harness(batches, remote_stop_at=3)  # the 3rd collective says "another process stopped"
  state, counters = h.run(total_updates=9)
  want, want_state = _serial(batches[:2])
  assert [v for v, _ in h.published] == [1, 2] and counters["updates"] == 2
  np.testing.assert_allclose(np.asarray(state.params["w"]), np.asarray(want_state.params["w"]), rtol=1e-6)
  assert h.any_calls == 3


def test_stop_before_the_first_update_and_a_finished_run_do_nothing():
  h = Harness(_batches(3), stop_at=1)
  state, counters = h.run(total_updates=3)
  assert h.published == [] and counters["updates"] == 0 and int(state.step) == 0
  assert h.events == [("take", 1), ("any", True)]
  h = Harness(_batches(3))  # resumed at the end: no records taken, no collective
  _, counters = h.run(total_updates=3, counters={"updates": 3, "frames": 30})
  assert h.events == [] and counters == {"updates": 3, "frames": 30}


def test_batch_buffer_is_aligned_and_device_put_of_it_aliases_on_cpu():
  """The trainer's reused host batches: `get_batch(out=queue.batch_buffer(...))` fills 64-byte
  aligned leaves (one allocation), which `jax.device_put` on CPU uses without a copy."""
  spec = {"obs": ((3, 2, 5), np.float32), "first": ((3, 2), bool), "traces": ((2, 7), np.complex64)}
  axes = {"obs": 1, "first": 1, "traces": 0}
  with RolloutQueue(spec, 4, multiprocessing.get_context("spawn")) as q:
    buf = q.batch_buffer(2, axes)
    assert {k: v.shape for k, v in buf.items()} == {"obs": (3, 4, 5), "first": (3, 4), "traces": (4, 7)}
    assert all(v.ctypes.data % 64 == 0 and v.flags.writeable for v in buf.values())
    recs = [
      {
        "obs": np.full((3, 2, 5), i, np.float32),
        "first": np.full((3, 2), i == 1),
        "traces": np.full((2, 7), 1j * i, np.complex64),
      }
      for i in range(2)
    ]
    for r in recs:
      q.put(r)
    assert q.get_batch(2, axes, out=buf) is not None
    np.testing.assert_array_equal(buf["obs"][:, 2:], recs[1]["obs"])
    np.testing.assert_array_equal(buf["traces"][:2], recs[0]["traces"])
    on_device = jax.device_put(buf["traces"])
    if (
      jax.default_backend() == "cpu"
    ):  # the reason `_PipelinedLearner` refills a buffer only after its update
      buf["traces"][0, 0] = 5.0
      assert complex(on_device[0, 0]) == 5.0


def test_trainer_wiring_gives_the_serial_loops_parameters_bitwise():
  """The actors backend's pieces together (records through the real queue into the two reused
  aligned buffers, the IMPALA update with the state donated taking the host arrays, pipelined)
  publish exactly the parameters of the old serial loop (fresh arrays, `global_batch`, no donation)."""
  c = experiment.load_config("configs/default.py:rtu")
  c.agent.unroll_length, c.agent.batch_size, c.system.envs_per_actor = 5, 8, 4
  c.agent.network.hidden_size = 8
  obs, act = envs.describe(c.env.id, **c.env.options.to_dict())
  parts = registry.get("impala").actor_learner(c, (obs, act))
  mesh = parallel.make_mesh(jax.local_devices()[:1])
  init = parts.init_learner(0)
  spec = actors.record_spec(c, parts)
  axes = actors.record_batch_axes(parts)
  leaves, treedef = flatten_spec(spec)

  def record(i):
    rng = np.random.default_rng(i)

    def fill(leaf):
      if leaf.dtype == bool:
        return rng.random(leaf.shape) < 0.1
      if np.issubdtype(leaf.dtype, np.integer):
        return rng.integers(0, 2, leaf.shape).astype(leaf.dtype)
      return (rng.normal(size=leaf.shape) * 0.1).astype(leaf.dtype)

    return unflatten(treedef, [fill(leaf) for leaf in leaves])

  n = 6
  recs = [record(i) for i in range(2 * n)]
  with RolloutQueue(spec, 4, multiprocessing.get_context("spawn")) as q:
    state, serial = parallel.replicate(init, mesh), []
    step = parts.learner_step(mesh, donate=False)
    for k in range(n):
      q.put(recs[2 * k])
      q.put(recs[2 * k + 1])
      r = q.get_batch(2, axis=axes, timeout=5)
      state, _ = step(state, parallel.global_batch(r.rollout, mesh, parts.batch_axes))
      serial.append(parallel.fetch(state.params))
    bufs, sent, piped = [q.batch_buffer(2, axes) for _ in range(2)], [0], []

    def next_records():
      k = sent[0]
      sent[0] += 1
      q.put(recs[2 * k])
      q.put(recs[2 * k + 1])
      return q.get_batch(2, axis=axes, timeout=5, out=bufs[k % 2])

    learner = _PipelinedLearner(
      parts.learner_step(mesh, donate=True),
      next_records,
      lambda r: r.rollout,
      lambda p, v: piped.append(parallel.fetch(p)),
    )
    learner.total = n
    it = registry.Iterations(None, learner.step, 40, saved=None, resume=None, params=None, total_updates=n)
    _drive(
      parallel.replicate(init, mesh),
      _Backend(it, ready=learner.ready),
      {"updates": 0, "frames": 0},
      40 * n,
      stop_requested=lambda: False,
      save_due=lambda: False,
      save=None,
      on_step=lambda *_: None,
      agree=lambda flags: flags,
    )
  assert len(piped) == n
  for want, got in zip(serial, piped):
    for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(x, y)
