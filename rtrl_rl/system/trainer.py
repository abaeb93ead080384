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
`checkpoints/` (orbax, atomic). A run restarted on the same directory resumes from its latest
checkpoint with its counters. SIGINT/SIGTERM stop the run cleanly: actors are shut down, a final
checkpoint is written, no process is left behind. A dead actor is restarted (bounded); when its
restarts are exhausted the run stops with a final checkpoint and an error naming the actor.
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
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from rtrl_rl import experiment
from rtrl_rl.io import MetricsWriter, Progress
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
      "Restart every process with the same command to resume")


def _write_config(config, run_dir: str) -> None:
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    json.dump(json.loads(config.to_json_best_effort()), f, indent=2, sort_keys=True)


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
  gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32))   # [processes, flags]
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
  """Learner state + counters <-> orbax checkpoints (host copies; process 0 writes)."""

  def __init__(self, run_dir: str, keep: int):
    from rtrl_rl.io.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
    self._dir = os.path.join(run_dir, "checkpoints")
    self._ckpt = Checkpointer(self._dir, max_to_keep=keep)

  def restore(self, like, relayout: Callable[[dict, Any], Any] | None = None):
    """`(state, metadata)` of the latest checkpoint shaped like `like`, or None when there is none.

    relayout: `(leaves by tree path, host copy of like) -> state` for a checkpoint of the same run
      written on another number of devices (raises ValueError when it is not); tried when the
      checkpoint does not fit `like` as it is.
    Raises CheckpointMismatch when it was written by a run of another shape."""
    from rtrl_rl import parallel  # pylint: disable=g-import-not-at-top
    from rtrl_rl.io.checkpoint import CheckpointStructureError  # pylint: disable=g-import-not-at-top
    host_like = parallel.fetch(like)
    try:
      restored = self._ckpt.restore_latest(host_like)
    except CheckpointStructureError as e:
      problem = str(e)
      if relayout is not None:
        _, leaves, metadata = self._ckpt.restore_latest()
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
          "--run_dir") from None
    if restored is None:
      return None
    _, state, metadata = restored
    return state, metadata

  def save(self, state, counters: dict) -> None:
    from rtrl_rl import parallel  # pylint: disable=g-import-not-at-top
    self._ckpt.save(int(counters["updates"]), parallel.fetch(state), dict(counters), wait=True)

  def save_final(self, state, counters: dict) -> str:
    """The final checkpoint (also after an error or a signal); returns where the run resumes from.
    A state lost with a failed computation (a collective whose peer died, a device error) cannot
    be read, so nothing is written and the newest periodic checkpoint stays the latest."""
    try:
      self.save(state, counters)
      return f"the final checkpoint (update {counters['updates']}) is in {self._dir}"
    except jax.errors.JaxRuntimeError as e:
      log.error("no final checkpoint: the learner state was lost with a failed computation (%s)",
                _first_line(e))
      latest = self._ckpt.latest_step()
      return ("no final checkpoint could be written (the state was lost with the failed computation); "
              + (f"the newest checkpoint (update {latest}) is in {self._dir}" if latest is not None
                 else f"{self._dir} holds no checkpoint"))

  def close(self):
    self._ckpt.close()


def prepare(config) -> None:
  """Validate `config` (ExperimentConfigError / ValueError naming the fields) and, for a multi-host
  run, join jax.distributed: after the system fields are checked and before the environment is
  (describing a JAX environment starts JAX's backend, which must come after joining)."""
  s = config.system
  if s.num_processes > 1:
    experiment.validate(config, check_env=False)
    from rtrl_rl import parallel  # pylint: disable=g-import-not-at-top
    parallel.initialize_distributed(s.coordinator_address, s.num_processes, s.process_id,
                                    heartbeat_timeout_s=s.heartbeat_timeout_s)
  experiment.validate(config)


def run(config, run_dir: str, *, prepared: bool = False) -> dict[str, Any]:
  """Train per `config` in `run_dir`; returns a summary dict (final counters and recent return).
  `prepared`: `prepare(config)` was called already (`python -m rtrl_rl.train` does, to report a bad
  config before anything else)."""
  if not prepared:
    prepare(config)
  s = config.system
  if jax.process_index() == 0:
    _write_config(config, run_dir)
  if config.algo == "prediction":
    return _run_prediction(config, run_dir)
  if s.backend == "anakin":
    return _run_iterations(config, run_dir, _anakin_iterations(config))
  if s.backend == "sync":
    return _run_iterations(config, run_dir, _sync_ppo_iterations(config))
  return _run_actors(config, run_dir)


def _run_prediction(config, run_dir: str) -> dict[str, Any]:
  """Online prediction (agents/prediction): checkpoints, resume and signals as the other loops."""
  from rtrl_rl.agents.prediction import learning as prediction  # pylint: disable=g-import-not-at-top
  ckpt = _Checkpoints(run_dir, config.system.keep_checkpoints)
  stop = _StopRequest()
  try:
    with MetricsWriter(run_dir, is_primary=jax.process_index() == 0) as writer:
      summary = prediction.run_experiment(config, writer=writer, log=log.info, checkpoints=ckpt,
                                          should_stop=lambda: stop.requested,
                                          checkpoint_every_s=config.system.checkpoint_every_s)
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

  def run(self, next_records: Callable[[], Any], to_device: Callable[[Any], Any],
          publish: Callable[[Any, int], None], after_update: Callable[[Any, dict, Any], None],
          counters: dict, total_updates: int, frames_per_update: int) -> None:
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


def _run_actors(config, run_dir: str) -> dict[str, Any]:
  from rtrl_rl import envs, parallel  # pylint: disable=g-import-not-at-top
  from rtrl_rl.agents.impala import config as impala_config, learning  # pylint: disable=g-import-not-at-top
  from rtrl_rl.agents.rollout import Rollout  # pylint: disable=g-import-not-at-top
  from rtrl_rl.system import actors  # pylint: disable=g-import-not-at-top

  s, a = config.system, config.agent
  actor_env = actors.actor_envs_for_host(s.actor_device, s.num_actors)  # no GPU -> fails here
  options = config.env.options.to_dict()
  envs.make(config.env.id, 1, config.seed, **options).close()  # preflight: missing dependencies fail here
  obs_space, act_space = envs.describe(config.env.id, **options)
  agent = impala_config.make_agent(a, obs_space, act_space)
  mesh = parallel.make_mesh()
  state = learning.init_learner(agent, a, obs_space, seed=config.seed)
  ckpt = _Checkpoints(run_dir, s.keep_checkpoints)
  counters = {"updates": 0, "frames": 0, "elapsed_s": 0.0}
  restored = ckpt.restore(state)
  if restored is not None:
    state, meta = restored
    counters.update({k: meta[k] for k in counters if k in meta})
    log.info("resumed from update %d (%d frames)", counters["updates"], counters["frames"])
  state = parallel.replicate(state, mesh)
  step_fn = learning.make_learner_step(agent, a, mesh, donate=True)
  total_updates = learning.updates_per_run(a)
  frames_per_update = a.unroll_length * a.batch_size
  records_per_update = a.batch_size // (s.envs_per_actor * jax.process_count())

  ctx = multiprocessing.get_context("spawn")
  spec = actors.record_spec(config, obs_space, act_space, agent)
  queue = RolloutQueue(spec, s.queue_capacity, ctx)
  host_params = parallel.fetch(state.params)
  store = ParamStore(host_params, ctx)
  store.publish(host_params, counters["updates"])
  sup = processes.Supervisor(ctx, max_restarts=s.max_actor_restarts, on_death=lambda *_: queue.reclaim())
  for k in range(s.num_actors):
    sup.add(f"actor{k}", actors.actor_main,
            args=(config, jax.process_index(), k, queue, store, actor_env[k]))
  placement = ("the host CPUs" if s.actor_device == "cpu" else "GPU " + ", ".join(
      f"{e['CUDA_VISIBLE_DEVICES']} (actor{k})" for k, e in enumerate(actor_env)))
  log.info("%d actor processes, policy on %s", s.num_actors, placement)
  writer = MetricsWriter(run_dir, is_primary=jax.process_index() == 0)
  progress = Progress(total_frames=total_updates * frames_per_update,
                      interval_s=s.log_every_s) if jax.process_index() == 0 else None
  returns = collections.deque(maxlen=100)
  stop = _StopRequest()
  failure = None
  start = time.monotonic() - counters["elapsed_s"]
  last_log = last_ckpt = time.monotonic()
  axes = actors.record_batch_axes()
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
      row.update(frames=counters["frames"], updates=counters["updates"],
                 episode_return=float(np.mean(returns)) if returns else float("nan"),
                 episodes=len(returns), queue_depth=queue.qsize(), elapsed_s=counters["elapsed_s"],
                 fps=counters["frames"] / max(counters["elapsed_s"], 1e-9))
      writer.write(row, step=counters["frames"])
    if progress is not None:
      progress.update(counters["frames"], counters["updates"], episode_returns=ended.tolist(),
                      policy_lag=float(metrics["policy_lag"]),
                      queue_depth=queue.qsize(), queue_capacity=s.queue_capacity)
    if now - last_ckpt >= s.checkpoint_every_s:
      last_ckpt = now
      ckpt.save(state, counters)

  if jax.process_count() == 1 and mesh.devices.size == 1 and mesh.devices.flat[0].platform == "cpu":
    to_device = lambda records: records.rollout      # the jitted update takes the host arrays (no copy)
  else:
    to_device = lambda records: parallel.global_batch(records.rollout, mesh, Rollout.batch_axes())
  learner = _Learner(state, step_fn)
  try:
    publish = lambda params, version: store.publish(parallel.fetch(params), version)
    learner.run(next_records, to_device, publish, after_update, counters, total_updates,
                frames_per_update)
    if sup.failure is not None:
      failure = sup.failure
  except QueueBroken as e:          # a live process hung holding the queue lock (a dead one is repaired)
    failure = RuntimeError(f"{e}; actor restarts so far: {sup.restarts()}")
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    failure = _lost_process(e)
  finally:
    state = learner.state             # the latest dispatched update (the save waits for it)
    stop.uninstall()
    sup.shutdown()
    queue.close()
    saved = ckpt.save_final(state, counters)   # also on errors and signals
    ckpt.close()
    writer.close()
    queue.unlink()
    store.unlink()
  if failure is not None:
    raise RunFailed(f"{failure}; {saved}") from failure
  summary = dict(counters, episode_return=float(np.mean(returns)) if returns else float("nan"),
                 stopped_early=counters["updates"] < total_updates,
                 params_crc32=params_crc32(parallel.fetch(state.params)))
  _finish(config, run_dir, summary)
  return summary


class _Iterations(NamedTuple):
  """A training loop in one jitted step (on one process, or in lockstep on several):
  `state = init()`, `state, metrics = step(state)`; the part of the state that a checkpoint holds
  (`saved(state)`) and how to put it back (`resume(state, tree)`)."""
  init: Callable[[], Any]
  step: Callable[[Any], tuple[Any, dict]]
  steps_per_iteration: int
  saved: Callable[[Any], Any]
  resume: Callable[[Any, Any], Any]
  params: Callable[[Any], Any]
  relayout: Callable[[dict, Any], Any] | None = None   # see _Checkpoints.restore


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
        f"{', '.join(uneven)} not divisible by {len(devices)}")
  if uneven:
    log.info("%s on one device: %s not divisible by the %d devices", what, ", ".join(uneven), len(devices))
    return None
  log.info("%s data-parallel over %d %s", what, len(devices),
           f"devices of {procs} processes" if procs > 1 else "local devices")
  return parallel.make_mesh(devices)


def _anakin_iterations(config) -> _Iterations:
  """The fully-jitted loop (JAX env): the whole state, env included, is checkpointed. With several
  devices (and `num_envs`, `minibatch_size / sequence_length` (PPO) or `batch_size` (IMPALA)
  divisible by their number) the loop is data-parallel over a mesh of them (system/anakin.py):
  the local devices, or with several processes all devices of all of them (each process's devices
  act on their share of the envs); a checkpoint then holds the global state, which a run on any
  number of devices (and processes) resumes (`anakin.relayout`: only the per-device keys change)."""
  from rtrl_rl import envs  # pylint: disable=g-import-not-at-top
  from rtrl_rl.system import anakin  # pylint: disable=g-import-not-at-top
  a = config.agent
  fenv = envs.make_functional(config.env.id, **config.env.options.to_dict())
  if config.algo == "ppo":
    from rtrl_rl.agents.ppo import learning as ppo_learning  # pylint: disable=g-import-not-at-top
    sizes = ppo_learning.split_sizes(a.num_envs, a.minibatch_size, a.sequence_length)
    loop = anakin.make_ppo(fenv, a, mesh=_loop_mesh("Anakin PPO", sizes))
    steps = a.num_envs * a.rollout_length
  else:
    from rtrl_rl.agents.impala import config as impala_config  # pylint: disable=g-import-not-at-top
    agent = impala_config.make_agent(a, fenv.observation_space, fenv.action_space)
    loop = anakin.make_impala(fenv, agent, a, mesh=_loop_mesh("Anakin IMPALA", {"batch_size": a.batch_size}))
    steps = a.batch_size * a.unroll_length
  return _Iterations(lambda: loop.init(jax.random.PRNGKey(config.seed)), loop.step, steps,
                     saved=lambda state: state, resume=lambda state, tree: loop.place(tree),
                     params=lambda state: state.learner.params, relayout=anakin.relayout)


def _sync_ppo_iterations(config) -> _Iterations:
  """PPO on a host env (envpool, POPGym, ...): act `rollout_length` steps, then one jitted update.
  A checkpoint holds the learner and the normalisation statistics; a resumed run starts new episodes.

  With several local devices (and `num_envs`, the sequences per minibatch `minibatch_size /
  sequence_length` divisible by their number) the update
  is data-parallel over a mesh of them (`ppo.make_learner_step`, rtrl_rl/parallel.py): the learner
  state stays replicated, the buffer is split along the env axis, and the actor uses the first
  device's replica of the parameters. On one device the update is the plain jitted one."""
  from rtrl_rl import envs, parallel  # pylint: disable=g-import-not-at-top
  from rtrl_rl.agents.ppo import acting as ppo_acting, learning as ppo_learning  # pylint: disable=g-import-not-at-top
  from rtrl_rl.system import anakin  # pylint: disable=g-import-not-at-top
  a = config.agent
  env = envs.make(config.env.id, a.num_envs, config.seed, **config.env.options.to_dict())
  agent = ppo_acting.make_agent(a, env.observation_space, env.action_space)
  acting = anakin.host_acting(env, agent, a)
  mesh = _loop_mesh("PPO update", ppo_learning.split_sizes(a.num_envs, a.minibatch_size,
                                                           a.sequence_length))
  update = ppo_learning.make_learner_step(agent, a, mesh)
  bootstrap = jax.jit(lambda params, actor: anakin.bootstrap_value(agent, a, params, actor))
  place = (lambda learner: learner) if mesh is None else (lambda learner: parallel.replicate(learner, mesh))
  acting_params = (lambda params: params) if mesh is None else parallel.local_replica

  def init():
    k_learn, k_act = jax.random.split(jax.random.PRNGKey(config.seed))
    obs = np.zeros(env.observation_space.shape, np.float32)
    return place(ppo_learning.init_learner(k_learn, agent, a, obs)), acting.init(k_act)

  def step(state):
    learner, actor = state
    params = acting_params(learner.params)
    actor, traj, ep_metrics = acting.act(params, actor, a.rollout_length)
    batch = anakin.ppo_batch(traj, bootstrap(params, actor))
    if mesh is not None:
      batch = parallel.shard_batch(batch, mesh, ppo_learning.PPOBatch.batch_axes())
    learner, metrics = update(learner, batch)
    return (learner, actor), dict(metrics, **ep_metrics)

  return _Iterations(init, step, a.num_envs * a.rollout_length,
                     saved=lambda state: (state[0], state[1].norm),
                     resume=lambda state, tree: (place(tree[0]), state[1]._replace(norm=tree[1])),
                     params=lambda state: state[0].params)


def _run_iterations(config, run_dir: str, it: _Iterations) -> dict[str, Any]:
  """Drive a loop with metrics, progress, checkpoints, resume and signals. On several processes
  every one runs the same steps: each iteration they agree (one collective) whether to stop (a
  signal reached any of them) and whether to checkpoint (process 0 writes)."""
  from rtrl_rl import parallel  # pylint: disable=g-import-not-at-top
  s, a = config.system, config.agent
  total_iterations = max(1, math.ceil(a.total_env_steps / it.steps_per_iteration))
  state = it.init()
  ckpt = _Checkpoints(run_dir, s.keep_checkpoints)
  counters = {"updates": 0, "frames": 0, "elapsed_s": 0.0}
  restored = ckpt.restore(it.saved(state), it.relayout)
  if restored is not None:
    tree, meta = restored
    state = it.resume(state, tree)
    counters.update({k: meta[k] for k in counters if k in meta})
  primary = jax.process_index() == 0
  writer = MetricsWriter(run_dir, is_primary=primary)
  progress = Progress(total_frames=total_iterations * it.steps_per_iteration,
                      interval_s=s.log_every_s) if primary else None
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
        row.update(frames=counters["frames"], updates=counters["updates"],
                   episode_return=window["sum"] / window["episodes"] if window["episodes"] else float("nan"),
                   episodes=window["episodes"], elapsed_s=counters["elapsed_s"],
                   fps=counters["frames"] / max(counters["elapsed_s"], 1e-9))
        writer.write(row, step=counters["frames"])
        window = {"sum": 0.0, "episodes": 0}
      if progress is not None:
        progress.update(counters["frames"], counters["updates"],
                        episode_returns=[float(metrics["mean_episode_return"])] if episodes else ())
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    failure = _lost_process(e)
  finally:
    stop.uninstall()
    saved = ckpt.save_final(it.saved(state), counters)
    ckpt.close()
    writer.close()
  if failure is not None:
    raise RunFailed(f"{failure}; {saved}") from failure
  summary = dict(counters, episode_return=float(np.mean(recent)) if recent else float("nan"),
                 stopped_early=counters["updates"] < total_iterations,
                 params_crc32=params_crc32(parallel.fetch(it.params(state))))
  _finish(config, run_dir, summary)
  return summary


def _finish(config, run_dir: str, summary: dict) -> None:
  if jax.process_index() != 0:
    return
  with open(os.path.join(run_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  if config.system.plot:
    from rtrl_rl import plot  # pylint: disable=g-import-not-at-top
    try:
      plot.plot_runs([run_dir], os.path.join(run_dir, "learning_curve.png"))
    except Exception as e:  # pylint: disable=broad-except
      log.warning("could not plot the learning curve: %s", e)
