"""PPO learning with an RTRL core: stored carries, single-step minibatches, stale or fresh gradients.

The rollout buffer (`PPOBatch`, time-major `[T, B]`) stores, for every step t, the core's carry
BEFORE o_t (hidden state and traces after step t-1; the reset by `first[t]` happens inside
`cells.step`), the normalised observation o_t, the agent's other inputs (last reward, last action,
first flag), the action, its log-prob and value, and the transition's reward and end flags.

A minibatch is `minibatch_size` single time steps drawn from all `T * B`. Each sample recomputes
ONE forward step `agent.step(params, carry_t, o_t, ...)` with the current weights; the core's
gradient is the forward-RTRL gradient `e_t . T_t` (`cells.step`'s custom derivative), the torso's
the immediate one, the heads' ordinary backprop (Elelimy et al. 2024).

gradient="stale": the stored carries serve every epoch. gradient="fresh": after each epoch the
carries are recomputed over the whole rollout with the new weights, by a scan of `agent.step`
from the rollout's initial carry `carry[0]`, storing the carry BEFORE each step, so index t of the
new buffer is again "the carry that processes o_t" (the authors' code is off by one here).

Episode ends (next-step autoreset, `rtrl_rl.envs.core`): the transition at index t goes from o_t to
o_{t+1} with reward `reward[t]`; `terminated[t]` cuts the bootstrap, `truncated[t]` bootstraps from
V(o_{t+1}) = `value[t+1]` (the final observation is processed by the agent) with lambda = 0.
Indices whose observation ends an episode (`mask[t] = False`) are not transitions: the next step
ignores their action; they are left out of the loss.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rtrl_rl import cells
from rtrl_rl.losses import gae_batched, ppo_loss
from rtrl_rl.networks.agent import Agent


class PPOBatch(NamedTuple):
  """A rollout, time-major `[T, B, ...]` (`bootstrap_value [B]`: V(o_T) after the last step)."""
  obs: jax.Array            # normalised observations o_t
  first: jax.Array          # bool: o_t starts an episode (resets the core before o_t)
  prev_reward: jax.Array    # the agent's last-reward input at t (raw env reward)
  prev_action: Any          # the agent's last-action input at t
  carry: cells.Carry        # the core's carry before o_t (leaves [T, B, ...])
  action: Any               # a_t
  log_prob: jax.Array       # log pi_old(a_t | ...)
  value: jax.Array          # V_old(o_t)
  reward: jax.Array         # (normalised) reward of the transition o_t -> o_{t+1}
  terminated: jax.Array     # bool: o_{t+1} is terminal
  truncated: jax.Array      # bool: the episode was cut at o_{t+1}
  mask: jax.Array           # bool: index t is a real transition (o_t is not an episode's last obs)
  bootstrap_value: jax.Array


class LearnerState(NamedTuple):
  params: Any
  opt_state: Any
  key: jax.Array
  num_updates: jax.Array


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clip, then Adam(lr, eps)."""
  parts = []
  if config.max_grad_norm:
    parts.append(optax.clip_by_global_norm(config.max_grad_norm))
  parts.append(optax.adam(config.learning_rate, eps=config.adam_eps))
  return optax.chain(*parts)


def init_learner(key: jax.Array, agent: Agent, config: ml_collections.ConfigDict, observation,
                 params=None) -> LearnerState:
  """Parameters (from `observation [*obs]`, unless given) and optimiser state."""
  k_params, k_learn = jax.random.split(key)
  if params is None:
    params = agent.init(k_params, jnp.asarray(observation))
    if config.stem_grad == "frozen":
      torso = load_stem(config.stem_checkpoint)
      shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)
      if shapes(torso) != shapes(params["torso"]):
        raise ValueError(f"PPO config: stem_checkpoint={config.stem_checkpoint!r} does not match the "
                         f"torso (torso_sizes={tuple(config.torso_sizes)}): expected "
                         f"{shapes(params['torso'])}, got {shapes(torso)}")
      params = dict(params, torso=torso)
  else:
    agent.init(k_params, jnp.asarray(observation))  # binds the input sizes
  opt_state = make_optimizer(config).init(params)
  return LearnerState(params, opt_state, k_learn, jnp.zeros((), jnp.int32))


def load_stem(path: str):
  """Torso parameters from a flax msgpack file holding the torso's params or a whole agent params
  dict `{"torso": ..., ...}` (`flax.serialization.to_bytes(params)`), as the IMPALA learner."""
  import flax.serialization  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    tree = flax.serialization.msgpack_restore(f.read())
  tree = tree["torso"] if isinstance(tree, dict) and "torso" in tree else tree
  return jax.tree.map(jnp.asarray, tree)


# -- advantages -------------------------------------------------------------------------------------
def advantages(config, batch: PPOBatch):
  """GAE `(advantages, targets)` `[T, B]` with the end-of-episode handling described above."""
  dtype = batch.value.dtype
  mask = batch.mask.astype(dtype)
  v_next = jnp.concatenate([batch.value[1:], batch.bootstrap_value[None]], 0)
  discount = config.gamma * (1.0 - batch.terminated.astype(dtype)) * mask
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
def _flat(tree, n):
  return jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), tree)


def make_loss(agent: Agent, config: ml_collections.ConfigDict):
  """`loss(params, sample) -> (loss, metrics)` for a minibatch of single steps (leaves `[mb, ...]`);
  `sample` is a dict with the PPOBatch fields plus "advantage" and "target"."""

  def loss_fn(params, s):
    (dist, value), _ = agent.step(params, s["carry"], s["obs"], s["prev_reward"], s["prev_action"],
                                  s["first"])
    return ppo_loss(dist, s["action"], s["log_prob"], s["advantage"], value, s["value"], s["target"],
                    mask=s["mask"], clip_eps=config.clip_eps, value_clip_eps=config.value_clip_eps,
                    vf_coef=config.vf_coef, ent_coef=config.ent_coef,
                    normalize_advantage=config.normalize_advantage)

  return loss_fn


def make_update(agent: Agent, config: ml_collections.ConfigDict):
  """The pure update `(LearnerState, PPOBatch) -> (LearnerState, metrics)` (jit it, or call it
  inside a jitted loop)."""
  optimizer = make_optimizer(config)
  loss_fn = make_loss(agent, config)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  num_mb, mb_size = config.num_minibatches, config.minibatch_size
  fresh = config.gradient == "fresh"

  def update(state: LearnerState, batch: PPOBatch):
    t, b = batch.value.shape
    n = t * b
    if n != num_mb * mb_size:
      raise ValueError(f"PPO: the batch has {t} x {b} = {n} steps but num_minibatches * minibatch_size "
                       f"= {num_mb} * {mb_size} = {num_mb * mb_size}")
    adv, target = advantages(config, batch)
    fields = {k: getattr(batch, k) for k in ("obs", "first", "prev_reward", "prev_action", "action",
                                             "log_prob", "value", "mask")}
    fields.update(advantage=adv, target=target)
    flat = _flat(fields, n)

    def minibatch(carry, idx):
      params, opt_state, flat_carry = carry
      sample = jax.tree.map(lambda x: x[idx], flat)
      sample["carry"] = jax.tree.map(lambda x: x[idx], flat_carry)
      (_, metrics), grads = grad_fn(params, sample)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      metrics["grad_norm"] = optax.tree.norm(grads)
      return (params, opt_state, flat_carry), metrics

    def epoch(carry, key):
      params, opt_state, carries = carry
      perm = jax.random.permutation(key, n).reshape(num_mb, mb_size)
      (params, opt_state, _), metrics = jax.lax.scan(
          minibatch, (params, opt_state, _flat(carries, n)), perm)
      if fresh:
        carries = recompute_carries(agent, params, batch._replace(carry=carries))
      return (params, opt_state, carries), metrics

    key, sub = jax.random.split(state.key)
    (params, opt_state, _), metrics = jax.lax.scan(
        epoch, (state.params, state.opt_state, batch.carry), jax.random.split(sub, config.num_epochs))
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["advantage_mean"] = jnp.mean(adv)
    metrics["target_mean"] = jnp.mean(target)
    return LearnerState(params, opt_state, key, state.num_updates + 1), metrics

  return update
