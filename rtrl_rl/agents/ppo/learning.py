"""PPO learning with an RTRL core: stored carries, single-step (or sequence) minibatches, stale or
fresh gradients.

The rollout buffer (`PPOBatch`, time-major `[T, B]`) stores, for every step t, the core's carry
BEFORE o_t (hidden state and traces after step t-1; the reset by `first[t]` happens inside
`cells.step`), the normalised observation o_t, the agent's other inputs (last reward, last action,
first flag), the action, its log-prob and value, and the transition's reward and end flags.

A minibatch is `minibatch_size` single time steps drawn from all `T * B`. Each sample recomputes
ONE forward step `agent.step(params, carry_t, o_t, ...)` with the current weights; the core's
gradient is the forward-RTRL gradient `e_t . T_t` (`cells.step`'s custom derivative), the torso's
the immediate one, the heads' ordinary backprop (Elelimy et al. 2024).

Sequence minibatches (`sequence_length = L > 1`): the rollout is cut into chunks of L consecutive
steps per env, `[T, B] -> [T/L, B]` sequences (sequence `k * B + b` covers steps `kL .. kL+L-1` of
env b); a minibatch draws `minibatch_size / L` of them, and each is replayed by `agent.unroll` from
its stored carry `carry[kL]`. With `network.core_mode="tbptt"` this is truncated BPTT with
truncation L (the RTU paper's GRU / LRU T-BPTT baselines inside PPO: the stored carry is a
constant); with `network.core_mode="rtrl"` it is still exact (backprop within the sequence plus the
carried-in trace term of `cells.unroll`). `L = 1` is the single-step composition above, computed with `agent.step`.

gradient="stale": the stored carries serve every epoch. gradient="fresh": after each epoch the
carries are recomputed over the whole rollout with the new weights, by a scan of `agent.step`
from the rollout's initial carry `carry[0]`, storing the carry BEFORE each step, so index t of the
new buffer is again "the carry that processes o_t" (the authors' code is off by one here).

Episode ends (next-step autoreset, `rtrl_rl.envs.core`): the transition at index t goes from o_t to
o_{t+1} with reward `reward[t]`; `terminated[t]` cuts the bootstrap, `truncated[t]` bootstraps from
V(o_{t+1}) = `value[t+1]` (the final observation is processed by the agent) with lambda = 0.
Indices whose observation ends an episode (`mask[t] = False`) are not transitions: the next step
ignores their action; they are left out of the loss.

Data parallelism (`make_learner_step(agent, config, mesh)`, rtrl_rl/parallel.py): the buffer is split
over the mesh's D devices along the env axis B (device d holds envs [d B/D, (d+1) B/D): all their
steps and stored carries), parameters and optimiser state are replicated. Everything per env stays
on its device: GAE, and the "fresh" recompute of the carries (a scan over time, per env). Each
minibatch step is one global SGD step: device d takes `minibatch_size / D` single steps from its own
shard, computes its part of the loss (masked sums divided by the GLOBAL sample count), and the
parameter gradients are summed over the mesh (one psum), so every device applies the same update.
Advantage normalisation uses the global minibatch's masked mean and std (psums of the sums and of
the centred squared sums), exactly as on one device.

Minibatch composition (`minibatch_indices`, over the K = T / L sequences of each env; K = T and
single steps when L = 1): with `num_shards = 1` (one device) an epoch is a permutation of all K * B
sequences cut into `num_minibatches` rows. With `num_shards = D > 1` sampling is stratified by shard:
in each epoch, shard d permutes its own K * B / D sequences with the epoch key folded with d
(`jax.random.fold_in(key, d)`) and cuts them into `num_minibatches` rows of `minibatch_size / (L D)`;
global minibatch j is the concatenation over d of every shard's row j. Each epoch still visits every
step exactly once, and every minibatch holds the same number of sequences from each env group.
`make_update(agent, config, num_shards=D)` runs exactly this composition on one device (the
reference the D-device update equals, up to float summation order); B and `minibatch_size / L`
must be divisible by D.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rtrl_rl import cells, parallel
from rtrl_rl.agents.learner_state import LearnerState
from rtrl_rl.losses import gae_batched, ppo_loss
from rtrl_rl.networks.agent import Agent, with_stem


class PPOBatch(NamedTuple):
  """A rollout, time-major `[T, B, ...]` (`bootstrap_value [B]`: V(o_T) after the last step)."""

  obs: jax.Array  # normalised observations o_t
  first: jax.Array  # bool: o_t starts an episode (resets the core before o_t)
  prev_reward: jax.Array  # the agent's last-reward input at t (raw env reward)
  prev_action: Any  # the agent's last-action input at t
  carry: cells.Carry  # the core's carry before o_t (leaves [T, B, ...])
  action: Any  # a_t
  log_prob: jax.Array  # log pi_old(a_t | ...)
  value: jax.Array  # V_old(o_t)
  reward: jax.Array  # (normalised) reward of the transition o_t -> o_{t+1}
  terminated: jax.Array  # bool: o_{t+1} is terminal
  truncated: jax.Array  # bool: the episode was cut at o_{t+1}
  mask: jax.Array  # bool: index t is a real transition (o_t is not an episode's last obs)
  bootstrap_value: jax.Array

  @staticmethod
  def batch_axes() -> "PPOBatch":
    """The env axis of each field (a pytree prefix of a PPOBatch): 1 for the time-major `[T, B, ...]`
    fields and the carry, 0 for `bootstrap_value [B]`. Used to shard the buffer over a mesh."""
    return PPOBatch(
      obs=1,
      first=1,
      prev_reward=1,
      prev_action=1,
      carry=1,
      action=1,
      log_prob=1,
      value=1,
      reward=1,
      terminated=1,
      truncated=1,
      mask=1,
      bootstrap_value=0,
    )


def ppo_batch(traj: dict, bootstrap_value) -> PPOBatch:
  """The PPO rollout buffer from the acted steps (`actor_loop.act`'s time-major dict) and V(o_T)."""
  fields = {k: traj[k] for k in PPOBatch._fields if k != "bootstrap_value"}
  return PPOBatch(**fields, bootstrap_value=bootstrap_value)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clip, then Adam(lr, eps)."""
  parts = []
  if config.max_grad_norm:
    parts.append(optax.clip_by_global_norm(config.max_grad_norm))
  parts.append(optax.adam(config.learning_rate, eps=config.adam_eps))
  return optax.chain(*parts)


def init_learner(
  key: jax.Array, agent: Agent, config: ml_collections.ConfigDict, observation, params=None
) -> LearnerState:
  """Parameters (from `observation [*obs]`, unless given) and optimiser state."""
  k_params, k_learn = jax.random.split(key)
  if params is None:
    params = agent.init(k_params, jnp.asarray(observation))
    if config.network.stem_grad == "frozen":
      params = with_stem(params, config.network.stem_checkpoint, "PPO config: network.stem_checkpoint")
  opt_state = make_optimizer(config).init(params)
  return LearnerState(params, opt_state, jnp.zeros((), jnp.int32), k_learn)


# -- advantages -------------------------------------------------------------------------------------
def advantages(config, batch: PPOBatch):
  """GAE `(advantages, targets)` `[T, B]` with the end-of-episode handling described above."""
  dtype = batch.value.dtype
  mask = batch.mask.astype(dtype)
  v_next = jnp.concatenate([batch.value[1:], batch.bootstrap_value[None]], 0)
  discount = config.discount * (1.0 - batch.terminated.astype(dtype)) * mask
  lam = config.gae_lambda * (1.0 - batch.truncated.astype(dtype))
  out = gae_batched(batch.value, v_next, batch.reward.astype(dtype), discount, lam)
  return out.advantages, out.targets


# -- fresh carries ----------------------------------------------------------------------------------
def recompute_carries(agent: Agent, params, batch: PPOBatch) -> cells.Carry:
  """The carries before each o_t, `[T, B, ...]`, recomputed over the rollout with `params` from the
  rollout's initial carry `batch.carry[0]` (no gradient). Index 0 is the stored initial carry."""
  params = jax.lax.stop_gradient(params)
  carry0 = jax.tree.map(lambda x: x[0], batch.carry)

  def body(carry, inp):
    obs, r, a, first = inp
    _, nxt = agent.step(params, carry, obs, r, a, first)
    return nxt, carry

  _, carries = jax.lax.scan(body, carry0, (batch.obs, batch.prev_reward, batch.prev_action, batch.first))
  return carries


# -- the update -------------------------------------------------------------------------------------
def _sequences(tree, seq_len: int):
  """Time-major leaves `[T, B, ...]` -> `[T/L * B, L, ...]`: row `k * B + b` holds steps
  `kL .. kL+L-1` of env b (with L = 1, row `t * B + b` is step t of env b)."""

  def cut(x):
    t, b = x.shape[:2]
    x = jnp.swapaxes(x.reshape((t // seq_len, seq_len, b) + x.shape[2:]), 1, 2)
    return x.reshape((t // seq_len * b, seq_len) + x.shape[3:])

  return jax.tree.map(cut, tree)


def _sequence_starts(carries, seq_len: int):
  """The stored carries `[T, B, ...]` at each sequence's first step, `[T/L * B, ...]`."""
  return jax.tree.map(lambda x: x[::seq_len].reshape((-1,) + x.shape[2:]), carries)


def _time_major(sample: dict, seq_len: int) -> dict:
  """A minibatch of sequences (leaves `[n, L, ...]`, carry `[n, ...]`) in the layout the forward pass
  takes: single steps `[n, ...]` when L = 1, else time-major `[L, n, ...]`."""
  move = (lambda x: x[:, 0]) if seq_len == 1 else (lambda x: jnp.swapaxes(x, 0, 1))
  out = {k: jax.tree.map(move, v) for k, v in sample.items() if k != "carry"}
  out["carry"] = sample["carry"]
  return out


def _forward(agent: Agent, seq_len: int):
  """`forward(params, sample) -> (dist, value)` for a `_time_major` sample: one `agent.step` from the
  stored carries (L = 1), or `agent.unroll` over the sequences from their stored carries."""
  run = agent.step if seq_len == 1 else agent.unroll

  def forward(params, s):
    return run(params, s["carry"], s["obs"], s["prev_reward"], s["prev_action"], s["first"])[0]

  return forward


def split_sizes(num_envs: int, minibatch_size: int, seq_len: int = 1) -> dict[str, int]:
  """What the data-parallel update splits over the devices (module doc): every size must divide by
  their number."""
  return {"num_envs": num_envs, "minibatch_size / sequence_length": minibatch_size // seq_len}


def _check_shards(num_envs: int, minibatch_size: int, num_shards: int, seq_len: int = 1) -> None:
  sizes = split_sizes(num_envs, minibatch_size, seq_len)
  if num_shards < 1 or any(size % num_shards for size in sizes.values()):
    raise ValueError(
      "PPO config: "
      + " and ".join(f"{k} ({v})" for k, v in sizes.items())
      + f" must both be divisible by the {num_shards} devices the buffer is split over"
    )


def minibatch_indices(
  key: jax.Array,
  num_steps: int,
  num_envs: int,
  num_minibatches: int,
  minibatch_size: int,
  num_shards: int = 1,
  shard=0,
) -> jax.Array:
  """One epoch's minibatches of shard `shard`: indices `[num_minibatches, minibatch_size /
  num_shards]` into that shard's flattened `[T, B / num_shards]` buffer (`t * B_local + e`). The
  unit is a sample: a single step, or a sequence (then `num_steps` = T / L sequences per env and
  `minibatch_size` counts sequences).

  `num_shards = 1`: a permutation of all T * B steps (the single-device sampling). Otherwise the
  shard's own steps, permuted with `fold_in(key, shard)` (see the module doc). `shard` may be traced
  (`jax.lax.axis_index`)."""
  _check_shards(num_envs, minibatch_size, num_shards)
  n_local = num_steps * num_envs // num_shards
  if num_shards > 1:
    key = jax.random.fold_in(key, shard)
  return jax.random.permutation(key, n_local).reshape(num_minibatches, minibatch_size // num_shards)


def global_minibatch_indices(
  key: jax.Array,
  num_steps: int,
  num_envs: int,
  num_minibatches: int,
  minibatch_size: int,
  num_shards: int = 1,
) -> jax.Array:
  """One epoch's global minibatches `[num_minibatches, minibatch_size]`, indices into the flattened
  `[T, B]` buffer (`t * B + b`): every shard's `minibatch_indices` rows concatenated in shard order."""
  if num_shards == 1:
    return minibatch_indices(key, num_steps, num_envs, num_minibatches, minibatch_size)
  b_local = num_envs // num_shards
  rows = []
  for d in range(num_shards):
    local = minibatch_indices(key, num_steps, num_envs, num_minibatches, minibatch_size, num_shards, d)
    rows.append((local // b_local) * num_envs + d * b_local + local % b_local)
  return jnp.concatenate(rows, axis=1)


def make_loss(agent: Agent, config: ml_collections.ConfigDict, axis_name: str | None = None):
  """`loss(params, sample) -> (loss, metrics)` for a minibatch; `sample` is a dict with the PPOBatch
  fields plus "advantage" and "target": single steps (leaves `[mb, ...]`) when `sequence_length` is
  1, else sequences, time-major (leaves `[L, mb / L, ...]`, carry `[mb / L, ...]`: before step 0).
  `axis_name`: inside `shard_map` over it, the loss of THIS device's part of a global minibatch
  (`rtrl_rl.losses.ppo_loss`'s shares: their sum over the axis is the global minibatch's loss)."""
  forward = _forward(agent, config.sequence_length)

  def loss_fn(params, s):
    dist, value = forward(params, s)
    return ppo_loss(
      dist,
      s["action"],
      s["log_prob"],
      s["advantage"],
      value,
      s["value"],
      s["target"],
      mask=s["mask"],
      clip_eps=config.clip_eps,
      value_clip_eps=config.value_clip_eps,
      vf_coef=config.value_cost,
      ent_coef=config.entropy_cost,
      normalize_advantage=config.normalize_advantage,
      axis_name=axis_name,
    )

  return loss_fn


def _make_update(agent: Agent, config: ml_collections.ConfigDict, num_shards: int, axis_name: str | None):
  """The update; `axis_name` None: the whole buffer on one device (minibatches composed for
  `num_shards`), else the per-device body of the data-parallel update (`num_shards` = axis size)."""
  optimizer = make_optimizer(config)
  sharded = axis_name is not None
  loss_fn = make_loss(agent, config, axis_name if sharded else None)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  num_mb, mb_size, seq_len = config.num_minibatches, config.minibatch_size, config.sequence_length
  mb_seqs = mb_size // seq_len  # samples (sequences) per minibatch
  fresh = config.gradient == "fresh"
  psum = (lambda x: jax.lax.psum(x, axis_name)) if sharded else (lambda x: x)

  def update(state: LearnerState, batch: PPOBatch):
    t, b_local = batch.value.shape
    b = b_local * num_shards if sharded else b_local
    n = t * b
    if n != num_mb * mb_size or t % seq_len:
      raise ValueError(
        f"PPO: the batch has {t} x {b} = {n} steps but num_minibatches * minibatch_size "
        f"= {num_mb} * {mb_size} = {num_mb * mb_size}, or its {t} steps per env are "
        f"not a multiple of sequence_length={seq_len}"
      )
    _check_shards(b, mb_size, num_shards, seq_len)
    adv, target = advantages(config, batch)  # per env: no communication
    fields = {
      k: getattr(batch, k)
      for k in ("obs", "first", "prev_reward", "prev_action", "action", "log_prob", "value", "mask")
    }
    fields.update(advantage=adv, target=target)
    seqs = _sequences(fields, seq_len)
    shard = jax.lax.axis_index(axis_name) if sharded else None

    def minibatch(carry, idx):
      params, opt_state, starts = carry
      sample = jax.tree.map(lambda x: x[idx], seqs)
      sample["carry"] = jax.tree.map(lambda x: x[idx], starts)
      (_, metrics), grads = grad_fn(params, _time_major(sample, seq_len))
      # Sharded: this device's part of the gradient (shard_map without implicit reductions,
      # parallel.data_parallel_shard_map); the psum is the global minibatch's gradient, the same on
      # every device, so every device applies the same optimiser step.
      grads, metrics = psum((grads, metrics))
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      metrics["grad_norm"] = optax.tree.norm(grads)
      return (params, opt_state, starts), metrics

    def epoch(carry, key):
      params, opt_state, carries = carry
      k = t // seq_len  # sequences per env
      if sharded:
        idx = minibatch_indices(key, k, b, num_mb, mb_seqs, num_shards, shard)
      else:
        idx = global_minibatch_indices(key, k, b, num_mb, mb_seqs, num_shards)
      (params, opt_state, _), metrics = jax.lax.scan(
        minibatch, (params, opt_state, _sequence_starts(carries, seq_len)), idx
      )
      if fresh:  # per env: this device's envs only
        carries = recompute_carries(agent, params, batch._replace(carry=carries))
      return (params, opt_state, carries), metrics

    key, sub = jax.random.split(state.key)
    (params, opt_state, _), metrics = jax.lax.scan(
      epoch, (state.params, state.opt_state, batch.carry), jax.random.split(sub, config.num_epochs)
    )
    metrics = jax.tree.map(jnp.mean, metrics)
    if sharded:
      metrics["advantage_mean"] = psum(jnp.sum(adv)) / n
      metrics["target_mean"] = psum(jnp.sum(target)) / n
    else:
      metrics["advantage_mean"] = jnp.mean(adv)
      metrics["target_mean"] = jnp.mean(target)
    return LearnerState(params, opt_state, state.step + 1, key), metrics

  return update


def make_update(agent: Agent, config: ml_collections.ConfigDict, num_shards: int = 1):
  """The pure update `(LearnerState, PPOBatch) -> (LearnerState, metrics)` on one device (jit it, or
  call it inside a jitted loop). `num_shards > 1` composes the minibatches as the data-parallel
  update over that many devices does (module doc): the single-device reference of
  `make_learner_step(agent, config, mesh)`; the default 1 is the plain PPO sampling."""
  return _make_update(agent, config, num_shards, None)


def make_learner_step(agent: Agent, config: ml_collections.ConfigDict, mesh=None, *, donate: bool = False):
  """The jitted update: on the default device (`mesh=None`: `jax.jit(make_update(agent, config))`)
  or data-parallel over `mesh` (rtrl_rl/parallel.py): the buffer split along the env axis over the
  mesh, learner state and metrics replicated. Inputs: `parallel.replicate(state, mesh)` and
  `parallel.shard_batch` / `parallel.global_batch(batch, mesh, PPOBatch.batch_axes())`.

  A 1-device mesh runs the single-device sampling; a D-device mesh equals
  `make_update(agent, config, num_shards=D)` on the same global buffer."""
  if mesh is None:
    return jax.jit(make_update(agent, config), donate_argnums=(0,) if donate else ())
  num_shards = parallel.num_shards(mesh)
  _check_shards(config.num_envs, config.minibatch_size, num_shards, config.sequence_length)
  body = _make_update(agent, config, num_shards, parallel.DATA_AXIS)
  return parallel.data_parallel_shard_map(body, mesh, PPOBatch.batch_axes(), donate_state=donate)
