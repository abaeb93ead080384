"""Launch backends: local processes and SLURM job arrays, both through submitit.

This is the only module of the project that imports submitit.

* `TrainJob` (a `submitit.helpers.Checkpointable`) is what every backend submits: inside the job it
  runs `python -m rtrl_rl.train ... --run_dir=<run_dir>` as a child process and waits for it. On a
  multi-process job it first reads the job's environment (`submitit.JobEnvironment`: hostnames, task
  count, global rank) and appends the `jax.distributed` fields
  `--config.system.coordinator_address=<first node>:<port> --config.system.num_processes=<tasks>
  --config.system.process_id=<rank>` (`distributed_overrides`).
* Several tasks per node (`resources["tasks_per_node"]`, e.g. one process per GPU): task `l` of a
  node gets its own consecutive share of the node's GPUs (CUDA_VISIBLE_DEVICES, `task_gpu_env`).
  On any multi-process SLURM job the child also gets JAX_LOCAL_DEVICE_IDS = all of its GPUs:
  otherwise `jax.distributed.initialize`, seeing SLURM's variables, restricts each process to the
  single GPU numbered SLURM_LOCALID (one GPU of eight with one task per node).
* Preemption / time limit: SLURM signals the job (`--signal=USR2@<delay>`); submitit calls
  `TrainJob.checkpoint()`, which stops the training child with SIGTERM (the trainer writes a final
  checkpoint and exits), and resubmits the same TrainJob (requeue). The requeued job reruns the same
  command on the same run directory, which resumes from the latest checkpoint. The child ignores
  USR2 itself (SLURM may signal every process of the job) so that only the wrapper decides.
  SLURM's own requeue / preemption (`scontrol requeue`, PreemptMode=REQUEUE) and a time limit
  without USR2 send SIGCONT + SIGTERM to every process of the job (SIGKILL KillWait s later):
  submitit's wrapper ignores both, the trainer child writes its final checkpoint and exits 0 with
  `stopped_early`, and this job returns that summary; a requeued job then resumes from it (its
  attempt number counts SLURM_RESTART_COUNT), and `launch.status` reports a job squeue still
  holds as queued / running, not stopped.
  A helper thread waits for the child (`_wait_child`): the USR2 handler runs in the main thread
  while it waits, and a second wait on the same Popen there would deadlock on Popen's lock.
* A run whose child exits with an error leaves `<run_dir>/failed.json` (return code, log path).
  `<run_dir>/launch.json` records the backend, job id and submitit folder of the latest launch.
* `run_local`: submitit's LocalExecutor, at most `max_parallel` runs at a time; with GPUs each run
  gets `resources.gpus_per_node` (default 1) of the `devices` to itself (CUDA_VISIBLE_DEVICES).
* `submit_slurm`: submitit's AutoExecutor(cluster="slurm"); runs with the same resources go into
  one job array (`executor.batch()`), `resources["tasks_per_node"]` tasks per node (default 1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from typing import Any, Mapping, Sequence

import submitit

from launch.sweep import _parse_kv, train_command

LAUNCH_FILE = "launch.json"
FAILED_FILE = "failed.json"
DEFAULT_TIME_MIN = 3 * 24 * 60  # local jobs: effectively no limit; slurm: override per run
DEFAULT_SIGNAL_DELAY_S = 180  # seconds between SLURM's USR2 and the kill
PORT_BASE, PORT_RANGE = 20000, 20000  # coordinator port = PORT_BASE + job_id % PORT_RANGE


# -- the job every backend runs -----------------------------------------------------------------------
def coordinator_port(job_id: str) -> int:
  """A port derived from the job id, so that concurrent multi-node jobs do not collide."""
  digits = "".join(ch for ch in str(job_id) if ch.isdigit())
  value = int(digits) if digits else zlib.crc32(str(job_id).encode())
  return PORT_BASE + value % PORT_RANGE


def distributed_overrides(job_env) -> dict[str, Any]:
  """The `jax.distributed` fields for this task of a job (empty for a single-process job).

  `job_env`: a `submitit.JobEnvironment` (or anything with `num_tasks`, `global_rank`, `hostnames`,
  `raw_job_id`): one process per task; the coordinator is the first node of the job.
  """
  if job_env.num_tasks <= 1:
    return {}
  host = job_env.hostnames[0]
  return {
    "system.coordinator_address": f"{host}:{coordinator_port(job_env.raw_job_id)}",
    "system.num_processes": int(job_env.num_tasks),
    "system.process_id": int(job_env.global_rank),
  }


def task_gpu_env(
  num_tasks: int, local_rank: int, tasks_per_node: int, gpus_per_node: int, visible: str | None
) -> dict[str, str]:
  """Environment for the training child of one task of a SLURM job (empty: nothing to change).

  `visible`: the CUDA_VISIBLE_DEVICES SLURM gave the task (None: unset; then GPUs
  0..gpus_per_node-1). With `tasks_per_node` > 1 the task keeps its consecutive share of them
  (unless SLURM already bound each task to its share, e.g. with --gpus-per-task). A multi-process
  job sets JAX_LOCAL_DEVICE_IDS to every GPU the task keeps: without it jax.distributed.initialize
  detects SLURM and makes only GPU #SLURM_LOCALID visible to the process.
  """
  if num_tasks <= 1 or gpus_per_node <= 0:
    return {}
  ids = [x.strip() for x in (visible or "").split(",") if x.strip()] or [str(i) for i in range(gpus_per_node)]
  env = {}
  share = gpus_per_node // max(1, tasks_per_node)
  if tasks_per_node > 1 and len(ids) != share:
    if len(ids) % tasks_per_node:
      raise ValueError(f"{len(ids)} visible GPUs ({visible!r}) do not split into {tasks_per_node} tasks")
    share = len(ids) // tasks_per_node
    ids = ids[local_rank * share : (local_rank + 1) * share]
    env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
  env["JAX_LOCAL_DEVICE_IDS"] = ",".join(str(i) for i in range(len(ids)))
  return env


def _ignore_usr2() -> None:  # runs in the child between fork and exec
  signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _write_json(path: str, obj: Mapping) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=str)
  os.replace(tmp, path)


class TrainJob(submitit.helpers.Checkpointable):
  """Runs one training run (`argv` without the interpreter) in a child process; requeueable."""

  def __init__(
    self,
    name: str,
    config: str,
    overrides: Mapping[str, Any],
    run_dir: str,
    cwd: str | None = None,
    stop_timeout_s: float = DEFAULT_SIGNAL_DELAY_S - 30,
    env: Mapping[str, str] | None = None,
    tasks_per_node: int = 1,
    gpus_per_node: int = 0,
  ):
    self.name, self.config, self.overrides = name, config, dict(overrides)
    self.run_dir = os.path.abspath(run_dir)
    self.cwd = os.path.abspath(cwd or os.getcwd())
    self.stop_timeout_s = float(stop_timeout_s)
    self.env = dict(env or {})
    self.tasks_per_node, self.gpus_per_node = int(tasks_per_node), int(gpus_per_node)
    self._proc = None
    self._waiter = None
    self._stopping = False  # _stop_child signalled the child (not SLURM)
    self.attempts = 0

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_proc"] = state["_waiter"] = None  # neither pickles (checkpoint() dumps this object)
    state["_stopping"] = False
    return state

  def __setstate__(self, state):
    self.__dict__.update(
      {"tasks_per_node": 1, "gpus_per_node": 0, "_waiter": None, "_stopping": False, **state}
    )

  def job_environment(self):
    try:
      return submitit.JobEnvironment()
    except Exception:  # pylint: disable=broad-except  # not inside a submitit job
      return None

  def command(self, job_env=None) -> list[str]:
    """The exact argv this task runs (with the multi-node fields from `job_env`)."""
    extra = distributed_overrides(job_env) if job_env is not None else {}
    return train_command(self.config, self.overrides, self.run_dir, python=sys.executable, extra=extra)

  def __call__(self) -> dict:
    job_env = self.job_environment()
    rank = job_env.global_rank if job_env is not None else 0
    argv = self.command(job_env)
    os.makedirs(self.run_dir, exist_ok=True)
    failed = os.path.join(self.run_dir, FAILED_FILE)
    if rank == 0 and os.path.exists(failed):
      os.remove(failed)
    self.attempts = self.next_attempt()
    print(f"[launch] {self.name} attempt {self.attempts}: {' '.join(argv)}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
    if job_env is not None:
      env.update(
        task_gpu_env(
          job_env.num_tasks,
          job_env.local_rank,
          self.tasks_per_node,
          self.gpus_per_node,
          os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
      )
    self._proc = subprocess.Popen(argv, cwd=self.cwd, env=env, preexec_fn=_ignore_usr2)
    self._waiter = None
    try:
      rc = self._wait_child()
    except KeyboardInterrupt:  # Ctrl-C reached the child too: let it checkpoint and exit
      self._stop_child(signal.SIGINT)
      raise
    summary_path = os.path.join(self.run_dir, "summary.json")
    if rc == 0 and not self._stopping and _stopped_early(summary_path):
      print(
        f"[launch] {self.name}: the run was stopped from outside (SIGTERM from SLURM: requeue, "
        "preemption or time limit); it resumes from its final checkpoint when SLURM requeues the "
        "job or the sweep is relaunched",
        flush=True,
      )
    if rc != 0:
      if rank == 0:
        log = job_env.paths.stdout if job_env is not None else None
        _write_json(
          failed, {"returncode": rc, "time": time.time(), "log": str(log) if log else None, "command": argv}
        )
      raise RuntimeError(f"run {self.name} exited with code {rc}; see the job log")
    if rank == 0 and os.path.exists(summary_path):
      with open(summary_path) as f:
        return json.load(f)
    return {"returncode": rc}

  def next_attempt(self) -> int:
    """This attempt's number. A job SLURM requeued by itself (`scontrol requeue`, PreemptMode=
    REQUEUE) reruns the pickle of the first submission, whose `attempts` never counted the earlier
    runs: SLURM_RESTART_COUNT does."""
    try:
      restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
      restarts = 0
    return max(self.attempts + 1, restarts + 1)

  def _wait_child(self, timeout: float | None = None) -> int | None:
    """The child's return code, or None while it runs after `timeout` seconds.

    Only a helper thread calls the blocking `Popen.wait`, which holds Popen's waitpid lock while it
    waits; this thread joins that helper. submitit runs `checkpoint()` (which waits for the child
    too) as a signal handler in the main thread, in the middle of __call__'s wait: two waits on one
    Popen in one thread would deadlock on that lock (seen on SLURM: the job hung, no requeue)."""
    if self._waiter is None:
      self._waiter = threading.Thread(target=self._proc.wait, name=f"wait-{self._proc.pid}", daemon=True)
      self._waiter.start()
    self._waiter.join(timeout)
    return None if self._waiter.is_alive() else self._proc.returncode

  def _stop_child(self, sig=signal.SIGTERM) -> int | None:
    """SIGTERM the training child (it writes a final checkpoint) and wait for it, bounded."""
    if self._proc is None:
      return None
    self._stopping = True
    rc = self._wait_child(0)
    if rc is not None:
      return rc
    self._proc.send_signal(sig)
    rc = self._wait_child(self.stop_timeout_s)
    if rc is None:
      self._proc.kill()  # the checkpoint on disk stays restorable (atomic saves)
      rc = self._wait_child()
    return rc

  def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
    """Preempted / timed out: stop the child gracefully and resubmit the same run (it resumes)."""
    print(f"[launch] {self.name}: preempted; stopping the run for requeue", flush=True)
    self._stop_child()
    return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _stopped_early(summary_path: str) -> bool:
  try:
    with open(summary_path) as f:
      return bool(json.load(f).get("stopped_early"))
  except (OSError, ValueError, AttributeError):
    return False


def make_job(run, env: Mapping[str, str] | None = None) -> TrainJob:
  r = run.resources_dict
  stop = max(30, r.get("signal_delay_s", DEFAULT_SIGNAL_DELAY_S) - 30)
  return TrainJob(
    run.name,
    run.config,
    run.overrides_dict,
    run.run_dir,
    stop_timeout_s=stop,
    env=env,
    tasks_per_node=int(r.get("tasks_per_node", 1)),
    gpus_per_node=int(r.get("gpus_per_node", 1)),
  )


def record_launch(run, backend: str, job_id: str, folder: str, **extra: Any) -> None:
  os.makedirs(run.run_dir, exist_ok=True)
  failed = os.path.join(run.run_dir, FAILED_FILE)
  if os.path.exists(failed):
    os.remove(failed)
  _write_json(
    os.path.join(run.run_dir, LAUNCH_FILE),
    {
      "backend": backend,
      "job_id": str(job_id),
      "submitit_folder": os.path.abspath(folder),
      "submitted_at": time.time(),
      "sweep": run.sweep,
      "name": run.name,
      "command": run.command(),
      **extra,
    },
  )


def job_outcome(folder: str, job_id: str) -> str | None:
  """'success' / 'error' from submitit's result file of a job (task 0), None when there is none."""
  try:
    paths = submitit.core.utils.JobPaths(folder, job_id=str(job_id), task_id=0)
    if not paths.result_pickle.exists():
      return None
    outcome, _ = submitit.core.utils.pickle_load(paths.result_pickle)
    return str(outcome)
  except Exception:  # pylint: disable=broad-except
    return None


def job_log(folder: str, job_id: str) -> str:
  return str(submitit.core.utils.JobPaths(folder, job_id=str(job_id), task_id=0).stdout)


# -- local ------------------------------------------------------------------------------------------
def device_groups(devices: Sequence[int] | None, gpus_per_run: int) -> list[tuple[int, ...]]:
  """Disjoint device groups of `gpus_per_run` GPUs ([()] on CPU: unlimited CPU slots)."""
  if not devices or gpus_per_run <= 0:
    return [()]
  n = len(devices) // gpus_per_run
  if n == 0:
    raise ValueError(f"a run needs {gpus_per_run} GPUs; only {list(devices)} are available")
  return [tuple(devices[i * gpus_per_run : (i + 1) * gpus_per_run]) for i in range(n)]


def local_device_note(resources: Mapping, devices: Sequence[int] | None) -> str:
  gpus = int(resources.get("gpus_per_node", 1 if devices else 0))
  if not devices or gpus == 0:
    return "cpu (CUDA_VISIBLE_DEVICES='')"
  groups = device_groups(devices, gpus)
  return f"{gpus} GPU(s) per run from {[list(g) for g in groups]} (CUDA_VISIBLE_DEVICES)"


def _local_executor(folder: str, group: tuple[int, ...], time_min: int):
  ex = submitit.LocalExecutor(folder=folder)
  params = dict(timeout_min=time_min, gpus_per_node=len(group), visible_gpus=tuple(group))
  ex.update_parameters(**params)
  return ex


def run_local(
  runs: Sequence,
  folder: str,
  *,
  max_parallel: int = 0,
  devices: Sequence[int] | None = None,
  wait: bool = True,
  poll_s: float = 1.0,
  out=None,
) -> dict[str, bool | None]:
  """Runs `runs` with submitit's LocalExecutor, `max_parallel` at a time, each on its own device
  group. Returns {run name: True (finished) / False (failed) / None (not waited for)}."""
  out = out or sys.stdout
  gpus = [int(r.resources_dict.get("gpus_per_node", 1 if devices else 0)) for r in runs]
  per_run = max(gpus) if gpus else 0
  groups = device_groups(devices, per_run)
  if max_parallel <= 0:
    max_parallel = len(groups) if groups != [()] else 1
  limit = max_parallel if groups == [()] else min(max_parallel, len(groups))
  free = list(groups) if groups != [()] else [()] * limit
  pending = list(runs)
  active: list[tuple[Any, Any, tuple]] = []
  results: dict[str, bool | None] = {}
  try:
    while pending or active:
      while pending and len(active) < limit and free:
        run = pending.pop(0)
        group = free.pop(0)
        time_min = int(run.resources_dict.get("time_min", DEFAULT_TIME_MIN))
        job = _local_executor(folder, group, time_min).submit(make_job(run))
        record_launch(run, "local", job.job_id, folder, devices=list(group))
        print(
          f"launched {run.name} (local job {job.job_id}, devices {list(group) or 'cpu'}); "
          f"log {job.paths.stdout}",
          file=out,
          flush=True,
        )
        active.append((run, job, group))
      if not wait:
        results.update({r.name: None for r, _, _ in active})
        if pending:
          print(f"--no_wait with {len(pending)} runs beyond --max_parallel: they are not launched", file=out)
        return results
      time.sleep(poll_s)
      for item in list(active):
        run, job, group = item
        if not job.done():
          continue
        active.remove(item)
        free.append(group)
        try:
          summary = job.result()
          ok = True
          print(f"finished {run.name}: {json.dumps(summary)}", file=out, flush=True)
        except Exception as e:  # pylint: disable=broad-except
          ok = False
          print(
            f"FAILED {run.name}: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}; "
            f"log {job.paths.stdout}",
            file=out,
            flush=True,
          )
        results[run.name] = ok
  except KeyboardInterrupt:
    print(
      "interrupted: the runs received Ctrl-C, write their final checkpoints and stop; relaunch "
      "the sweep to resume them",
      file=out,
    )
    raise
  return results


# -- slurm ------------------------------------------------------------------------------------------
def slurm_defaults(args) -> dict[str, Any]:
  """Sweep-wide SLURM settings from the CLI (`--partition`, `--account`, `--slurm_*`)."""
  return {
    "partition": getattr(args, "partition", None),
    "account": getattr(args, "account", None),
    "setup": list(getattr(args, "slurm_setup", []) or []),
    "additional": _parse_kv(getattr(args, "slurm_additional", "") or ""),
  }


def slurm_parameters(
  resources: Mapping[str, Any], sweep: str, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
  """`AutoExecutor.update_parameters` keyword arguments for one run's resources.

  `tasks_per_node` (default 1) `jax.distributed` processes per node, each with
  `gpus_per_node / tasks_per_node` of its GPUs (TrainJob sets them apart); `time_min` defaults to 3
  days, `gpus_per_node` to 1, `cpus` (per task) to 10. Requeue is enabled and the preemption signal
  (USR2) comes `signal_delay_s` (default `DEFAULT_SIGNAL_DELAY_S`) seconds before the time limit.
  """
  d = dict(defaults or {})
  r = dict(resources)
  additional = {"requeue": True}
  for key in ("account", "qos", "constraint"):
    value = r.get(key, d.get(key))
    if value:
      additional[key] = value
  additional.update(d.get("additional") or {})
  additional.update(dict(r.get("slurm") or {}))
  params = {
    "name": f"{sweep}",
    "timeout_min": int(r.get("time_min", DEFAULT_TIME_MIN)),
    "nodes": int(r.get("nodes", 1)),
    "tasks_per_node": int(r.get("tasks_per_node", 1)),
    "gpus_per_node": int(r.get("gpus_per_node", 1)),
    "cpus_per_task": int(r.get("cpus", 10)),
    "slurm_signal_delay_s": int(r.get("signal_delay_s", DEFAULT_SIGNAL_DELAY_S)),
    "slurm_additional_parameters": additional,
  }
  if r.get("mem_gb"):
    params["mem_gb"] = float(r["mem_gb"])
  partition = r.get("partition", d.get("partition"))
  if partition:
    params["slurm_partition"] = partition
  if d.get("setup"):
    params["slurm_setup"] = list(d["setup"])
  return params


def _group_key(params: Mapping) -> str:
  return json.dumps(params, sort_keys=True, default=str)


def slurm_executor(folder: str, params: Mapping[str, Any], array_parallelism: int | None = None):
  ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
  kw = dict(params)
  if array_parallelism:
    kw["slurm_array_parallelism"] = int(array_parallelism)
  ex.update_parameters(**kw)
  return ex


class SubmissionFailed(RuntimeError):
  """sbatch refused a job array (a partition, account or limit the cluster does not accept)."""


def submit_slurm(
  runs: Sequence,
  folder: str,
  *,
  sweep: str,
  defaults: Mapping[str, Any] | None = None,
  array_parallelism: int | None = None,
) -> list[tuple[Any, str]]:
  """Submits `runs` as SLURM job arrays (one array per distinct resource set); returns
  [(run, job id)]. Needs `sbatch` and `srun` on PATH."""
  groups: dict[str, list] = {}
  params_of: dict[str, dict] = {}
  for run in runs:
    params = slurm_parameters(run.resources_dict, sweep, defaults)
    key = _group_key(params)
    groups.setdefault(key, []).append(run)
    params_of[key] = params
  submitted = []
  for key, group in groups.items():
    ex = slurm_executor(folder, params_of[key], array_parallelism)
    try:
      with ex.batch():
        jobs = [ex.submit(make_job(run)) for run in group]
    except (
      submitit.core.utils.FailedSubmissionError,
      submitit.core.utils.FailedJobError,
    ) as e:  # sbatch failed
      reason = " ".join(line.strip() for line in str(e).splitlines() if "error" in line.lower())[:500]
      before = (
        f" ({len(submitted)} run(s) of earlier job arrays were submitted: "
        f"{', '.join(r.name for r, _ in submitted[:5])}{', ...' if len(submitted) > 5 else ''})"
        if submitted
        else ""
      )
      raise SubmissionFailed(
        f"sbatch refused the job array of {len(group)} run(s) ({group[0].name}, ...): "
        f"{reason or str(e).strip().splitlines()[-1]}{before}. Check --partition, --account and the "
        "sweep's resources (time_min, mem_gb, gpus_per_node, cpus) against the cluster's limits"
      ) from None
    for run, job in zip(group, jobs):
      record_launch(run, "slurm", job.job_id, folder)
      submitted.append((run, job.job_id))
  return submitted
