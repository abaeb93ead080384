"""The training loop of one process, for every algorithm and backend.

    summary = trainer.run(config, run_dir)

One loop driver (`_run_loop`) restores or builds the state, steps it, writes metrics, the progress
line and checkpoints, stops on a signal or at the budget and writes the summary. A backend supplies
only the steps (`_Backend`: the algorithm's `registry.Iterations` and its own hooks); the algorithm
comes from `rtrl_rl.agents.registry` (`config.algo`), the only module of agents/ the system layer
imports.

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
import multiprocessing
import os
import time
import zlib
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from rtrl_rl import envs, experiment, parallel, plot
from rtrl_rl.agents import registry
from rtrl_rl.io import MetricsWriter, Progress
from rtrl_rl.io import run_dir as run_dirs
from rtrl_rl.io.checkpoint import Checkpointer, CheckpointStructureError
from rtrl_rl.system import actors, anakin, processes
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


def _any_process_each(flags: list[bool]) -> list[bool]:
  """For each flag: true on every process if it is true on any (one collective; multi-host lockstep)."""
  if jax.process_count() == 1:
    return [bool(f) for f in flags]
  gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32))  # [processes, flags]
  return [bool(f) for f in np.any(np.reshape(gathered, (-1, len(flags))), axis=0)]


class _StopRequest:
  """`requested` turns true on SIGINT / SIGTERM (`processes.install_shutdown_handlers`: a second
  Ctrl-C forces) until `uninstall()` reinstates the previous handlers."""

  def __init__(self):
    self.requested = False
    self._uninstall = processes.install_shutdown_handlers(self._request)

  def uninstall(self) -> None:
    if self._uninstall is not None:
      self._uninstall()
      self._uninstall = None

  def _request(self) -> None:
    self.requested = True


class CheckpointMismatch(ValueError):
  """The run directory's checkpoint does not fit this run (written with another config)."""


class _Checkpoints:
  """Learner state + counters <-> orbax checkpoints (host copies; process 0 writes). Each checkpoint's
  metadata holds the counters, the run's config and whether the run ended with it (`finished`)."""

  def __init__(self, run_dir: str, keep: int, config_json: dict):
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


# The cache's size limit: a limit turns on JAX's file lock, so that runs sharing the cache (a local
# sweep, the processes of a node) never read an entry another is writing; the oldest go first.
COMPILATION_CACHE_MAX_BYTES = 8 << 30
# Programs that compile faster than this are not kept (JAX's default, 1 s, leaves out the many
# programs of 0.1-1 s that a start compiles: Brax Ant-P's second start took 41 s with it, 27 s
# with 0.1 s, BUILD_NOTES "Trainer and system").
COMPILATION_CACHE_MIN_SECONDS = 0.1


def use_compilation_cache(path: str) -> str | None:
  """Keep compiled programs in `path` (`system.compilation_cache`; "" or None: off) for later runs
  of the same programs, this process and the processes it starts. `JAX_COMPILATION_CACHE_DIR`, when
  set, wins. An unusable directory is reported and the run compiles as without a cache (JAX itself
  only warns when an entry cannot be read or written, e.g. on a full disk). Returns the directory
  in use, or None."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  if not path:
    return None
  path = os.path.expanduser(path)
  try:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
      raise PermissionError("not writable by this user")
  except OSError as e:
    log.warning(
      "system.compilation_cache=%s cannot be used (%s): programs are compiled at every start; set it "
      "to a writable directory, or to '' to turn the cache off",
      path,
      getattr(e, "strerror", None) or e,
    )
    return None
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path  # actor processes inherit it
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILATION_CACHE_MAX_BYTES))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(COMPILATION_CACHE_MIN_SECONDS))
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))
  jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
  )
  return path


def prepare(config) -> None:
  """Validate `config` (`experiment.ConfigError` naming every bad field) and, for a multi-host
  run, join jax.distributed: after the system fields are checked and before the environment is
  (describing a JAX environment starts JAX's backend, which must come after joining). Turns on the
  compilation cache (`use_compilation_cache`) before anything compiles."""
  s = config.system
  use_compilation_cache(s.compilation_cache)
  if s.num_processes > 1:
    experiment.validate(config, check_env=False)
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
    stop = _StopRequest()  # before the backend: the actors' input stops on it
    try:
      return _run_loop(config, run_dir, _backend(algo, config, stop), ckpt, stop)
    finally:
      stop.uninstall()
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
        upgrade=experiment.upgrade_saved_config,
      )
    except run_dirs.RunDirError as e:
      error = e
  if jax.process_count() > 1:
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


class _PipelinedLearner:
  """The learner steps of the actors backend, pipelined over one update (`step` returns the state
  after its update):

      dispatch update k (JAX runs it asynchronously)
      take the records of update k+1 and put them on the devices    <- while update k computes
      wait for update k; publish its parameters (version = updates done)

  The results are those of the serial loop (take, update, publish): the same updates on the same
  batches in the same order, every version published once, in order. `ready()` says whether the
  next update's records are there (taking the first update's); the loop driver agrees on it over
  all processes before each update (`_drive`), so the processes of a multi-host run make the same
  collective calls in the same order as the serial loop, never two at once (update k is complete
  before the agreement of k+1). `next_records` writes into one of two host buffers in turn: when it
  takes the records of k+2, update k (the last reader of that buffer) has finished.

  next_records() -> host records of one update, or None (stop); to_device(records) -> the update's
  batch; publish(params, version). `records` after a step: the records of that update."""

  def __init__(self, step_fn: Callable, next_records: Callable, to_device: Callable, publish: Callable):
    self._step, self._next, self._to_device, self._publish = step_fn, next_records, to_device, publish
    self._upcoming = None  # (records, batch) of the next update
    self._ended = False  # next_records returned None: the input ended (a stop)
    self._error = None  # a failure taking the next records, raised by the next `ready()`
    self.records = None
    self.version = 0  # updates done (the version of the published parameters)
    self.total = 0  # updates of the whole run

  def _take(self) -> None:
    records = self._next()
    self._ended = records is None
    self._upcoming = None if records is None else (records, self._to_device(records))

  def ready(self) -> bool:
    if self._error is not None:
      raise self._error
    if self._upcoming is None and not self._ended:
      self._take()
    return self._upcoming is not None

  def step(self, state):
    (self.records, batch), self._upcoming = self._upcoming, None
    state, metrics = self._step(state, batch)
    self.version += 1
    if self.version < self.total:
      try:
        self._take()
      except _BackendFailed as e:  # update k stands: it finishes, is published and checkpointed
        self._error = e
    jax.block_until_ready((state, metrics))
    self._publish(state.params, self.version)
    return state, metrics


class _Backend(NamedTuple):
  """A loop as the driver (`_run_loop`) runs it: the algorithm's or backend's `registry.Iterations`
  and the backend's hooks. start(state, counters): once the state is restored or built (starts
  actors); ready(): the next step's input is there (agreed over the processes); shutdown(): before
  the final checkpoint (stops actors); closers: after it; failure(): the backend's own failure
  after the loop (a dead actor out of restarts), or None; progress(metrics): extra entries of the
  progress line."""

  iterations: registry.Iterations
  start: Callable[[Any, dict], None] = lambda state, counters: None
  ready: Callable[[], bool] = lambda: True
  shutdown: Callable[[], None] = lambda: None
  closers: tuple = ()
  failure: Callable[[], BaseException | None] = lambda: None
  progress: Callable[[dict], dict] = lambda metrics: {}


class _BackendFailed(RuntimeError):
  """The backend cannot go on (a live actor hung holding the queue lock)."""


def _actors_backend(algo, config, stop: "_StopRequest") -> _Backend:
  """Backend "actors": K actor processes per host (system/actors.py) act on host envs and put
  rollouts into the shared-memory queue; each step takes `batch_size / (envs_per_actor x processes)`
  records, assembles the global batch over all devices of all processes (rtrl_rl/parallel.py), runs
  the jitted update and publishes the parameters with their version (`_PipelinedLearner`). A
  checkpoint holds the learner state."""
  s = config.system
  actor_env = actors.actor_envs_for_host(s.actor_device, s.num_actors)  # no GPU -> fails here
  options = config.env.options.to_dict()
  envs.make(config.env.id, 1, config.seed, **options).close()  # preflight: missing dependencies fail here
  parts = algo.actor_learner(config, envs.describe(config.env.id, **options))
  mesh = parallel.make_mesh()
  records_per_update = parts.batch_size // (s.envs_per_actor * jax.process_count())
  ctx = multiprocessing.get_context("spawn")
  # the lock wait outlasts the stall timeout: an actor stopped holding the lock is killed (and the
  # lock repaired) before the learner gives up on it
  queue = RolloutQueue(
    actors.record_spec(config, parts), s.queue_capacity, ctx, lock_timeout=s.stall_timeout_s + 10
  )
  store = None
  stalled = collections.deque()  # "actor1 (pid 4242)": stalled actors, for the progress line
  sup = processes.Supervisor(
    ctx,
    max_restarts=s.max_actor_restarts,
    on_death=lambda *_: queue.reclaim(),
    stall_timeout=s.stall_timeout_s,
    lock_holder=queue.lock_holder,
    on_stall=lambda name, pid, _: stalled.append(f"{name} (pid {pid})"),
  )
  axes = actors.record_batch_axes(parts)
  # two reused, aligned host buffers (on CPU the update reads them without a copy)
  buffers = itertools.cycle([queue.batch_buffer(records_per_update, axes) for _ in range(2)])

  def next_records():
    """The next update's records, into the host buffer the in-flight update does not read; None on
    a stop or a failed actor."""
    out = next(buffers)
    while not stop.requested and sup.failure is None:
      try:
        return queue.get_batch(records_per_update, axis=axes, timeout=1.0, out=out)
      except TimeoutError:
        continue
      except QueueBroken as e:  # a live process hung holding the queue lock (a dead one is repaired)
        raise _BackendFailed(f"{e}; actor restarts so far: {sup.restarts()}") from None
    return None

  if jax.process_count() == 1 and mesh.devices.size == 1 and mesh.devices.flat[0].platform == "cpu":
    to_device = lambda records: records.rollout  # the jitted update takes the host arrays (no copy)
  else:
    to_device = lambda records: parallel.global_batch(records.rollout, mesh, parts.batch_axes)
  learner = _PipelinedLearner(
    parts.learner_step(mesh, donate=True),
    next_records,
    to_device,
    lambda params, version: store.publish(parallel.fetch(params), version),
  )
  learner.total = parts.total_updates

  def start(state, counters):
    """Publishes the first parameters and starts the actors (once the state is restored)."""
    nonlocal store
    learner.version = counters["updates"]
    host_params = parallel.fetch(state.params)
    store = ParamStore(host_params, ctx)
    store.publish(host_params, learner.version)
    for k in range(s.num_actors):
      sup.add(
        f"actor{k}", actors.actor_main, args=(config, jax.process_index(), k, queue, store, actor_env[k])
      )
    placement = (
      "the host CPUs"
      if s.actor_device == "cpu"
      else "GPU " + ", ".join(f"{e['CUDA_VISIBLE_DEVICES']} (actor{k})" for k, e in enumerate(actor_env))
    )
    log.info("%d actor processes, policy on %s", s.num_actors, placement)
    sup.start()
    sup.start_monitor()

  def step(state):
    state, metrics = learner.step(state)
    returns = learner.records.episode_return[~np.isnan(learner.records.episode_return)]
    metrics = dict(
      jax.device_get(metrics),
      episodes=len(returns),
      episode_return_sum=float(np.sum(returns)),
      mean_episode_return=float(np.mean(returns)) if len(returns) else float("nan"),
      queue_depth=queue.qsize(),
    )
    return state, metrics

  def shutdown():
    sup.shutdown()
    queue.close()

  it = registry.Iterations(
    lambda: parallel.replicate(parts.init_learner(config.seed), mesh),
    step,
    parts.frames_per_update,
    saved=lambda state: state,
    resume=lambda state, tree, counters: parallel.replicate(tree, mesh),
    params=lambda state: state.params,
    total_updates=parts.total_updates,
  )
  return _Backend(
    it,
    start=start,
    ready=learner.ready,
    shutdown=shutdown,
    closers=(queue.unlink, lambda: store is not None and store.unlink()),
    failure=lambda: sup.failure,
    progress=lambda metrics: dict(
      policy_lag=float(metrics["policy_lag"]),
      queue_depth=queue.qsize(),
      queue_capacity=s.queue_capacity,
      stalled=[stalled.popleft() for _ in range(len(stalled))],
    ),
  )


def _drive(
  state,
  backend: _Backend,
  counters: dict,
  total_frames: int,
  *,
  stop_requested,
  save_due,
  save,
  on_step,
  agree=None,
):
  """The driver's core: step until the run's updates are done, a stop is requested or the input
  ended. Before each step every process agrees (one collective, `agree(flags) -> flags`: any
  process's flag) whether to stop (a signal reached one of them, or one's input ended) and whether
  to checkpoint (`save(state)`; process 0 writes); after it, `on_step(state, metrics)`. Updates
  `counters` ("updates", "frames"); returns the state."""
  agree = agree or _any_process_each
  it = backend.iterations
  while counters["updates"] < it.total_updates:
    stop_now, save_now, ended = agree([stop_requested(), save_due(), not backend.ready()])
    if stop_now or ended:
      break
    if save_now:
      save(state)
    state, metrics = it.step(state)
    counters["updates"] += 1
    counters["frames"] = min(counters["frames"] + it.steps_per_iteration, total_frames)
    on_step(state, metrics)
  return state


def _run_loop(
  config, run_dir: str, backend: _Backend, ckpt: _Checkpoints, stop: _StopRequest
) -> dict[str, Any]:
  """The one loop driver of every backend and algorithm: build or restore the state, step it
  (`_drive`), metrics (metrics.jsonl, TensorBoard), the progress line, periodic and final
  checkpoints, stop on a signal or at the budget, the summary. On several processes every one runs
  the same steps in lockstep (process 0 writes)."""
  s, it = config.system, backend.iterations
  total_frames = it.total_frames or it.total_updates * it.steps_per_iteration
  primary = jax.process_index() == 0
  ckpt.finish_at("updates", it.total_updates)
  counters = {"updates": 0, "frames": 0, "elapsed_s": 0.0}
  try:
    state = it.init()
    restored = ckpt.restore(it.saved(state), it.relayout)
    if restored is not None:
      tree, meta = restored
      counters.update({k: meta[k] for k in counters if k in meta})
      state = it.resume(state, tree, counters)
      log.info("resumed from update %d (%d frames)", counters["updates"], counters["frames"])
    backend.start(state, counters)
  except BaseException:  # e.g. a checkpoint of another run: nothing was written, the backend is freed
    backend.shutdown()
    _close_all(None, ckpt, run_dir, *backend.closers)
    raise
  writer = MetricsWriter(run_dir, is_primary=primary)
  progress = Progress(total_frames=total_frames, interval_s=s.log_every_s) if primary else None
  start = time.monotonic() - counters["elapsed_s"]
  clock = {"log": time.monotonic(), "ckpt": time.monotonic()}
  window = {"sum": 0.0, "episodes": 0}
  recent = collections.deque(maxlen=100)
  latest = {"state": state}  # the state after the latest step: what the final checkpoint saves
  failure = None

  def save_due():
    return time.monotonic() - clock["ckpt"] >= s.checkpoint_every_s

  def save(state):
    clock["ckpt"] = time.monotonic()
    ckpt.save(it.saved(state), counters)

  def on_step(state, metrics):
    latest["state"] = state
    metrics = parallel.fetch(metrics)
    episodes = int(metrics.get("episodes", 0))
    window["sum"] += float(metrics.get("episode_return_sum", 0.0))
    window["episodes"] += episodes
    if episodes:
      recent.append(float(metrics["mean_episode_return"]))
    now = time.monotonic()
    counters["elapsed_s"] = now - start
    if s.log_every_updates:
      due = counters["updates"] % s.log_every_updates == 0
    else:
      due = now - clock["log"] >= s.log_every_s
    if due or counters["updates"] == it.total_updates:
      clock["log"] = now
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
      window.update(sum=0.0, episodes=0)
    if progress is not None:
      progress.update(
        counters["frames"],
        counters["updates"],
        episode_returns=[float(metrics["mean_episode_return"])] if episodes else (),
        **backend.progress(metrics),
      )

  try:
    _drive(
      state,
      backend,
      counters,
      total_frames,
      stop_requested=lambda: stop.requested,
      save_due=save_due,
      save=save,
      on_step=on_step,
    )
    failure = backend.failure()
  except _BackendFailed as e:
    failure = e
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    failure = _lost_process(e)
  except (RunFailed, OSError) as e:  # a failed write: full disk, read-only, ...
    failure = _write_failure(e, ckpt, run_dir)
  finally:
    stop.uninstall()
    backend.shutdown()
    state = latest["state"]
    saved = ckpt.save_final(it.saved(state), counters)  # also on errors and signals
    final = {} if it.final is None or failure is not None else it.final(state)
    if final:
      writer.write({f"final_{k}": v for k, v in final.items()}, step=counters["frames"])
    failure = _close_all(failure, ckpt, run_dir, ckpt.close, writer.close, *backend.closers)
  if failure is not None:
    raise failure if isinstance(failure, RunFailed) else RunFailed(f"{failure}; {saved}") from failure
  summary = dict(
    counters,
    episode_return=float(np.mean(recent)) if recent else float("nan"),
    stopped_early=counters["updates"] < it.total_updates,
    params_crc32=params_crc32(parallel.fetch(it.params(state))),
    **final,
  )
  _finish(config, run_dir, summary)
  return summary


def _loop_mesh(what: str, sizes: dict[str, int]):
  """The mesh of a loop that splits `sizes` (name: size) over its devices. One process: all local
  devices when every size splits evenly over them, else None (one device, logged with the reason).
  Several processes (jax.distributed): all devices of all processes, and every size must split
  evenly over them (`experiment.ConfigError` naming the sizes otherwise)."""
  procs = jax.process_count()
  devices = jax.devices() if procs > 1 else jax.local_devices()
  if len(devices) == 1:
    return None
  uneven = [f"{name}={size}" for name, size in sizes.items() if size % len(devices)]
  if uneven and procs > 1:
    raise experiment.ConfigError(
      "experiment",
      f"{what} on {procs} processes splits over all their {len(devices)} devices: "
      f"{', '.join(uneven)} not divisible by {len(devices)}",
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


def _backend(algo, config, stop: "_StopRequest") -> _Backend:
  """The loop of `config.system.backend` for `algo`."""
  if algo.own_loop:
    return _Backend(algo.iterations(config))
  if config.system.backend == "anakin":
    return _Backend(_anakin_iterations(algo, config))
  if config.system.backend == "sync":
    mesh = _loop_mesh(f"{algo.title} update", algo.split_sizes(config.agent))
    return _Backend(algo.host_loop(config, mesh))
  return _actors_backend(algo, config, stop)


def _anakin_iterations(algo, config) -> registry.Iterations:
  """The fully-jitted loop (JAX env; system/anakin.py): the whole state, env included, is
  checkpointed. With several devices (and the algorithm's `split_sizes` divisible by their number)
  the loop is data-parallel over a mesh of them: the local devices, or with several processes all
  devices of all of them (each process's devices act on their share of the envs); a checkpoint then
  holds the global state, which a run on any number of devices (and processes) resumes
  (`anakin.relayout`: only the per-device keys change)."""
  fenv = envs.make_functional(config.env.id, **config.env.options.to_dict())
  mesh = _loop_mesh(f"Anakin {algo.title}", algo.split_sizes(config.agent))
  loop = anakin.make(algo.name, fenv, config.agent, mesh=mesh)
  return registry.Iterations(
    lambda: loop.init(jax.random.PRNGKey(config.seed)),
    loop.step,
    loop.steps_per_iteration,
    saved=lambda state: state,
    resume=lambda state, tree, counters: loop.place(tree),
    params=lambda state: state.learner.params,
    total_updates=loop.total_updates,
    relayout=anakin.relayout,
  )


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
    try:
      plot.plot_runs([run_dir], os.path.join(run_dir, "learning_curve.png"))
    except Exception as e:  # pylint: disable=broad-except
      log.warning("could not plot the learning curve: %s", e)
