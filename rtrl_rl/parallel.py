"""Data parallelism over all devices of all processes: the ONLY module that knows about meshes.

The learner's update is one SPMD program (jax.jit with NamedShardings; no pmap) over a 1-D mesh of
every device of every process, axis "data":

  * the batch (e.g. a Rollout: axis 1 of time-major arrays, axis 0 of the carry) is split over it;
  * parameters and optimiser state are replicated;
  * the loss is a sum (or mean) over the GLOBAL batch, so `jax.grad` of it is already the global
    gradient: XLA inserts the cross-device reduction (an all-reduce, over gloo/NCCL across hosts).
    No explicit pmean is needed and the maths is exactly the single-device maths.

Multi-host: every process calls `initialize_distributed(...)` first, builds the same mesh, builds its
part of the global batch with `global_batch(...)` from its local data, and calls the same jitted
update in the same order. Parameters stay bitwise identical on all processes because they are one
replicated global array computed by one program.

    initialize_distributed("127.0.0.1:12345", num_processes=2, process_id=i)   # before other JAX use
    mesh = make_mesh()
    step = data_parallel_jit(update, mesh, batch_axes=Rollout.batch_axes())
    state = replicate(state, mesh)
    state, metrics = step(state, global_batch(local_rollout, mesh, Rollout.batch_axes()))
    params = fetch(state.params)       # numpy, on every process

Where the per-device maths is not "the same program on a bigger batch" (PPO: each device samples its
minibatches from its own shard and normalises over the global minibatch), `data_parallel_shard_map`
runs a per-device body under `jax.shard_map` over the "data" axis instead: the body sees its local
shard of the batch and the replicated state, and communicates with explicit collectives
(`jax.lax.psum(x, DATA_AXIS)`); its outputs must be replicated (identical on every device).

More generally, `per_device(fn, mesh, in_axes, out_axes)` maps any per-device body over the mesh
(each argument and result split along its batch axes or replicated), for use inside a jitted function,
and `sharded_jit` jits a function with its inputs and outputs placed the same way: the fully-jitted
Anakin loop (rtrl_rl/system/anakin.py) acts per device on its envs and then calls the learner's
data-parallel step, all in one jitted function.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(
  coordinator_address: str,
  num_processes: int,
  process_id: int,
  *,
  local_device_ids=None,
  cpu_collectives: str | None = "gloo",
  initialization_timeout: int = 120,
  heartbeat_timeout_s: int = 100,
) -> None:
  """Join a multi-process JAX run (call in every process before any other JAX computation).

  coordinator_address: "host:port" of process 0's coordinator (e.g. "127.0.0.1:12345").
  cpu_collectives: the CPU cross-process collectives implementation ("gloo"), needed when the
    devices are CPUs; ignored by GPU/TPU backends. None leaves JAX's default.
  heartbeat_timeout_s: a process that has sent no heartbeat for this long is lost; JAX then
    terminates the others (which may be waiting for it in a collective).
  """
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
  if jax.distributed.is_initialized():  # joined already (e.g. by rtrl_rl.train)
    if (jax.process_count(), jax.process_index()) != (num_processes, process_id):
      raise ValueError(
        f"already joined a run as process {jax.process_index()} of "
        f"{jax.process_count()}, not {process_id} of {num_processes}"
      )
    return
  if cpu_collectives is not None:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
    local_device_ids=local_device_ids,
    initialization_timeout=initialization_timeout,
    heartbeat_timeout_seconds=int(math.ceil(heartbeat_timeout_s)),
  )


def shutdown_distributed() -> None:
  jax.distributed.shutdown()


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis "data" over `devices` (default: every device of every process, ordered by
  process then id, so the global batch is the concatenation of the local batches in process order)."""
  devices = jax.devices() if devices is None else list(devices)
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int | None) -> NamedSharding:
  """Split array axis `batch_axis` over the mesh (None: replicated)."""
  if batch_axis is None:
    return replicated_sharding(mesh)
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def tree_shardings(mesh: Mesh, batch_axes) -> Any:
  """A pytree (prefix) of shardings from a pytree (prefix) of batch axes (ints or None)."""
  return jax.tree.map(lambda a: batch_sharding(mesh, a), batch_axes, is_leaf=lambda x: x is None)


def _num_shards(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def num_shards(mesh: Mesh) -> int:
  """The number of devices the batch is split over (the size of the "data" axis)."""
  return _num_shards(mesh)


def shard_size(size: int, mesh: Mesh, what: str) -> int:
  """`size / num_shards(mesh)`: each device's part of `size` (e.g. environments); raises ValueError
  naming `what` when it does not divide."""
  _check_divisible(size, _num_shards(mesh), what)
  return size // _num_shards(mesh)


def map_with_axes(fn, batch_axes, tree):
  """fn(leaf, axis) over every leaf of `tree`, `batch_axes` being a prefix of it."""
  return jax.tree.map(
    lambda axis, sub: jax.tree.map(lambda x: fn(x, axis), sub), batch_axes, tree, is_leaf=lambda x: x is None
  )


def _check_divisible(size: int, parts: int, what: str) -> None:
  if size % parts:
    raise ValueError(f"{what} {size} is not divisible by the {parts} devices it is split over")


def shard_batch(tree, mesh: Mesh, batch_axes) -> Any:
  """Place a whole (global) tree onto the mesh, split along `batch_axes`. One process: one batched
  transfer. Several processes: every process passes the same whole values (e.g. a restored
  checkpoint) and keeps its own devices' blocks; leaves that already are global arrays are
  resharded. Typed PRNG keys keep their type."""
  n = _num_shards(mesh)

  def check(x, axis):
    if axis is not None:
      _check_divisible(np.shape(x)[axis], n, f"batch size (axis {axis})")
    return x

  tree = map_with_axes(check, batch_axes, tree)
  if jax.process_count() == 1:
    return jax.device_put(tree, map_with_axes(lambda _, axis: batch_sharding(mesh, axis), batch_axes, tree))
  return map_with_axes(lambda x, axis: _put_global(x, batch_sharding(mesh, axis)), batch_axes, tree)


def is_typed_key(x) -> bool:
  """True for a typed PRNG key array (`jax.random.key`), false for raw `uint32` keys and the rest."""
  return jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key)


def _put_global(x, sharding: NamedSharding) -> jax.Array:
  """One leaf onto a sharding that may span processes (every process passes the same value)."""
  if is_typed_key(x):
    return jax.random.wrap_key_data(
      _put_global(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x)
    )
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return x if x.sharding.is_equivalent_to(sharding, x.ndim) else jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx], dtype=x.dtype)


def global_batch(local_tree, mesh: Mesh, batch_axes) -> Any:
  """Assemble the global batch from each process's local batch (multi-process and single-process).

  Every process passes its own local part (batch size B_local, the same on every process); the
  global batch is the concatenation over processes in process order, B = B_local * num_processes,
  split over the devices of the mesh (B_local must divide over this process's devices).
  """
  procs = jax.process_count()
  if procs == 1:  # the local batch is the global one
    return shard_batch(local_tree, mesh, batch_axes)
  local_devices = _num_shards(mesh) // procs

  def make(x, axis):
    x = np.asarray(x)
    if axis is None:
      return jax.make_array_from_process_local_data(replicated_sharding(mesh), x, x.shape)
    _check_divisible(x.shape[axis], local_devices, f"local batch size (axis {axis})")
    shape = list(x.shape)
    shape[axis] *= procs
    return jax.make_array_from_process_local_data(batch_sharding(mesh, axis), x, tuple(shape))

  return map_with_axes(make, batch_axes, local_tree)


def replicate(tree, mesh: Mesh) -> Any:
  """Put identical host values (e.g. freshly initialised learner state) on every device of the mesh.

  Each process must pass the same values (same seed); works across processes.
  """
  sharding = replicated_sharding(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx], dtype=x.dtype)

  return jax.tree.map(put, tree)


def fetch(tree) -> Any:
  """Host numpy copies of the whole (global) values of a tree's arrays, on every process (typed PRNG
  keys stay typed keys: numpy has no key dtype). Replicated and addressable arrays are copied
  without communication (all device-to-host copies start before any is waited for); arrays split
  over several processes are gathered, which is a collective: every process must call `fetch`
  on such a tree at the same point."""
  leaves, treedef = jax.tree.flatten(tree)
  split = [
    i
    for i, x in enumerate(leaves)
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated
  ]
  if split:
    parts = [jax.random.key_data(leaves[i]) if is_typed_key(leaves[i]) else leaves[i] for i in split]
    gathered = multihost_utils.process_allgather(parts, tiled=True)
    leaves = list(leaves)
    for i, g in zip(split, gathered):
      leaves[i] = (
        jax.random.wrap_key_data(g, impl=jax.random.key_impl(leaves[i]))
        if is_typed_key(leaves[i])
        else np.asarray(g)
      )

  def local(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x.addressable_shards[0].data  # replicated: this process's first replica
    return x

  def host(x):
    return x if is_typed_key(x) else np.asarray(x)

  return jax.tree.map(host, jax.device_get(jax.tree.unflatten(treedef, [local(x) for x in leaves])))


def local_replica(tree, device=None) -> Any:
  """Single-device views of replicated arrays: each leaf's replica on `device` (default: this
  process's first local device), without a copy; other leaves pass through. For feeding replicated
  learner parameters to code that runs on one device (e.g. an actor's jitted policy)."""
  device = jax.local_devices()[0] if device is None else device

  def get(x):
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
      for shard in x.addressable_shards:
        if shard.device == device:
          return shard.data
      raise ValueError(f"local_replica: no replica on {device}")
    return x

  return jax.tree.map(get, tree)


def sharded_jit(fn: Callable, mesh: Mesh, in_axes, out_axes, *, donate_argnums=()) -> Callable:
  """jit `fn` over `mesh` with its arguments and results placed by batch axes: `in_axes` (a tuple,
  one pytree prefix per argument) and `out_axes` (a prefix of the result) hold ints (split that
  array axis over the mesh) or None (replicated)."""
  return jax.jit(
    fn,
    in_shardings=tuple(tree_shardings(mesh, a) for a in in_axes),
    out_shardings=tree_shardings(mesh, out_axes),
    donate_argnums=donate_argnums,
  )


def data_parallel_jit(fn: Callable, mesh: Mesh, batch_axes, *, donate_state: bool = False) -> Callable:
  """jit `fn(state, batch) -> (state, metrics)` over `mesh`: state and metrics replicated, the
  batch split along `batch_axes` (a pytree prefix of the batch, e.g. `Rollout.batch_axes()`).

  Inputs must be global arrays with these shardings (see `replicate`, `shard_batch`,
  `global_batch`); `donate_state` lets XLA reuse the old state's buffers.
  """
  return sharded_jit(fn, mesh, (None, batch_axes), (None, None), donate_argnums=(0,) if donate_state else ())


def batch_spec(batch_axis: int | None) -> P:
  """The PartitionSpec splitting array axis `batch_axis` over the "data" axis (None: replicated)."""
  return P() if batch_axis is None else P(*([None] * batch_axis), DATA_AXIS)


def _specs(batch_axes) -> Any:
  return jax.tree.map(batch_spec, batch_axes, is_leaf=lambda x: x is None)


def per_device(fn: Callable, mesh: Mesh, in_axes, out_axes) -> Callable:
  """`jax.shard_map(fn)` over `mesh` (not jitted: call it inside a jitted function): `fn(*args)`
  runs once per device on that device's block of each argument, and the results are assembled into
  global arrays. `in_axes` (a tuple, one pytree prefix per argument) and `out_axes` (a prefix of the
  result) hold ints (the array axis split over the mesh: `fn` sees `size / num_shards` of it) or
  None (replicated: `fn` sees the whole array, and must return the same value on every device,
  e.g. a `jax.lax.psum(x, DATA_AXIS)`). `jax.lax.axis_index(DATA_AXIS)` is the device's index."""
  # check_vma=False: bodies may call code (lax.scan with constant initial carries, e.g. GAE) that is
  # not annotated for varying-manual-axes typing; gradients inside `fn` are then per-device (no
  # implicit psum), and `fn` is responsible for the collectives that make its None outputs replicated.
  return jax.shard_map(
    fn, mesh=mesh, in_specs=tuple(_specs(a) for a in in_axes), out_specs=_specs(out_axes), check_vma=False
  )


def data_parallel_shard_map(fn: Callable, mesh: Mesh, batch_axes, *, donate_state: bool = False) -> Callable:
  """jit of `jax.shard_map(fn)` over `mesh`: `fn(state, local_batch) -> (state, metrics)` runs once
  per device on the replicated state and that device's shard of the batch (split along
  `batch_axes`, as `data_parallel_jit`), may use collectives over `DATA_AXIS`, and must return
  replicated (device-invariant) state and metrics. Gradients taken inside `fn` are the device's
  own (sum them with `jax.lax.psum(grads, DATA_AXIS)`). Same inputs and outputs as `data_parallel_jit`."""
  return data_parallel_jit(
    per_device(fn, mesh, (None, batch_axes), (None, None)), mesh, batch_axes, donate_state=donate_state
  )
