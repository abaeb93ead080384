"""PPO acting: the network from the config, observation/reward normalisation.

Everything here is a pure function of explicit state, so that the fully-jitted loop and the
host-side loop (rtrl_rl/agents/actor_loop.py) share it.

Normalisation (as in the reference PPO implementations the RTU paper uses):
  observations: running per-feature mean/var over every observation seen; the agent sees
    clip((o - mean) / sqrt(var + 1e-8), -obs_clip, obs_clip). The buffer stores the NORMALISED
    observation, so that replaying a step from its stored carry sees exactly what the actor saw.
  rewards: a running discounted return `G = gamma G + r` (reset at episode ends) per env; rewards
    are divided by the running std of G and clipped. GAE uses the scaled rewards; the core's
    last-reward input is the raw reward (clipped by the agent).
  Acting data-parallel over several devices (`axis_name`), every device folds the whole batch of all
  devices into the statistics, which stay identical on every device.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from rtrl_rl import cells
from rtrl_rl.agents.actor_loop import Normalizer
from rtrl_rl.envs.core import Space
from rtrl_rl.networks import ActorCriticHeads, MLPTorso
from rtrl_rl.networks.agent import Agent, core_input_size


def make_agent(config: ml_collections.ConfigDict, observation_space: Space, action_space: Space) -> Agent:
  """Torso MLP -> core (`config.network.cell`, or None) -> actor/critic heads, from a validated
  config and the env's spaces, every size known (the cell built for the core's input size).
  `network.mlp_activation` is the torso's and the heads' hidden layers' activation."""
  n = config.network
  policy = config.policy
  if policy == "auto":
    policy = "categorical" if action_space.kind == "discrete" else "gaussian"
  if policy == "categorical":
    if action_space.kind != "discrete":
      raise ValueError(f"PPO config: policy='categorical' needs discrete actions, got {action_space}")
    num_actions = int(action_space.num_values)
  else:
    if action_space.kind != "box" or len(action_space.shape) != 1:
      raise ValueError(f"PPO config: policy='gaussian' needs a 1-D box action space, got {action_space}")
    num_actions = int(action_space.shape[0])
  torso = MLPTorso(tuple(n.mlp_hidden_sizes), n.mlp_activation)
  shape = tuple(observation_space.shape)
  cell = None
  if n.cell is not None:
    options = dict(n.cell_options) if n.cell_options else {}
    if n.cell not in ("rtu",):
      options = {k: v for k, v in options.items() if k not in ("nonlinear", "activation")}
    d = core_input_size(torso, shape, num_actions, n.use_last_action)
    cell = cells.make(n.cell, n.hidden_size, input_size=d, **options)
  heads = ActorCriticHeads(
    num_actions,
    policy=policy,
    hidden_sizes=tuple(n.head_hidden_sizes),
    activation=n.mlp_activation,
    init_log_std=config.init_log_std,
  )
  return Agent(
    torso=torso,
    heads=heads,
    cell=cell,
    num_actions=num_actions,
    observation_shape=shape,
    core_mode=n.core_mode,
    stem_grad=n.stem_grad,
    use_last_action=n.use_last_action,
    reward_clip=config.reward_clip,
  )


# -- running statistics ------------------------------------------------------------------------------
class RunningStats(NamedTuple):
  """Running mean / variance (parallel Welford); `count` starts at a small epsilon."""

  mean: jax.Array
  var: jax.Array
  count: jax.Array


def stats_init(shape=(), dtype=jnp.float32) -> RunningStats:
  return RunningStats(jnp.zeros(shape, dtype), jnp.ones(shape, dtype), jnp.asarray(1e-4, dtype))


def stats_update(
  stats: RunningStats, x: jax.Array, weight: jax.Array | None = None, axis_name: str | None = None
) -> RunningStats:
  """Fold a batch `x [B, *shape]` (optionally weighted by 0/1 `weight [B]`) into `stats`.

  `axis_name`: inside a map over that axis (`jax.shard_map`, `jax.vmap`), the batch is the
  concatenation of every member's `x`: the counts and sums, then the centred squares, are summed
  over the axis (psum), so every member gets the same statistics as one device folding the whole
  batch (up to float summation order)."""
  total = (lambda v: v) if axis_name is None else (lambda v: jax.lax.psum(v, axis_name))
  dtype = stats.mean.dtype
  x = x.astype(dtype)
  w = jnp.ones(x.shape[:1], dtype) if weight is None else weight.astype(dtype)
  w = w.reshape(w.shape + (1,) * (x.ndim - 1))
  n, w_sum = total((jnp.sum(w[(...,) + (0,) * (x.ndim - 1)]), jnp.sum(w * x, 0)))
  safe_n = jnp.maximum(n, 1.0)
  b_mean = w_sum / safe_n
  b_var = total(jnp.sum(w * jnp.square(x - b_mean), 0)) / safe_n
  tot = stats.count + n
  delta = b_mean - stats.mean
  mean = stats.mean + delta * n / tot
  m2 = stats.var * stats.count + b_var * n + jnp.square(delta) * stats.count * n / tot
  return RunningStats(mean, m2 / tot, tot)


class NormState(NamedTuple):
  """Observation and reward normalisation state (`ret_acc [B]`: the running discounted return)."""

  obs: RunningStats
  ret: RunningStats
  ret_acc: jax.Array


def norm_init(observation_shape, num_envs: int, dtype=jnp.float32) -> NormState:
  return NormState(
    stats_init(tuple(observation_shape), dtype), stats_init((), dtype), jnp.zeros((num_envs,), dtype)
  )


def normalize_obs(config, norm: NormState, obs: jax.Array, update: bool = True, axis_name: str | None = None):
  """`(norm, obs_normalised)`: folds `obs [B, ...]` into the statistics first (if `update`; over
  every member of `axis_name`, see `stats_update`)."""
  if not config.normalize_obs:
    return norm, obs
  obs = obs.astype(norm.obs.mean.dtype)
  if update:
    norm = norm._replace(obs=stats_update(norm.obs, obs, axis_name=axis_name))
  s = norm.obs
  out = jnp.clip((obs - s.mean) / jnp.sqrt(s.var + 1e-8), -config.obs_clip, config.obs_clip)
  return norm, out


def normalize_reward(
  config, norm: NormState, reward: jax.Array, done: jax.Array, valid: jax.Array, axis_name: str | None = None
):
  """`(norm, reward_scaled)` for the transition rewards `[B]`; `done [B]` ends the episode after
  this reward; `valid [B]` is False on the autoreset steps (their reward is not a transition's).
  The return statistics fold every member of `axis_name` (see `stats_update`)."""
  reward = reward.astype(norm.ret.mean.dtype)
  if not config.normalize_reward:
    return norm, reward
  ret_acc = jnp.where(valid, norm.ret_acc * config.discount + reward, norm.ret_acc)
  ret = stats_update(norm.ret, ret_acc, valid, axis_name)
  scaled = jnp.clip(reward / jnp.sqrt(ret.var + 1e-8), -config.reward_norm_clip, config.reward_norm_clip)
  return NormState(norm.obs, ret, jnp.where(done, 0.0, ret_acc)), scaled


def normalizer(config) -> Normalizer:
  """The acting loop's `Normalizer` (rtrl_rl/agents/actor_loop.py) for a PPO config: the running
  statistics above, replicated over a mesh but for the per-env discounted return."""
  return Normalizer(
    init=norm_init,
    obs=lambda norm, obs, update, axis_name: normalize_obs(config, norm, obs, update, axis_name),
    reward=lambda norm, reward, done, valid, axis_name: normalize_reward(
      config, norm, reward, done, valid, axis_name
    ),
    axes=NormState(obs=None, ret=None, ret_acc=0),
  )
