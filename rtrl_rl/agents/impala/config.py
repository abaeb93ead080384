"""IMPALA agent configuration (defaults: Irie et al. 2024, Atari), validation and the network builder.

config = impala.get_config()
config.network.cell = "rtu"; config.network.cell_options = {"nonlinear": True}
impala.validate(config, observation_space, action_space)     # fails before any compute
agent = impala.make_agent(config, observation_space, action_space)
"""

from __future__ import annotations

import os
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from rtrl_rl import cells
from rtrl_rl.agents.registry import ConfigError
from rtrl_rl.networks import ActorCriticHeads, ImpalaResNetTorso, MLPTorso
from rtrl_rl.networks.agent import STEM_GRADS, Agent, core_input_size

TORSOS = ("impala_resnet", "mlp")
CORE_MODES = ("rtrl", "tbptt")
LR_SCHEDULES = ("linear", "constant")
REDUCTIONS = ("sum", "mean")


def get_config() -> ml_collections.ConfigDict:
  """The IMPALA learner's defaults (Irie et al. 2024, Atari protocol; torchbeast semantics)."""
  c = ml_collections.ConfigDict()
  # -- data ---------------------------------------------------------------------------------------
  c.unroll_length = 50  # M: transitions per rollout (a rollout holds M+1 env steps)
  c.batch_size = 32  # B: rollouts per learner update (global, over all devices)
  c.total_env_steps = 200_000_000  # agent steps over the run; the linear lr decay reaches 0 here
  # -- loss ---------------------------------------------------------------------------------------
  c.discount = 0.99  # gamma
  c.reward_clip = 1.0  # rewards clipped to [-c, c] in the loss and the core input
  c.value_cost = 0.5  # weight of the value loss 0.5 * sum (v_s - V(x_s))^2 (IMPALA's baseline cost)
  c.entropy_cost = 0.01  # weight of minus the summed policy entropy
  c.clip_rho_threshold = 1.0  # V-trace rho_bar
  c.clip_c_threshold = 1.0  # V-trace c_bar
  c.reduction = "sum"  # "sum" over time and batch (IMPALA/torchbeast) | "mean"
  # -- optimiser: torch.optim.RMSprop semantics (eps OUTSIDE the sqrt), as in torchbeast ---------
  c.learning_rate = 6e-4  # initial learning rate
  c.lr_schedule = "linear"  # "linear": decay to 0 over total_env_steps | "constant"
  c.rmsprop_decay = 0.99  # RMSProp alpha (second-moment decay)
  c.rmsprop_eps = 0.01  # added to sqrt(nu): g / (sqrt(nu) + eps)
  c.rmsprop_momentum = 0.0  # torchbeast uses none
  c.max_grad_norm = 40.0  # global gradient-norm clip (<= 0 disables)
  # -- network ------------------------------------------------------------------------------------
  n = c.network = ml_collections.ConfigDict()
  n.torso = "impala_resnet"  # "impala_resnet" (pixels) | "mlp" (vector observations)
  n.resnet_channels = (16, 32, 32)  # channels of the ResNet's stages
  n.resnet_blocks = 2  # residual blocks per stage
  n.torso_hidden_size = 256  # ResNet: width of the final Dense layer (the features F)
  n.channels_first = ml_collections.config_dict.placeholder(bool)  # frames [C,H,W]; None: auto
  n.mlp_hidden_sizes = (64,)  # MLP torso layer widths
  n.mlp_activation = "tanh"  # activation of the MLP torso and of the heads' hidden layers
  n.cell = ml_collections.config_dict.placeholder(str)  # core: "elstm"|"rtu"|"lru"|"gru"|"lstm"|None
  n.cell_options = ml_collections.ConfigDict()  # extra cells.make options (e.g. rtu nonlinear)
  n.hidden_size = 256  # N: units of the recurrent core
  n.core_mode = "rtrl"  # "rtrl": exact untruncated gradient | "tbptt": within the unroll
  n.stem_grad = "unroll"  # "unroll" | "immediate" | "frozen" (how the torso learns)
  n.stem_checkpoint = ml_collections.config_dict.placeholder(str)  # torso params for "frozen"
  n.use_last_action = False  # append onehot(last action) to the core input
  n.head_hidden_sizes = ()  # hidden layers of each head (IMPALA: linear heads)
  return c


def _positive_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x > 0


def _sizes_ok(xs) -> bool:
  return isinstance(xs, (tuple, list)) and all(_positive_int(x) for x in xs)


def validate(config: ml_collections.ConfigDict, observation_space=None, action_space=None) -> None:
  """Raise `ConfigError` (rtrl_rl/agents/registry.py) naming every offending field; runs no JAX
  computation.

  With the env's spaces it also checks that the torso fits the observations.
  """
  errors = []
  err = errors.append
  for name in ("unroll_length", "batch_size", "total_env_steps"):
    if not _positive_int(config[name]):
      err(f"{name}={config[name]!r} must be a positive int")
  for name in ("learning_rate", "rmsprop_eps"):
    if not config[name] > 0:
      err(f"{name}={config[name]!r} must be > 0")
  if not 0 < config.discount <= 1:
    err(f"discount={config.discount!r} must be in (0, 1]")
  if not 0 <= config.rmsprop_decay < 1:
    err(f"rmsprop_decay={config.rmsprop_decay!r} must be in [0, 1)")
  for name in ("value_cost", "entropy_cost", "rmsprop_momentum"):
    if config[name] < 0:
      err(f"{name}={config[name]!r} must be >= 0")
  for name in ("reward_clip", "clip_rho_threshold", "clip_c_threshold"):
    if not config[name] > 0:
      err(f"{name}={config[name]!r} must be > 0")
  if config.lr_schedule not in LR_SCHEDULES:
    err(f"lr_schedule={config.lr_schedule!r}: expected one of {LR_SCHEDULES}")
  if config.reduction not in REDUCTIONS:
    err(f"reduction={config.reduction!r}: expected one of {REDUCTIONS}")

  n = config.network
  if n.torso not in TORSOS:
    err(f"network.torso={n.torso!r}: unknown torso; expected one of {TORSOS}")
  if n.torso == "impala_resnet":
    if not _sizes_ok(n.resnet_channels) or not n.resnet_channels:
      err(f"network.resnet_channels={n.resnet_channels!r} must be a non-empty tuple of positive ints")
    if not (isinstance(n.resnet_blocks, int) and n.resnet_blocks >= 0):
      err(f"network.resnet_blocks={n.resnet_blocks!r} must be an int >= 0")
    if not _positive_int(n.torso_hidden_size):
      err(f"network.torso_hidden_size={n.torso_hidden_size!r} must be a positive int")
  if n.torso == "mlp" and (not _sizes_ok(n.mlp_hidden_sizes) or not n.mlp_hidden_sizes):
    err(f"network.mlp_hidden_sizes={n.mlp_hidden_sizes!r} must be a non-empty tuple of positive ints")
  if not _sizes_ok(n.head_hidden_sizes):
    err(f"network.head_hidden_sizes={n.head_hidden_sizes!r} must be a tuple of positive ints")
  if n.cell is not None:
    if n.cell not in cells.REGISTRY:
      err(f"network.cell={n.cell!r}: unknown cell; expected one of {tuple(cells.REGISTRY)} or None")
    if not _positive_int(n.hidden_size):
      err(f"network.hidden_size={n.hidden_size!r} must be a positive int")
    elif n.cell in cells.REGISTRY:
      try:  # pure Python: checks the cell's options, builds no params
        cells.make(n.cell, n.hidden_size, **dict(n.cell_options))
      except (TypeError, ValueError) as e:
        err(f"network.cell_options={dict(n.cell_options)!r} rejected by network.cell={n.cell!r}: {e}")
    if n.core_mode not in CORE_MODES:
      err(f"network.core_mode={n.core_mode!r}: expected one of {CORE_MODES}")
    elif n.core_mode == "rtrl" and n.cell in cells.REGISTRY and n.cell not in cells.RTRL_CELLS:
      err(
        f"network.core_mode='rtrl' with network.cell={n.cell!r}: exact RTRL needs one of "
        f"{cells.RTRL_CELLS}; use network.core_mode='tbptt' for {n.cell!r}"
      )
  if n.stem_grad not in STEM_GRADS:
    err(f"network.stem_grad={n.stem_grad!r}: expected one of {STEM_GRADS}")
  elif n.stem_grad == "frozen":
    if not n.stem_checkpoint:
      err(
        "network.stem_grad='frozen' needs network.stem_checkpoint (the torso parameters to load "
        "from another run); none was given"
      )
    elif not os.path.exists(n.stem_checkpoint):
      err(f"network.stem_grad='frozen': network.stem_checkpoint={n.stem_checkpoint!r} does not exist")
  elif n.stem_checkpoint:
    err(
      f"network.stem_checkpoint is set but network.stem_grad={n.stem_grad!r}; a loaded stem is "
      "used with stem_grad='frozen' only"
    )

  if observation_space is not None:
    nd = len(observation_space.shape)
    if n.torso == "impala_resnet" and nd != 3:
      err(
        f"network.torso='impala_resnet' needs image observations [H, W, C] or [C, H, W]; the "
        f"observation space is {observation_space}"
      )
  if action_space is not None:
    if action_space.kind not in ("discrete", "box"):
      err(f"unsupported action space {action_space}")
    if n.use_last_action and action_space.kind != "discrete":
      err(f"network.use_last_action=True needs a discrete action space, got {action_space}")
  if errors:
    raise ConfigError("IMPALA", errors)


class FlatMLPTorso(nn.Module):
  """`MLPTorso` over observations flattened from `[..., *obs_shape]` to `[..., prod(obs_shape)]`."""

  obs_ndim: int
  hidden_sizes: Sequence[int]
  activation: str = "tanh"

  def output_size(self, observation_shape) -> int:
    """Features per observation: the last layer's width."""
    del observation_shape
    return self.hidden_sizes[-1]

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x)
    if self.obs_ndim != 1:
      lead = x.shape[: x.ndim - self.obs_ndim]
      x = x.reshape(lead + (-1,))
    return MLPTorso(tuple(self.hidden_sizes), self.activation, name="mlp")(x)


def make_agent(config: ml_collections.ConfigDict, observation_space, action_space) -> Agent:
  """The Agent (torso -> core -> heads) described by `config.network` for the env's spaces, every
  size known (the cell built for the core's input size).

  Call `agent.init(key, example_obs)` (or `learning.init_learner`) to get parameters.
  """
  validate(config, observation_space, action_space)
  n = config.network
  shape = tuple(observation_space.shape)
  if n.torso == "impala_resnet":
    channels_first = n.channels_first
    if channels_first is None:  # e.g. envpool Atari [4, 84, 84]; ProcGen/DMLab are [H, W, C]
      channels_first = shape[0] < shape[-1]
    integer = np.issubdtype(np.dtype(observation_space.dtype), np.integer)
    torso = ImpalaResNetTorso(
      channels=tuple(n.resnet_channels),
      num_blocks=n.resnet_blocks,
      hidden_size=n.torso_hidden_size,
      channels_first=bool(channels_first),
      input_scale=1.0 / 255.0 if integer else 1.0,
    )
  else:
    torso = FlatMLPTorso(len(shape), tuple(n.mlp_hidden_sizes), n.mlp_activation)
  if action_space.kind == "discrete":
    num_actions, policy = int(action_space.num_values), "categorical"
  else:
    num_actions, policy = int(np.prod(action_space.shape)), "gaussian"
  heads = ActorCriticHeads(
    num_actions, policy=policy, hidden_sizes=tuple(n.head_hidden_sizes), activation=n.mlp_activation
  )
  cell = None
  if n.cell is not None:
    d = core_input_size(torso, shape, num_actions, n.use_last_action)
    cell = cells.make(n.cell, n.hidden_size, input_size=d, **dict(n.cell_options))
  return Agent(
    torso=torso,
    heads=heads,
    cell=cell,
    num_actions=num_actions,
    observation_shape=shape,
    core_mode=n.core_mode if cell is not None else "rtrl",
    stem_grad=n.stem_grad,
    use_last_action=n.use_last_action,
    reward_clip=config.reward_clip,
  )
