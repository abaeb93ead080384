"""The IMPALA learner: a pure update `(LearnerState, Rollout) -> (LearnerState, metrics)`.

The update replays the rollout with the learner's parameters from the carry the actor shipped:
`agent.unroll(params, rollout.carry, obs[0..M], ...)` gives the policy at obs[0..M-1] and the
values V(obs[0..M]) (the last one bootstraps). With `core_mode="rtrl"` the recurrent layer's
gradient is exact and untruncated: backprop within the rollout plus `(dL/ds_0) . T_0` from the
carried RTRL traces (rtrl_rl/cells/base.py). With "tbptt" it is truncated to the rollout.

Transition semantics (rewards, discounts, dummy steps after an episode end, truncation
bootstrapping, the V-trace cut) are documented in rtrl_rl/agents/rollout.py and computed by
`rollout.transitions`. The loss is `rtrl_rl.losses.impala_loss` (sums over time and batch, as in
torchbeast / Irie et al.), so over a sharded global batch `jax.grad` is already the global gradient
(rtrl_rl/parallel.py).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax

from rtrl_rl import parallel
from rtrl_rl.agents.learner_state import LearnerState
from rtrl_rl.agents.rollout import Rollout, transitions
from rtrl_rl.losses import impala_loss
from rtrl_rl.networks.agent import Agent, with_stem


def updates_per_run(config) -> int:
  """Learner updates over `total_env_steps` (each consumes M * B agent steps)."""
  return max(1, math.ceil(config.total_env_steps / (config.unroll_length * config.batch_size)))


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear decay from `learning_rate` to 0 over the run (torchbeast's LambdaLR), or constant."""
  if config.lr_schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  return optax.linear_schedule(config.learning_rate, 0.0, updates_per_run(config))


def make_optimizer(config) -> optax.GradientTransformation:
  """Global-norm clip, then RMSProp with torch.optim.RMSprop semantics (as torchbeast):

      nu = decay * nu + (1 - decay) * g^2;   update = -lr * g / (sqrt(nu) + eps)

  i.e. optax.rmsprop with `eps_in_sqrt=False` (optax's default puts eps inside the sqrt), zero
  initial nu, no bias correction, not centred.
  """
  parts = []
  if config.max_grad_norm and config.max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(config.max_grad_norm))
  parts.append(
    optax.rmsprop(
      learning_rate_schedule(config),
      decay=config.rmsprop_decay,
      eps=config.rmsprop_eps,
      initial_scale=0.0,
      eps_in_sqrt=False,
      centered=False,
      momentum=config.rmsprop_momentum or None,
    )
  )
  return optax.chain(*parts)


@functools.lru_cache(maxsize=16)
def _jitted_init(agent: Agent):
  return jax.jit(agent.init)


def init_learner(agent: Agent, config, observation_space, seed: int | jax.Array = 0) -> LearnerState:
  """Fresh parameters and optimiser state (host/default-device arrays; see parallel.replicate).
  `seed`: an int, or an int32 scalar (traceable).

  With `network.stem_grad="frozen"` the torso's parameters come from `network.stem_checkpoint`.
  """
  key = jax.random.PRNGKey(seed)
  key, init_key = jax.random.split(key)
  example = jnp.zeros(observation_space.shape, observation_space.dtype)
  params = _jitted_init(agent)(init_key, example)  # jitted: one compile instead of many eager ops
  if agent.stem_grad == "frozen":
    params = with_stem(params, config.network.stem_checkpoint, "network.stem_checkpoint")
  opt_state = jax.jit(make_optimizer(config).init)(params)
  return LearnerState(params, opt_state, jnp.zeros((), jnp.int32), key)


def make_loss(agent: Agent, config):
  """`loss(params, rollout) -> (loss, metrics)`: the IMPALA loss of a rollout (see module doc)."""

  def loss_fn(params, rollout: Rollout):
    (dist, values), _ = agent.unroll(
      params, rollout.carry, rollout.obs, rollout.reward, rollout.prev_action, rollout.first
    )
    tr = transitions(rollout, config.discount, values.dtype)
    policy = jax.tree.map(lambda x: x[:-1], dist)  # pi(.|obs[t]), t < M
    log_mu = jnp.asarray(rollout.behaviour_log_prob)
    return impala_loss(
      policy,
      log_mu,
      rollout.action,
      tr.rewards,
      tr.discounts,
      values,
      mask=tr.mask,
      lambda_=tr.lambdas,
      clip_rho_threshold=config.clip_rho_threshold,
      clip_c_threshold=config.clip_c_threshold,
      baseline_cost=config.value_cost,
      entropy_cost=config.entropy_cost,
      reward_clip=config.reward_clip,
      reduction=config.reduction,
    )

  return loss_fn


def make_update(agent: Agent, config):
  """The pure learner update `(state, rollout) -> (state, metrics)` (not jitted; see
  `make_learner_step` or `parallel.data_parallel_jit`)."""
  loss_fn = make_loss(agent, config)
  optimizer = make_optimizer(config)
  schedule = learning_rate_schedule(config)

  def update(state: LearnerState, rollout: Rollout):
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, rollout)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    key, _ = jax.random.split(state.key)
    metrics = dict(metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = schedule(state.step)
    metrics["num_transitions"] = jnp.sum(transitions(rollout, config.discount).mask)
    metrics["policy_lag"] = jnp.mean((state.step - jnp.asarray(rollout.policy_version)).astype(jnp.float32))
    return LearnerState(params, opt_state, state.step + 1, key), metrics

  return update


def make_learner_step(agent: Agent, config, mesh=None, *, donate: bool = False):
  """The jitted update: on the default device (`mesh=None`) or data-parallel over `mesh`
  (rollout batch split over the mesh, state replicated; see rtrl_rl/parallel.py)."""
  update = make_update(agent, config)
  if mesh is None:
    return jax.jit(update, donate_argnums=(0,) if donate else ())
  return parallel.data_parallel_jit(update, mesh, Rollout.batch_axes(), donate_state=donate)
