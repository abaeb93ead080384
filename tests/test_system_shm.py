"""Shared-memory objects named after their creator: the queue's and the parameter store's segments
and semaphores carry their creator's pid, start time and pid namespace; `sweep()` (run when either
is created) removes the objects of dead creators only: not a live creator's, not a recycled pid's
new owner's, not another pid namespace's, not another program's."""

import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np

from rtrl_rl.system import shm
from rtrl_rl.system.param_store import ParamStore
from rtrl_rl.system.queue import RolloutQueue
from rtrl_rl.system.shm import process_starttime

CTX = mp.get_context("spawn")


def _dead_process() -> tuple[int, int]:
  """(pid, start time) of a process that has exited."""
  p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
  start = process_starttime(p.pid)
  p.communicate(b"")
  return p.pid, start


def _touch(name: str) -> str:
  with open(os.path.join(shm.SHM_DIR, name), "wb"):
    pass
  return name


def _exists(name: str) -> bool:
  return os.path.exists(os.path.join(shm.SHM_DIR, name))


def test_queue_and_store_objects_are_named_after_their_creator():
  me = f"rtrl_{os.getpid()}_{process_starttime(os.getpid())}_{os.stat('/proc/self/ns/pid').st_ino}_"
  with RolloutQueue({"x": ((3,), np.float32)}, 2, CTX) as q, ParamStore({"w": ((4,), np.float32)}, CTX) as s:
    names = [q.name, s.name] + [
      "sem." + sem._semlock.name.lstrip("/") for sem in (q._free, q._ready, s._wlock)
    ]
    assert all(n.removeprefix("sem.").startswith(me) for n in names), names
    assert all(_exists(n) for n in names)
    assert not set(shm.sweep()) & set(names)  # a live creator's: kept
    assert all(_exists(n) for n in names)


def test_sweep_removes_only_the_objects_of_dead_creators():
  ns = os.stat("/proc/self/ns/pid").st_ino
  dead_pid, dead_start = _dead_process()
  me_pid, me_start = os.getpid(), process_starttime(os.getpid())
  dead = [
    _touch(f"rtrl_{dead_pid}_{dead_start}_{ns}_queue0123abcd"),
    _touch(f"sem.rtrl_{dead_pid}_{dead_start}_{ns}_sem0123abcd"),
    _touch(f"rtrl_{me_pid}_{me_start + 1}_{ns}_params0123abcd"),
  ]  # my pid, recycled
  kept = [
    _touch(f"rtrl_{me_pid}_{me_start}_{ns}_queue0123abcd"),  # alive: me
    _touch(f"rtrl_{dead_pid}_{dead_start}_{ns + 1}_queue0123abcd"),  # another pid namespace
    _touch(f"rtrl_{dead_pid}_{dead_start}_{ns}_notes.txt"),  # not our pattern
    _touch(f"psm_rtrl_{dead_pid}_test"),
  ]  # another program's
  try:
    removed = shm.sweep()
    assert sorted(n for n in removed if n in dead + kept) == sorted(dead)
    assert not any(_exists(n) for n in dead) and all(_exists(n) for n in kept)
    for create in (
      lambda: RolloutQueue({"x": ((1,), np.uint8)}, 1, CTX),
      lambda: ParamStore({"x": ((1,), np.uint8)}, CTX),
    ):
      _touch(dead[0])
      with create():  # creating one sweeps
        assert not _exists(dead[0])
  finally:
    for n in dead + kept:
      if _exists(n):
        os.unlink(os.path.join(shm.SHM_DIR, n))
