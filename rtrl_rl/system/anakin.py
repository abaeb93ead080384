"""The fully-jitted act-and-learn loop ("Anakin", Hessel et al. 2021) for JAX environments.

    loop = anakin.make("ppo", env, config.agent, mesh=None)     # or "impala"
    state = loop.init(key); state, metrics = loop.step(state)

A :class:`~rtrl_rl.envs._jax.FunctionalEnv` is vmapped over `num_envs`; ONE jitted function per
iteration acts for a rollout with `lax.scan` (policy step -> env step, the core's carry and RTRL
traces threaded through: rtrl_rl/agents/actor_loop.py) and then applies the learner's pure
update. The algorithm supplies both halves (`registry.AnakinParts`: PPO acts `rollout_length` steps
into a `PPOBatch`; IMPALA `unroll_length` steps into a `Rollout` of M + 1 steps that overlaps the
next by one step); this module assembles them, on one device or over a mesh.

Per-iteration metrics include the returns of the episodes that ended during the iteration:
`episode_return_sum`, `episodes`, `mean_episode_return` (NaN when none ended), `mean_episode_length`.

Data parallelism (`mesh=`, a 1-D mesh from rtrl_rl/parallel.py: the local devices, or all devices of
all processes of a jax.distributed run, each process driving its own; Podracer's Anakin):
the iteration is still ONE jitted function. The envs are split over the mesh's D devices: device d
acts on its own `num_envs / D` envs (all their per-env state, the parts' `actor_axes`) with its
own key chain (the actor keys are `fold_in(k, d)`, one per device), inside `jax.shard_map`. The
PPO normalisation statistics fold every device's batch at every step (psums in
`ppo.acting.stats_update`), so they stay identical on all devices and equal those of one device
acting on all envs; the episode metrics are summed over the mesh. The buffer stays split along the
env axis and goes to the learner's data-parallel step (one gradient all-reduce, learner state
replicated). A D-device iteration equals, up to float summation order, one device acting on each
env group with its folded key and updating on the concatenated buffer (PPO: `make_update(...,
num_shards=D)`).
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl import parallel
from rtrl_rl.agents import registry


class AnakinState(NamedTuple):
  learner: Any
  actor: Any


class Anakin(NamedTuple):
  """`init(key) -> AnakinState`; `step(state) -> (state, metrics)` (jitted, one iteration);
  `run(state, num_iterations) -> (state, metrics as numpy arrays [num_iterations])`;
  `place(state) -> state`: a host copy of a state (e.g. a restored checkpoint) put where `step`
  takes it (with a mesh: learner replicated, actor split along the parts' `actor_axes`);
  `steps_per_iteration`: agent steps per `step`; `total_updates`: steps of the whole run;
  `lower(state) -> jax.stages.Lowered`: the iteration lowered for a state (or its shapes, from
  `jax.eval_shape`), for XLA's analyses, e.g. `.compile().memory_analysis()`."""

  init: Callable[[jax.Array], AnakinState]
  step: Callable[[AnakinState], tuple[AnakinState, dict]]
  run: Callable[[AnakinState, int], tuple[AnakinState, dict]]
  agent: Any
  env: Any
  place: Callable[[Any], AnakinState]
  steps_per_iteration: int
  total_updates: int
  lower: Callable[[Any], Any]


def make(algo: str, env, agent_config, mesh=None, agent=None, update=None) -> Anakin:
  """The fully-jitted loop of the algorithm `algo` (a name of rtrl_rl/agents/registry.py) on the
  JAX env `env`, from its `AnakinParts`; data-parallel over `mesh` when given (module doc).
  agent: the network (default: the algorithm's, from the config). update: `(learner, batch) ->
  (learner, metrics)` instead of the algorithm's (data-parallel over `mesh` when given)."""
  parts = registry.get(algo).anakin(env, agent_config, mesh=mesh, agent=agent)
  if update is not None:
    parts = parts._replace(
      update=update if mesh is None else parallel.data_parallel_jit(update, mesh, parts.batch_axes)
    )
  return make_runner(env, parts, mesh)


def make_runner(env, parts: registry.AnakinParts, mesh=None) -> Anakin:
  """The loop from an algorithm's halves (`registry.AnakinParts`): per iteration `collect` acts on
  the envs (per device on its share with a mesh) and `update` learns from the batch."""
  num_envs, collect, batch_axes = parts.num_envs, parts.collect, parts.batch_axes
  make_scratch, scratch_axes, of_batch = parts.scratch or (lambda n: None, None, lambda batch: None)
  if mesh is None:
    init_actors = lambda k: parts.init_actors(num_envs, k)
    collect_all = lambda learner, actor, buf: collect(learner, actor, None, buf)
    jit = lambda fn: jax.jit(fn, donate_argnums=(1,))
    place = jax.device_put
    new_scratch = jax.jit(lambda: make_scratch(num_envs))
  else:
    local_envs = parallel.shard_size(num_envs, mesh, "the number of environments")
    axes = AnakinState(None, parts.actor_axes)
    with_key = lambda a: a._replace(key=a.key[None])  # the device's key <-> its row of [D]
    own_key = lambda a: a._replace(key=a.key[0])

    def init_local(k):
      k = jax.random.fold_in(k, jax.lax.axis_index(parallel.DATA_AXIS))
      return with_key(parts.init_actors(local_envs, k))

    def collect_local(learner, actor, buf):
      actor, batch, ep_metrics = collect(learner, own_key(actor), parallel.DATA_AXIS, buf)
      return with_key(actor), batch, ep_metrics

    init_actors = parallel.per_device(init_local, mesh, (None,), axes.actor)
    collect_all = parallel.per_device(
      collect_local, mesh, (None, axes.actor, scratch_axes), (axes.actor, batch_axes, None)
    )
    jit = lambda fn: parallel.sharded_jit(
      fn, mesh, (axes, scratch_axes), (axes, scratch_axes, None), donate_argnums=(1,)
    )
    new_scratch = parallel.sharded_jit(
      parallel.per_device(lambda: make_scratch(local_envs), mesh, (), scratch_axes), mesh, (), scratch_axes
    )
    place = lambda state: parallel.shard_batch(state, mesh, axes)

  init_actors = jax.jit(init_actors)  # eagerly, each op dispatches alone (seconds at start-up)

  def iteration(state: AnakinState, buf):
    actor, batch, ep_metrics = collect_all(state.learner, state.actor, buf)
    learner, metrics = parts.update(state.learner, batch)
    return AnakinState(learner, actor), of_batch(batch), dict(metrics, **ep_metrics)

  iteration = jit(iteration)
  held, ahead = [], []

  def init_state(key):
    k_learn, k_act = jax.random.split(key)
    return AnakinState(parts.init_learner(k_learn), init_actors(k_act))

  def init(key):
    """The initial state. Outside a trace, a background thread meanwhile compiles the iteration
    for the state's shapes (XLA compiles a program on one core: the initialisation's own
    compilation, e.g. an env's reset, and the caller's next work, e.g. restoring a checkpoint,
    overlap it on another); the first `step` joins it. Not a daemon thread: a process that ends
    before its first step (e.g. a checkpoint that does not fit) waits for the compilation to end
    (XLA's cannot be interrupted; a daemon thread inside it aborts the interpreter's exit)."""
    if not isinstance(key, jax.core.Tracer) and not ahead:
      ahead.append(threading.Thread(target=_prepare, args=(jax.eval_shape(init_state, key),)))
      ahead[0].start()
    return place(init_state(key))

  def _prepare(shapes):
    try:
      lower(shapes).compile()  # into the compilation cache, where the first `step` finds it
    except Exception:  # pylint: disable=broad-except - `step` compiles again and raises it there
      pass

  def step(state: AnakinState):
    while ahead:
      ahead.pop().join()
    buf = held.pop() if held else new_scratch()
    state, buf, metrics = iteration(state, buf)
    held.append(buf)
    return state, metrics

  def run(state, num_iterations: int):
    history = []
    for _ in range(int(num_iterations)):
      state, metrics = step(state)
      history.append(metrics)
    history = jax.device_get(history)
    stacked = {k: np.stack([np.asarray(m[k]) for m in history]) for k in history[0]} if history else {}
    return state, stacked

  def lower(state):
    return iteration.lower(state, jax.eval_shape(new_scratch))

  return Anakin(
    init, step, run, parts.agent, env, place, parts.steps_per_iteration, parts.total_updates, lower
  )


def iteration_bytes(loop: Anakin, state) -> int:
  """Bytes one iteration of `loop` holds, from XLA's memory analysis of its compiled program (nothing
  is run): arguments (the state, the donated buffer) + outputs + temporaries - the outputs written
  into donated arguments. `state`: a state or its shapes (`jax.eval_shape(loop.init, key)`)."""
  m = loop.lower(state).compile().memory_analysis()
  return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def _rekey(saved, like):
  """`like`-shaped keys (one per device, or one) split from the first of the `saved` keys; raw
  `uint32[..., 2]` keys or typed key arrays."""
  typed = parallel.is_typed_key(like)
  if typed != parallel.is_typed_key(saved):
    raise ValueError(f"actor keys: {saved.dtype} in the checkpoint vs {like.dtype} here")
  data_shape = () if typed else like.shape[-1:]
  first = jnp.reshape(saved, (-1, *data_shape))[0]
  count = math.prod(like.shape[: like.ndim - len(data_shape)])
  keys = jnp.reshape(jax.random.split(first, count), like.shape)
  return keys if typed else np.asarray(keys)


def relayout(saved: dict, like: AnakinState) -> AnakinState:
  """A checkpointed state written on another number of devices, in the form of `like` (this run's
  host state). `saved`: the checkpoint's leaves by tree path (`jax.tree_util.keystr`). Every leaf
  but the actor keys is global whatever the devices (per-env state `[num_envs, ...]`, replicated
  learner and statistics) and is kept as saved; the keys, one per device (`[D, ...]`, or one key
  without a mesh), are re-derived from the first saved one: `split(first, D_now)`. The resumed run
  then differs from an uninterrupted one only in its random draws.

  Raises ValueError naming the leaves that are missing or have another shape or dtype."""
  key_path = jax.tree_util.keystr((jax.tree_util.GetAttrKey("actor"), jax.tree_util.GetAttrKey("key")))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  names = [jax.tree_util.keystr(path) for path, _ in leaves]
  out, problems = [], []
  for name, (_, want) in zip(names, leaves):
    got = saved.get(name)
    if got is None:
      problems.append(f"{name}: not in the checkpoint")
    elif name == key_path:
      out.append(_rekey(got, want))
      continue
    elif np.shape(got) != np.shape(want) or np.asarray(got).dtype != np.asarray(want).dtype:
      problems.append(
        f"{name}: {np.asarray(got).dtype}{list(np.shape(got))} in the checkpoint vs "
        f"{np.asarray(want).dtype}{list(np.shape(want))} here"
      )
    out.append(got)
  extra = sorted(saved.keys() - set(names))
  if extra:
    problems.append(f"not in this run: {', '.join(extra)}")
  if problems:
    raise ValueError("; ".join(problems[:5]))
  return jax.tree_util.tree_unflatten(treedef, out)
