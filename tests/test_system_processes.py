"""Supervisor: a SIGKILLed worker is detected and restarted within ~2 s; a crashing worker exhausts
its retries with a clear error; a stalled worker (stopped by SIGSTOP) is reported, killed and
restarted within its budget, while a slow start or a worker that never beats is no stall; shutdown
stops well-behaved workers, kills stubborn ones and leaves no child process alive; workers ignore
SIGINT; the main-process signal handlers request a shutdown once and force on the second Ctrl-C;
workers of a parent that was SIGKILLed exit by themselves."""

import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from rtrl_rl.system.processes import (
  StopEvent,
  Supervisor,
  WorkerFailed,
  describe_exitcode,
  install_shutdown_handlers,
  live_children,
)
from rtrl_rl.system.shm import process_alive

CTX = mp.get_context("spawn")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _loop_until_stop(info):
  while not info.stop_event.wait(0.05):
    pass


def _crash(info):
  raise RuntimeError(f"boom in attempt {info.attempt}")


def _ready_loop(info, ready):
  ready.set()
  _loop_until_stop(info)


def _beating(info, stop_first_attempt):
  """Beats every 0.05 s; its first attempt stops itself (SIGSTOP) after 0.3 s if asked."""
  t0 = time.monotonic()
  while not info.stop_event.wait(0.05):
    info.beat()
    if stop_first_attempt and info.attempt == 0 and time.monotonic() - t0 > 0.3:
      os.kill(os.getpid(), signal.SIGSTOP)


def _slow_start(info):
  time.sleep(2.5)  # longer than the stall timeout, before any beat
  _beating(info, False)


def _stops_while_starting(info):
  if info.attempt == 0:
    os.kill(os.getpid(), signal.SIGSTOP)  # before its first beat
  _beating(info, False)


def _stubborn(info, ready):  # never looks at its stop event
  ready.set()
  while True:
    time.sleep(0.05)


def _wait_until(pred, timeout):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if pred():
      return True
    time.sleep(0.02)
  return False


def test_killed_worker_is_restarted_quickly_and_workers_ignore_sigint_and_sigterm():
  """Workers ignore SIGINT and SIGTERM (a terminal's Ctrl-C and SLURM's preemption reach every
  process of the job: the parent stops them in order); a SIGKILLed worker is restarted at once."""
  deaths = []
  sup = Supervisor(CTX, max_restarts=2, on_death=lambda name, code: deaths.append((name, code)))
  try:
    ready = CTX.Event()
    sup.add("actor0", _ready_loop, args=(ready,))
    sup.add("actor1", _loop_until_stop)
    sup.start()
    sup.start_monitor()
    assert ready.wait(20)
    pid0 = sup.pids()["actor0"]
    os.kill(pid0, signal.SIGINT)  # ignored by workers
    os.kill(pid0, signal.SIGTERM)
    time.sleep(0.3)
    assert sup.alive()["actor0"] and sup.pids()["actor0"] == pid0
    t0 = time.monotonic()
    os.kill(pid0, signal.SIGKILL)
    assert _wait_until(lambda: sup.pids()["actor0"] not in (pid0, None), 2.0), "not restarted"
    detected = time.monotonic() - t0
    assert detected < 2.0
    assert deaths == [("actor0", -signal.SIGKILL)]
    assert sup.restarts() == {"actor0": 1, "actor1": 0}
    assert _wait_until(lambda: sup.alive()["actor0"], 20)
    sup.check()  # no failure recorded
  finally:
    codes = sup.shutdown(timeout=5)
  assert codes == {"actor0": 0, "actor1": 0}  # both stopped via the stop event
  assert live_children() == []


def test_retries_exhausted_raise_clear_error():
  sup = Supervisor(CTX, max_restarts=1)
  try:
    sup.add("actor7", _crash)
    sup.start()
    deadline = time.monotonic() + 30
    with pytest.raises(WorkerFailed) as err:
      while time.monotonic() < deadline:
        sup.wait(1.0)
    e = err.value
    assert e.name == "actor7" and e.exitcode == 1 and e.restarts == 1
    msg = str(e)
    assert "'actor7'" in msg and "exit code 1" in msg and "restarted 1 time" in msg
    assert "boom in attempt 1" in msg  # the tail of the worker's traceback
    with pytest.raises(WorkerFailed):
      sup.check()
  finally:
    sup.shutdown(timeout=2)
  assert live_children() == []
  assert describe_exitcode(-9) == "was killed by signal SIGKILL (9)"


def test_stalled_worker_is_reported_killed_and_restarted(caplog):
  caplog.set_level(logging.WARNING, logger="rtrl_rl.system.processes")
  stalls = []
  sup = Supervisor(
    CTX,
    max_restarts=1,
    stall_timeout=1.0,
    on_stall=lambda name, pid, silent_s: stalls.append((name, pid, silent_s)),
  )
  try:
    sup.add("stopper", _beating, args=(True,))
    sup.add("starter", _stops_while_starting)  # stopped while its start-up thread beats for it
    sup.add("slow", _slow_start)  # its start-up thread beats for it
    sup.add("silent", _loop_until_stop)  # never beats: never stalled
    sup.start()
    sup.start_monitor()
    pids = sup.pids()
    assert _wait_until(lambda: sup.restarts()["stopper"] == sup.restarts()["starter"] == 1, 20), (
      "the stalled workers were not restarted"
    )
    assert sorted(s[:2] for s in stalls) == sorted((n, pids[n]) for n in ("starter", "stopper"))
    assert all(s[2] > 1.0 for s in stalls)
    pid = pids["stopper"]
    assert f"worker 'stopper' (pid {pid}) made no progress for" in caplog.text
    assert f"worker 'stopper' (pid {pid}) stalled (no progress for" in caplog.text  # and restarting
    assert _wait_until(lambda: not process_alive(pid), 5)
    time.sleep(3.0)  # "slow" started; the new ones beat
    assert sup.restarts() == {"stopper": 1, "starter": 1, "slow": 0, "silent": 0} and len(stalls) == 2
    assert all(sup.alive().values())
    sup.check()
  finally:
    sup.shutdown(timeout=5)
  assert live_children() == []


def test_a_stall_past_the_restart_budget_fails_naming_it():
  sup = Supervisor(CTX, max_restarts=0, stall_timeout=0.5)
  try:
    sup.add("stopper", _beating, args=(True,))
    sup.start()
    deadline = time.monotonic() + 30
    with pytest.raises(
      WorkerFailed,
      match=r"worker 'stopper' \(pid \d+\) stalled \(no progress for "
      r"\d+ s\) and was killed; it was restarted 0 time",
    ):
      while time.monotonic() < deadline:
        sup.wait(0.5)
  finally:
    sup.shutdown(timeout=2)
  assert live_children() == []


def test_shutdown_kills_stragglers_and_leaves_no_children():
  sup = Supervisor(CTX)
  ready = [CTX.Event(), CTX.Event()]
  sup.add("good", _ready_loop, args=(ready[0],))
  sup.add("stubborn", _stubborn, args=(ready[1],))
  sup.start()
  assert all(r.wait(20) for r in ready)
  pids = list(sup.pids().values())
  assert {c.pid for c in live_children()} == set(pids)
  t0 = time.monotonic()
  codes = sup.shutdown(timeout=3.0)  # ample for "good" to stop on a loaded machine
  assert time.monotonic() - t0 < 10  # "stubborn": 3 s grace, then SIGKILL
  assert codes == {"good": 0, "stubborn": -signal.SIGKILL}
  assert live_children() == []
  assert not any(psutil.pid_exists(p) for p in pids)
  sup.shutdown()  # idempotent


def test_main_process_signal_handlers_request_shutdown_once_then_force():
  requested = threading.Event()
  restore = install_shutdown_handlers(requested.set)
  try:
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait_until(requested.is_set, 1)
    requested.clear()
    with pytest.raises(KeyboardInterrupt):  # a second signal, Ctrl-C: force
      os.kill(os.getpid(), signal.SIGINT)
      for _ in range(50):
        time.sleep(0.01)
  finally:
    restore()
  restore = install_shutdown_handlers(requested.set)
  try:
    os.kill(os.getpid(), signal.SIGINT)
    assert _wait_until(requested.is_set, 1)  # first Ctrl-C: no KeyboardInterrupt
  finally:
    restore()


_ORPHAN_SCRIPT = """
import multiprocessing as mp, os, signal, sys, time
from rtrl_rl.system.processes import Supervisor
from tests.test_system_processes import _loop_until_stop
if __name__ == "__main__":
  sup = Supervisor(mp.get_context("spawn"), orphan_grace=2.0)
  sup.add("w", _loop_until_stop)
  sup.start()
  while not sup.alive()["w"]:
    time.sleep(0.02)
  time.sleep(0.3)
  print(sup.pids()["w"], flush=True)
  os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_of_a_killed_parent_exit_by_themselves():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run(
    [sys.executable, "-c", _ORPHAN_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
  )
  assert out.returncode == -signal.SIGKILL, out.stderr
  worker = int(out.stdout.split()[0])
  assert _wait_until(lambda: not process_alive(worker), 6), "orphaned worker still running"


def test_stop_event_interface():
  ev = StopEvent(CTX)
  t0 = time.monotonic()
  assert not ev.is_set() and ev.wait(0.05) is False and time.monotonic() - t0 >= 0.05
  ev.set()
  assert ev.is_set() and ev.wait() is True and ev.wait(0) is True
  ev.clear()
  assert not ev.is_set()
