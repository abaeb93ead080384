"""The training loop of one process: actors -> queue -> data-parallel learner -> parameters back.

    summary = trainer.run(config, run_dir)

Backend "actors" (IMPALA on any environment): K actor processes per host (system/actors.py) step
their environments and put rollouts into a shared-memory queue; the learner takes
`batch_size / (envs_per_actor * num_processes)` records per update, assembles the global batch over
all devices of all processes (rtrl_rl/parallel.py), runs the jitted update, and publishes the new
parameters with their version. Backend "anakin" (JAX environments, IMPALA or PPO): the whole
act-and-learn iteration is one jitted function (system/anakin.py), data-parallel over the local
devices, or over all devices of all processes in a multi-host run. Backend "sync" (PPO on host
environments, e.g. MuJoCo POMDP or POPGym): one process acts for a rollout, then updates.

The run directory holds `config.json` (resolved config), `metrics.jsonl` + `tb/` (process 0), and
`checkpoints/` (orbax, atomic; each with the run's config). The run owns it (io/run_dir.py: a lock,
and the decision to resume, refuse or start over, taken before anything in it changes); a run
restarted on the same directory resumes from its newest intact checkpoint with its counters.
SIGINT/SIGTERM stop the run cleanly: actors are shut down, a final checkpoint is written, no
process is left behind. A dead actor, or a live one that delivers nothing for
`system.stall_timeout_s`, is restarted (bounded); when its restarts are exhausted the run stops
with a final checkpoint and an error naming the actor. A failed write (full disk, read-only) stops
the run with one paragraph; the last good checkpoint stays intact.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import multiprocessing
import os
import time
import zlib
from typing import Any, Callable

import jax
import numpy as np

from rtrl_rl import experiment
from rtrl_rl.agents import registry
from rtrl_rl.io import MetricsWriter, Progress
from rtrl_rl.io import run_dir as run_dirs
from rtrl_rl.system import processes
from rtrl_rl.system.param_store import ParamStore
from rtrl_rl.system.queue import QueueBroken, RolloutQueue

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
  """The run stopped on an error; its message says which checkpoint it resumes from."""


def _first_line(error: BaseException) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _lost_process(error: BaseException) -> RuntimeError:
  """A computation across the processes of a multi-host run failed (e.g. a gloo/NCCL collective
  whose peer died): one of the processes stopped or cannot be reached."""
  return RuntimeError(
    f"a computation across the {jax.process_count()} processes of this run failed "
    f"({_first_line(error)}), so one of them has probably stopped: see the other processes' logs. "
    "Restart every process with the same command to resume"
  )


def params_crc32(params) -> int:
  """A checksum of the parameters' bytes (compares replicas across processes and runs)."""
  crc = 0
  for leaf in jax.tree.leaves(params):
    crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).tobytes(), crc)
  return crc


def _any_process(flag: bool) -> bool:
  """True on every process if `flag` is true on any (keeps multi-host runs in lockstep)."""
  return _any_process_each([flag])[0]


def _any_process_each(flags: list[bool]) -> list[bool]:
  """`_any_process` of each flag, in one collective."""
  if jax.process_count() == 1:
    return [bool(f) for f in flags]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32))  # [processes, flags]
  return [bool(f) for f in np.any(np.reshape(gathered, (-1, len(flags))), axis=0)]


class _StopRequest:
  """`requested` turns true on SIGINT / SIGTERM (`processes.install_shutdown_handlers`: a second
  Ctrl-C forces) until `uninstall()` reinstates the previous handlers."""

  def __init__(self):
    self.requested = False
    self.uninstall = processes.install_shutdown_handlers(self._request)

  def _request(self) -> None:
    self.requested = True


class CheckpointMismatch(ValueError):
  """The run directory's checkpoint does not fit this run (written with another config)."""


class _Checkpoints:
  """Learner state + counters <-> orbax checkpoints (host copies; process 0 writes). Each checkpoint's
  metadata holds the counters, the run's config and whether the run ended with it (`finished`)."""

  def __init__(self, run_dir: str, keep: int, config_json: dict):
    from rtrl_rl.io.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top

    self._dir = os.path.join(run_dir, "checkpoints")
    self._ckpt = Checkpointer(
      self._dir,
      max_to_keep=keep,
      async_save=False,
      set_aside_directory=os.path.join(run_dir, run_dirs.SET_ASIDE_DIR),
    )
    self._config = config_json
    self._run_dir = run_dir
    self.plan = run_dirs.Plan(step=None)  # the run directory's plan (`run`), applied on restore
    self._applied = False
    self._end: tuple[str, int] | None = None
    self.write_error: str | None = None  # a failed write (full disk, ...), described for the user

  @property
  def checkpointer(self):
    return self._ckpt

  def finish_at(self, counter: str, total: int) -> None:
    """The run ends when `counters[counter] >= total` (recorded as `finished` in its checkpoint)."""
    self._end = (counter, total)

  @property
  def resume_step(self) -> int | None:
    return self.plan.step

  def _apply_plan(self) -> None:
    """Prepares the run directory (process 0) once the state was restored or built."""
    if not self._applied and self._ckpt.is_primary:
      run_dirs.apply_plan(self._run_dir, self._config, self._ckpt, self.plan)
    self._applied = True

  def restore(self, like, relayout: Callable[[dict, Any], Any] | None = None):
    """`(state, metadata)` of the plan's checkpoint shaped like `like`, or None when there is none;
    then the run directory is prepared (`io.run_dir.apply_plan`): not when the restore fails.

    relayout: `(leaves by tree path, host copy of like) -> state` for a checkpoint of the same run
      written on another number of devices (raises ValueError when it is not); tried when the
      checkpoint does not fit `like` as it is.
    Raises CheckpointMismatch when it was written by a run of another shape."""
    restored = self._restore(like, relayout)
    self._apply_plan()
    return restored

  def _restore(self, like, relayout):
    from rtrl_rl import parallel  # pylint: disable=g-import-not-at-top
    from rtrl_rl.io.checkpoint import CheckpointStructureError  # pylint: disable=g-import-not-at-top

    if self.resume_step is None:
      return None
    host_like = parallel.fetch(like)
    try:
      return self._ckpt.restore(self.resume_step, host_like)
    except CheckpointStructureError as e:
      problem = str(e)
      if relayout is not None:
        leaves, metadata = self._ckpt.restore(self.resume_step)
        try:
          state = relayout(leaves, host_like)
        except ValueError as e2:
          problem = f"{problem} (nor is it this run on another number of devices: {e2})"
        else:
          log.info("the checkpoint was written on another number of devices: restored onto these")
          return state, metadata
      raise CheckpointMismatch(
        f"{self._dir} holds a checkpoint of a differently shaped run, so it cannot be resumed: "
        f"{problem}. Resume with the config it was written with, or start a new run with another "
        "--run_dir"
      ) from None

  def save(self, state, counters: dict) -> None:
    """Saves (process 0); a failed write (full disk, read-only, ...) raises `RunFailed` describing it
    (the last good checkpoint stays intact: orbax commits a step only when all of it is written)."""
    from rtrl_rl import parallel  # pylint: disable=g-import-not-at-top

    self._apply_plan()
    finished = self._end is not None and counters[self._end[0]] >= self._end[1]
    try:
      self._ckpt.save(
        int(counters["updates"]),
        parallel.fetch(state),
        dict(counters, config=self._config, finished=finished),
        wait=True,
      )
    except Exception as e:  # pylint: disable=broad-except
      disk = run_dirs.disk_error(e)
      if disk is None:
        raise
      self._ckpt.remove_failed_saves()
      raise self.write_failed(disk, f"the checkpoint of update {counters['updates']}", self._dir) from None

  def write_failed(self, disk: OSError, what: str, where: str) -> "RunFailed":
    """A failed write (full disk, read-only, ...) of `what` in `where`, kept as `write_error`: the
    RunFailed to raise, naming the last good checkpoint."""
    latest = self._ckpt.latest_step()
    self.write_error = run_dirs.describe_write_failure(
      disk,
      what,
      where,
      f"The last good checkpoint (update {latest}) is intact in {self._dir}"
      if latest is not None
      else "No checkpoint of this run was written yet",
    )
    return RunFailed(self.write_error)

  def save_final(self, state, counters: dict) -> str:
    """The final checkpoint (also after an error or a signal); returns where the run resumes from.
    A state lost with a failed computation (a collective whose peer died, a device error) cannot
    be read, so nothing is written and the newest periodic checkpoint stays the latest; after a
    failed write nothing more is tried (`write_error` says what happened)."""
    latest = self._ckpt.latest_step()
    newest = (
      f"the newest checkpoint (update {latest}) is in {self._dir}"
      if latest is not None
      else f"{self._dir} holds no checkpoint"
    )
    if self.write_error is not None:
      return newest
    try:
      self.save(state, counters)
      return f"the final checkpoint (update {counters['updates']}) is in {self._dir}"
    except RunFailed:
      return newest
    except jax.errors.JaxRuntimeError as e:
      log.error(
        "no final checkpoint: the learner state was lost with a failed computation (%s)", _first_line(e)
      )
      return (
        f"no final checkpoint could be written (the state was lost with the failed computation); {newest}"
      )

  def close(self):
    try:
      self._ckpt.close()
    except Exception as e:  # pylint: disable=broad-except
      if self.write_error is None:
        raise
      log.warning("closing the checkpointer after a failed write: %s", _first_line(e))


def prepare(config) -> None:
  """Validate `config` (ExperimentConfigError / ValueError naming the fields) and, for a multi-host
  run, join jax.distributed: after the system fields are checked and before the environment is
  (describing a JAX environment starts JAX's backend, which must come after joining)."""
  s = config.system
  if s.num_processes > 1:
    experiment.validate(config, check_env=False)
    from rtrl_rl import parallel  # pylint: disable=g-import-not-at-top

    parallel.initialize_distributed(
      s.coordinator_address, s.num_processes, s.process_id, heartbeat_timeout_s=s.heartbeat_timeout_s
    )
  experiment.validate(config)


def run(
  config,
  run_dir: str,
  *,
  prepared: bool = False,
  start_over: bool = False,
  accept_config_changes: bool = False,
) -> dict[str, Any]:
  """Train per `config` in `run_dir`; returns a summary dict (final counters and recent return).

  prepared: `prepare(config)` was called already (`python -m rtrl_rl.train` does, to report a bad
    config before anything else).
  start_over, accept_config_changes: see `io.run_dir.plan_run`.
  The run owns `run_dir` (an exclusive lock, process 0) until it returns. A run whose newest
  checkpoint ends it (same config) returns that checkpoint's summary with `already_finished` and
  changes nothing. Raises run_dir.RunDirError (another trainer holds the directory; its checkpoints
  are all damaged or of another config) before anything in the directory changes."""
  if not prepared:
    prepare(config)
  config_json = json.loads(config.to_json_best_effort())
  if config.system.backend == "actors":
    from rtrl_rl.system import actors  # pylint: disable=g-import-not-at-top

    actors.actor_envs_for_host(config.system.actor_device, config.system.num_actors)  # no GPU: fails
  lock = run_dirs.RunLock(run_dir) if jax.process_index() == 0 else None
  try:
    ckpt = _Checkpoints(run_dir, config.system.keep_checkpoints, config_json)
    plan = _agreed_plan(run_dir, config_json, ckpt, start_over, accept_config_changes)
    if plan.finished:
      return _already_finished(run_dir, plan.step)
    if lock is not None:
      lock.name_holder()
    if plan.changes:
      log.warning(
        "resuming with %d changed config field(s) (recorded in %s): %s",
        len(plan.changes),
        run_dirs.CHANGES_FILE,
        ", ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in plan.changes.items()),
      )
    ckpt.plan = plan
    algo = registry.get(config.algo)
    if algo.own_loop:
      return _run_own_loop(algo, config, run_dir, ckpt)
    if config.system.backend == "anakin":
      return _run_iterations(config, run_dir, _anakin_iterations(algo, config), ckpt)
    if config.system.backend == "sync":
      mesh = _loop_mesh(f"{algo.title} update", algo.split_sizes(config.agent))
      return _run_iterations(config, run_dir, algo.host_loop(config, mesh), ckpt)
    return _run_actors(algo, config, run_dir, ckpt)
  finally:
    if lock is not None:
      lock.release()


def _agreed_plan(
  run_dir: str, config_json: dict, ckpt: "_Checkpoints", start_over: bool, accept_config_changes: bool
):
  """Process 0 decides (`io.run_dir.plan_run`) and the other processes of a multi-host run follow:
  the same resume step, the same refusal."""
  plan, error = None, None
  if jax.process_index() == 0:
    try:
      plan = run_dirs.plan_run(
        run_dir,
        config_json,
        ckpt.checkpointer,
        start_over=start_over,
        accept_config_changes=accept_config_changes,
      )
    except run_dirs.RunDirError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    mine = [0, -1]
    if error is not None:
      mine = [2, -1]
    elif plan is not None:
      mine = [int(plan.finished), -1 if plan.step is None else plan.step]
    status, step = (int(x) for x in multihost_utils.broadcast_one_to_all(np.asarray(mine, np.int64)))
    if jax.process_index() != 0:
      if status == 2:
        raise run_dirs.RunDirError(f"process 0 refused the run directory {run_dir}: see its output")
      plan = run_dirs.Plan(step=None if step < 0 else step, finished=bool(status))
  if error is not None:
    raise error
  return plan


def _already_finished(run_dir: str, step: int) -> dict[str, Any]:
  """The summary of a run that had ended already (its summary.json when there is one)."""
  log.info("the run in %s ended already (update %d); nothing to do", run_dir, step)
  path = os.path.join(run_dir, "summary.json")
  summary: dict[str, Any] = {"updates": step}
  if os.path.isfile(path):
    try:
      with open(path) as f:
        summary = json.load(f)
    except (OSError, ValueError):
      pass
  return dict(summary, already_finished=True)


def _run_own_loop(algo, config, run_dir: str, ckpt: "_Checkpoints") -> dict[str, Any]:
  """An algorithm's own loop (online prediction): checkpoints, resume and signals as the others."""
  ckpt.finish_at("frames", config.agent.steps)
  stop = _StopRequest()
  try:
    with MetricsWriter(run_dir, is_primary=jax.process_index() == 0) as writer:
      summary = algo.run_own_loop(
        config,
        writer=writer,
        log=log.info,
        checkpoints=ckpt,
        should_stop=lambda: stop.requested,
        checkpoint_every_s=config.system.checkpoint_every_s,
      )
  finally:
    stop.uninstall()
    ckpt.close()
  _finish(config, run_dir, summary)
  return summary


class _Learner:
  """The learner loop of the actors backend, pipelined over one update (`learner.state` is the
  state after the latest dispatched update):

      dispatch update k (JAX runs it asynchronously)
      take the records of update k+1 and put them on the devices    <- while update k computes
      wait for update k; publish its parameters (version = updates done); bookkeeping of update k
      any_process(records of k+1 missing)? stop : continue with k+1

  The results are those of the serial loop (take, update, publish): the same updates on the same
  batches in the same order, every version published once, in order. Multi-host: every process
  makes the same collective calls in the same order as the serial loop (`any_process` before
  each update, then the update), and never two at once: the update k is complete before the
  `any_process` of k+1. `next_records` writes into one of two host buffers in turn: when it
  takes the records of k+2, update k (the last reader of that buffer) has finished.
  """

  def __init__(self, state, step_fn: Callable, any_process: Callable[[bool], bool] = _any_process):
    self.state = state
    self._step = step_fn
    self._any_process = any_process

  def run(
    self,
    next_records: Callable[[], Any],
    to_device: Callable[[Any], Any],
    publish: Callable[[Any, int], None],
    after_update: Callable[[Any, dict, Any], None],
    counters: dict,
    total_updates: int,
    frames_per_update: int,
  ) -> None:
    """Update until `total_updates` or until `next_records()` returns None on any process.

    next_records() -> host records of one update, or None (stop); to_device(records) -> the
    update's batch; publish(params, version); after_update(state, metrics, records): the
    bookkeeping of a finished update (logs, checkpoints). Updates `counters` ("updates",
    "frames") as each update is dispatched."""
    if counters["updates"] >= total_updates:
      return
    records = next_records()
    if self._any_process(records is None):
      return
    batch = to_device(records)
    while True:
      self.state, metrics = self._step(self.state, batch)
      counters["updates"] += 1
      counters["frames"] += frames_per_update
      done = counters["updates"] >= total_updates
      upcoming = None if done else next_records()
      upcoming_batch = None if upcoming is None else to_device(upcoming)
      jax.block_until_ready((self.state, metrics))
      publish(self.state.params, counters["updates"])
      after_update(self.state, metrics, records)
      if done or self._any_process(upcoming is None):
        return
      records, batch = upcoming, upcoming_batch


def _run_actors(algo, config, run_dir: str, ckpt: _Checkpoints) -> dict[str, Any]:
  from rtrl_rl import envs, parallel  # pylint: disable=g-import-not-at-top
  from rtrl_rl.system import actors  # pylint: disable=g-import-not-at-top

  s = config.system
  actor_env = actors.actor_envs_for_host(s.actor_device, s.num_actors)  # no GPU -> fails here
  options = config.env.options.to_dict()
  envs.make(config.env.id, 1, config.seed, **options).close()  # preflight: missing dependencies fail here
  parts = algo.actor_learner(config, envs.describe(config.env.id, **options))
  mesh = parallel.make_mesh()
  state = parts.init_learner(config.seed)
  counters = {"updates": 0, "frames": 0, "elapsed_s": 0.0}
  restored = ckpt.restore(state)
  if restored is not None:
    state, meta = restored
    counters.update({k: meta[k] for k in counters if k in meta})
    log.info("resumed from update %d (%d frames)", counters["updates"], counters["frames"])
  state = parallel.replicate(state, mesh)
  step_fn = parts.learner_step(mesh, donate=True)
  total_updates = parts.total_updates
  ckpt.finish_at("updates", total_updates)
  frames_per_update = parts.frames_per_update
  records_per_update = parts.batch_size // (s.envs_per_actor * jax.process_count())

  ctx = multiprocessing.get_context("spawn")
  spec = actors.record_spec(config, parts)
  # the lock wait outlasts the stall timeout: an actor stopped holding the lock is killed (and the
  # lock repaired) before the learner gives up on it
  queue = RolloutQueue(spec, s.queue_capacity, ctx, lock_timeout=s.stall_timeout_s + 10)
  host_params = parallel.fetch(state.params)
  store = ParamStore(host_params, ctx)
  store.publish(host_params, counters["updates"])
  stalled = collections.deque()  # "actor1 (pid 4242)": stalled actors, for the progress line
  sup = processes.Supervisor(
    ctx,
    max_restarts=s.max_actor_restarts,
    on_death=lambda *_: queue.reclaim(),
    stall_timeout=s.stall_timeout_s,
    lock_holder=queue.lock_holder,
    on_stall=lambda name, pid, _: stalled.append(f"{name} (pid {pid})"),
  )
  for k in range(s.num_actors):
    sup.add(f"actor{k}", actors.actor_main, args=(config, jax.process_index(), k, queue, store, actor_env[k]))
  placement = (
    "the host CPUs"
    if s.actor_device == "cpu"
    else "GPU " + ", ".join(f"{e['CUDA_VISIBLE_DEVICES']} (actor{k})" for k, e in enumerate(actor_env))
  )
  log.info("%d actor processes, policy on %s", s.num_actors, placement)
  writer = MetricsWriter(run_dir, is_primary=jax.process_index() == 0)
  progress = (
    Progress(total_frames=total_updates * frames_per_update, interval_s=s.log_every_s)
    if jax.process_index() == 0
    else None
  )
  returns = collections.deque(maxlen=100)
  stop = _StopRequest()
  failure = None
  start = time.monotonic() - counters["elapsed_s"]
  last_log = last_ckpt = time.monotonic()
  axes = actors.record_batch_axes(parts)
  # two reused, aligned host buffers (on CPU the update reads them without a copy)
  host_batches = [queue.batch_buffer(records_per_update, axes) for _ in range(2)]
  buffers = itertools.cycle(host_batches)
  sup.start()
  sup.start_monitor()

  def next_records():
    """The next update's records, into the host buffer the in-flight update does not read
    (`_Learner.run` waits for update k before taking the records of k + 2); None on a stop."""
    out = next(buffers)
    while not stop.requested and sup.failure is None:
      try:
        return queue.get_batch(records_per_update, axis=axes, timeout=1.0, out=out)
      except TimeoutError:
        continue
    return None

  def after_update(state, metrics, records):
    nonlocal last_log, last_ckpt
    ended = records.episode_return[~np.isnan(records.episode_return)]
    returns.extend(ended.tolist())
    now = time.monotonic()
    counters["elapsed_s"] = now - start
    if now - last_log >= s.log_every_s or counters["updates"] == total_updates:
      last_log = now
      row = {k: float(v) for k, v in jax.device_get(metrics).items()}
      row.update(
        frames=counters["frames"],
        updates=counters["updates"],
        episode_return=float(np.mean(returns)) if returns else float("nan"),
        episodes=len(returns),
        queue_depth=queue.qsize(),
        elapsed_s=counters["elapsed_s"],
        fps=counters["frames"] / max(counters["elapsed_s"], 1e-9),
      )
      writer.write(row, step=counters["frames"])
    if progress is not None:
      progress.update(
        counters["frames"],
        counters["updates"],
        episode_returns=ended.tolist(),
        policy_lag=float(metrics["policy_lag"]),
        queue_depth=queue.qsize(),
        queue_capacity=s.queue_capacity,
        stalled=[stalled.popleft() for _ in range(len(stalled))],
      )
    if now - last_ckpt >= s.checkpoint_every_s:
      last_ckpt = now
      ckpt.save(state, counters)

  if jax.process_count() == 1 and mesh.devices.size == 1 and mesh.devices.flat[0].platform == "cpu":
    to_device = lambda records: records.rollout  # the jitted update takes the host arrays (no copy)
  else:
    to_device = lambda records: parallel.global_batch(records.rollout, mesh, parts.batch_axes)
  learner = _Learner(state, step_fn)
  try:
    publish = lambda params, version: store.publish(parallel.fetch(params), version)
    learner.run(next_records, to_device, publish, after_update, counters, total_updates, frames_per_update)
    if sup.failure is not None:
      failure = sup.failure
  except QueueBroken as e:  # a live process hung holding the queue lock (a dead one is repaired)
    failure = RuntimeError(f"{e}; actor restarts so far: {sup.restarts()}")
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    failure = _lost_process(e)
  except (RunFailed, OSError) as e:  # a failed write: full disk, read-only, ...
    failure = _write_failure(e, ckpt, run_dir)
  finally:
    state = learner.state  # the latest dispatched update (the save waits for it)
    stop.uninstall()
    sup.shutdown()
    queue.close()
    saved = ckpt.save_final(state, counters)  # also on errors and signals
    failure = _close_all(failure, ckpt, run_dir, ckpt.close, writer.close, queue.unlink, store.unlink)
  if failure is not None:
    raise failure if isinstance(failure, RunFailed) else RunFailed(f"{failure}; {saved}") from failure
  summary = dict(
    counters,
    episode_return=float(np.mean(returns)) if returns else float("nan"),
    stopped_early=counters["updates"] < total_updates,
    params_crc32=params_crc32(parallel.fetch(state.params)),
  )
  _finish(config, run_dir, summary)
  return summary


def _loop_mesh(what: str, sizes: dict[str, int]):
  """The mesh of a loop that splits `sizes` (name: size) over its devices. One process: all local
  devices when every size splits evenly over them, else None (one device, logged with the reason).
  Several processes (jax.distributed): all devices of all processes, and every size must split
  evenly over them (ExperimentConfigError naming the sizes otherwise)."""
  from rtrl_rl import parallel  # pylint: disable=g-import-not-at-top

  procs = jax.process_count()
  devices = jax.devices() if procs > 1 else jax.local_devices()
  if len(devices) == 1:
    return None
  uneven = [f"{name}={size}" for name, size in sizes.items() if size % len(devices)]
  if uneven and procs > 1:
    raise experiment.ExperimentConfigError(
      f"{what} on {procs} processes splits over all their {len(devices)} devices: "
      f"{', '.join(uneven)} not divisible by {len(devices)}"
    )
  if uneven:
    log.info("%s on one device: %s not divisible by the %d devices", what, ", ".join(uneven), len(devices))
    return None
  log.info(
    "%s data-parallel over %d %s",
    what,
    len(devices),
    f"devices of {procs} processes" if procs > 1 else "local devices",
  )
  return parallel.make_mesh(devices)


def _anakin_iterations(algo, config) -> registry.Iterations:
  """The fully-jitted loop (JAX env; system/anakin.py): the whole state, env included, is
  checkpointed. With several devices (and the algorithm's `split_sizes` divisible by their number)
  the loop is data-parallel over a mesh of them: the local devices, or with several processes all
  devices of all of them (each process's devices act on their share of the envs); a checkpoint then
  holds the global state, which a run on any number of devices (and processes) resumes
  (`anakin.relayout`: only the per-device keys change)."""
  from rtrl_rl import envs  # pylint: disable=g-import-not-at-top
  from rtrl_rl.system import anakin  # pylint: disable=g-import-not-at-top

  fenv = envs.make_functional(config.env.id, **config.env.options.to_dict())
  mesh = _loop_mesh(f"Anakin {algo.title}", algo.split_sizes(config.agent))
  loop = anakin.make(algo.name, fenv, config.agent, mesh=mesh)
  return registry.Iterations(
    lambda: loop.init(jax.random.PRNGKey(config.seed)),
    loop.step,
    loop.steps_per_iteration,
    saved=lambda state: state,
    resume=lambda state, tree: loop.place(tree),
    params=lambda state: state.learner.params,
    relayout=anakin.relayout,
  )


def _run_iterations(config, run_dir: str, it: registry.Iterations, ckpt: _Checkpoints) -> dict[str, Any]:
  """Drive a loop with metrics, progress, checkpoints, resume and signals. On several processes
  every one runs the same steps: each iteration they agree (one collective) whether to stop (a
  signal reached any of them) and whether to checkpoint (process 0 writes)."""
  from rtrl_rl import parallel  # pylint: disable=g-import-not-at-top

  s, a = config.system, config.agent
  total_iterations = max(1, math.ceil(a.total_env_steps / it.steps_per_iteration))
  state = it.init()
  ckpt.finish_at("updates", total_iterations)
  counters = {"updates": 0, "frames": 0, "elapsed_s": 0.0}
  restored = ckpt.restore(it.saved(state), it.relayout)
  if restored is not None:
    tree, meta = restored
    state = it.resume(state, tree)
    counters.update({k: meta[k] for k in counters if k in meta})
  primary = jax.process_index() == 0
  writer = MetricsWriter(run_dir, is_primary=primary)
  progress = (
    Progress(total_frames=total_iterations * it.steps_per_iteration, interval_s=s.log_every_s)
    if primary
    else None
  )
  stop = _StopRequest()
  start = time.monotonic() - counters["elapsed_s"]
  last_log = last_ckpt = time.monotonic()
  window = {"sum": 0.0, "episodes": 0}
  recent = collections.deque(maxlen=100)
  failure = None
  try:
    while counters["updates"] < total_iterations:
      now = time.monotonic()
      stop_now, save_now = _any_process_each([stop.requested, now - last_ckpt >= s.checkpoint_every_s])
      if stop_now:
        break
      if save_now:
        last_ckpt = now
        ckpt.save(it.saved(state), counters)
      state, metrics = it.step(state)
      metrics = parallel.fetch(metrics)
      counters["updates"] += 1
      counters["frames"] += it.steps_per_iteration
      episodes = int(metrics["episodes"])
      window["sum"] += float(metrics["episode_return_sum"])
      window["episodes"] += episodes
      if episodes:
        recent.append(float(metrics["mean_episode_return"]))
      now = time.monotonic()
      counters["elapsed_s"] = now - start
      if now - last_log >= s.log_every_s or counters["updates"] == total_iterations:
        last_log = now
        row = {k: float(np.mean(v)) for k, v in metrics.items()}
        row.update(
          frames=counters["frames"],
          updates=counters["updates"],
          episode_return=window["sum"] / window["episodes"] if window["episodes"] else float("nan"),
          episodes=window["episodes"],
          elapsed_s=counters["elapsed_s"],
          fps=counters["frames"] / max(counters["elapsed_s"], 1e-9),
        )
        writer.write(row, step=counters["frames"])
        window = {"sum": 0.0, "episodes": 0}
      if progress is not None:
        progress.update(
          counters["frames"],
          counters["updates"],
          episode_returns=[float(metrics["mean_episode_return"])] if episodes else (),
        )
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    failure = _lost_process(e)
  except (RunFailed, OSError) as e:  # a failed write: full disk, read-only, ...
    failure = _write_failure(e, ckpt, run_dir)
  finally:
    stop.uninstall()
    saved = ckpt.save_final(it.saved(state), counters)
    failure = _close_all(failure, ckpt, run_dir, ckpt.close, writer.close)
  if failure is not None:
    raise failure if isinstance(failure, RunFailed) else RunFailed(f"{failure}; {saved}") from failure
  summary = dict(
    counters,
    episode_return=float(np.mean(recent)) if recent else float("nan"),
    stopped_early=counters["updates"] < total_iterations,
    params_crc32=params_crc32(parallel.fetch(it.params(state))),
  )
  _finish(config, run_dir, summary)
  return summary


def _write_failure(error: BaseException, ckpt: _Checkpoints, run_dir: str) -> BaseException:
  """`error` as a RunFailed describing a failed write (full disk, read-only, ...); other errors are
  raised again (a RunFailed of `ckpt.save` describes itself already)."""
  if isinstance(error, RunFailed):
    return error
  disk = run_dirs.disk_error(error)
  if disk is None:
    raise error
  return ckpt.write_failed(disk, "the run's metrics" if disk.filename is None else disk.filename, run_dir)


def _close_all(failure: BaseException | None, ckpt: _Checkpoints, run_dir: str, *closers):
  """Calls every closer, also when one fails (a full disk fails the metrics' last flush); returns
  `failure`, else the first failed write as a RunFailed. Another error is raised once all ran."""
  bug = None
  for close in closers:
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except
      if failure is None and (isinstance(e, RunFailed) or run_dirs.disk_error(e) is not None):
        failure = _write_failure(e, ckpt, run_dir)
      elif failure is None and bug is None:
        bug = e
      else:
        log.warning(
          "after the failure, %s failed too: %s", getattr(close, "__qualname__", close), _first_line(e)
        )
  if bug is not None:
    raise bug
  return failure


def _finish(config, run_dir: str, summary: dict) -> None:
  """summary.json (it describes the newest checkpoint: the final one) and the learning curve."""
  if jax.process_index() != 0:
    return
  run_dirs.write_json_atomic(os.path.join(run_dir, "summary.json"), summary)
  if config.system.plot:
    from rtrl_rl import plot  # pylint: disable=g-import-not-at-top

    try:
      plot.plot_runs([run_dir], os.path.join(run_dir, "learning_curve.png"))
    except Exception as e:  # pylint: disable=broad-except
      log.warning("could not plot the learning curve: %s", e)
