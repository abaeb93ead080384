"""The learner's latest parameters, in shared memory, for actor processes to read without tearing.

`ParamStore(spec, ctx)` holds two copies ("double buffering") of a pytree of arrays (the spec is a
pytree with `(shape, dtype)` / array-like leaves, as for `RolloutQueue`; an example params tree is
itself a valid spec). Each copy has a sequence counter and a version number (a seqlock):

  publish(tree, version)   writer: pick the copy NOT holding the latest version, make its counter
                           odd, copy the leaves in, store the version, make the counter even, then
                           point `latest` at it. Versions must strictly increase.
  read(into=None)          reader (lock-free): take `latest`, note its counter (retry if odd), copy
                           the leaves out, and accept the copy only if the counter did not change;
                           otherwise retry. A reader therefore never returns a torn tree, and
                           because the writer only overwrites the *other* copy, a read is retried
                           only if the writer publishes twice while it copies (readers never block
                           the learner, the learner never blocks readers).
  version()                a cheap poll (two integer loads): actors copy only when it increased.

A publisher that dies mid-publish leaves the previous version readable (`latest` moves only after a
copy is complete). Publishing from several processes is serialised by a lock of `ctx`; readers take
no lock. Versions
seen by one reader never decrease. Memory ordering: the counters and data are plain stores into the
shared mapping; this is exact on x86-64 (TSO) and the copies are bracketed by lock operations
(`_fence`) that act as compiler/CPU barriers on other architectures in practice.

Pickling: like `RolloutQueue`, pass the store in the `args` of a process being started; the child
re-attaches by name (the writer lock can only be shared at process start). The segment and the lock
are named after the creating process, so a run killed with its resource tracker leaves them only
until the next queue or store is created (system/shm.py).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from rtrl_rl.system import shm
from rtrl_rl.system.queue import _PAGE, _Layout, flatten_like, flatten_spec, unflatten

__all__ = ["ParamStore"]

_MAGIC = 0x52544C5053  # "RTLPS"
_H_MAGIC, _H_LATEST, _H_PUBLISHES = 0, 1, 2
_H_SEQ = (8, 9)
_H_VER = (10, 11)
_HEADER_INTS = 16

_fence_lock = threading.Lock()


def _fence() -> None:
  """A lock acquire/release: a full barrier in practice (pthread mutexes use atomic RMW ops)."""
  with _fence_lock:
    pass


class ParamStore:
  """Latest-value store of a fixed-structure pytree of arrays with an increasing version.

  Args:
    spec: the structure (pytree with `(shape, dtype)` / array-like leaves).
    ctx: the multiprocessing context of the processes that share it (default: spawn).
  """

  def __init__(self, spec, ctx=None):
    ctx = ctx or multiprocessing.get_context("spawn")
    leaves, treedef = flatten_spec(spec)
    self._treedef = treedef
    self._leaf_specs = leaves
    layout = _Layout(leaves)
    shm.sweep()  # what runs killed with their resource tracker left
    self._shm = shm.create("params", _PAGE + 2 * layout.stride)
    self._name = self._shm.name
    self._owner_pid = os.getpid()
    self._wlock = shm.Lock(ctx=ctx)
    self.retries = 0  # reads of this process object retried (a copy was rewritten)
    self._attach(layout, new=True)

  def _attach(self, layout: _Layout, new: bool = False) -> None:
    self._layout = layout
    buf = self._shm.buf
    self._hdr = np.ndarray((_HEADER_INTS,), np.int64, buffer=buf)
    if new:
      self._hdr[:] = 0
      self._hdr[_H_LATEST] = -1
      self._hdr[_H_MAGIC] = _MAGIC
    elif self._hdr[_H_MAGIC] != _MAGIC:
      raise RuntimeError(f"shared memory {self._name!r} is not a ParamStore")
    self._bufs = [layout.views(buf, _PAGE + b * layout.stride) for b in range(2)]

  def __getstate__(self):
    if self._shm is None:
      raise RuntimeError("cannot pickle a detached ParamStore")
    return dict(
      name=self._name,
      treedef=self._treedef,
      leaves=self._leaf_specs,
      owner_pid=self._owner_pid,
      wlock=self._wlock,
    )

  def __setstate__(self, s):
    self._name, self._treedef, self._leaf_specs = s["name"], s["treedef"], s["leaves"]
    self._owner_pid, self._wlock = s["owner_pid"], s["wlock"]
    self.retries = 0
    self._shm = shared_memory.SharedMemory(name=self._name)
    self._attach(_Layout(self._leaf_specs))

  @property
  def spec(self):
    return unflatten(self._treedef, self._leaf_specs)

  @property
  def name(self) -> str:
    return self._name

  @property
  def nbytes(self) -> int:
    """Payload bytes of one copy of the tree."""
    return self._layout.nbytes

  def _check(self):
    if self._shm is None:
      raise RuntimeError("this ParamStore was detached / unlinked in this process")

  # -- writer ----------------------------------------------------------------------------------

  def publish(self, tree, version: int) -> None:
    """Make `tree` (the spec's structure and shapes; numpy or jax arrays) the latest, tagged with
    `version` (an int larger than every version published before)."""
    self._check()
    version = int(version)
    leaves = flatten_like(self._treedef, tree)
    for k, (x, s) in enumerate(zip(leaves, self._leaf_specs)):
      if tuple(np.shape(x)) != s.shape:
        raise ValueError(f"ParamStore.publish: leaf {k}: shape {tuple(np.shape(x))} != {s.shape}")
    leaves = [np.asarray(x) for x in leaves]  # device -> host before taking the lock
    with self._wlock:
      hdr = self._hdr
      latest = int(hdr[_H_LATEST])
      if latest >= 0 and version <= hdr[_H_VER[latest]]:
        raise ValueError(
          f"ParamStore.publish: version {version} <= latest version "
          f"{int(hdr[_H_VER[latest]])}; versions must increase"
        )
      b = 0 if latest < 0 else 1 - latest
      hdr[_H_SEQ[b]] += 1  # odd: copy b is being written
      _fence()
      for dst, x in zip(self._bufs[b], leaves):
        np.copyto(dst, x, casting="same_kind")
      hdr[_H_VER[b]] = version
      _fence()
      hdr[_H_SEQ[b]] += 1  # even: copy b is consistent
      _fence()
      hdr[_H_LATEST] = b
      hdr[_H_PUBLISHES] += 1

  # -- readers ---------------------------------------------------------------------------------

  def version(self) -> int:
    """The latest published version (-1 before the first publish); two integer loads."""
    self._check()
    latest = int(self._hdr[_H_LATEST])
    return -1 if latest < 0 else int(self._hdr[_H_VER[latest]])

  def read(self, into=None, timeout: float | None = None) -> tuple[Any, int]:
    """A consistent copy of the latest tree and its version: `(tree, version)`.

    into: optional pytree of writable numpy arrays (the spec's structure) filled in place and
      returned (no allocation per read); its contents are consistent only once `read` returns.
    timeout: wait at most this long for the first publish (TimeoutError); None waits forever.
    """
    self._check()
    if into is None:
      outs = [np.empty(s.shape, s.dtype) for s in self._leaf_specs]
    else:
      outs = flatten_like(self._treedef, into)
      for k, (o, s) in enumerate(zip(outs, self._leaf_specs)):
        if not isinstance(o, np.ndarray) or o.shape != s.shape or o.dtype != s.dtype:
          raise ValueError(f"ParamStore.read: into leaf {k} must be a {s.shape} {s.dtype} array")
    hdr = self._hdr
    deadline = None if timeout is None else time.monotonic() + timeout
    while int(hdr[_H_LATEST]) < 0:
      if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(f"ParamStore.read: nothing published within {timeout} s")
      time.sleep(0.002)
    while True:
      b = int(hdr[_H_LATEST])
      seq = int(hdr[_H_SEQ[b]])
      if seq & 1:  # the writer lapped us and is rewriting copy b
        self.retries += 1
        time.sleep(0)
        continue
      _fence()
      version = int(hdr[_H_VER[b]])
      for o, src in zip(outs, self._bufs[b]):
        np.copyto(o, src)
      _fence()
      if int(hdr[_H_SEQ[b]]) == seq:
        return (into if into is not None else unflatten(self._treedef, outs)), version
      self.retries += 1

  def read_if_newer(self, version: int, into=None) -> tuple[Any, int] | None:
    """`read(into)` if a version newer than `version` has been published, else None."""
    if self.version() <= version:
      return None
    return self.read(into)

  # -- shutdown --------------------------------------------------------------------------------

  def detach(self) -> None:
    """Unmap this process's view."""
    if self._shm is None:
      return
    self._bufs = self._hdr = None
    shm, self._shm = self._shm, None
    try:
      shm.close()
    except BufferError:
      pass

  def unlink(self) -> None:
    """Detach and remove the segment (normally in the creating process)."""
    shm = self._shm
    self.detach()
    try:
      (shm or shared_memory.SharedMemory(name=self._name)).unlink()
    except FileNotFoundError:
      pass

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
    except Exception:  # noqa: BLE001
      pass

  def __repr__(self):
    return f"ParamStore(name={self._name!r}, nbytes={self._layout.nbytes})"
