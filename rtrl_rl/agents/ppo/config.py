"""PPO with an RTRL core (Elelimy et al. 2024, "RTRL using Trace Units in RL"): configuration.

`get_config()` returns the paper's defaults (shared/reference/seeds.md, "RTRL inside PPO");
`validate(config)` rejects bad combinations before any compute, naming the fields involved.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from rtrl_rl import cells
from rtrl_rl.agents.ppo import acting
from rtrl_rl.agents.registry import ConfigError
from rtrl_rl.networks.agent import STEM_GRADS

TORSOS = ("mlp",)
GRADIENTS = ("stale", "fresh")
POLICIES = ("auto", "categorical", "gaussian")


def get_config() -> ml_collections.ConfigDict:
  """The RTU paper's PPO defaults."""
  c = ml_collections.ConfigDict()
  # -- rollout ---------------------------------------------------------------------------------
  c.total_env_steps = 1_000_000  # agent steps over the run (the paper: 1M for MuJoCo POMDP)
  c.num_envs = 1  # parallel environments (the paper: a single environment)
  c.rollout_length = 2048  # steps per env per rollout (T); the buffer holds T * num_envs steps
  # -- optimisation ----------------------------------------------------------------------------
  c.num_epochs = 4  # passes over the rollout per update
  c.num_minibatches = 32  # minibatches per epoch
  # time steps per minibatch; num_minibatches * minibatch_size must equal rollout_length * num_envs
  c.minibatch_size = 64
  # steps per minibatch sample: 1 = single steps from stored carries (the paper's RTRL); L > 1 = L
  # consecutive steps of one env replayed from the stored carry (network.core_mode="tbptt": T-BPTT
  # with truncation L, the paper's GRU/LRU baselines); divides rollout_length and minibatch_size
  c.sequence_length = 1
  # "stale": stored carries reused in every epoch (paper default); "fresh": carries recomputed over the
  # rollout after each epoch
  c.gradient = "stale"
  c.learning_rate = 1e-4  # Adam step size
  c.adam_eps = 1e-5  # Adam epsilon
  c.max_grad_norm = 0.5  # global gradient-norm clip (None or 0: off)
  # -- loss --------------------------------------------------------------------------------------
  c.discount = 0.99  # gamma
  c.gae_lambda = 0.95  # GAE lambda
  c.clip_eps = 0.2  # policy ratio clip
  c.value_clip_eps = 0.2  # value clip (None: unclipped value loss)
  c.value_cost = 0.5  # value-loss coefficient
  c.entropy_cost = 0.0  # entropy bonus coefficient
  c.normalize_advantage = True  # normalise advantages per minibatch
  # -- normalisation ---------------------------------------------------------------------------
  c.normalize_obs = True  # running mean/var observation normalisation
  c.obs_clip = 10.0  # clip normalised observations to [-obs_clip, obs_clip]
  c.normalize_reward = True  # scale rewards by the running std of the discounted return
  c.reward_norm_clip = 10.0  # clip normalised rewards to [-reward_norm_clip, reward_norm_clip]
  # -- network: torso -> core -> heads (IMPALA's names, rtrl_rl/agents/impala/config.py) ----------
  n = c.network = ml_collections.ConfigDict()
  n.torso = "mlp"  # PPO's torso is an MLP on vector observations (the only one)
  n.mlp_hidden_sizes = (64,)  # MLP torso widths (Dense + activation each)
  n.mlp_activation = "tanh"  # activation of the MLP torso and of the heads' hidden layers
  n.cell = "rtu"  # recurrent core: "rtu" | "elstm" | "lru" | "gru" | "lstm" | None (feed-forward)
  n.hidden_size = 192  # the core's hidden size (RTU: d_rec; outputs 2 * d_rec)
  # extra keyword options of cells.make (RTU: nonlinear, activation)
  n.cell_options = ml_collections.ConfigDict({"nonlinear": True, "activation": "relu"})
  n.core_mode = "rtrl"  # "rtrl" (exact) | "tbptt" (truncated to sequence_length steps)
  n.stem_grad = "immediate"  # how the torso learns: "immediate" (paper) | "unroll" | "frozen"
  # flax msgpack file with the torso params ({"torso": ...} or the torso itself); required by
  # stem_grad="frozen"
  n.stem_checkpoint = ml_collections.config_dict.placeholder(str)
  n.use_last_action = False  # append onehot(a_{t-1}) to the core input (discrete actions only)
  n.head_hidden_sizes = (64,)  # hidden widths of EACH of the actor and critic heads
  # -- policy and the core's reward input -------------------------------------------------------
  c.policy = "auto"  # "auto" (from the action space) | "categorical" | "gaussian"
  c.init_log_std = 0.0  # initial state-independent log-std (Gaussian policy)
  c.reward_clip = 1.0  # the last reward enters the core clipped to [-reward_clip, reward_clip]
  return c


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Check the config; raises `ConfigError` (rtrl_rl/agents/registry.py) naming every offending
  field. Returns the config."""
  c = config
  errors = []
  _err = errors.append
  counts_ok = True
  for name in (
    "num_envs",
    "rollout_length",
    "num_epochs",
    "num_minibatches",
    "minibatch_size",
    "sequence_length",
  ):
    v = c[name]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      _err(f"{name} must be an int >= 1, got {v!r}")
      counts_ok = False
  if counts_ok and (c.rollout_length % c.sequence_length or c.minibatch_size % c.sequence_length):
    _err(
      f"sequence_length={c.sequence_length} must divide rollout_length={c.rollout_length} and "
      f"minibatch_size={c.minibatch_size} (minibatches are whole sequences of one env)"
    )
  if counts_ok and c.num_minibatches * c.minibatch_size != c.rollout_length * c.num_envs:
    _err(
      f"num_minibatches * minibatch_size ({c.num_minibatches} * {c.minibatch_size} = "
      f"{c.num_minibatches * c.minibatch_size}) must equal rollout_length * num_envs "
      f"({c.rollout_length} * {c.num_envs} = {c.rollout_length * c.num_envs})"
    )
  if c.gradient not in GRADIENTS:
    _err(f"gradient must be one of {GRADIENTS}, got {c.gradient!r}")
  if not 0.0 <= c.discount <= 1.0:
    _err(f"discount must be in [0, 1], got {c.discount!r}")
  if not 0.0 <= c.gae_lambda <= 1.0:
    _err(f"gae_lambda must be in [0, 1], got {c.gae_lambda!r}")
  if c.learning_rate <= 0:
    _err(f"learning_rate must be > 0, got {c.learning_rate!r}")
  if c.clip_eps <= 0:
    _err(f"clip_eps must be > 0, got {c.clip_eps!r}")
  if c.policy not in POLICIES:
    _err(f"policy must be one of {POLICIES}, got {c.policy!r}")
  n = c.network
  if n.torso not in TORSOS:
    _err(f"network.torso must be one of {TORSOS} (PPO's torso is an MLP), got {n.torso!r}")
  for name in ("mlp_hidden_sizes", "head_hidden_sizes"):
    sizes = n[name]
    if not isinstance(sizes, (tuple, list)) or not all(
      isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in sizes
    ):
      _err(f"network.{name} must be a tuple of positive ints, got {sizes!r}")
  if n.stem_grad not in STEM_GRADS:
    _err(f"network.stem_grad must be one of {STEM_GRADS}, got {n.stem_grad!r}")
  if n.stem_grad == "frozen" and not n.stem_checkpoint:
    _err(
      "network.stem_grad='frozen' needs network.stem_checkpoint (the run whose torso is loaded); it "
      "is unset. Set network.stem_checkpoint, or use network.stem_grad='immediate' (the RTU paper) "
      "or 'unroll'"
    )
  if n.stem_grad == "frozen" and n.stem_checkpoint and not os.path.exists(n.stem_checkpoint):
    _err(f"network.stem_grad='frozen': network.stem_checkpoint={n.stem_checkpoint!r} does not exist")
  if n.stem_checkpoint and n.stem_grad != "frozen":
    _err(
      f"network.stem_checkpoint is set but network.stem_grad={n.stem_grad!r}; a loaded stem is used "
      "with network.stem_grad='frozen' only"
    )
  if n.cell is not None:
    if n.cell not in cells.REGISTRY:
      _err(f"network.cell must be one of {tuple(cells.REGISTRY)} or None, got {n.cell!r}")
    if n.core_mode not in cells.MODES:
      _err(f"network.core_mode must be one of {cells.MODES}, got {n.core_mode!r}")
    if n.core_mode == "rtrl" and n.cell in cells.REGISTRY and n.cell not in cells.RTRL_CELLS:
      _err(
        f"network.core_mode='rtrl' with network.cell={n.cell!r}: exact RTRL is supported by "
        f"{cells.RTRL_CELLS}; use network.core_mode='tbptt' for network.cell={n.cell!r}"
      )
    if n.core_mode == "bptt":
      _err(
        "network.core_mode='bptt' is not meaningful for PPO: minibatches replay sequences of "
        "sequence_length steps from stored carries, not whole histories; use "
        "network.core_mode='rtrl' (exact) or 'tbptt' (truncated to sequence_length)"
      )
    if not isinstance(n.hidden_size, int) or n.hidden_size < 1:
      _err(f"network.hidden_size must be an int >= 1, got {n.hidden_size!r}")
  elif c.gradient == "fresh":
    _err(
      "gradient='fresh' recomputes recurrent carries, but network.cell=None (feed-forward); use "
      "gradient='stale'"
    )
  if n.use_last_action and c.policy == "gaussian":
    _err("network.use_last_action=True needs discrete actions, but policy='gaussian'")
  if errors:
    raise ConfigError("PPO", errors)
  return c


def stored_carry_bytes(config: ml_collections.ConfigDict, observation_space, action_space) -> int:
  """Bytes of the carries a rollout stores (`rollout_length x num_envs` carries: the RTRL traces are
  the bulk of the PPO buffer, e.g. ~200 KB per step for the non-linear RTU at d_rec 192)."""
  if config.network.cell is None:
    return 0
  agent = acting.make_agent(config, observation_space, action_space)
  carry = jax.eval_shape(lambda: agent.initial_carry(1))
  per_env = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(carry))
  return per_env * config.rollout_length * config.num_envs


# The RTU paper's recurrent-core variants at a matched budget of ~24k recurrent parameters for a
# 64-dim input: variant -> (cell, core_mode, hidden_size, cell options). The RTRL cores learn from
# single steps (sequence_length 1); the T-BPTT cores from sequences of `truncation` steps (rtu_paper_core).
# Parameter counts, D=64:
# rtu 2*64*192 + 2*192 = 24,960; lru 2*64*72 (B) + 2*72^2 (C) + 64*72 (D_skip) + 3*72 = 24,408;
# gru 3*(64*64 + 64*64 + 64) + 64 = 24,832.
RTU_PAPER_CORES = {
  "rtu_nonlinear": ("rtu", "rtrl", 192, {"nonlinear": True, "activation": "relu"}),
  "rtu_linear": ("rtu", "rtrl", 192, {"nonlinear": False, "activation": "relu"}),
  "lru": ("lru", "rtrl", 72, {}),  # online LRU (Zucchet et al.), exact RTRL
  "lru_tbptt": ("lru", "tbptt", 72, {}),  # LRU trained by truncated BPTT
  "gru": ("gru", "tbptt", 64, {}),  # GRU trained by truncated BPTT
  "ff": (None, "rtrl", 1, {}),  # feed-forward (no core)
}


# Truncation length T of the T-BPTT variants when none is given: our choice (the paper varies T;
# its PPO value is not in its text), sweepable through the configs' `T=` argument.
DEFAULT_TRUNCATION = 16


def rtu_paper_core(
  config: ml_collections.ConfigDict, variant: str, truncation: int = DEFAULT_TRUNCATION
) -> None:
  """Set `network.cell`, `network.core_mode`, `network.hidden_size`, `network.cell_options`,
  `sequence_length` and `network.stem_grad` to an RTU-paper core variant; `truncation` is the T of
  the T-BPTT variants (the RTRL ones learn from single steps)."""
  if variant not in RTU_PAPER_CORES:
    raise ValueError(f"core={variant!r}: expected one of {sorted(RTU_PAPER_CORES)}")
  n = config.network
  n.cell, n.core_mode, n.hidden_size, options = RTU_PAPER_CORES[variant]
  n.cell_options = ml_collections.ConfigDict(options)
  tbptt = n.cell is not None and n.core_mode == "tbptt"
  if tbptt and (not isinstance(truncation, int) or truncation < 1):
    raise ValueError(f"T={truncation!r}: the truncation of core={variant!r} must be an int >= 1")
  config.sequence_length = truncation if tbptt else 1
  # T-BPTT backpropagates the whole network through its window; the RTRL cores' torso gets the
  # immediate gradient (the paper).
  n.stem_grad = "unroll" if tbptt else "immediate"
