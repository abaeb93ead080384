"""The SLURM backend against a real SLURM: a private cluster of two nodes (two slurmd) on this
machine (launch/local_slurm.sh), run by `make test-slurm` (marker `slurm`, not in the default suite).

Each test submits a sweep with the real CLI (`python -m launch.sweep --backend=slurm`), which goes
through submitit's AutoExecutor, sbatch and srun, and checks what the jobs left behind:
  * one run: summary.json with the configured updates, launch.json with SLURM's job id, `--status`
    says finished, SLURM says COMPLETED;
  * preemption: USR2 to the job's processes (what `--signal=USR2@<delay>` sends before the time
    limit) -> TrainJob.checkpoint stops the trainer (final checkpoint), submitit requeues the job,
    the second attempt resumes at the update where the first stopped and finishes;
  * SLURM's own requeue (`scontrol requeue`, as PreemptMode=REQUEUE does): SIGTERM, no USR2 ->
    the trainer writes its final checkpoint, `--status` says queued while the job is PENDING, the
    job restarts, resumes from that checkpoint and finishes;
  * two processes, on two nodes (`nodes=2`) or on one (`tasks_per_node=2`): jax.distributed over
    2 processes (gloo on CPU) with the coordinator on the job's first node; both end with the
    same parameters.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from launch import backends

pytestmark = pytest.mark.slurm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "launch", "local_slurm.sh")
JOB_TIMEOUT_S = 300
TERMINAL = (
  "COMPLETED",
  "FAILED",
  "CANCELLED",
  "TIMEOUT",
  "NODE_FAIL",
  "OUT_OF_MEMORY",
  "BOOT_FAIL",
  "DEADLINE",
)
# A small job: CartPole with an RTRL eLSTM, 1 actor x 16 envs, updates of 16 rollouts x 20 steps.
SMALL = {
  "agent.batch_size": 16,
  "agent.network.hidden_size": 16,
  "system.num_actors": 1,
  "system.envs_per_actor": 16,
  "system.log_every_s": 1.0,
  "system.plot": False,
}
FRAMES_PER_UPDATE = 16 * 20


def _script(*args, env=None):
  return subprocess.run(
    ["bash", SCRIPT, *args], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
  )


@pytest.fixture(scope="module")
def slurm_env():
  """SLURM_CONF of the local cluster, started here unless it runs already (then left running)."""
  started = False
  if _script("status").returncode != 0:
    out = _script("start")
    if out.returncode != 0:
      pytest.skip(f"the local SLURM cluster did not start: {out.stderr.strip()[-2000:]}")
    started = True
  conf = _script("env").stdout.strip().split("=", 1)[1]
  yield {**os.environ, "SLURM_CONF": conf}
  if started:
    _script("stop")


def _nodes(env) -> list[str]:
  out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], env=env, capture_output=True, text=True, timeout=60)
  return sorted(set(out.stdout.split()))


def _write_sweep(tmp_path, name, runs) -> str:
  path = tmp_path / f"{name}.py"
  path.write_text(f"NAME = {name!r}\n\ndef get_sweep():\n  return {runs!r}\n")
  return str(path)


def _sweep_cli(env, sweep_file, root, *flags, timeout=120):
  return subprocess.run(
    [sys.executable, "-m", "launch.sweep", f"--sweep={sweep_file}", f"--root={root}", *flags],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _submit(env, sweep_file, root, *flags) -> str:
  out = _sweep_cli(env, sweep_file, root, "--backend=slurm", *flags)
  assert out.returncode == 0, out.stdout + out.stderr
  ids = re.findall(r"^submitted \S+: slurm job (\S+)$", out.stdout, re.M)
  assert len(ids) == 1, out.stdout
  return ids[0]


def _job_info(env, job_id) -> dict:
  out = subprocess.run(
    ["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True, text=True, timeout=60
  )
  assert out.returncode == 0, out.stderr
  return dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)


def _wait_job(env, job_id, timeout=JOB_TIMEOUT_S) -> dict:
  deadline = time.time() + timeout
  while time.time() < deadline:
    info = _job_info(env, job_id)
    if info["JobState"] in TERMINAL:
      return info
    time.sleep(1)
  subprocess.run(["scancel", job_id], env=env, timeout=60)
  raise AssertionError(f"job {job_id} not done within {timeout} s: {info}")


def _logs(root, sweep, job_id, task=0) -> str:
  folder = os.path.join(root, sweep, ".submitit")
  return "".join(open(os.path.join(folder, f"{job_id}_{task}_log.{ext}")).read() for ext in ("out", "err"))


def _summaries(log: str) -> list[dict]:
  return [
    json.loads(line.split(": ", 1)[1]) for line in log.splitlines() if line.startswith("run finished in ")
  ]


def _status(env, sweep_file, root) -> list[dict]:
  out = _sweep_cli(env, sweep_file, root, "--status", "--json")
  assert out.returncode == 0, out.stdout + out.stderr
  return [json.loads(line) for line in out.stdout.splitlines()]


def test_one_run_sweep_runs_as_a_slurm_job(slurm_env, tmp_path):
  updates = 10
  sweep_file = _write_sweep(
    tmp_path,
    "one",
    [
      {
        "name": "one_seed0",
        "config": "configs/default.py:elstm",
        "overrides": {**SMALL, "agent.total_env_steps": updates * FRAMES_PER_UPDATE, "seed": 0},
        "resources": {"gpus_per_node": 0, "cpus": 1, "time_min": 10},
      }
    ],
  )
  root = str(tmp_path / "runs")
  job_id = _submit(slurm_env, sweep_file, root)
  info = _wait_job(slurm_env, job_id)
  log = _logs(root, "one", job_id)
  assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
  run_dir = os.path.join(root, "one", "one_seed0")
  summary = json.load(open(os.path.join(run_dir, "summary.json")))
  assert summary["updates"] == updates and summary["frames"] == updates * FRAMES_PER_UPDATE
  assert not summary["stopped_early"]
  launch = json.load(open(os.path.join(run_dir, "launch.json")))
  assert launch["backend"] == "slurm" and launch["job_id"] == job_id
  assert backends.job_outcome(launch["submitit_folder"], job_id) == "success"
  rows = _status(slurm_env, sweep_file, root)
  assert [(r["name"], r["state"], r["job_id"]) for r in rows] == [("one_seed0", "finished", job_id)]


LONG_UPDATES = 2000  # ~20 s of updates after ~15 s of compilation, on an idle machine


def _start_long_run(env, tmp_path, sweep):
  """Submits a run of LONG_UPDATES updates and waits until it trains: (sweep file, root, job id,
  run dir)."""
  sweep_file = _write_sweep(
    tmp_path,
    sweep,
    [
      {
        "name": "long_seed0",
        "config": "configs/default.py:elstm",
        # no periodic checkpoints: the second attempt can only resume from the final one
        "overrides": {
          **SMALL,
          "agent.total_env_steps": LONG_UPDATES * FRAMES_PER_UPDATE,
          "system.checkpoint_every_s": 3600.0,
          "seed": 0,
        },
        "resources": {"gpus_per_node": 0, "cpus": 1, "time_min": 30, "signal_delay_s": 60},
      }
    ],
  )
  root = str(tmp_path / "runs")
  job_id = _submit(env, sweep_file, root)
  run_dir = os.path.join(root, sweep, "long_seed0")
  metrics = os.path.join(run_dir, "metrics.jsonl")
  deadline = time.time() + JOB_TIMEOUT_S
  while not (os.path.exists(metrics) and os.path.getsize(metrics)):  # training has started
    assert time.time() < deadline and _job_info(env, job_id)["JobState"] in ("PENDING", "RUNNING")
    time.sleep(0.5)
  return sweep_file, root, job_id, run_dir


def _assert_resumed_and_finished(log, run_dir):
  """Attempt 1 stopped early after its final checkpoint, attempt 2 resumed from exactly that update
  (no periodic checkpoints) and ran to LONG_UPDATES."""
  first, last = _summaries(log)
  assert first["stopped_early"] and 0 < first["updates"] < LONG_UPDATES
  resumed = re.findall(r"resumed from update (\d+)", log)
  assert resumed == [str(first["updates"])], log[-3000:]  # from the final checkpoint of attempt 1
  assert last["updates"] == LONG_UPDATES and last["frames"] == LONG_UPDATES * FRAMES_PER_UPDATE
  assert not last["stopped_early"]
  assert json.load(open(os.path.join(run_dir, "summary.json"))) == last


def test_preempted_job_checkpoints_requeues_and_resumes(slurm_env, tmp_path):
  sweep_file, root, job_id, run_dir = _start_long_run(slurm_env, tmp_path, "preempt")
  assert (
    "#SBATCH --signal=USR2@60"
    in open(os.path.join(root, "preempt", ".submitit", f"{job_id}_submission.sh")).read()
  )
  # what SLURM does `signal_delay_s` before the time limit: USR2 to every process of the job's
  # steps (not to the batch shell)
  subprocess.run(["scancel", "--signal=USR2", job_id], env=slurm_env, check=True, timeout=60)
  info = _wait_job(slurm_env, job_id)
  log = _logs(root, "preempt", job_id)
  assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
  assert info["Restarts"] == "1", info
  assert "preempted; stopping the run for requeue" in log and "attempt 2:" in log
  _assert_resumed_and_finished(log, run_dir)
  assert backends.job_outcome(os.path.join(root, "preempt", ".submitit"), job_id) == "success"
  assert [r["state"] for r in _status(slurm_env, sweep_file, root)] == ["finished"]


def _log_time(log: str, message: str) -> float:
  """The time of submitit's first log line containing `message` (local time, ms)."""
  m = re.search(
    r"^submitit \w+ \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\) - .*" + re.escape(message), log, re.M
  )
  assert m, message
  return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def test_slurm_requeue_by_slurm_itself_resumes_from_the_final_checkpoint(slurm_env, tmp_path):
  """SLURM's own requeue (`scontrol requeue`, what PreemptMode=REQUEUE does for a higher-priority
  job; a time limit without USR2 margin signals the same way): no USR2, SIGCONT + SIGTERM to every
  process of the job, SIGKILL KillWait s later. submitit's wrapper ignores SIGTERM ("Bypassing"),
  the trainer child gets it directly, writes its final checkpoint and exits 0 (`stopped_early`)
  well within KillWait; SLURM starts the job again, which resumes from that checkpoint."""
  config = subprocess.run(
    ["scontrol", "show", "config"], env=slurm_env, capture_output=True, text=True, timeout=60, check=True
  ).stdout
  kill_wait = int(re.search(r"^KillWait\s*=\s*(\d+)", config, re.M).group(1))
  assert kill_wait >= 30, f"KillWait={kill_wait} s: too short for a final checkpoint of a real run"
  sweep_file, root, job_id, run_dir = _start_long_run(slurm_env, tmp_path, "requeue")
  deadline = time.time() + JOB_TIMEOUT_S
  requeued_at = time.time()
  subprocess.run(["scontrol", "requeue", job_id], env=slurm_env, check=True, timeout=60)
  # until SLURM starts it again the job is PENDING with the first attempt's stopped_early summary:
  # `--status` must not call that "stopped" (a relaunch would start a second job on the run)
  summary_path = os.path.join(run_dir, "summary.json")
  while True:
    info = _job_info(slurm_env, job_id)
    assert time.time() < deadline and info["JobState"] in ("RUNNING", "COMPLETING", "PENDING"), info
    if info["JobState"] == "PENDING" and os.path.exists(summary_path):
      rows = _status(slurm_env, sweep_file, root)
      if _job_info(slurm_env, job_id)["JobState"] == "PENDING":  # still waiting: rows are valid
        break
    time.sleep(0.5)
  assert json.load(open(summary_path))["stopped_early"]
  assert [(r["state"], r["detail"]) for r in rows] == [("queued", "slurm PENDING")], rows
  info = _wait_job(slurm_env, job_id)
  log = _logs(root, "requeue", job_id)
  assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
  assert int(info["Restarts"]) >= 1, info
  # the signals: SIGTERM reached the wrapper (ignored) and the trainer (final checkpoint); no USR2
  assert "Bypassing signal SIGTERM" in log and "SIGTERM received: shutting down" in log, log[-3000:]
  assert "preempted; stopping the run for requeue" not in log
  assert "the run was stopped from outside" in log and "attempt 2:" in log
  stopped_s = _log_time(log, "Job completed successfully") - requeued_at  # trainer + wrapper done
  assert stopped_s < kill_wait, f"the first attempt ended {stopped_s:.1f} s after the requeue"
  _assert_resumed_and_finished(log, run_dir)
  assert not os.path.exists(os.path.join(run_dir, backends.FAILED_FILE))
  assert json.load(open(os.path.join(run_dir, "launch.json")))["job_id"] == job_id
  assert backends.job_outcome(os.path.join(root, "requeue", ".submitit"), job_id) == "success"
  assert [r["state"] for r in _status(slurm_env, sweep_file, root)] == ["finished"]


@pytest.mark.parametrize("nodes,tasks_per_node", [(2, 1), (1, 2)], ids=["2nodes", "2tasks"])
def test_two_processes_run_jax_distributed_with_identical_parameters(
  slurm_env, tmp_path, nodes, tasks_per_node
):
  """Two jax.distributed processes (2 CPU devices each, gloo) on 2 nodes x 1 task or 1 node x 2."""
  if len(_nodes(slurm_env)) < nodes:
    pytest.skip(f"the cluster has nodes {_nodes(slurm_env)} (LOCAL_SLURM_NODES=1?)")
  sweep_file = _write_sweep(
    tmp_path,
    "multi",
    [
      {
        "name": "multi_seed0",
        "config": "configs/default.py:elstm",
        "overrides": {
          **SMALL,
          "agent.unroll_length": 10,
          "system.envs_per_actor": 8,
          "agent.total_env_steps": 1600,
          "seed": 0,
        },
        "resources": {
          "nodes": nodes,
          "tasks_per_node": tasks_per_node,
          "gpus_per_node": 0,
          "cpus": 1,
          "time_min": 10,
        },
      }
    ],
  )
  root = str(tmp_path / "runs")
  job_id = _submit(
    slurm_env,
    sweep_file,
    root,
    "--slurm_setup=export XLA_FLAGS=--xla_force_host_platform_device_count=2",
    "--slurm_setup=export JAX_PLATFORMS=cpu",
  )
  info = _wait_job(slurm_env, job_id)
  logs = [_logs(root, "multi", job_id, task) for task in (0, 1)]
  assert info["JobState"] == "COMPLETED" and info["NumTasks"] == "2", logs[0][-3000:] + logs[1][-3000:]
  assert info["NumNodes"] == str(nodes)
  hosts = subprocess.run(
    ["scontrol", "show", "hostnames", info["NodeList"]],
    env=slurm_env,
    capture_output=True,
    text=True,
    timeout=60,
    check=True,
  ).stdout.split()
  assert len(hosts) == nodes
  port = backends.coordinator_port(job_id)
  for task, log in enumerate(logs):
    command = re.search(r"\[launch\] multi_seed0 attempt 1: (.*)", log).group(1)
    assert f"--config.system.coordinator_address={hosts[0]}:{port}" in command
    assert "--config.system.num_processes=2" in command
    assert f"--config.system.process_id={task}" in command
  s0, s1 = (_summaries(log)[-1] for log in logs)
  assert s0["updates"] == s1["updates"] == 10
  assert s0["params_crc32"] == s1["params_crc32"]
  assert json.load(open(os.path.join(root, "multi", "multi_seed0", "summary.json")))["updates"] == 10
