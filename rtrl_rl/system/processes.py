"""A small supervisor for K worker (actor) processes, started with the `spawn` method.

    sup = Supervisor(max_restarts=3)
    for k in range(K):
      sup.add(f"actor{k}", actor_main, args=(queue, params, config, k))
    restore = install_shutdown_handlers(sup.request_stop)   # SIGINT / SIGTERM -> stop, once
    sup.start(); sup.start_monitor()                        # deaths handled in a background thread
    try:
      while not sup.stop_requested:
        learner_step(); sup.check()                         # raises WorkerFailed when exhausted
    finally:
      sup.shutdown(); restore()

Workers. `target(info, *args, **kwargs)` runs in a fresh spawned process; `info` is a `WorkerInfo`
(name, index, attempt = number of restarts so far, and `stop_event`, a `StopEvent` the worker must poll
to stop). A worker that returns normally is finished (not restarted unless
`restart_on_clean_exit`). A worker that dies (exception -> exit code 1, `sys.exit(n)`, a signal)
while no stop was requested is restarted, at most `max_restarts` times per worker; then
`WorkerFailed` names the worker, its pid, how it died (exit code or signal name) and the restart
count, with the tail of the worker's traceback when it raised. Deaths are seen at once:
`wait()` / the monitor thread block in `multiprocessing.connection.wait` on the process sentinels.
`on_death(name, exitcode)` is called for every death (e.g. `queue.reclaim` to return the slots of
an actor killed mid-write at once).

Signals. Workers ignore SIGINT and SIGTERM: Ctrl-C reaches the whole foreground process group, and
SLURM (preemption, `scontrol requeue`, the time limit), systemd and `kill -- -<pgid>` send SIGTERM to
every process of the job; only the parent should react, once, by requesting a stop
(`install_shutdown_handlers`), and then stop its workers in order (a worker that died of the
SIGTERM would be restarted as a crash first). Both signals are blocked in the starting thread while
a worker is spawned and set to SIG_IGN before the worker's Python starts running user code, so no
worker dies of them even during start-up. A second Ctrl-C in the parent raises KeyboardInterrupt
(force quit).

Stalls. With `stall_timeout`, a worker that is alive but reports no progress (`info.beat()`) for
that many seconds is stalled (stopped by SIGSTOP, or hung): it is logged (warning, name and pid),
`on_stall` is called, and it is killed, so its death is handled as any other: restarted, counted
against its restart budget. A worker's clock starts when its process runs the worker code, where a
thread beats for it until its own first beat (its start-up: imports, compiling): a slow start is
not a stall, a stopped process is one from then on, and a worker that never beats is never
stalled (nor is a start-up that hangs while the process runs). One stalled worker is killed at a
time: the holder of a lock the workers share (`lock_holder`) first, as the others may only be
waiting for it; after each kill the others get a full `stall_timeout` again.

Shutdown (`shutdown(timeout)`): stop the monitor, set `stop_event`, join every worker for up to
`timeout` s in total, then SIGKILL the stragglers and reap them.
No worker outlives it. Workers also watch their parent: if it disappears (SIGKILL, crash) they set
`stop_event` and exit after `orphan_grace` s at the latest, so they never linger as orphans.

Note: with the spawn method, Python starts a `multiprocessing` resource-tracker helper process the
first time a process is spawned; it belongs to multiprocessing, outlives the workers and exits with
the parent. `live_children()` lists the parent's descendants excluding it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing import forkserver, resource_tracker
from typing import Any, Callable, NamedTuple

import psutil

__all__ = [
  "StopEvent",
  "Heartbeat",
  "WorkerInfo",
  "WorkerFailed",
  "Supervisor",
  "install_shutdown_handlers",
  "describe_exitcode",
  "live_children",
]

log = logging.getLogger(__name__)


class StopEvent:
  """A process-shared stop flag with `multiprocessing.Event`'s interface (`set`, `is_set`, `clear`,
  `wait(timeout) -> bool`), built on one shared integer; `wait` polls every `poll` seconds.

  Why not `ctx.Event()`: it is a Condition underneath, and a worker SIGKILLed while inside
  `event.wait()` (where an actor spends its idle time) leaves the Condition's sleeper count raised,
  so the next `event.set()` in the parent blocks forever waiting for that sleeper to wake. A shared
  integer has no such failure mode, and `set()` is a single store, safe in a signal handler. Share
  it with a child by passing it in the child's start arguments (like any multiprocessing object).
  """

  def __init__(self, ctx=None, poll: float = 0.02):
    ctx = ctx or multiprocessing.get_context("spawn")
    self._flag = ctx.RawValue("i", 0)
    self._poll = float(poll)

  def set(self) -> None:
    self._flag.value = 1

  def clear(self) -> None:
    self._flag.value = 0

  def is_set(self) -> bool:
    return bool(self._flag.value)

  def wait(self, timeout: float | None = None) -> bool:
    if self._flag.value:
      return True
    deadline = None if timeout is None else time.monotonic() + timeout
    while not self._flag.value:
      left = self._poll if deadline is None else min(self._poll, deadline - time.monotonic())
      if left <= 0:
        return False
      time.sleep(left)
    return True


class Heartbeat:
  """When a worker last reported progress: one shared float of `time.monotonic()` (on Linux one
  clock for all processes of a host), created by the Supervisor and passed in `WorkerInfo`; `inf`
  while its process starts (before `_worker_main` runs)."""

  def __init__(self, ctx):
    self._t = ctx.RawValue("d", math.inf)
    self.started = False  # the worker has beaten itself (in the worker's process)

  def beat(self) -> None:
    """Report progress (the worker's own beat: it has started)."""
    self.started = True
    self.touch()

  def touch(self) -> None:
    """Set the time to now without marking the worker started (its start-up thread)."""
    self._t.value = time.monotonic()

  def reset(self) -> None:
    """Mark the worker as starting (before its process is spawned)."""
    self._t.value = math.inf

  @property
  def last(self) -> float:
    return self._t.value


class WorkerInfo(NamedTuple):
  """Passed as the first argument of a worker's target."""

  name: str
  index: int  # position in the order of `add`
  attempt: int  # 0 for the first start, k after k restarts
  stop_event: StopEvent  # return promptly once it is set (poll `is_set()` or `wait(timeout)`)
  heartbeat: Heartbeat | None = None

  def beat(self) -> None:
    """Report progress; a worker watched for stalls (`Supervisor(stall_timeout=...)`) calls it
    whenever it got work done or waits for someone else (e.g. a full queue)."""
    if self.heartbeat is not None:
      self.heartbeat.beat()


class WorkerFailed(RuntimeError):
  """A worker died more often than its restart budget allows."""

  def __init__(
    self,
    name: str,
    pid: int | None,
    exitcode: int | None,
    restarts: int,
    max_restarts: int,
    error: str | None = None,
    how: str | None = None,
  ):
    self.name, self.pid, self.exitcode = name, pid, exitcode
    self.restarts, self.max_restarts, self.error = restarts, max_restarts, error
    how = how or describe_exitcode(exitcode)
    msg = (
      f"worker {name!r} (pid {pid}) {how}; it was restarted "
      f"{restarts} time(s) and max_restarts={max_restarts} is exhausted"
    )
    if error:
      msg += "\n--- worker traceback (tail) ---\n" + error.rstrip()
    super().__init__(msg)


def describe_exitcode(exitcode: int | None) -> str:
  """'is running', 'exited cleanly (exit code 0)', 'exited with exit code 3', 'was killed by signal
  SIGKILL (9)'."""
  if exitcode is None:
    return "is running"
  if exitcode == 0:
    return "exited cleanly (exit code 0)"
  if exitcode > 0:
    return f"exited with exit code {exitcode}"
  try:
    name = signal.Signals(-exitcode).name
  except ValueError:
    name = "signal"
  return f"was killed by signal {name} ({-exitcode})"


# ----------------------------------------------------------------------------------------------
# The worker side.
# ----------------------------------------------------------------------------------------------


def _beat_while_starting(heartbeat: Heartbeat) -> None:
  while not heartbeat.started:
    heartbeat.touch()
    time.sleep(0.5)


def _watch_parent(ppid: int, stop_event, grace: float) -> None:
  while os.getppid() == ppid:
    time.sleep(0.5)
  try:  # the parent is gone: ask everybody to stop, then make sure we exit
    stop_event.set()
  except Exception:  # noqa: BLE001
    pass
  time.sleep(grace)
  os._exit(70)


_GROUP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # sent to every process of a job: the parent reacts


def _worker_main(target, info: WorkerInfo, args, kwargs, err_conn, ppid: int, orphan_grace: float):
  for s in _GROUP_SIGNALS:
    signal.signal(s, signal.SIG_IGN)
  signal.pthread_sigmask(signal.SIG_UNBLOCK, _GROUP_SIGNALS)
  threading.Thread(
    target=_watch_parent, args=(ppid, info.stop_event, orphan_grace), name="parent-watch", daemon=True
  ).start()
  if info.heartbeat is not None:
    threading.Thread(
      target=_beat_while_starting, args=(info.heartbeat,), name="start-up-beat", daemon=True
    ).start()
  try:
    target(info, *args, **kwargs)
  except SystemExit:
    raise
  except BaseException:
    try:
      err_conn.send(traceback.format_exc()[-4000:])
    except Exception:  # noqa: BLE001
      pass
    raise  # multiprocessing prints the traceback to stderr and exits with code 1
  finally:
    err_conn.close()


# ----------------------------------------------------------------------------------------------
# The parent side.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Worker:
  name: str
  index: int
  target: Callable
  args: tuple
  kwargs: dict
  max_restarts: int
  process: Any = None
  err_conn: Any = None
  heartbeat: Heartbeat | None = None
  restarts: int = 0
  finished: bool = False
  last_error: str | None = None
  stalled_s: float | None = None  # killed for a stall after this many silent seconds


class Supervisor:
  """Starts, watches, restarts and stops named worker processes (see the module docstring).

  Args:
    ctx: multiprocessing context (default: spawn; JAX is not fork-safe).
    max_restarts: restarts allowed per worker (override per worker in `add`).
    restart_delay: seconds to wait before a restart.
    join_timeout: default total seconds `shutdown` waits for workers to stop by themselves.
    daemon: start workers as daemon processes (terminated at interpreter exit; they may not
      start processes themselves).
    restart_on_clean_exit: also restart workers that return normally.
    orphan_grace: a worker whose parent died exits after at most this many seconds.
    on_death: `callback(name, exitcode)` after every unexpected death (before a restart).
    stall_timeout: kill (and so restart) a worker alive without progress for this many seconds
      (see "Stalls" in the module docstring); None: no stall detection.
    lock_holder: `() -> pid or None` of the process inside a critical section the workers share
      (e.g. `RolloutQueue.lock_holder`); a stalled worker there is killed first.
    on_stall: `callback(name, pid, silent_s)` when a stalled worker is about to be killed.
  """

  def __init__(
    self,
    ctx=None,
    *,
    max_restarts: int = 3,
    restart_delay: float = 0.0,
    join_timeout: float = 10.0,
    daemon: bool = True,
    restart_on_clean_exit: bool = False,
    orphan_grace: float = 5.0,
    on_death: Callable[[str, int | None], None] | None = None,
    stall_timeout: float | None = None,
    lock_holder: Callable[[], int | None] | None = None,
    on_stall: Callable[[str, int, float], None] | None = None,
  ):
    self._ctx = ctx or multiprocessing.get_context("spawn")
    self._max_restarts = int(max_restarts)
    self._restart_delay = float(restart_delay)
    self._join_timeout = float(join_timeout)
    self._daemon = daemon
    self._restart_on_clean_exit = restart_on_clean_exit
    self._orphan_grace = float(orphan_grace)
    self._on_death = on_death
    self._stall_timeout = None if stall_timeout is None else float(stall_timeout)
    self._lock_holder = lock_holder
    self._on_stall = on_stall
    self._stall_epoch = 0.0  # the last stall kill: the others' silence counts from it
    self.stop_event = StopEvent(self._ctx)
    self._workers: dict[str, _Worker] = {}
    self._lock = threading.RLock()
    self._started = False
    self._shut = False
    self._failure: WorkerFailed | None = None
    self._monitor: threading.Thread | None = None
    self._monitor_stop = threading.Event()
    self._wake_r, self._wake_w = multiprocessing.connection.Pipe(duplex=False)

  # -- set up ----------------------------------------------------------------------------------

  def add(
    self,
    name: str,
    target: Callable,
    args: tuple = (),
    kwargs: dict | None = None,
    max_restarts: int | None = None,
  ) -> None:
    """Register a worker `target(info, *args, **kwargs)` (picklable: a module-level function);
    started by `start()` (or at once, if the supervisor is already running)."""
    with self._lock:
      if name in self._workers:
        raise ValueError(f"duplicate worker name {name!r}")
      if self._shut:
        raise RuntimeError("supervisor is shut down")
      w = _Worker(
        name,
        len(self._workers),
        target,
        tuple(args),
        dict(kwargs or {}),
        self._max_restarts if max_restarts is None else int(max_restarts),
        heartbeat=Heartbeat(self._ctx),
      )
      self._workers[name] = w
      if self._started:
        self._spawn(w)

  def _spawn(self, w: _Worker) -> None:
    r, wconn = self._ctx.Pipe(duplex=False)
    w.heartbeat.reset()
    w.stalled_s = None
    info = WorkerInfo(w.name, w.index, w.restarts, self.stop_event, w.heartbeat)
    p = self._ctx.Process(
      target=_worker_main,
      name=w.name,
      daemon=self._daemon,
      args=(w.target, info, w.args, w.kwargs, wconn, os.getpid(), self._orphan_grace),
    )
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _GROUP_SIGNALS)  # inherited through exec
    try:
      p.start()
    finally:
      signal.pthread_sigmask(signal.SIG_SETMASK, old)
      wconn.close()
    if w.err_conn is not None:
      w.err_conn.close()
    w.process, w.err_conn = p, r
    log.info("started worker %r (pid %d, attempt %d)", w.name, p.pid, w.restarts)

  def start(self) -> None:
    """Start every registered worker."""
    with self._lock:
      if self._started:
        return
      self._started = True
      for w in self._workers.values():
        self._spawn(w)

  # -- state -----------------------------------------------------------------------------------

  @property
  def stop_requested(self) -> bool:
    return self.stop_event.is_set()

  def request_stop(self, *_) -> None:
    """Ask every worker (and the caller's main loop, via `stop_requested`) to stop; safe in a
    signal handler."""
    self.stop_event.set()

  def pids(self) -> dict[str, int | None]:
    with self._lock:
      return {n: (w.process.pid if w.process is not None else None) for n, w in self._workers.items()}

  def restarts(self) -> dict[str, int]:
    with self._lock:
      return {n: w.restarts for n, w in self._workers.items()}

  def alive(self) -> dict[str, bool]:
    with self._lock:
      return {n: bool(w.process is not None and w.process.is_alive()) for n, w in self._workers.items()}

  def exitcodes(self) -> dict[str, int | None]:
    with self._lock:
      return {n: (w.process.exitcode if w.process is not None else None) for n, w in self._workers.items()}

  # -- watching --------------------------------------------------------------------------------

  def _handle_deaths(self) -> list[str]:
    """Restart / record every dead worker; returns event descriptions. Raises WorkerFailed."""
    events = []
    with self._lock:
      if self._failure is not None:
        raise self._failure
      if self._shut or not self._started:
        return events
      for w in self._workers.values():
        p = w.process
        if p is None or w.finished or p.exitcode is None:
          continue
        code = p.exitcode
        if w.err_conn is not None and w.err_conn.poll():
          try:
            w.last_error = w.err_conn.recv()
          except (EOFError, OSError):
            pass
        if self.stop_event.is_set() or (code == 0 and not self._restart_on_clean_exit):
          w.finished = True
          events.append(f"worker {w.name!r} (pid {p.pid}) {describe_exitcode(code)}")
          log.info(events[-1])
          continue
        if self._on_death is not None:
          try:
            self._on_death(w.name, code)
          except Exception:  # noqa: BLE001
            log.exception("on_death callback failed")
        how = (
          describe_exitcode(code)
          if w.stalled_s is None
          else f"stalled (no progress for {w.stalled_s:.0f} s) and was killed"
        )
        if w.restarts >= w.max_restarts:
          w.finished = True
          self._failure = WorkerFailed(w.name, p.pid, code, w.restarts, w.max_restarts, w.last_error, how)
          log.error(str(self._failure))
          raise self._failure
        w.restarts += 1
        msg = f"worker {w.name!r} (pid {p.pid}) {how}; restarting ({w.restarts}/{w.max_restarts})"
        log.warning(msg)
        events.append(msg)
        if self._restart_delay:
          time.sleep(self._restart_delay)
        try:
          p.close()  # reaped: release its sentinel
        except ValueError:
          pass
        if not self._shut and not self.stop_event.is_set():
          self._spawn(w)
    return events

  def _check_stalls(self) -> None:
    """Kill one stalled worker (see "Stalls" in the module docstring); its death is then handled
    as any other."""
    if self._stall_timeout is None:
      return
    with self._lock:
      if self._shut or not self._started or self._failure is not None or self.stop_event.is_set():
        return
      now = time.monotonic()
      silent = {
        w: now - max(w.heartbeat.last, self._stall_epoch)
        for w in self._workers.values()
        if w.process is not None and not w.finished and w.stalled_s is None and w.process.exitcode is None
      }
      stalled = [w for w, t in silent.items() if t > self._stall_timeout]
      if not stalled:
        return
      try:
        holder = self._lock_holder() if self._lock_holder is not None else None
      except Exception:  # noqa: BLE001 - e.g. the queue was detached at shutdown
        holder = None
      holding = [w for w in silent if w.process.pid == holder]
      if holding and holding[0] not in stalled:
        return  # the stalled ones may be waiting for it: it goes on
      w = holding[0] if holding else max(stalled, key=silent.get)
      w.stalled_s, self._stall_epoch = silent[w], now
      pid = w.process.pid
      log.warning(
        "worker %r (pid %d) made no progress for %.0f s (stopped or hung): killing it", w.name, pid, silent[w]
      )
      if self._on_stall is not None:
        try:
          self._on_stall(w.name, pid, silent[w])
        except Exception:  # noqa: BLE001
          log.exception("on_stall callback failed")
      w.process.kill()

  def poll(self) -> list[str]:
    """Handle stalls and deaths without blocking; returns what happened. Raises WorkerFailed."""
    self._check_stalls()
    return self._handle_deaths()

  def wait(self, timeout: float | None = None) -> list[str]:
    """Block until a worker dies (or `timeout` s), handle it; returns what happened. Raises
    WorkerFailed. Stalled workers are killed first."""
    self._check_stalls()
    with self._lock:
      sentinels = [
        w.process.sentinel for w in self._workers.values() if w.process is not None and not w.finished
      ]
    if sentinels:
      multiprocessing.connection.wait(sentinels + [self._wake_r], timeout)
    elif timeout:
      time.sleep(min(timeout, 0.1))
    return self._handle_deaths()

  def start_monitor(self, on_failure: Callable[[WorkerFailed], None] | None = None) -> None:
    """Handle deaths in a background thread (restarts within milliseconds of a death). On
    exhaustion it stores the error (`check()` raises it), calls `on_failure(err)` (default:
    nothing) and stops monitoring; it does not stop the other workers by itself."""
    if self._monitor is not None:
      return

    def loop():
      while not self._monitor_stop.is_set():
        try:
          self.wait(1.0)
        except WorkerFailed as e:
          if on_failure is not None:
            try:
              on_failure(e)
            except Exception:  # noqa: BLE001
              log.exception("on_failure callback failed")
          return
        except Exception:  # noqa: BLE001
          log.exception("supervisor monitor failed")
          time.sleep(0.5)
        with self._lock:
          if self._shut:
            return
        if self._wake_r.poll():
          try:
            self._wake_r.recv()
          except (EOFError, OSError):
            return

    self._monitor = threading.Thread(target=loop, name="supervisor-monitor", daemon=True)
    self._monitor.start()

  def check(self) -> None:
    """Raise the stored WorkerFailed, if any (cheap; call it from the main loop)."""
    if self._failure is not None:
      raise self._failure

  @property
  def failure(self) -> WorkerFailed | None:
    return self._failure

  # -- shutdown --------------------------------------------------------------------------------

  def shutdown(self, timeout: float | None = None) -> dict[str, int | None]:
    """Stop every worker (stop event -> join -> SIGKILL) and return their exit codes.
    Idempotent; never raises WorkerFailed."""
    timeout = self._join_timeout if timeout is None else float(timeout)
    self._monitor_stop.set()
    with self._lock:
      self._shut = True
    try:
      self._wake_w.send(None)
    except (OSError, ValueError):
      pass
    if self._monitor is not None and self._monitor is not threading.current_thread():
      self._monitor.join(timeout=2.0)
    self.stop_event.set()
    with self._lock:
      procs = [(w, w.process) for w in self._workers.values() if w.process is not None]
    deadline = time.monotonic() + timeout
    for _, p in procs:
      p.join(max(0.0, deadline - time.monotonic()))
    for p in [p for _, p in procs if p.is_alive()]:
      log.warning("worker %r (pid %d) did not stop within %.1f s: SIGKILL", p.name, p.pid, timeout)
      p.kill()
      p.join(5.0)
    codes = {}
    for w, p in procs:
      codes[w.name] = p.exitcode
      if w.err_conn is not None:
        w.err_conn.close()
        w.err_conn = None
      try:
        p.close()
      except ValueError:  # still running (unkillable): leave it to the OS
        pass
      w.process = None
    for c in (self._wake_r, self._wake_w):
      c.close()
    return codes

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if not self._shut:
      self.shutdown()


# ----------------------------------------------------------------------------------------------
# Main-process helpers.
# ----------------------------------------------------------------------------------------------


def install_shutdown_handlers(
  request_shutdown: Callable[[], None], signals=(signal.SIGINT, signal.SIGTERM), force_on_second: bool = True
) -> Callable[[], None]:
  """Route SIGINT / SIGTERM in the main process to `request_shutdown()` (e.g. a Supervisor's
  `request_stop`, or a `threading.Event().set`). The first signal only requests the shutdown (the
  main loop notices, writes its final checkpoint, calls `shutdown`); with `force_on_second`, a
  second SIGINT raises KeyboardInterrupt. Call from the main thread. Returns `restore()`, which
  reinstates the previous handlers."""
  count = [0]

  def handler(signum, frame):
    count[0] += 1
    if count[0] > 1 and force_on_second and signum == signal.SIGINT:
      raise KeyboardInterrupt
    print(
      f"\n{signal.Signals(signum).name} received: shutting down"
      + (" (again to force)" if force_on_second else ""),
      file=sys.stderr,
      flush=True,
    )
    request_shutdown()

  previous = {s: signal.signal(s, handler) for s in signals}

  def restore():
    for s, h in previous.items():
      signal.signal(s, h if h is not None else signal.SIG_DFL)

  return restore


def _helper_pids() -> set[int]:
  """Pids of multiprocessing's own helper processes (resource tracker, forkserver)."""
  pids = set()
  try:
    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    if pid:
      pids.add(pid)
  except Exception:  # noqa: BLE001
    pass
  try:
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
      pids.add(pid)
  except Exception:  # noqa: BLE001
    pass
  return pids


def live_children(exclude_helpers: bool = True) -> list:
  """The live (non-zombie) descendants of this process as psutil.Process objects, excluding
  multiprocessing's resource tracker / forkserver unless `exclude_helpers=False`."""
  helpers = _helper_pids() if exclude_helpers else set()
  out = []
  for c in psutil.Process().children(recursive=True):
    try:
      if c.pid in helpers or c.status() == psutil.STATUS_ZOMBIE:
        continue
    except psutil.NoSuchProcess:
      continue
    out.append(c)
  return out
