"""RolloutQueue: bitwise round trips of nested specs, exactly-once delivery from 2 producer
processes, back-pressure with bounded memory, close() waking blocked calls, reclaiming the slot
of a producer killed mid-write, and recovering from processes killed while holding the queue's lock
(at chosen stores inside its critical sections, and as a supervised actor that is then restarted),
and an actor stopped inside the lock being the one the stall detection kills.
Worker processes use the spawn method (as the actors do)."""

import fcntl
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from typing import Any, NamedTuple

import numpy as np
import psutil
import pytest

from rtrl_rl.system import queue as queue_lib
from rtrl_rl.system.processes import Supervisor
from rtrl_rl.system.queue import (
  ArraySpec,
  QueueBroken,
  QueueClosed,
  RolloutQueue,
  flatten_like,
  flatten_spec,
  unflatten,
)

CTX = mp.get_context("spawn")


class Carry(NamedTuple):
  """Shaped like `rtrl_rl.cells.Carry` (not imported: spawned children would import JAX)."""

  state: Any
  traces: Any


# -- helpers run in spawned children (module level: picklable) ---------------------------------


def _id_spec():
  return {"id": ((), np.int64), "payload": ((64,), np.int32), "obs": ((2, 8, 8), np.uint8)}


def _id_record(rid):
  return {"id": rid, "payload": np.full(64, rid, np.int32), "obs": np.full((2, 8, 8), rid % 251, np.uint8)}


def _producer(q, start, count):
  for rid in range(start, start + count):
    q.put(_id_record(rid))


def _slow_consumer(q, n, delay, results):
  max_inflight = 0
  for _ in range(n):
    time.sleep(delay)
    s = q.stats()
    max_inflight = max(max_inflight, s["puts"] - s["gets"], s["ready"] + s["writing"] + s["reading"])
    rec = q.get(timeout=10)
    assert rec["obs"][0, 0] == rec["id"] % 256 and rec["obs"][-1, -1] == 1
  results.put(max_inflight)


def _blocked_getter(q, ready):
  ready.set()
  try:
    q.get(timeout=20)
  except QueueClosed:
    os._exit(3)
  os._exit(4)


def _die_mid_write(q):
  i = q._begin_put()  # slot claimed (WRITING) ...
  q._slot_views[i][0][...] = 999  # ... partly written ...
  os.kill(os.getpid(), signal.SIGKILL)  # ... and the producer is killed


def _hold_lock_until_killed(q, holding):
  with q._locked():
    holding.set()
    signal.pause()


class _TripWire:
  """Stands in for a queue's control block (int64 words) and SIGKILLs this process just before its
  `n`-th store (from 0) to word `word`: a death at a chosen point inside a critical section."""

  def __init__(self, mv, word, n):
    self.mv, self.word, self.n = mv, word, n

  def __getitem__(self, k):
    return self.mv[k]

  def __setitem__(self, k, v):
    if k == self.word:
      if self.n == 0:
        os.kill(os.getpid(), signal.SIGKILL)
      self.n -= 1
    self.mv[k] = v


def _killed_at_store(q, word, n, op):
  q._mv = _TripWire(q._mv, word, n)
  if op == "put":
    q.put(_id_record(100))
  elif op == "get":
    q.get()
  else:
    q.reclaim()
  os._exit(3)  # not killed: the test fails on the exit code


def _actor_killed_holding_the_lock(info, q, n):
  if info.attempt == 0:
    with q._locked():
      os.kill(os.getpid(), signal.SIGKILL)
  for rid in range(n):
    q.put(_id_record(rid), timeout=20)


def _stops_holding_the_lock(info, q, ready):
  """Attempt 0 stops itself (SIGSTOP) inside the lock, once the other worker has beaten; then a
  record and beats."""
  if info.attempt == 0:
    ready.wait(30)
    with q._locked():
      info.beat()
      os.kill(os.getpid(), signal.SIGSTOP)
  q.put(_id_record(100 + info.attempt))
  while not info.stop_event.wait(0.05):
    info.beat()


def _waits_behind_the_holder(info, q, ready):
  """Beats before the other worker stops (so it is silent longer), then blocks on the lock."""
  info.beat()
  ready.set()
  while q.lock_holder() is None:
    time.sleep(0.01)
  q.put(_id_record(1))
  while not info.stop_event.wait(0.05):
    info.beat()


def _fork_holding_the_lock(q):
  """Fork while holding the lock: the child must get a lock of its own (not share the parent's)."""
  r, w = os.pipe()
  with q._locked():
    child = os.fork()
    if child == 0:
      try:
        fcntl.flock(q._lock._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(w, b"shared")
      except BlockingIOError:
        os.write(w, b"own")
      os._exit(0)
    verdict = os.read(r, 16)
  os.waitpid(child, 0)
  q.put(_id_record(int(verdict == b"own")))


def _put_or_error(q, rid):
  try:
    q.put(_id_record(rid))
  except Exception as e:  # noqa: BLE001 - reported to the test
    return [e]
  return []


def _drain(q):
  ids = []
  while q.qsize():
    ids.append(int(q.get(timeout=1)["id"]))
  return ids


# -- tests ---------------------------------------------------------------------------------------


def _nested_spec():
  return {
    "obs": ((3, 2, 5, 5, 4), np.uint8),
    "reward": ((3, 2), np.float32),
    "first": ((3, 2), bool),
    "action": ((2, 2), np.int32),
    "logits": ((2, 2, 6), np.float16),
    "carry": Carry(state={"h": ((2, 7), np.float64), "c": ((2, 7), np.complex64)}, traces=None),
    "extra": [ArraySpec((), np.int64), ((4,), np.uint16), ((1, 3), np.int8)],
    "version": ((2,), np.int64),
  }


def _random_tree(spec, rng):
  def make(s):
    nbytes = ArraySpec(tuple(s.shape), np.dtype(s.dtype)).nbytes
    raw = rng.integers(0, 256, size=nbytes, dtype=np.uint8)
    if np.dtype(s.dtype) == bool:
      raw = raw & 1
    return raw.view(s.dtype).reshape(s.shape)  # arbitrary bit patterns (NaN payloads included)

  leaves, treedef = flatten_spec(spec)
  return unflatten(treedef, [make(s) for s in leaves])


def _leaves(tree):
  return flatten_like(flatten_spec(tree)[1], tree)


def _bitwise_equal(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape and x.dtype == y.dtype
    assert x.tobytes() == y.tobytes()


def test_round_trip_nested_spec_bitwise():
  spec = _nested_spec()
  rng = np.random.default_rng(0)
  recs = [_random_tree(spec, rng) for _ in range(5)]
  with RolloutQueue(spec, capacity=3, ctx=CTX) as q:
    assert type(q.spec["carry"]) is Carry and q.spec["carry"].traces is None
    for r in recs[:3]:
      q.put(r)
    assert q.qsize() == 3
    with pytest.raises(TimeoutError):
      q.put(recs[3], timeout=0.05)
    got = q.get()
    _bitwise_equal(got, recs[0])
    assert type(got["carry"]) is Carry and isinstance(got["extra"], list)
    with q.borrow() as view:  # zero-copy, read-only
      _bitwise_equal(view, recs[1])
      assert not view["obs"].flags.writeable
    q.put(recs[3])
    q.put(recs[4])
    # stack on a new leading axis, then concatenate along per-subtree batch axes into `out`
    stacked = q.get_batch(1)
    leaves, treedef = flatten_spec(recs[2])
    _bitwise_equal(stacked, unflatten(treedef, [np.asarray(x)[None] for x in _leaves(recs[2])]))
    axes = {
      "obs": 1,
      "reward": 1,
      "first": 1,
      "action": 1,
      "logits": 1,
      "carry": 0,
      "extra": None,
      "version": 0,
    }
    out_spec = q.batch_spec(2, axes)
    out = _random_tree(out_spec, rng)
    batch = q.get_batch(2, axis=axes, out=out)
    assert batch["obs"].shape == (3, 4, 5, 5, 4) and batch["carry"].state["h"].shape == (4, 7)
    assert batch["extra"][0].shape == (2,)
    assert batch["obs"] is out["obs"]
    assert batch["obs"][:, :2].tobytes() == recs[3]["obs"].tobytes()
    assert batch["obs"][:, 2:].tobytes() == recs[4]["obs"].tobytes()
    assert batch["carry"].state["c"][2:].tobytes() == recs[4]["carry"].state["c"].tobytes()
    assert q.qsize() == 0 and q.stats()["free"] == 3


def test_put_validation_does_not_leak_slots():
  with RolloutQueue(_id_spec(), capacity=1, ctx=CTX) as q:
    bad = _id_record(1)
    bad["payload"] = np.zeros(63, np.int32)
    with pytest.raises(ValueError, match="shape"):
      q.put(bad)
    with pytest.raises(ValueError, match="keys"):
      q.put({"id": 1})
    with pytest.raises(TypeError):
      q.put({**_id_record(1), "payload": np.full(64, 1.5)})  # float -> int32 is not same_kind
    assert q.stats()["free"] == 1
    q.put(_id_record(5))
    assert int(q.get()["id"]) == 5
    with pytest.raises(RuntimeError):
      pickle.dumps(q)  # the lock can only travel to a process being started


def test_two_producer_processes_every_record_exactly_once():
  n_per, capacity = 150, 4
  with RolloutQueue(_id_spec(), capacity=capacity, ctx=CTX) as q:
    procs = [CTX.Process(target=_producer, args=(q, k * n_per, n_per)) for k in range(2)]
    for p in procs:
      p.start()
    ids = []
    while len(ids) < 2 * n_per:
      s = q.stats()
      assert s["ready"] + s["writing"] + s["reading"] <= capacity
      assert s["puts"] - s["gets"] <= capacity
      if len(ids) % 3 == 0 and 2 * n_per - len(ids) >= 2:
        batch = q.get_batch(2, timeout=20)
        recs = [{k: v[j] for k, v in batch.items()} for j in range(2)]
      else:
        recs = [q.get(timeout=20)]
      for r in recs:
        rid = int(r["id"])
        assert (r["payload"] == rid).all() and (r["obs"] == rid % 251).all()  # not torn
        ids.append(rid)
    for p in procs:
      p.join(10)
      assert p.exitcode == 0
    assert sorted(ids) == list(range(2 * n_per))
    # FIFO per producer: each producer's records arrive in the order it put them
    for k in range(2):
      mine = [i for i in ids if k * n_per <= i < (k + 1) * n_per]
      assert mine == sorted(mine)
    q.close()
    with pytest.raises(QueueClosed):
      q.get(timeout=1)


def test_back_pressure_blocks_producer_and_bounds_memory():
  capacity, n, delay = 3, 48, 0.02
  spec = {"obs": ((1024, 1024), np.uint8), "id": ((), np.int64)}  # 1 MiB records
  results = CTX.SimpleQueue()
  with RolloutQueue(spec, capacity=capacity, ctx=CTX) as q:
    consumer = CTX.Process(target=_slow_consumer, args=(q, n, delay, results))
    consumer.start()
    rec = {"obs": np.ones((1024, 1024), np.uint8), "id": 0}
    rec["obs"][0, 0] = 0
    q.put(rec)  # warm up (first touch of pages)
    rss0 = psutil.Process().memory_info().rss
    t0 = time.monotonic()
    for i in range(1, n):
      rec["obs"][0, 0] = i % 256
      rec["id"] = i
      q.put(rec, timeout=20)
      s = q.stats()
      assert s["puts"] - s["gets"] <= capacity
    put_time = time.monotonic() - t0
    rss1 = psutil.Process().memory_info().rss
    consumer.join(20)
    assert consumer.exitcode == 0
    max_inflight = results.get()
  assert max_inflight <= capacity
  # 47 MiB went through; the producer's resident memory grew by (much) less than that
  assert rss1 - rss0 < 16 * 2**20, (rss0, rss1)
  # the producer was held back by the slow consumer (it waited for free slots)
  assert put_time > 0.6 * (n - capacity - 1) * delay


def test_close_wakes_blocked_put_and_get_threads():
  q = RolloutQueue(_id_spec(), capacity=1, ctx=CTX)
  try:
    q.put(_id_record(1))
    errors = []

    def blocked(fn):
      try:
        fn()
      except QueueClosed as e:
        errors.append(e)

    t = threading.Thread(target=blocked, args=(lambda: q.put(_id_record(2)),))
    t.start()
    time.sleep(0.2)
    assert t.is_alive()  # blocked: the queue is full
    t0 = time.monotonic()
    q.close()
    t.join(2)
    assert not t.is_alive() and len(errors) == 1 and time.monotonic() - t0 < 1
    with pytest.raises(QueueClosed):
      q.put(_id_record(3))
    assert int(q.get()["id"]) == 1  # complete records still drain
    t = threading.Thread(target=blocked, args=(lambda: q.get(),))
    t.start()
    t.join(2)
    assert not t.is_alive() and len(errors) == 2
  finally:
    q.unlink()


def test_close_wakes_consumer_process_and_dead_producer_slot_is_reclaimed():
  with RolloutQueue(_id_spec(), capacity=1, ctx=CTX) as q:
    # a producer killed mid-write: its slot is never delivered, and is reclaimed
    killed = CTX.Process(target=_die_mid_write, args=(q,))
    killed.start()
    killed.join(20)
    assert killed.exitcode == -signal.SIGKILL
    assert q.stats()["writing"] == 1 and q.qsize() == 0
    t0 = time.monotonic()
    q.put(_id_record(7), timeout=5)  # the waiting put reclaims the dead writer's slot
    assert time.monotonic() - t0 < 2
    rec = q.get(timeout=1)
    assert int(rec["id"]) == 7 and (rec["payload"] == 7).all()
    assert q.stats()["reclaimed"] == 1 and q.stats()["free"] == 1

    # a consumer process blocked in get wakes up with QueueClosed when the queue is closed
    ready = CTX.Event()
    getter = CTX.Process(target=_blocked_getter, args=(q, ready))
    getter.start()
    assert ready.wait(20)
    time.sleep(0.3)  # the child is now blocked in get()
    q.close()
    getter.join(20)
    assert getter.exitcode == 3


def test_process_killed_holding_the_lock_is_repaired_and_nothing_is_lost():
  with RolloutQueue(_id_spec(), capacity=4, ctx=CTX, lock_timeout=2.0) as q:
    for rid in range(3):
      q.put(_id_record(rid))
    assert int(q.get()["id"]) == 0
    holding = CTX.Event()
    holder = CTX.Process(target=_hold_lock_until_killed, args=(q, holding))
    holder.start()
    assert holding.wait(20)
    # a live holder's lock is never taken: after lock_timeout, QueueBroken names it
    with pytest.raises(QueueBroken, match=rf"by process {holder.pid} \(alive"):
      q.put(_id_record(3))
    errors = []
    waiter = threading.Thread(target=lambda: errors.extend(_put_or_error(q, 3)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # blocked on the lock
    os.kill(holder.pid, signal.SIGKILL)
    waiter.join(5)
    assert not waiter.is_alive() and errors == []
    holder.join(5)
    s = q.stats()
    assert s["lock_repairs"] == 1 and s["reclaimed"] == 0 and s["ready"] == 3
    assert [int(q.get(timeout=1)["id"]) for _ in range(3)] == [1, 2, 3]  # in order, once each
    for rid in range(4, 8):  # the whole capacity is usable
      q.put(_id_record(rid), timeout=1)
    assert _drain(q) == [4, 5, 6, 7]
    s = q.stats()
    assert s["puts"] == s["gets"] == 8 and s["free"] == 4


def _state_word(slot):
  return queue_lib._HEADER + slot * queue_lib._SLOT_FIELDS + queue_lib._S_STATE


# (child operation, the store it is killed before: word, occurrence), the ids then delivered
_KILL_POINTS = {
  # put's claim: owner written, state not: the slot stays FREE
  "claim_put": (("put", _state_word(2), 0), [0, 1]),
  # put's commit: state READY written, commit counter not: recomputed, the record delivered
  "commit_put": (("put", queue_lib._H_SEQ, 0), [0, 1, 100]),
  # get's claim: owner written, state not: the record stays READY
  "claim_get": (("get", _state_word(0), 0), [0, 1]),
  # get's release (the record was copied out): READING, dead reader -> READY, delivered again
  "release_get": (("get", _state_word(0), 1), [0, 1]),
  # reclaim of a dead writer's slot: journal committed, state not written: replayed
  "reclaim_journal": (("reclaim", _state_word(2), 0), [0, 1]),
  # reclaim: state written, counter not: the journal is replayed (reclaimed counted once)
  "reclaim_counter": (("reclaim", queue_lib._H_RECLAIMED, 0), [0, 1]),
}


@pytest.mark.parametrize("case", list(_KILL_POINTS))
def test_kill_inside_a_critical_section_leaves_a_consistent_queue(case):
  (op, word, n), delivered = _KILL_POINTS[case]
  capacity = 3
  with RolloutQueue(_id_spec(), capacity=capacity, ctx=CTX) as q:
    q.put(_id_record(0))
    q.put(_id_record(1))
    if op == "reclaim":  # a dead writer's slot to reclaim
      writer = CTX.Process(target=_die_mid_write, args=(q,))
      writer.start()
      writer.join(20)
      assert q.stats()["writing"] == 1
    victim = CTX.Process(target=_killed_at_store, args=(q, word, n, op))
    victim.start()
    victim.join(20)
    assert victim.exitcode == -signal.SIGKILL
    s = q.stats()  # the next lock holder repairs
    assert s["lock_repairs"] == 1 and s["writing"] == s["reading"] == 0
    assert s["ready"] == len(delivered) and s["free"] == capacity - len(delivered)
    assert s["reclaimed"] == (case in ("release_get", "reclaim_journal", "reclaim_counter"))
    ids = [int(q.get(timeout=1)["id"])]
    q.put(_id_record(300), timeout=1)  # committed after everything ready: delivered last
    ids += _drain(q)
    assert ids == delivered + [300]
    for rid in range(400, 400 + capacity):  # no capacity leaked
      q.put(_id_record(rid), timeout=1)
    with pytest.raises(TimeoutError):
      q.put(_id_record(999), timeout=0.05)
    assert _drain(q) == list(range(400, 400 + capacity))
    s = q.stats()
    assert s["puts"] == s["gets"] == len(delivered) + 1 + capacity and s["free"] == capacity


def test_actor_killed_holding_the_lock_is_restarted_and_the_run_goes_on():
  """The trainer's wiring (Supervisor with on_death=queue.reclaim, the learner in get): a death
  inside the lock costs a restart, not the run."""
  with RolloutQueue(_id_spec(), capacity=2, ctx=CTX) as q:
    sup = Supervisor(CTX, max_restarts=1, on_death=lambda *_: q.reclaim())
    try:
      sup.add("actor0", _actor_killed_holding_the_lock, args=(q, 6))
      sup.start()
      sup.start_monitor()
      assert [int(q.get(timeout=30)["id"]) for _ in range(6)] == list(range(6))
      assert sup.restarts() == {"actor0": 1}
      sup.check()
      assert q.stats()["lock_repairs"] == 1
    finally:
      sup.shutdown(timeout=5)


def test_actor_stopped_holding_the_lock_is_killed_first_and_the_queue_repaired():
  """The trainer's stall wiring (Supervisor with stall_timeout and lock_holder=queue.lock_holder): an
  actor stopped (SIGSTOP) inside the lock is the one killed, though the actor waiting behind it has
  been silent longer; the lock is repaired and both deliver."""
  stalls = []
  with RolloutQueue(_id_spec(), capacity=4, ctx=CTX) as q:
    ready = CTX.Event()
    sup = Supervisor(
      CTX,
      max_restarts=1,
      on_death=lambda *_: q.reclaim(),
      stall_timeout=1.0,
      lock_holder=q.lock_holder,
      on_stall=lambda name, pid, _: stalls.append((name, pid)),
    )
    try:
      sup.add("holder", _stops_holding_the_lock, args=(q, ready))
      sup.add("waiter", _waits_behind_the_holder, args=(q, ready))
      sup.start()
      sup.start_monitor()
      holder = sup.pids()["holder"]
      assert sorted(int(q.get(timeout=30)["id"]) for _ in range(2)) == [1, 101]
      assert stalls == [("holder", holder)]
      assert sup.restarts() == {"holder": 1, "waiter": 0}
      assert q.stats()["lock_repairs"] == 1
      sup.check()
    finally:
      sup.shutdown(timeout=5)


def test_forked_child_gets_its_own_lock():
  with RolloutQueue(_id_spec(), capacity=1, ctx=CTX) as q:
    p = CTX.Process(target=_fork_holding_the_lock, args=(q,))
    p.start()
    p.join(20)
    assert p.exitcode == 0
    assert int(q.get(timeout=1)["id"]) == 1  # the child could not take the lock
