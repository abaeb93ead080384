"""A real actors-backend run (`python -m rtrl_rl.train`, its own process group), as a scheduler and a
debugger treat it: SIGKILL of the whole group leaves its shared memory only until the next queue
is created anywhere on the host; actors stopped with SIGSTOP are reported (log and progress line)
and restarted, and the learner trains on; a stall past the restart budget stops the run with its
final checkpoint."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil

from rtrl_rl.io import read_metrics
from rtrl_rl.system import shm
from rtrl_rl.system.queue import RolloutQueue
from tests._multiprocess import ROOT
from tests.test_trainer import SMALL, _actor_pids, _checkpoint_steps


class _Run:
  """`python -m rtrl_rl.train` in its own process group, its output collected by a thread."""

  def __init__(self, run_dir, *flags):
    self.run_dir = str(run_dir)
    self.proc = subprocess.Popen(
      [
        sys.executable,
        "-m",
        "rtrl_rl.train",
        f"--run_dir={run_dir}",
        *SMALL,
        "--config.agent.total_env_steps=100000000",
        *flags,
      ],
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env={**os.environ, "PYTHONUNBUFFERED": "1"},
      start_new_session=True,
    )
    self.lines = []
    self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
    self._reader.start()

  @property
  def output(self) -> str:
    return "".join(self.lines)

  def wait_for(self, what, timeout=240):
    """Wait until `what()` is truthy (and return it), failing with the output if the run ends."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      got = what()
      if got:
        return got
      assert self.proc.poll() is None, self.output
      time.sleep(0.2)
    raise AssertionError(f"timed out; output:\n{self.output}")

  def updates(self) -> int:
    if not os.path.exists(os.path.join(self.run_dir, "metrics.jsonl")):
      return 0
    rows = read_metrics(self.run_dir)
    return rows[-1]["updates"] if rows else 0

  def finish(self, timeout=120) -> int:
    code = self.proc.wait(timeout)
    self._reader.join(10)
    return code

  def kill(self):
    try:
      os.killpg(self.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    self.finish(60)


def _objects_of(pid):
  return sorted(n for n in os.listdir(shm.SHM_DIR) if n.removeprefix("sem.").startswith(f"rtrl_{pid}_"))


def test_sigkill_of_the_process_group_leaves_no_shared_memory_past_the_next_start(tmp_path):
  run = _Run(tmp_path / "run")
  try:
    run.wait_for(lambda: run.updates() >= 1)
    objects = _objects_of(run.proc.pid)
    # the queue and the parameter store, the queue's two semaphores and the store's lock
    assert [re.sub(r"rtrl_\d+_\d+_\d+_([a-z]+)[0-9a-f]{8}", r"\1", n) for n in objects] == [
      "params",
      "queue",
      "sem.sem",
      "sem.sem",
      "sem.sem",
    ], objects
  finally:
    run.kill()  # SIGKILL to the group: the resource tracker too
  assert _objects_of(run.proc.pid) == objects  # left behind
  with RolloutQueue({"x": ((1,), np.uint8)}, 1):  # what the next run creates first
    assert _objects_of(run.proc.pid) == []


def test_stopped_actors_are_reported_and_restarted_until_their_budget_is_spent(tmp_path):
  run = _Run(tmp_path / "run", "--config.system.stall_timeout_s=3", "--config.system.max_actor_restarts=1")
  try:
    run.wait_for(lambda: run.updates() >= 2)
    stopped = _actor_pids(run.proc)
    assert len(stopped) == 2
    for pid in stopped:  # the learner gets nothing any more
      os.kill(pid, signal.SIGSTOP)
    names = {}
    for pid in stopped:  # each named in a warning, then in a progress line
      names[pid] = run.wait_for(
        lambda: re.search(rf"worker '(actor\d)' \(pid {pid}\) made no progress for \d+ s", run.output), 60
      )[1]
      run.wait_for(lambda: any("| stalled: " in ln and f"{names[pid]} (pid {pid})" in ln for ln in run.lines))
    assert sorted(names.values()) == ["actor0", "actor1"]
    assert all(not psutil.pid_exists(pid) for pid in stopped)
    resumed = run.updates()
    run.wait_for(lambda: run.updates() >= resumed + 3)  # the restarted actors feed the learner
    fresh = [pid for pid in _actor_pids(run.proc) if pid not in stopped]
    assert len(fresh) == 2
    os.kill(fresh[0], signal.SIGSTOP)  # a second stall of that actor: its budget is spent
    assert run.finish() == 1
  finally:
    run.kill()
  out = run.output
  assert re.search(
    rf"worker 'actor\d' \(pid {fresh[0]}\) stalled \(no progress for \d+ s\) and was "
    r"killed; it was restarted 1 time\(s\) and max_restarts=1 is exhausted",
    out,
  ), out
  assert "final checkpoint" in out and _checkpoint_steps(run.run_dir)
  assert _objects_of(run.proc.pid) == []  # a run that stops on an error cleans up
