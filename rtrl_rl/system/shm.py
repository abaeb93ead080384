"""Shared-memory objects named after the process that creates them, and the sweep of a dead one's.

The actors backend keeps its rollout queue and parameter store in POSIX shared memory
(`/dev/shm/<name>` on Linux), with named semaphores beside them (`/dev/shm/sem.<name>`). When
their creator dies without unlinking them, Python's resource tracker does, unless it died too:
SIGKILL of the whole process group (a scheduler after its grace period) takes it with the run,
and the objects would stay until the next reboot. So every one is named after its creator,

    rtrl_<pid>_<start time>_<pid namespace>_<kind><random hex>

and `sweep()`, run whenever a queue or parameter store is created, removes those whose creator is
dead. A creator is its pid and start time (a recycled pid is not mistaken for it). Objects of live
creators, of another pid namespace (a container sharing /dev/shm: its pids mean nothing here) and
of other programs (names without the pattern) are never touched.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from multiprocessing import shared_memory, synchronize

import psutil

__all__ = [
  "process_starttime",
  "process_alive",
  "this_process",
  "owned_name",
  "create",
  "Semaphore",
  "Lock",
  "sweep",
  "SHM_DIR",
]

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
_PREFIX = "rtrl_"
_PATTERN = re.compile(r"(?:sem\.)?rtrl_(\d+)_(\d+)_(\d+)_[a-z]+[0-9a-f]{8}")


# ----------------------------------------------------------------------------------------------
# Process identity: pid + start time, so a recycled pid is not mistaken for the process.
# ----------------------------------------------------------------------------------------------


def process_starttime(pid: int) -> int | None:
  """The start time of process `pid` in clock ticks since boot, or None if it does not exist or is
  a zombie (dead, not yet reaped)."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      stat = f.read()
  except (FileNotFoundError, ProcessLookupError):
    return None
  except OSError:
    stat = None
  if stat is not None:
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
      return None
    return int(fields[19])
  try:  # no procfs: psutil (a project dependency) as the fallback
    p = psutil.Process(pid)
    if p.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
      return None
    return int(p.create_time() * 100)
  except Exception:  # noqa: BLE001 - NoSuchProcess, AccessDenied, ...
    return None


def process_alive(pid: int, starttime: int | None = None) -> bool:
  """Whether process `pid` (started at `starttime`, if given) is alive."""
  if pid <= 0:
    return False
  st = process_starttime(pid)
  return st is not None and (starttime is None or starttime <= 0 or st == starttime)


_me: tuple[int, int] | None = None


def this_process() -> tuple[int, int]:
  """This process's (pid, start time); cached, the cache is dropped in forked children."""
  global _me
  if _me is None:
    pid = os.getpid()
    _me = (pid, process_starttime(pid) or 0)
  return _me


def _forget_me() -> None:
  global _me
  _me = None


os.register_at_fork(after_in_child=_forget_me)


def _pid_namespace() -> int:
  """The inode of this process's pid namespace (0 where it cannot be read)."""
  try:
    return os.stat("/proc/self/ns/pid").st_ino
  except OSError:
    return 0


# ----------------------------------------------------------------------------------------------
# Objects named after their creator.
# ----------------------------------------------------------------------------------------------


def owned_name(kind: str) -> str:
  """A fresh name of an object of `kind` (lower-case letters) created by this process."""
  pid, start = this_process()
  return f"{_PREFIX}{pid}_{start}_{_pid_namespace()}_{kind}{secrets.token_hex(4)}"


def create(kind: str, size: int) -> shared_memory.SharedMemory:
  """A new shared-memory segment of `size` bytes named after this process (`owned_name`)."""
  while True:
    try:
      return shared_memory.SharedMemory(name=owned_name(kind), create=True, size=size)
    except FileExistsError:  # 2**-32 per try
      continue


class _Owned:
  """multiprocessing's semaphore naming, replaced by `owned_name` (the rest is multiprocessing's:
  pickled at process start, unlinked by the creator, registered with the resource tracker)."""

  @staticmethod
  def _make_name():
    return "/" + owned_name("sem")


class Semaphore(_Owned, synchronize.Semaphore):
  """`ctx.Semaphore(value)` named after its creator: `Semaphore(value, ctx=ctx)`."""


class Lock(_Owned, synchronize.Lock):
  """`ctx.Lock()` named after its creator: `Lock(ctx=ctx)`."""


def sweep() -> list[str]:
  """Remove the objects (segments and semaphores) of dead creators in this pid namespace; returns
  the names removed. Objects of live creators and of other programs are left alone."""
  try:
    names = sorted(os.listdir(SHM_DIR))
  except OSError:
    return []
  ns = _pid_namespace()
  alive: dict[tuple[int, int], bool] = {}
  removed = []
  for name in names:
    m = _PATTERN.fullmatch(name)
    if m is None or int(m[3]) != ns:
      continue
    owner = (int(m[1]), int(m[2]))
    if owner not in alive:
      alive[owner] = process_alive(*owner)
    if alive[owner]:
      continue
    try:
      os.unlink(os.path.join(SHM_DIR, name))
    except OSError:  # swept by another process meanwhile, or another user's
      continue
    removed.append(name)
  if removed:
    dead = sorted({int(_PATTERN.fullmatch(n)[1]) for n in removed})
    log.info(
      "removed %d shared-memory object(s) left in %s by dead process(es) %s: %s",
      len(removed),
      SHM_DIR,
      ", ".join(map(str, dead)),
      ", ".join(removed),
    )
  return removed
