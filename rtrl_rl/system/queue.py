"""A bounded multi-producer / single-consumer queue of fixed-shape records in shared memory.

Actor processes `put` rollouts, the learner `get`s them. Every record has the same structure, given
once as a *spec*: a pytree (dicts, tuples, lists, NamedTuples such as `agents.rollout.Rollout` and
`cells.Carry`, and `None` for empty subtrees) whose leaves are `(shape, dtype)` pairs, `ArraySpec`s,
or anything with `.shape` and `.dtype` (numpy / jax arrays, `jax.ShapeDtypeStruct`), so an example
record, or `jax.eval_shape` of the function producing one, is itself a valid spec.

Memory layout: ONE shared-memory segment `[control block | slot 0 | slot 1 | ... ]`; each slot holds
one record, every leaf at a 64-byte aligned offset, every slot page aligned. `put` copies each leaf
straight into its slot (`np.copyto`, no pickling); `get` copies out, `get_batch` copies `n` records
straight into stacked / concatenated output arrays (one copy per byte), and `borrow` hands out
zero-copy views that stay valid until the `with` block ends.

Slot lifecycle (a slot's state lives in the control block, changed only under the queue lock):

    FREE --put claims--> WRITING --put commits--> READY --get claims--> READING --get releases--> FREE

The data copies happen *outside* the lock, so producers write concurrently and the consumer reads
while they write; a record is visible to `get` only once it is READY, i.e. after its last byte was
written, so a consumer never sees a half-written record. Records are delivered in commit order
(FIFO over all producers). `put` blocks while all `capacity` slots are taken (back-pressure: actors
block instead of buffering) and `get` blocks while nothing is ready; at most `capacity` records are
ever in flight. The slot states are the only truth: a claim is a single step under the lock, and
the two semaphores (a slot was freed / a record is ready) are mere wake-up hints, with a
`poll_interval` re-check as the safety net, so a process killed while waiting cannot leak capacity
or deadlock the others. (multiprocessing's Condition/Event are avoided for that reason: a waiter
killed inside `Condition.wait` makes the next `notify_all` hang forever.)

The lock: a thread lock (threads of one process) plus an exclusive `flock` on the segment's file
(`/dev/shm/<name>`, Linux) through a descriptor of each process's own; the kernel releases it when
the holding process dies. Whatever instruction a process dies at inside the lock, the control
block stays repairable: a slot transition commits with one store, of the slot's state (its owner
and commit number are written before it, and mean nothing until the state says so); the commit
counter, written after it, is recomputable from the READY slots; and the two transitions that
also bump a statistics counter (reclaim, a put dropped by close) are journaled: both (word, value)
stores go to a journal in the control block, committed by one store of its flag, then applied,
which can be repeated harmlessly (absolute values).

Faults:
  * A producer that dies mid-write (exception: the slot is released at once; SIGKILL / segfault:
    the slot stays WRITING) never delivers that record. Each claimed slot records the owner's pid
    and process start time; `reclaim()` returns the slots of dead owners (WRITING -> FREE, and a
    consumer dead mid-read READING -> READY, since its data is intact). Waiting `put`/`get` calls run
    `reclaim()` every `reclaim_interval` seconds on their own, and a supervisor may call it as soon
    as it sees a worker die. Nothing else is lost: the queue keeps working.
  * A process killed inside the (microseconds-long) critical section does not break the queue
    either. The lock holder records its pid and start time in the control block and clears them
    on leaving; the next process to take the lock (the kernel released it) finds the record,
    checks that holder is dead (pid + start time), applies its journal if committed, recomputes
    the commit counter and reclaims the dead holder's slots. So the interrupted transition
    happened entirely or not at all, nothing else is lost or duplicated, no capacity leaks, and
    a supervisor just restarts the dead process (`stats()["lock_repairs"]` counts repairs).
  * What remains unrepairable raises `QueueBroken` (stop the run): the lock held for more than
    `lock_timeout` s by a live process (stopped or hung inside the critical section), or a holder
    that left its critical section unfinished yet is still alive `lock_timeout` s later.

Shutdown: `close()` (from any process, idempotent) marks the queue closed for every process: `put`
raises `QueueClosed` (a record whose copy was in progress is dropped), `get` keeps returning records
that were complete before the close and then raises `QueueClosed`; blocked calls wake within
`poll_interval` seconds (usually at once). `detach()` unmaps this process's view; `unlink()`
(normally the creating process; `with RolloutQueue(...) as q:` does it on exit) closes, detaches and
removes the segment.

Processes: the queue object is picklable *while a process is being started* (pass it in the
`args` of a `spawn`-context Process): the child re-attaches to the segment by name, shares the
semaphores and opens its own lock descriptor (a forked child reopens the ones it inherits: an
flock belongs to the open file, which fork shares). `multiprocessing` forbids pickling its
semaphores at any other time (e.g. through a multiprocessing.Queue), so that raises a RuntimeError.
Children started with the same context share the parent's resource tracker, which unlinks the
segment and semaphores if the whole run dies without `unlink()`. When the tracker dies with it
(SIGKILL of the process group), the next queue or parameter store created on the host removes
them: they are named after their creator (system/shm.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import multiprocessing
import os
import threading
import time
import weakref
from multiprocessing import shared_memory
from typing import Any, Iterator, NamedTuple

import numpy as np

from rtrl_rl.system import shm
from rtrl_rl.system.shm import process_alive, this_process

__all__ = [
  "ArraySpec",
  "QueueClosed",
  "QueueBroken",
  "RolloutQueue",
  "spec_like",
  "flatten_spec",
  "flatten_like",
  "unflatten",
  "TreeDef",
]

_ALIGN = 64
_PAGE = 4096


# ----------------------------------------------------------------------------------------------
# Specs and a small pytree flattener (dict / tuple / list / NamedTuple / None), picklable, no jax.
# Kept instead of jax.tree_util on purpose (issue 17): a spec's leaves are `(shape, dtype)` pairs
# and `ArraySpec`s, which JAX would flatten as containers; a record whose structure differs from
# the spec fails naming the path that differs; and the shared-memory layer (this module,
# param_store) stays importable and testable without JAX, which actor processes start only after
# choosing its platform.
# ----------------------------------------------------------------------------------------------


class ArraySpec(NamedTuple):
  """The shape and dtype of one array leaf."""

  shape: tuple
  dtype: np.dtype

  @property
  def nbytes(self) -> int:
    return int(math.prod(self.shape)) * np.dtype(self.dtype).itemsize


def _is_dtype_like(x) -> bool:
  if isinstance(x, (tuple, list, dict)) or x is None:
    return False
  try:
    np.dtype(x)
  except TypeError:
    return False
  return True


def _as_leaf_spec(x) -> ArraySpec | None:
  """`x` as an ArraySpec if it is a spec leaf, else None."""
  if isinstance(x, ArraySpec):
    return ArraySpec(tuple(int(d) for d in x.shape), np.dtype(x.dtype))
  if hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (dict, list)):
    return ArraySpec(tuple(int(d) for d in x.shape), np.dtype(x.dtype))
  if (
    type(x) in (tuple, list)
    and len(x) == 2
    and isinstance(x[0], (tuple, list))
    and all(isinstance(d, (int, np.integer)) for d in x[0])
    and _is_dtype_like(x[1])
  ):
    return ArraySpec(tuple(int(d) for d in x[0]), np.dtype(x[1]))
  return None


class TreeDef:
  """The container structure of a pytree (picklable if its NamedTuple classes are importable)."""

  __slots__ = ("kind", "meta", "children", "num_leaves")

  def __init__(self, kind: str, meta=None, children=()):
    self.kind = kind  # "leaf" | "none" | "dict" | "tuple" | "list" | "namedtuple"
    self.meta = meta  # dict keys (sorted) or the NamedTuple class
    self.children = tuple(children)
    self.num_leaves = 1 if kind == "leaf" else sum(c.num_leaves for c in self.children)

  def __getstate__(self):
    return (self.kind, self.meta, self.children)

  def __setstate__(self, state):
    self.__init__(*state)

  def __eq__(self, other):
    return (
      isinstance(other, TreeDef)
      and self.kind == other.kind
      and self.meta == other.meta
      and self.children == other.children
    )

  def __hash__(self):
    return hash((self.kind, self.children))

  def __repr__(self):
    if self.kind == "leaf":
      return "*"
    if self.kind == "none":
      return "None"
    if self.kind == "dict":
      return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.meta, self.children)) + "}"
    inner = ", ".join(repr(c) for c in self.children)
    if self.kind == "namedtuple":
      return f"{self.meta.__name__}({inner})"
    return f"[{inner}]" if self.kind == "list" else f"({inner})"


def _is_namedtuple(x) -> bool:
  return isinstance(x, tuple) and hasattr(type(x), "_fields")


def flatten_spec(spec) -> tuple[list[ArraySpec], TreeDef]:
  """Flatten a spec pytree into its `ArraySpec` leaves and a `TreeDef`."""
  leaves: list[ArraySpec] = []

  def rec(x, path):
    leaf = _as_leaf_spec(x) if not _is_namedtuple(x) or isinstance(x, ArraySpec) else None
    if leaf is not None:
      leaves.append(leaf)
      return TreeDef("leaf")
    if x is None:
      return TreeDef("none")
    if isinstance(x, dict):
      keys = sorted(x)
      return TreeDef("dict", tuple(keys), [rec(x[k], f"{path}[{k!r}]") for k in keys])
    if _is_namedtuple(x):
      return TreeDef("namedtuple", type(x), [rec(v, f"{path}.{f}") for f, v in zip(x._fields, x)])
    if isinstance(x, (tuple, list)):
      return TreeDef(
        "list" if isinstance(x, list) else "tuple", None, [rec(v, f"{path}[{i}]") for i, v in enumerate(x)]
      )
    raise TypeError(
      f"spec{path}: {type(x).__name__} is neither a container (dict, tuple, list, "
      f"NamedTuple, None) nor an array spec ((shape, dtype), ArraySpec, or an object "
      f"with .shape and .dtype)"
    )

  treedef = rec(spec, "")
  return leaves, treedef


def flatten_like(treedef: TreeDef, tree) -> list:
  """The leaves of `tree`, which must have the structure `treedef` (arrays at its leaves)."""
  out: list = []

  def rec(td, x, path):
    k = td.kind
    if k == "leaf":
      out.append(x)
    elif k == "none":
      if x is not None:
        raise ValueError(f"record{path}: expected None, got {type(x).__name__}")
    elif k == "dict":
      if not isinstance(x, dict) or sorted(x) != list(td.meta):
        got = sorted(x) if isinstance(x, dict) else type(x).__name__
        raise ValueError(f"record{path}: expected a dict with keys {list(td.meta)}, got {got}")
      for key, c in zip(td.meta, td.children):
        rec(c, x[key], f"{path}[{key!r}]")
    else:
      if not isinstance(x, (tuple, list)) or len(x) != len(td.children):
        raise ValueError(
          f"record{path}: expected a sequence of {len(td.children)} ({td!r}), got {type(x).__name__}"
        )
      for i, (c, v) in enumerate(zip(td.children, x)):
        rec(c, v, f"{path}[{i}]")

  rec(treedef, tree, "")
  return out


def unflatten(treedef: TreeDef, leaves) -> Any:
  """Rebuild a pytree of structure `treedef` from its leaves (in `flatten_spec` order)."""
  it = iter(leaves)

  def rec(td):
    k = td.kind
    if k == "leaf":
      return next(it)
    if k == "none":
      return None
    kids = [rec(c) for c in td.children]
    if k == "dict":
      return dict(zip(td.meta, kids))
    if k == "namedtuple":
      return td.meta(*kids)
    return kids if k == "list" else tuple(kids)

  return rec(treedef)


def _broadcast_prefix(treedef: TreeDef, prefix) -> list:
  """Per-leaf values of a pytree prefix of `treedef` (an int/None applies to its whole subtree),
  e.g. `Rollout.batch_axes()` for a `Rollout` spec."""
  out: list = []

  def rec(td, p):
    if p is None or isinstance(p, (int, np.integer)):
      out.extend([None if p is None else int(p)] * td.num_leaves)
      return
    if td.kind == "dict":
      for key, c in zip(td.meta, td.children):
        rec(c, p[key])
    elif td.kind in ("tuple", "list", "namedtuple"):
      if len(p) != len(td.children):
        raise ValueError(f"axis prefix {p!r} does not match the spec structure {td!r}")
      for c, v in zip(td.children, p):
        rec(c, v)
    elif td.kind == "none":
      return
    else:
      raise ValueError(f"axis prefix {p!r} does not match the spec structure {td!r}")

  rec(treedef, prefix)
  return out


def spec_like(tree) -> Any:
  """The spec (same structure, `ArraySpec` leaves) of an example record."""
  leaves, treedef = flatten_spec(tree)
  return unflatten(treedef, leaves)


class _Layout:
  """Byte offsets of the leaves inside one record."""

  def __init__(self, leaves: list[ArraySpec]):
    self.leaves = leaves
    self.offsets = []
    off = 0
    for leaf in leaves:
      off = -(-off // _ALIGN) * _ALIGN
      self.offsets.append(off)
      off += leaf.nbytes
    self.nbytes = off  # payload bytes
    self.stride = max(_PAGE, -(-off // _PAGE) * _PAGE)  # page aligned slot size

  def views(self, buf, base: int) -> list[np.ndarray]:
    return [
      np.ndarray(leaf.shape, leaf.dtype, buffer=buf, offset=base + off)
      for leaf, off in zip(self.leaves, self.offsets)
    ]


def _copy_in(dst: np.ndarray, src, where: str) -> None:
  src_shape = tuple(np.shape(src))
  if src_shape != dst.shape:
    raise ValueError(f"{where}: shape {src_shape} != spec shape {dst.shape}")
  np.copyto(dst, np.asarray(src), casting="same_kind")


# ----------------------------------------------------------------------------------------------
# The queue.
# ----------------------------------------------------------------------------------------------


class QueueClosed(Exception):
  """The queue was closed: no more puts, and no more records to get."""


class QueueBroken(RuntimeError):
  """The queue cannot be repaired safely (its lock is held by a live but hung process, or a live
  process left its critical section unfinished): stop the run."""


FREE, WRITING, READY, READING = 0, 1, 2, 3
_STATE_NAMES = {FREE: "free", WRITING: "writing", READY: "ready", READING: "reading"}

# Control block (int64 words): header, then one row per slot. _H_SEQ counts the commits (records
# put; the next commit number). The journal: a committed flag, then two (word, value) pairs.
(
  _H_MAGIC,
  _H_CLOSED,
  _H_SEQ,
  _H_RECLAIMED,
  _H_DROPPED,
  _H_REPAIRS,
  _H_HOLDER,
  _H_HOLDER_START,
  _H_JOURNAL,
) = range(9)
_HEADER = _H_JOURNAL + 5
_S_STATE, _S_SEQ, _S_PID, _S_START = range(4)
_SLOT_FIELDS = 4
_MAGIC = 0x52544C5251  # "RTLRQ"


class _Lock:
  """The queue lock, for `with` (reusable, thread-safe; see the module doc): a thread lock for the
  threads of this process, then an exclusive `flock` on the segment's file through this process's
  own descriptor, which the kernel releases when the holding process dies. The holder's (pid, start
  time) is recorded in the control block: on entry, a record left behind means the previous holder
  died inside, and `queue._repair` runs first."""

  def __init__(self, queue: RolloutQueue, mv: memoryview, timeout: float):
    self._queue = weakref.proxy(queue)  # no reference cycle: the queue's __del__ stays prompt
    self._mv = mv
    self._timeout = timeout
    self._tlock = threading.Lock()
    self._fd = os.open(f"/dev/shm/{queue.name}", os.O_RDWR)
    _LOCKS.add(self)

  def __enter__(self) -> None:
    self._tlock.acquire()
    try:
      self._flock()
      try:
        mv = self._mv
        if mv[_H_HOLDER]:  # the previous holder never left: it died inside
          self._queue._repair(mv[_H_HOLDER], mv[_H_HOLDER_START])
        pid, start = this_process()
        mv[_H_HOLDER_START], mv[_H_HOLDER] = start, pid  # in this order: the pid marks it valid
      except BaseException:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        raise
    except BaseException:
      self._tlock.release()
      raise

  def __exit__(self, exc_type, *_) -> None:
    try:
      if exc_type is not None:  # maybe raised mid-update (e.g. KeyboardInterrupt)
        self._queue._settle()
      self._mv[_H_HOLDER] = 0
    finally:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      self._tlock.release()

  def _flock(self) -> None:
    """Take the flock, polling with backoff while another process holds it; QueueBroken after
    `timeout` s."""
    start, delay = None, 1e-5
    while True:
      try:
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
      except BlockingIOError:
        pass
      now = time.monotonic()
      start = now if start is None else start
      if now - start > self._timeout:
        pid, st = self._mv[_H_HOLDER], self._mv[_H_HOLDER_START]
        who = f"process {pid} ({'alive' if process_alive(pid, st) else 'dead'})" if pid else "?"
        raise QueueBroken(
          f"RolloutQueue {self._queue.name}: lock held for {now - start:.1f} s by "
          f"{who}: stopped or hung inside the queue's critical section?; stop the run"
        )
      time.sleep(delay)
      delay = min(2 * delay, 1e-3)

  def reopen(self) -> None:
    """In a forked child: a descriptor of its own (fork shares the open file, and with it the
    flock), and a fresh thread lock (another thread may have held it during the fork)."""
    inherited, self._fd = self._fd, -1  # unusable (EBADF) unless reopened
    self._tlock = threading.Lock()
    try:
      self._fd = os.open(f"/proc/self/fd/{inherited}", os.O_RDWR)
    finally:
      os.close(inherited)

  def close(self) -> None:
    with self._tlock:
      os.close(self._fd)
      _LOCKS.discard(self)
      self._mv = None


_LOCKS: weakref.WeakSet = weakref.WeakSet()  # this process's open locks


def _after_fork_in_child() -> None:
  for lock in list(_LOCKS):
    lock.reopen()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RolloutQueue:
  """A bounded MPSC queue of records of one fixed structure, in shared memory (see module doc).

  Args:
    spec: the structure of one record: a pytree with `(shape, dtype)` / array-like leaves.
    capacity: the number of slots (records in flight at most).
    ctx: the multiprocessing context whose semaphores are used (the one the actor processes are
      started with, e.g. `multiprocessing.get_context("spawn")`). Default: spawn.
    poll_interval: blocked calls re-check the closed flag at least this often (seconds).
    reclaim_interval: blocked calls reclaim the slots of dead processes this often (seconds).
    lock_timeout: a lock held this long by a live process raises `QueueBroken`.
  """

  def __init__(
    self,
    spec,
    capacity: int,
    ctx=None,
    *,
    poll_interval: float = 0.1,
    reclaim_interval: float = 0.5,
    lock_timeout: float = 10.0,
  ):
    if capacity < 1:
      raise ValueError(f"capacity must be >= 1, got {capacity}")
    ctx = ctx or multiprocessing.get_context("spawn")
    leaves, treedef = flatten_spec(spec)
    self._treedef = treedef
    self._leaf_specs = leaves
    self._capacity = int(capacity)
    self._poll = float(poll_interval)
    self._reclaim_interval = float(reclaim_interval)
    self._lock_timeout = float(lock_timeout)
    layout = _Layout(leaves)
    ctrl_bytes = -(-(_HEADER + _SLOT_FIELDS * capacity) * 8 // _PAGE) * _PAGE
    total = ctrl_bytes + layout.stride * capacity
    shm.sweep()  # what runs killed with their resource tracker left
    self._shm = shm.create("queue", total)
    self._name = self._shm.name
    self._owner_pid = os.getpid()
    self._free = shm.Semaphore(0, ctx=ctx)  # wake-up hints only (see _signal)
    self._ready = shm.Semaphore(0, ctx=ctx)
    self._attach(layout, ctrl_bytes, new=True)

  # -- set up / pickling -----------------------------------------------------------------------

  def _attach(self, layout: _Layout, ctrl_bytes: int, new: bool = False) -> None:
    self._layout = layout
    self._ctrl_bytes = ctrl_bytes
    buf = self._shm.buf
    n = _HEADER + _SLOT_FIELDS * self._capacity
    self._mv = buf[: n * 8].cast("q")  # header reads and all control-block writes (cheap scalars)
    self._slots = np.ndarray(
      (self._capacity, _SLOT_FIELDS), np.int64, buffer=buf, offset=_HEADER * 8
    )  # slot reads (vectorized searches)
    if new:
      self._mv[_H_MAGIC] = _MAGIC  # a fresh segment is zero-filled
    elif self._mv[_H_MAGIC] != _MAGIC:
      raise RuntimeError(f"shared memory {self._name!r} is not a RolloutQueue")
    self._lock = _Lock(self, self._mv, self._lock_timeout)
    self._slot_views = [layout.views(buf, ctrl_bytes + i * layout.stride) for i in range(self._capacity)]

  def __getstate__(self):
    if self._shm is None:
      raise RuntimeError("cannot pickle a detached RolloutQueue")
    return dict(
      name=self._name,
      treedef=self._treedef,
      leaves=self._leaf_specs,
      capacity=self._capacity,
      poll=self._poll,
      reclaim_interval=self._reclaim_interval,
      lock_timeout=self._lock_timeout,
      owner_pid=self._owner_pid,
      ctrl_bytes=self._ctrl_bytes,
      free=self._free,
      ready=self._ready,
    )

  def __setstate__(self, s):
    self._name = s["name"]
    self._treedef = s["treedef"]
    self._leaf_specs = s["leaves"]
    self._capacity = s["capacity"]
    self._poll = s["poll"]
    self._reclaim_interval = s["reclaim_interval"]
    self._lock_timeout = s["lock_timeout"]
    self._owner_pid = s["owner_pid"]
    self._free, self._ready = s["free"], s["ready"]
    self._shm = shared_memory.SharedMemory(name=self._name)
    self._attach(_Layout(self._leaf_specs), s["ctrl_bytes"])

  # -- properties ------------------------------------------------------------------------------

  @property
  def spec(self):
    """The record spec (`ArraySpec` leaves)."""
    return unflatten(self._treedef, self._leaf_specs)

  @property
  def capacity(self) -> int:
    return self._capacity

  @property
  def name(self) -> str:
    """The shared-memory segment's name."""
    return self._name

  @property
  def record_nbytes(self) -> int:
    """Payload bytes of one record."""
    return self._layout.nbytes

  @property
  def closed(self) -> bool:
    return self._shm is None or bool(self._mv[_H_CLOSED])

  def qsize(self) -> int:
    """The number of records ready to be got (a snapshot)."""
    self._check_attached()
    return int(np.count_nonzero(self._slots[:, _S_STATE] == READY))

  def lock_holder(self) -> int | None:
    """The pid of the process inside the queue's critical section, or None (a snapshot, without
    the lock: a process stopped there blocks every other one)."""
    self._check_attached()
    return int(self._mv[_H_HOLDER]) or None

  def stats(self) -> dict:
    """A snapshot: slots per state, records put / got (a record being read counts as got), slots
    reclaimed from dead processes, puts dropped by close, lock repairs (a holder died inside)."""
    mv = self._mv
    with self._locked():
      states = self._slots[:, _S_STATE].copy()
      counts = dict(
        puts=mv[_H_SEQ],
        reclaimed=mv[_H_RECLAIMED],
        dropped=mv[_H_DROPPED],
        lock_repairs=mv[_H_REPAIRS],
        closed=bool(mv[_H_CLOSED]),
      )
    out = {name: int(np.count_nonzero(states == s)) for s, name in _STATE_NAMES.items()}
    out.update(counts, capacity=self._capacity, gets=counts["puts"] - out["ready"])
    return out

  # -- locking ---------------------------------------------------------------------------------

  def _check_attached(self):
    if self._shm is None:
      raise QueueClosed("this RolloutQueue was detached / unlinked in this process")

  def _locked(self) -> _Lock:
    self._check_attached()
    return self._lock

  def _repair(self, pid: int, start: int) -> None:
    """(Under the lock) once the holder that left its critical section unfinished is dead (pid +
    start time), settle its update and reclaim its slots."""
    if pid and pid != this_process()[0]:
      deadline = time.monotonic() + self._lock_timeout
      while process_alive(pid, start):  # exiting: its files are closed before it is a zombie
        if time.monotonic() > deadline:
          raise QueueBroken(
            f"RolloutQueue {self._name}: live process {pid} left the queue's "
            f"critical section unfinished; it cannot be repaired safely: stop the run"
          )
        time.sleep(1e-3)
    self._settle()
    self._mv[_H_REPAIRS] += 1
    self._reclaim_dead()
    self._signal(self._free)
    self._signal(self._ready)

  def _settle(self) -> None:
    """(Under the lock) make an interrupted update whole: apply the journal if it was committed,
    and recompute the commit counter (one past every READY record's commit number)."""
    mv = self._mv
    if mv[_H_JOURNAL]:
      j = _H_JOURNAL
      mv[mv[j + 1]], mv[mv[j + 3]] = mv[j + 2], mv[j + 4]
      mv[j] = 0
    ready = self._slots[:, _S_STATE] == READY
    if ready.any():
      mv[_H_SEQ] = max(mv[_H_SEQ], int(self._slots[ready, _S_SEQ].max()) + 1)

  def _set(self, i: int, state: int, owner: tuple[int, int] | None = None, seq: int | None = None) -> None:
    """(Under the lock) slot `i` -> `state`, with its owner (pid, start time) / commit number if
    given. The state store is the commit point: the other fields are written first and mean
    nothing until the state says so (FREE and READY slots have no owner, WRITING ones no commit
    number), so a death anywhere leaves the transition entirely done or not done."""
    mv = self._mv
    row = _HEADER + i * _SLOT_FIELDS
    if owner is not None:
      mv[row + _S_PID], mv[row + _S_START] = owner
    if seq is not None:
      mv[row + _S_SEQ] = seq
    mv[row + _S_STATE] = state

  def _set_counted(self, i: int, state: int, counter: int) -> None:
    """(Under the lock) slot `i` -> `state` and header word `counter` += 1, both or neither even if
    this process dies half way: the two stores are journaled, the journal committed by one store
    of its flag, then applied (by `_settle`: applying twice is harmless, the values are absolute)."""
    mv = self._mv
    j = _H_JOURNAL
    mv[j + 1], mv[j + 2] = _HEADER + int(i) * _SLOT_FIELDS + _S_STATE, state
    mv[j + 3], mv[j + 4] = counter, mv[counter] + 1
    mv[j] = 1
    self._settle()

  def _owns(self, i: int, state: int) -> bool:
    """Whether slot `i` is in `state` and this process's (under the lock)."""
    row = _HEADER + i * _SLOT_FIELDS
    return self._mv[row + _S_STATE] == state and self._mv[row + _S_PID] == this_process()[0]

  def _signal(self, sem) -> None:
    """Wake one waiter of `sem` (call under the lock). The semaphores are only wake-up hints (the
    slot states are the truth), so their count is kept small: at most capacity + 1 pending."""
    try:
      if sem.get_value() > self._capacity:
        return
    except NotImplementedError:  # macOS
      pass
    sem.release()

  def _claim(self, want: int, timeout: float | None) -> int:
    """Claim a slot in state `want` (FREE for put, READY for get: the oldest), blocking until one
    exists. A process killed anywhere here loses nothing: a claim is one step under the lock."""
    put = want == FREE
    sem = self._free if put else self._ready
    pid, start = this_process()
    deadline = None if timeout is None else time.monotonic() + timeout
    next_reclaim = time.monotonic() + self._reclaim_interval
    while True:
      with self._locked():
        rows = self._slots
        closed = bool(self._mv[_H_CLOSED])
        if put and closed:
          raise QueueClosed("put on a closed queue")
        cand = np.flatnonzero(rows[:, _S_STATE] == want)
        if cand.size:
          i = int(cand[0]) if put else int(cand[np.argmin(rows[cand, _S_SEQ])])
          self._set(i, WRITING if put else READING, owner=(pid, start))
          return i
        if closed:
          raise QueueClosed("get on a closed, drained queue")
      now = time.monotonic()
      if deadline is not None and now >= deadline:
        raise TimeoutError(f"RolloutQueue.{'put' if put else 'get'}: timed out after {timeout} s")
      if now >= next_reclaim:
        self.reclaim()
        next_reclaim = now + self._reclaim_interval
        continue
      wait = self._poll if deadline is None else min(self._poll, deadline - now)
      sem.acquire(timeout=max(0.0, wait))

  # -- producer side ---------------------------------------------------------------------------

  def _begin_put(self, timeout: float | None = None) -> int:
    return self._claim(FREE, timeout)

  def _abort_put(self, i: int) -> None:
    with self._locked():
      if self._owns(i, WRITING):
        self._set(i, FREE)
        self._signal(self._free)

  def _commit_put(self, i: int) -> None:
    with self._locked():
      if not self._owns(i, WRITING):
        raise QueueBroken(f"RolloutQueue {self._name}: slot {i} was taken from a live writer")
      if self._mv[_H_CLOSED]:
        self._set_counted(i, FREE, _H_DROPPED)
        self._signal(self._free)
        raise QueueClosed("queue closed while the record was being written; record dropped")
      seq = self._mv[_H_SEQ]
      self._set(i, READY, seq=seq)
      self._mv[_H_SEQ] = seq + 1  # derived: `_settle` recomputes it
      self._signal(self._ready)

  def put(self, tree, timeout: float | None = None) -> None:
    """Copy one record (structure of the spec; numpy / jax arrays or scalars at the leaves, shapes
    exact, dtypes cast with `same_kind`) into a free slot; blocks while the queue is full.

    Raises QueueClosed (closed before or during the put; the record is dropped), TimeoutError
    (no free slot within `timeout` s; nothing was written), ValueError (structure / shape)."""
    leaves = flatten_like(self._treedef, tree)
    for k, (x, s) in enumerate(zip(leaves, self._leaf_specs)):  # validate before claiming a slot
      if tuple(np.shape(x)) != s.shape:
        raise ValueError(f"RolloutQueue.put: leaf {k}: shape {tuple(np.shape(x))} != {s.shape}")
    i = self._begin_put(timeout)
    try:
      for k, (dst, x) in enumerate(zip(self._slot_views[i], leaves)):
        _copy_in(dst, x, f"RolloutQueue.put: leaf {k}")
    except BaseException:
      self._abort_put(i)
      raise
    self._commit_put(i)

  # -- consumer side ---------------------------------------------------------------------------

  def _begin_get(self, timeout: float | None) -> int:
    return self._claim(READY, timeout)

  def _end_get(self, i: int) -> None:
    with self._locked():
      if self._owns(i, READING):
        self._set(i, FREE)
        self._signal(self._free)

  @contextlib.contextmanager
  def borrow(self, timeout: float | None = None) -> Iterator[Any]:
    """Zero-copy get: `with q.borrow() as rec:` yields the next record as read-only views into its
    slot; the slot is released when the block exits, after which the views must not be used."""
    i = self._begin_get(timeout)
    try:
      views = []
      for v in self._slot_views[i]:
        v = v.view()
        v.flags.writeable = False
        views.append(v)
      yield unflatten(self._treedef, views)
    finally:
      self._end_get(i)

  def get(self, timeout: float | None = None, out=None) -> Any:
    """The oldest complete record, copied out (the caller owns it); blocks while none is ready.

    out: optional preallocated record (the spec's structure, numpy arrays) to copy into and
      return; reusing it avoids the page faults of fresh 10-MB allocations (about 5x faster).
    Raises QueueClosed once the queue is closed and drained, TimeoutError after `timeout` s."""
    if out is not None:
      outs = flatten_like(self._treedef, out)
      for k, (o, s) in enumerate(zip(outs, self._leaf_specs)):
        if not isinstance(o, np.ndarray) or o.shape != s.shape or o.dtype != s.dtype:
          raise ValueError(f"RolloutQueue.get: out leaf {k} must be a {s.shape} {s.dtype} array")
    i = self._begin_get(timeout)
    try:
      if out is None:
        outs = [v.copy() for v in self._slot_views[i]]
      else:
        for o, v in zip(outs, self._slot_views[i]):
          np.copyto(o, v)
    finally:
      self._end_get(i)
    return out if out is not None else unflatten(self._treedef, outs)

  def batch_spec(self, n: int, axis=None):
    """The spec of `get_batch(n, axis)`'s output."""
    axes = _broadcast_prefix(self._treedef, axis)
    out = []
    for s, ax in zip(self._leaf_specs, axes):
      if ax is None:
        out.append(ArraySpec((n,) + s.shape, s.dtype))
      else:
        if not 0 <= ax < len(s.shape):
          raise ValueError(f"get_batch: axis {ax} is out of range for a leaf of shape {s.shape}")
        shape = list(s.shape)
        shape[ax] *= n
        out.append(ArraySpec(tuple(shape), s.dtype))
    return unflatten(self._treedef, out)

  def batch_buffer(self, n: int, axis=None) -> Any:
    """A preallocated output for `get_batch(n, axis, out=...)`: every leaf 64-byte aligned, in one
    allocation. On CPU, `jax.device_put` of an aligned array does not copy (the device array
    aliases it), so a caller that reuses the buffer must not refill it while a computation reads it."""
    leaves, treedef = flatten_spec(self.batch_spec(n, axis))
    layout = _Layout(leaves)
    raw = np.zeros(layout.nbytes + _ALIGN, np.uint8)
    return unflatten(treedef, layout.views(raw, (-raw.ctypes.data) % _ALIGN))

  def get_batch(self, n: int, axis=None, timeout: float | None = None, out=None) -> Any:
    """`n` records combined leaf by leaf, copied straight from the slots into the output.

    axis: None stacks along a new leading axis (`[n, *shape]`); an int concatenates along that
      existing axis of every leaf; a pytree prefix of ints (e.g. `Rollout.batch_axes()`: 1 for
      time-major fields, 0 for the carry) gives each subtree its own axis. Record j fills block j.
    timeout: for the whole batch. On TimeoutError / QueueClosed the records taken so far are lost.
    out: optional preallocated output (structure and shapes of `batch_spec(n, axis)`), reused to
      avoid allocating per batch.
    """
    axes = _broadcast_prefix(self._treedef, axis)
    if out is None:
      outs = [np.empty(s.shape, s.dtype) for s in flatten_spec(self.batch_spec(n, axis))[0]]
    else:
      outs = flatten_like(self._treedef, out)
      for o, s in zip(outs, flatten_spec(self.batch_spec(n, axis))[0]):
        if o.shape != s.shape or o.dtype != s.dtype:
          raise ValueError(f"get_batch: out leaf {o.shape} {o.dtype} != {s.shape} {s.dtype}")
    deadline = None if timeout is None else time.monotonic() + timeout
    for j in range(n):
      left = None if deadline is None else max(0.0, deadline - time.monotonic())
      i = self._begin_get(left)
      try:
        for o, v, ax in zip(outs, self._slot_views[i], axes):
          if ax is None:
            o[j] = v
          else:
            size = v.shape[ax]
            idx = [slice(None)] * v.ndim
            idx[ax] = slice(j * size, (j + 1) * size)
            o[tuple(idx)] = v
      finally:
        self._end_get(i)
    return unflatten(self._treedef, outs)

  # -- faults / shutdown -----------------------------------------------------------------------

  def reclaim(self) -> int:
    """Return the slots of dead processes: WRITING -> FREE (the partial record is discarded),
    READING -> READY (the record is delivered again). Returns the number of slots reclaimed."""
    with self._locked():
      return self._reclaim_dead()

  def _reclaim_dead(self) -> int:
    n = 0
    rows = self._slots
    for i in np.flatnonzero((rows[:, _S_STATE] == WRITING) | (rows[:, _S_STATE] == READING)):
      if process_alive(int(rows[i, _S_PID]), int(rows[i, _S_START])):
        continue
      if rows[i, _S_STATE] == WRITING:
        self._set_counted(i, FREE, _H_RECLAIMED)
        self._signal(self._free)
      else:
        self._set_counted(i, READY, _H_RECLAIMED)
        self._signal(self._ready)
      n += 1
    return n

  def close(self) -> None:
    """Close the queue for every process (idempotent): puts raise QueueClosed, gets drain the
    complete records then raise QueueClosed; blocked calls wake up."""
    if self._shm is None or self._mv[_H_CLOSED]:
      return
    self._mv[_H_CLOSED] = 1
    # Wake blocked waiters at once (they also poll the flag every `poll_interval` s).
    for _ in range(self._capacity + 1):
      self._free.release()
      self._ready.release()

  def detach(self) -> None:
    """Unmap this process's view of the segment (other processes are unaffected)."""
    if self._shm is None:
      return
    self._lock.close()
    self._slot_views = None
    self._mv = self._slots = None
    shm, self._shm = self._shm, None
    try:
      shm.close()
    except BufferError:  # views handed out by borrow() still alive: the mapping goes with them
      pass

  def unlink(self) -> None:
    """Close the queue, detach, and remove the shared-memory segment (call once, normally in the
    creating process)."""
    if self._shm is not None:
      self.close()
      shm = self._shm
      self.detach()
      try:
        shm.unlink()
      except FileNotFoundError:
        pass
    else:
      with contextlib.suppress(FileNotFoundError):
        shared_memory.SharedMemory(name=self._name).unlink()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if os.getpid() == self._owner_pid:
      self.unlink()
    else:
      self.detach()

  def __del__(self):
    try:
      self.detach()
    except Exception:  # noqa: BLE001 - interpreter shutdown
      pass

  def __repr__(self):
    return (
      f"RolloutQueue(name={self._name!r}, capacity={self._capacity}, "
      f"record_nbytes={self._layout.nbytes if self._shm is not None else '?'}, "
      f"closed={self.closed})"
    )
