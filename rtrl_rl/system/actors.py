"""Actor processes: step batches of environments with the current policy and stream rollouts.

Each actor (a spawned process, see system/processes.py) owns P = `system.actor_pools` envpool
pools of R = `system.records_per_pool` x `system.envs_per_actor` environments each (by default
2 x 1 x envs_per_actor envs per actor). It runs the jitted policy on its CPU, carries each
env's recurrent state and RTRL traces, and puts one `ActorRecord` per `envs_per_actor` envs (R per
pool) per rollout of M+1 steps into the shared-memory `RolloutQueue` (blocking when the learner
falls behind).

Placement (`system.actor_device`, see `actor_jax_env`): "cpu" runs the policy on the host CPUs;
"gpu" gives actor k the trainer's local NVIDIA GPU k mod #GPUs, shared with the learner.

Double buffering: the pools are stepped with envpool's async `send`/`recv`; while one pool's worker
threads step its envs, the actor runs the policy on the other pool (`acting.RolloutCollector` with a
list of envs). Each pool is its own stream of rollouts with its own carry, and each record is a
fixed set of `envs_per_actor` envs of one pool, so every record obeys the Rollout contract on its
own (the same envs for all M+1 steps, one-step overlap with the previous record of those envs); a
record never mixes pools. R > 1 amortises the per-call cost of the policy over more envs (a win for
small CPU-bound networks, at the price of more policy lag). Each pool is stepped whole (batch_size
== num_envs; an `env.options.batch_size` is ignored here).

Parameters come from the `ParamStore` with their version, which the record carries so the learner
can log the policy lag (V-trace corrects for it).

Progress: an actor beats (`info.beat()`, system/processes.py) after each record it delivers and
while it waits for the learner (a full queue); one silent for `system.stall_timeout_s` (stopped,
or hung, e.g. in an env step) is restarted by the trainer's Supervisor.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

import numpy as np

from rtrl_rl import envs
from rtrl_rl.agents import registry
from rtrl_rl.envs.core import episode_step
from rtrl_rl.system.queue import ArraySpec, QueueClosed

ACTOR_DEVICES = ("cpu", "gpu")


class NoAcceleratorError(RuntimeError):
  """system.actor_device asks for an accelerator this host does not have."""


def local_gpu_ids(num_gpus: int, environ=None) -> list[str]:
  """The ids (as CUDA_VISIBLE_DEVICES names them) of this process's `num_gpus` local GPUs, in JAX's
  local device order: the process's own CUDA_VISIBLE_DEVICES entries when it is set, else 0..n-1."""
  visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
  if visible is None:
    return [str(i) for i in range(num_gpus)]
  ids = [v.strip() for v in visible.split(",") if v.strip()]
  if len(ids) < num_gpus:
    raise ValueError(f"CUDA_VISIBLE_DEVICES={visible!r} names {len(ids)} GPUs but JAX sees {num_gpus}")
  return ids[:num_gpus]


def actor_jax_env(actor_device: str, actor_index: int, gpu_ids: Sequence[str] = ()) -> dict[str, str]:
  """Environment variables an actor process sets before it imports JAX.

  "cpu": the policy runs on the host CPUs. "gpu": actor k runs on GPU `gpu_ids[k % len(gpu_ids)]`
  (CUDA), which it shares with the learner, so it allocates GPU memory on demand instead of
  preallocating most of it (the learner, started first, keeps JAX's default preallocation).
  """
  if actor_device == "cpu":
    return {"JAX_PLATFORMS": "cpu"}
  if actor_device == "gpu":
    if not gpu_ids:
      raise ValueError("actor_device='gpu' needs at least one GPU id")
    return {
      "JAX_PLATFORMS": "cuda",
      "CUDA_VISIBLE_DEVICES": str(gpu_ids[actor_index % len(gpu_ids)]),
      "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    }
  raise ValueError(f"actor_device={actor_device!r}: expected one of {ACTOR_DEVICES}")


def actor_envs_for_host(actor_device: str, num_actors: int) -> list[dict[str, str]]:
  """`actor_jax_env` for each of this host's actors; "gpu" checks that JAX sees a local GPU.

  Raises `NoAcceleratorError` (naming the fix) when actor_device="gpu" and this process has no
  local GPU (a CPU-only jaxlib, a TPU host: a TPU chip serves one process, so TPU actors are not
  separate processes).
  """
  gpu_ids: list[str] = []
  if actor_device == "gpu":
    import jax  # noqa: PLC0415 - module without jax: actor processes set JAX_PLATFORMS first

    gpus = [d for d in jax.local_devices() if d.platform == "gpu"]
    if not gpus:
      seen = ", ".join(sorted({d.platform for d in jax.local_devices()}))
      raise NoAcceleratorError(
        f"system.actor_device='gpu' but JAX sees no local GPU on this host (local devices: {seen}); "
        "run the actors on the host CPUs (--config.system.actor_device=cpu) or install JAX with "
        "CUDA (pip install 'jax[cuda13]')"
      )
    gpu_ids = local_gpu_ids(len(gpus))
  return [actor_jax_env(actor_device, k, gpu_ids) for k in range(num_actors)]


def actor_layout(config) -> tuple[int, int]:
  """(pools per actor, records per pool). An actor owns pools x records x envs_per_actor envs; the
  policy runs on one pool (records x envs_per_actor envs) per call."""
  return int(config.system.actor_pools), int(config.system.records_per_pool)


class ActorRecord(NamedTuple):
  """What an actor sends per rollout: the Rollout and the episodes that ended inside it.

  episode_return [M, B] float32: return of the episode whose last observation is obs[t+1]; NaN
                 where no episode ended (t + 1 indexes obs[1..M], so the overlap step obs[0] of
                 the next rollout is never counted twice).
  episode_length [M, B] int32: its length in agent steps (0 where none ended).
  """

  rollout: Any
  episode_return: Any
  episode_length: Any


def record_batch_axes(parts) -> ActorRecord:
  """The env axis of a record's fields; `parts`: the algorithm's `registry.ActorLearner`."""
  return ActorRecord(parts.batch_axes, 1, 1)


def record_spec(config, parts) -> ActorRecord:
  """The `ArraySpec` tree of one actor's record (numpy shapes, no batch of records)."""
  import jax  # noqa: PLC0415 - module without jax: actor processes set JAX_PLATFORMS first

  m, b = parts.unroll_length, config.system.envs_per_actor
  spec = lambda shape, dtype: ArraySpec(tuple(shape), np.dtype(dtype))
  rollout = jax.tree.map(lambda x: spec(x.shape, x.dtype), parts.rollout_spec(b))
  return ActorRecord(rollout, spec((m, b), np.float32), spec((m, b), np.int32))


class EpisodeTracker:
  """Running return and length per env across rollouts, by `envs.core.episode_step` (numpy), the
  function the jitted acting step uses."""

  def __init__(self, num_envs: int):
    self.ret = np.zeros(num_envs, np.float64)
    self.length = np.zeros(num_envs, np.int64)

  def update(self, rollout) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(episode_return [M, B], episode_length [M, B])` for episodes ending at obs[1..M]
    (NaN and 0 elsewhere); rollouts of the same envs in order, overlapping by one step."""
    m = rollout.action.shape[0]
    out_ret = np.full((m, self.ret.shape[0]), np.nan, np.float32)
    out_len = np.zeros((m, self.ret.shape[0]), np.int32)
    for t in range(1, m + 1):
      valid = ~(rollout.terminated[t - 1] | rollout.truncated[t - 1])
      ended = rollout.terminated[t] | rollout.truncated[t]
      (ret, length), (self.ret, self.length) = episode_step(
        self.ret, self.length, rollout.reward[t], ended, valid, xp=np
      )
      out_ret[t - 1] = np.where(ended, ret, np.nan)
      out_len[t - 1] = np.where(ended, length, 0)
    return out_ret, out_len


def actor_seed(config, process_index: int, actor_index: int, attempt: int) -> int:
  """Distinct per process, actor and restart (a restarted actor does not replay its episodes)."""
  return int(config.seed) * 1_000_003 + process_index * 10_007 + actor_index * 101 + attempt * 7_919


def buffer_seed(seed: int, buffer: int) -> int:
  """Seed of an actor's pool `buffer`; envpool seeds env i of a pool with `seed + i`, so pools are
  spaced far apart (no two pools of a run share an env seed for any realistic pool size)."""
  return (int(seed) + buffer * 100_003_999) % (2**31 - 1)


def make_actor_envs(config, seed: int) -> list:
  """The actor's pools (`actor_layout`), each of records_per_pool x envs_per_actor envs, stepped
  whole."""
  pools, records = actor_layout(config)
  options = config.env.options.to_dict()
  options.pop("batch_size", None)  # a pool is received whole (see the module docstring)
  return [
    envs.make(config.env.id, records * config.system.envs_per_actor, buffer_seed(seed, h), **options)
    for h in range(pools)
  ]


def split_records(rollout, records: int, batch_slice) -> list:
  """A pool's rollout as `records` rollouts of consecutive envs (each a fixed set of envs);
  `batch_slice(rollout, start, stop)`: the algorithm's (`registry.ActorLearner`)."""
  if records == 1:
    return [rollout]
  e = rollout.batch_size // records
  return [batch_slice(rollout, i * e, (i + 1) * e) for i in range(records)]


def actor_main(
  info, config, process_index: int, actor_index: int, queue, param_store, jax_env: dict[str, str]
) -> None:
  """Entry point of one actor process (called by the Supervisor as `target(info, *args)`);
  `jax_env` (`actor_jax_env`) places its policy."""
  os.environ.update(jax_env)  # read when JAX starts its backends (below)
  import jax  # noqa: PLC0415 - after jax_env is set: JAX reads it when imported

  jax.config.update("jax_platforms", jax_env["JAX_PLATFORMS"])  # also if JAX was imported already
  seed = actor_seed(config, process_index, actor_index, info.attempt)
  pools = make_actor_envs(config, seed)
  env = pools[0]
  parts = registry.get(config.algo).actor_learner(config, (env.observation_space, env.action_space))
  collector = parts.collector(pools, seed)
  _, per_pool = actor_layout(config)
  trackers = [EpisodeTracker(config.system.envs_per_actor) for _ in range(len(pools) * per_pool)]
  version, params = -1, None
  try:
    while not info.stop_event.is_set():
      newer = param_store.read_if_newer(version)
      if newer is not None:
        host_params, version = newer
        params = jax.device_put(host_params)
      if params is None:  # the learner has not published yet
        info.beat()
        info.stop_event.wait(0.05)
        continue
      rollouts = [
        r
        for pool_rollout in collector.collect_all(params, policy_version=version)
        for r in split_records(pool_rollout, per_pool, parts.batch_slice)
      ]
      for rollout, tracker in zip(rollouts, trackers):
        record = ActorRecord(rollout, *tracker.update(rollout))
        while not info.stop_event.is_set():
          try:
            queue.put(record, timeout=0.5)  # blocks while the learner is behind
          except TimeoutError:
            info.beat()  # waiting for the learner is no stall
            continue
          info.beat()
          break
  except QueueClosed:
    pass
  finally:
    for e in pools:
      e.close()
