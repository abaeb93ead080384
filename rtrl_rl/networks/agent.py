"""The agent network: torso -> recurrent core -> policy and value heads.

    features_t = torso(o_t)                                        [T, B, F]
    core_in_t  = [features_t ; clip(r_{t-1}) ; onehot(a_{t-1})]    [T, B, D]   (last action optional)
    h_t, carry = core(core_in_t, first_t)                          [T, B, H]   (a cell, or identity)
    pi_t, v_t  = heads(h_t)

`first[t, b]` (the environment's first-step flag) resets the core's state and traces before step t.
How the torso ("stem") learns (Irie et al. 2024; Elelimy et al. 2024):
  "unroll"    gradients reach the torso through the core, backpropagated within the unroll;
  "immediate" only the same-step gradient reaches the torso (the RTU paper);
  "frozen"    no gradient reaches the torso (its parameters come from another run's checkpoint).
The core learns by `core_mode` ("rtrl": exact, untruncated; "tbptt": truncated to the unroll).
Parameters: `{"torso": ..., "core": ..., "heads": ...}`.

Every size is known when the agent is built (from the observation shape and the torso's config, no
tracing): F = `torso.output_size(observation_shape)`, D = `core_input_size(...)` = F + 1 (+ A); the cell
is built for D (`cells.make(..., input_size=D)`), so `initial_carry` works before any `init`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl import cells
from rtrl_rl.networks.heads import ActorCriticHeads

STEM_GRADS = ("unroll", "immediate", "frozen")


def core_input_size(torso: nn.Module, observation_shape, num_actions: int, use_last_action: bool) -> int:
  """D, the core's input size: the torso's features for one observation of `observation_shape`
  (`torso.output_size`), the last reward, and the last action's one-hot when `use_last_action`."""
  return torso.output_size(tuple(observation_shape)) + 1 + (num_actions if use_last_action else 0)


@dataclasses.dataclass(eq=False)
class Agent:
  """An actor-critic with a recurrent core (`cell=None`: feed-forward).

  Attributes:
    torso: flax module mapping observations `[..., *obs]` to features `[..., F]`, with a method
      `output_size(observation_shape) -> F` (`rtrl_rl.networks.torsos`).
    heads: `ActorCriticHeads` producing (distribution, value).
    cell: a cell from `rtrl_rl.cells.make(..., input_size=core_input_size(...))`, or None for a
      feed-forward agent.
    num_actions: discrete actions (for the last-action one-hot), or the action dimension.
    observation_shape: one observation's shape (the env's observation space), no batch dimension.
    core_mode: "rtrl" | "tbptt" | "bptt" (see `cells.unroll`).
    stem_grad: "unroll" | "immediate" | "frozen".
    use_last_action: append onehot(a_{t-1}) to the core input (discrete actions only).
    reward_clip: the last reward is clipped to [-reward_clip, reward_clip] in the core input.
  """

  torso: nn.Module
  heads: ActorCriticHeads
  cell: cells.Cell | None
  num_actions: int
  observation_shape: tuple[int, ...]
  core_mode: str = "rtrl"
  stem_grad: str = "unroll"
  use_last_action: bool = False
  reward_clip: float = 1.0

  def __post_init__(self):
    self.observation_shape = tuple(int(d) for d in self.observation_shape)
    if self.stem_grad not in STEM_GRADS:
      raise ValueError(f"stem_grad must be one of {STEM_GRADS}, got {self.stem_grad!r}")
    if self.cell is not None:
      if self.core_mode not in cells.MODES:
        raise ValueError(f"core_mode must be one of {cells.MODES}, got {self.core_mode!r}")
      if self.core_mode == "rtrl" and not self.cell.supports_rtrl:
        raise ValueError(
          f"core_mode='rtrl' with cell {self.cell.name!r}: exact RTRL is supported by "
          f"{cells.RTRL_CELLS}; use core_mode='tbptt' for {self.cell.name!r}"
        )
    if self.use_last_action and self.heads.policy != "categorical":
      raise ValueError("use_last_action needs a categorical policy (a one-hot of the last action)")
    if self.cell is not None and self.cell.input_size != self.core_input_size:
      raise ValueError(
        f"the cell's input_size={self.cell.input_size} is not the core's input size "
        f"{self.core_input_size} (features {self.feature_size} + last reward 1"
        f"{f' + last action {self.num_actions}' if self.use_last_action else ''}): build it with "
        f"cells.make(..., input_size={self.core_input_size})"
      )

  # -- sizes, parameters and carry ---------------------------------------------------------------
  @property
  def feature_size(self) -> int:
    """F: the torso's features per observation."""
    return self.torso.output_size(self.observation_shape)

  @property
  def core_input_size(self) -> int:
    """D: the core's input per step (features, the last reward, the last action's one-hot)."""
    return core_input_size(self.torso, self.observation_shape, self.num_actions, self.use_last_action)

  def init(self, key: jax.Array, observation: jax.Array) -> dict[str, Any]:
    """Parameters from one example observation `[*obs]` (no batch dimension) of `observation_shape`."""
    if tuple(observation.shape) != self.observation_shape:
      raise ValueError(
        f"agent.init: the example observation has shape {tuple(observation.shape)}, but the agent "
        f"was built for observations of shape {self.observation_shape} (the env's observation space)"
      )
    k_torso, k_core, k_heads = jax.random.split(key, 3)
    torso = self.torso.init(k_torso, observation[None])
    features = jax.eval_shape(self.torso.apply, torso, observation[None]).shape
    if features != (1, self.feature_size):
      raise ValueError(
        f"the torso's output_size({self.observation_shape}) is {self.feature_size}, but it maps an "
        f"observation to features of shape {features[1:]}"
      )
    core = {}
    h = self.core_input_size
    if self.cell is not None:
      core = self.cell.init(k_core, self.core_input_size)
      h = self.cell.output_size
    heads = self.heads.init(k_heads, jnp.zeros((1, h)))
    return {"torso": torso, "core": core, "heads": heads}

  def initial_carry(self, batch_size: int) -> cells.Carry:
    """The core's carry for `batch_size` envs (an empty Carry for a feed-forward agent)."""
    if self.cell is None:
      return cells.Carry({}, None)
    return self.cell.initial_carry(batch_size, traces=self.core_mode == "rtrl")

  # -- forward -----------------------------------------------------------------------------------
  def _core_inputs(self, params, obs, prev_reward, prev_action):
    features = self.torso.apply(params["torso"], obs)
    if self.stem_grad == "frozen":
      features = jax.lax.stop_gradient(features)
    parts = [features, jnp.clip(prev_reward, -self.reward_clip, self.reward_clip)[..., None]]
    if self.use_last_action:
      parts.append(jax.nn.one_hot(prev_action, self.num_actions, dtype=features.dtype))
    return jnp.concatenate([p.astype(features.dtype) for p in parts], axis=-1)

  def unroll(
    self, params, carry: cells.Carry, obs, prev_reward, prev_action, first, *, outgoing_traces: bool = False
  ):
    """The learner's forward pass over a rollout.

    obs `[T, B, *obs]`, prev_reward `[T, B]`, prev_action `[T, B]`, first `[T, B] bool`, carry: the
    core's carry before step 0. Returns `((dist, values [T, B]), carry)`; the outgoing traces are
    computed only when `outgoing_traces` (the learner does not need them).
    """
    xs = self._core_inputs(params, obs, prev_reward, prev_action)
    if self.cell is None:
      hs, carry_out = xs, carry
    else:
      input_grad = "immediate" if self.stem_grad == "immediate" else "unroll"
      hs, carry_out = cells.unroll(
        self.cell,
        params["core"],
        carry,
        xs,
        first,
        mode=self.core_mode,
        input_grad=input_grad,
        outgoing_traces=outgoing_traces,
      )
    return self.heads.apply(params["heads"], hs), carry_out

  def step(self, params, carry: cells.Carry, obs, prev_reward, prev_action, first):
    """One acting step for B envs: obs `[B, *obs]`, first `[B]` -> `((dist, value [B]), carry)`."""
    xs = self._core_inputs(params, obs, prev_reward, prev_action)
    if self.cell is None:
      hs, carry_out = xs, carry
    else:
      hs, carry_out = cells.step(self.cell, params["core"], carry, xs, first, mode=self.core_mode)
    return self.heads.apply(params["heads"], hs), carry_out


def with_stem(params: dict, path: str, field: str) -> dict:
  """`params` with the torso's parameters read from the flax msgpack file `path`, which holds the
  torso's params or a whole agent params dict `{"torso": ..., ...}` (`flax.serialization.to_bytes
  (params)`): a pre-trained stem for `stem_grad="frozen"`. Raises ValueError naming the config
  `field` when they do not fit the torso."""
  with open(path, "rb") as f:
    tree = flax.serialization.msgpack_restore(f.read())
  torso = tree["torso"] if isinstance(tree, dict) and "torso" in tree else tree
  want = jax.tree.map(lambda x: (tuple(x.shape), np.dtype(x.dtype)), params["torso"])
  got = jax.tree.map(lambda x: (np.shape(x), np.asarray(x).dtype), torso)
  if jax.tree.structure(want) != jax.tree.structure(got) or jax.tree.leaves(want) != jax.tree.leaves(got):
    raise ValueError(f"{field}={path!r} does not match the torso: expected {want}, got {got}")
  return {**params, "torso": jax.tree.map(jnp.asarray, torso)}
