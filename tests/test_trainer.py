"""The distributed trainer end to end: actor processes, queue, learner, checkpoints, faults, hosts.

Each test runs `python -m rtrl_rl.train` in a subprocess, as a user would.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from rtrl_rl.io import read_metrics
from rtrl_rl.io import run_dir as run_dir_lib
from rtrl_rl.io.checkpoint import Checkpointer
from rtrl_rl.system import trainer
from tests._multiprocess import ROOT, device_env, free_port

SMALL = [  # a small, fast job: CartPole with an RTRL eLSTM, 2 actors x 8 envs
  "--config=configs/default.py:elstm",
  "--config.env.id=memory/cartpole",
  "--config.agent.unroll_length=10",
  "--config.agent.batch_size=16",
  "--config.system.envs_per_actor=8",
  "--config.system.num_actors=2",
  "--config.agent.network.hidden_size=16",
  "--config.system.log_every_s=1",
  "--config.system.plot=False",
]


def _train(run_dir, *flags, env=None, **kw):
  return subprocess.Popen(
    [sys.executable, "-m", "rtrl_rl.train", f"--run_dir={run_dir}", *SMALL, *flags],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    **kw,
  )


def _summary(output: str) -> dict:
  line = [ln for ln in output.splitlines() if ln.startswith("run finished in ")][-1]
  return json.loads(line.split(": ", 1)[1])


def _wait_for_updates(run_dir, n, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    rows = read_metrics(run_dir) if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) else []
    if rows and rows[-1]["updates"] >= n:
      return rows
    assert proc.poll() is None, proc.communicate()[0]
    time.sleep(0.5)
  raise AssertionError(f"no {n} updates within {timeout} s")


def _actor_pids(proc):
  """The actor processes of a trainer (its spawned children that run actor_main)."""
  pids = []
  for child in psutil.Process(proc.pid).children(recursive=True):
    try:
      if "spawn_main" in " ".join(child.cmdline()) and "resource_tracker" not in " ".join(child.cmdline()):
        pids.append(child.pid)
    except psutil.NoSuchProcess:
      pass
  return pids


def _checkpoint_steps(run_dir):
  d = os.path.join(run_dir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _alive(pids):
  return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_end_to_end_learns_restarts_a_killed_actor_and_resumes_then_sigterm_stops_gracefully(tmp_path):
  """One run (one trainer start fewer than a test each): a SIGKILLed actor is restarted and the run
  goes on, learns and exits cleanly at its budget. Restarted on its directory with a larger budget,
  the run resumes with its counters continuing; then SIGTERM to the whole process group (as SLURM's
  preemption sends it to every process of the job): the actors ignore it and the trainer stops
  them in order, with no restart, and writes its final checkpoint."""
  run_dir = str(tmp_path / "run")
  proc = _train(run_dir, "--config.agent.total_env_steps=400000", "--config.agent.learning_rate=2e-3")
  rows = _wait_for_updates(run_dir, 3, proc)
  victim = _actor_pids(proc)[0]
  os.kill(victim, signal.SIGKILL)  # an actor dies: it is restarted
  deadline = time.time() + 120
  while len(actors := _actor_pids(proc)) != 2 or victim in actors:
    assert time.time() < deadline and proc.poll() is None, "the killed actor was not restarted"
    time.sleep(0.2)
  _wait_for_updates(run_dir, rows[-1]["updates"] + 30, proc)  # the restarted actor feeds the learner
  actors = _actor_pids(proc)
  assert len(actors) == 2 and victim not in actors
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  assert out.count("restarting") == 1, out[-3000:]  # the SIGKILL's
  summary = _summary(out)
  assert summary["frames"] >= 400000 and not summary["stopped_early"]
  rows = [r for r in read_metrics(run_dir) if r["episodes"] > 0]
  first, last = rows[0]["episode_return"], rows[-1]["episode_return"]
  # random CartPole play lasts ~22 steps; the RTRL agent must clearly improve on it
  assert last > max(2 * first, 60), (first, last)
  assert _checkpoint_steps(run_dir)[-1] == summary["updates"]
  assert os.path.exists(os.path.join(run_dir, "config.json"))
  assert "| frames" in out and "steps/s" in out and "updates/s" in out  # the progress line
  assert not _alive(actors)

  # restarting on the same directory resumes with the counters continuing; SIGTERM stops it
  proc = _train(
    run_dir, "--config.agent.total_env_steps=100000000", "--accept_config_changes", start_new_session=True
  )
  _wait_for_updates(run_dir, summary["updates"] + 3, proc)
  actors = _actor_pids(proc)
  assert len(actors) == 2
  os.killpg(proc.pid, signal.SIGTERM)  # graceful stop
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert f"resumed from update {summary['updates']}" in out, out[-3000:]
  assert "restarting" not in out, out[-3000:]  # the actors ignored the SIGTERM
  resumed = _summary(out)
  assert resumed["stopped_early"] and resumed["updates"] >= summary["updates"] + 3
  assert resumed["frames"] - summary["frames"] == (resumed["updates"] - summary["updates"]) * 160
  assert _checkpoint_steps(run_dir)[-1] == resumed["updates"]  # final checkpoint
  time.sleep(0.5)
  assert not _alive(actors)  # no orphans


def test_actor_death_after_its_restarts_stops_the_run_with_a_checkpoint(tmp_path):
  run_dir = str(tmp_path / "run")
  proc = _train(run_dir, "--config.agent.total_env_steps=100000000", "--config.system.max_actor_restarts=0")
  _wait_for_updates(run_dir, 3, proc)
  t0 = time.time()
  os.kill(_actor_pids(proc)[0], signal.SIGKILL)
  out, _ = proc.communicate(timeout=120)
  assert time.time() - t0 < 30  # detected within seconds
  assert proc.returncode == 1, out
  assert "error:" in out and "actor" in out and "checkpoint" in out
  # the supervisor names the signal (a kill inside the queue's critical section is repaired by the
  # queue, tests/test_system_queue.py, so the supervisor sees an ordinary death)
  assert "SIGKILL" in out
  assert _checkpoint_steps(run_dir)


def test_bad_config_fails_before_any_compute(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "rtrl_rl.train",
      f"--run_dir={tmp_path}/run",
      *SMALL,
      "--config.agent.network.cell=gru",
      "--config.env.id=memory/cartpole-maskd",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 2
  assert "network.cell" in out.stderr or "env.id" in out.stderr
  assert "env.id='memory/cartpole-maskd'" in out.stderr and "memory/cartpole-masked" in out.stderr
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.skipif(
  any(d.platform == "gpu" for d in __import__("jax").local_devices()),
  reason="checks the message of a host without a GPU",
)
def test_gpu_actors_on_a_host_without_a_gpu_fail_naming_the_fix(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "rtrl_rl.train",
      f"--run_dir={tmp_path}/run",
      *SMALL,
      "--config.system.actor_device=gpu",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 2, out.stderr[-3000:]
  assert "JAX sees no local GPU" in out.stderr and "--config.system.actor_device=cpu" in out.stderr
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


# the default suite checks the same on fewer processes: tests/test_parallel.py (gloo),
# tests/test_anakin_parallel.py (two processes, the trainer)
@pytest.mark.long
def test_two_hosts_keep_identical_parameters(tmp_path):
  """Two processes x 2 CPU devices (gloo on 127.0.0.1): the whole system, a few updates."""
  port = free_port()
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
  procs = [
    _train(
      str(tmp_path / "run"),
      "--config.agent.total_env_steps=1600",
      "--config.system.num_actors=1",
      "--config.system.num_processes=2",
      f"--config.system.process_id={i}",
      f"--config.system.coordinator_address=127.0.0.1:{port}",
      env=env,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  s0, s1 = (_summary(o) for o in outs)
  assert s0["updates"] == s1["updates"] == 10
  assert s0["params_crc32"] == s1["params_crc32"]


# the default suite kills trainers with SIGKILL in tests/test_run_dir_trainer.py (anakin) and
# tests/test_run_shm_stall.py (actors, shared memory)
@pytest.mark.long
def test_sigkill_loses_at_most_the_work_since_the_last_checkpoint(tmp_path):
  run_dir = str(tmp_path / "run")
  proc = _train(run_dir, "--config.agent.total_env_steps=100000000", "--config.system.checkpoint_every_s=1")
  _wait_for_updates(run_dir, 3, proc)
  deadline = time.time() + 60
  while len(_checkpoint_steps(run_dir)) < 2 and time.time() < deadline:
    time.sleep(0.2)
  actors = _actor_pids(proc)
  proc.kill()  # SIGKILL: no final checkpoint
  proc.communicate(timeout=60)
  saved = _checkpoint_steps(run_dir)[-1]
  deadline = time.time() + 30  # orphaned actors notice and exit by themselves
  while _alive(actors):
    assert time.time() < deadline, "orphaned actors did not exit"
    time.sleep(0.5)

  proc = _train(
    run_dir,
    f"--config.agent.total_env_steps={(saved + 2) * 160}",
    "--config.system.checkpoint_every_s=1",
    "--accept_config_changes",
  )
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  resumed = _summary(out)
  assert resumed["updates"] == saved + 2 and resumed["frames"] == (saved + 2) * 160
  rows = read_metrics(run_dir)
  assert rows[-1]["updates"] == saved + 2


def test_resuming_a_differently_shaped_run_fails_naming_the_fix(tmp_path):
  """A run directory whose checkpoint has another shape (another config) is not resumed: the
  trainer exits 2 before training, saying what to do; the checkpoint is untouched."""
  run_dir = str(tmp_path / "run")
  ckpt = trainer._Checkpoints(run_dir, 2, {})
  ckpt.save({"w": np.zeros(3, np.float32)}, {"updates": 7})
  ckpt.plan = run_dir_lib.Plan(step=7)
  with pytest.raises(trainer.CheckpointMismatch, match="another --run_dir"):
    ckpt.restore({"w": np.zeros(4, np.float32)})
  state, meta = ckpt.restore({"w": np.ones(3, np.float32)})
  assert meta["updates"] == 7 and not state["w"].any()
  ckpt.close()
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "rtrl_rl.train",
      f"--run_dir={run_dir}",
      "--config=configs/rtu_popgym.py",
      "--config.env.id=jax/cue-memory",
      "--config.system.backend=anakin",
      "--config.agent.num_envs=2",
      "--config.agent.rollout_length=8",
      "--config.agent.num_minibatches=2",
      "--config.agent.minibatch_size=8",
      "--config.agent.network.hidden_size=4",
      "--accept_config_changes",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert out.returncode == 2, out.stderr[-3000:]
  assert "error:" in out.stderr and "cannot be resumed" in out.stderr and "--run_dir" in out.stderr
  assert _checkpoint_steps(run_dir) == [7]
  assert not os.path.exists(os.path.join(run_dir, "config_changes.jsonl"))  # nothing recorded
  # the actors backend (its queue is made before the restore): refused the same way
  proc = _train(run_dir, "--accept_config_changes")
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2 and "cannot be resumed" in out, out[-3000:]
  assert _checkpoint_steps(run_dir) == [7]


SYNC = [  # PPO with an RTRL RTU on a POPGym task (host envs, backend "sync"): 8 envs x 8 steps
  sys.executable,
  "-m",
  "rtrl_rl.train",
  "--config=configs/rtu_popgym.py:env_family=numpy",
  "--config.system.plot=False",
  "--config.agent.num_envs=8",
  "--config.agent.rollout_length=8",
  "--config.agent.num_epochs=1",
  "--config.agent.num_minibatches=2",
  "--config.agent.minibatch_size=32",
  "--config.agent.network.hidden_size=8",
  "--config.agent.network.mlp_hidden_sizes=(8,)",
  "--config.agent.network.head_hidden_sizes=(8,)",
]


def test_sync_ppo_on_host_envs_is_data_parallel_and_resumes_on_another_device_count(tmp_path):
  """Backend "sync" (the RTU paper's PPO on POPGym / MuJoCo): on 2 devices the update is
  data-parallel, metrics and a checkpoint are written; the same directory resumes on 1 device
  (the checkpoint holds the learner once and the normalisation statistics) and continues the
  counters with new parameters."""
  run_dir = str(tmp_path / "run")

  def train(devices, iterations):
    out = subprocess.run(
      [
        *SYNC,
        f"--run_dir={run_dir}",
        f"--config.agent.total_env_steps={iterations * 64}",
        "--accept_config_changes",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
      env=device_env(devices),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr

  first = train(2, 2)
  assert "PPO update data-parallel over 2 local devices" in first
  assert _summary(first)["updates"] == 2 and _checkpoint_steps(run_dir) == [2]
  rows = read_metrics(run_dir)
  assert rows[-1]["frames"] == 128 and np.isfinite(rows[-1]["loss"])
  resumed = train(1, 3)
  assert "data-parallel" not in resumed
  assert _summary(resumed)["updates"] == 3 and _summary(resumed)["frames"] == 192
  assert _summary(resumed)["params_crc32"] != _summary(first)["params_crc32"]


def test_a_process_lost_from_a_two_host_run_stops_the_other(tmp_path):
  """SIGKILL process 1 of two mid-run. Process 0 stops within seconds, whichever way it learns of the
  loss: its collective fails (then it exits 1 with our message naming the newest checkpoint and how
  to resume) or, when the collective just waits, jax.distributed's heartbeat timeout
  (`system.heartbeat_timeout_s`, 5 s here) terminates it with JAX's message that another process
  died. Either way its actors exit and the newest checkpoint is intact."""
  run_dir = str(tmp_path / "run")
  port = free_port()
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
  procs = [
    _train(
      run_dir,
      "--config.agent.total_env_steps=100000000",
      "--config.system.checkpoint_every_s=1",
      "--config.system.num_actors=1",
      "--config.system.num_processes=2",
      "--config.system.heartbeat_timeout_s=5",
      f"--config.system.process_id={i}",
      f"--config.system.coordinator_address=127.0.0.1:{port}",
      env=env,
    )
    for i in range(2)
  ]
  _wait_for_updates(run_dir, 3, procs[0])
  actors = _actor_pids(procs[0])
  procs[1].kill()
  procs[1].communicate(timeout=60)
  start = time.time()
  out, _ = procs[0].communicate(timeout=240)
  stopped_after = time.time() - start
  print(
    f"process 0 stopped {stopped_after:.1f} s after process 1 was killed, exit code {procs[0].returncode}"
  )
  assert stopped_after < 60, f"process 0 took {stopped_after:.0f} s to stop"
  steps = _checkpoint_steps(run_dir)
  if procs[0].returncode == 1:  # the collective failed
    error = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert error and "processes of this run failed" in error[-1] and "Restart every process" in error[-1]
    assert f"checkpoint (update {steps[-1]}) is in" in error[-1], error[-1]
  else:  # the heartbeat timeout
    assert procs[0].returncode == -signal.SIGABRT, out[-3000:]
    assert "another task died" in out, out[-3000:]
  deadline = time.time() + 30
  while _alive(actors):
    assert time.time() < deadline, "actors outlived their trainer"
    time.sleep(0.5)
  with Checkpointer(os.path.join(run_dir, "checkpoints")) as ckpt:
    step, _, meta = ckpt.restore_latest()
  assert step == steps[-1] == meta["updates"] >= 1


BRAX_PPO = [  # PPO with an RTRL RTU on Brax's Reacher POMDP on the anakin loop: 1 env x 64 steps
  sys.executable,
  "-m",
  "rtrl_rl.train",
  "--config=configs/rtu_reacher_pomdp.py:core=rtu_linear",
  "--config.system.plot=False",
  "--config.agent.rollout_length=64",
  "--config.agent.num_minibatches=1",
  "--config.agent.network.hidden_size=16",
]


@pytest.mark.long
def test_anakin_ppo_on_brax_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
  """The whole anakin state (the Brax physics state included) is checkpointed: 2 iterations, then
  resumed to 3 on the same run dir, ends with bitwise the parameters of 3 iterations in one go."""

  def train(run_dir, iterations):
    out = subprocess.run(
      [
        *BRAX_PPO,
        f"--run_dir={run_dir}",
        "--accept_config_changes",
        f"--config.agent.total_env_steps={iterations * 64}",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return _summary(out.stdout + out.stderr)

  assert train(tmp_path / "a", 2)["updates"] == 2
  resumed = train(tmp_path / "a", 3)
  straight = train(tmp_path / "b", 3)
  assert resumed["updates"] == straight["updates"] == 3
  assert resumed["params_crc32"] == straight["params_crc32"]
