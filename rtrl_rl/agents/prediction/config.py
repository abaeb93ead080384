"""Online TD(lambda) prediction with a recurrent core (the RTU paper's trace-conditioning learner).

`get_config()` returns the defaults; `validate(config)` rejects bad combinations before any compute,
naming the fields involved. `hidden_size_for_budget` picks a core's hidden size so that cores of
different kinds have (about) the same number of recurrent parameters, as the RTU paper compares them.

Sources for the defaults (shared/reference/seeds.md, Paper B; Rafiee et al.'s public benchmark code):
* target: the discounted sum of future US, gamma = the environment's (0.9 for ISI (7, 13): Rafiee et
  al. tie gamma to the ISI, 1 - 1/mean(ISI)), learned by semi-gradient TD(lambda) online, one update
  per step, no replay;
* optimiser: Adam (beta1 0.9, beta2 0.999) applied to the TD(lambda) update direction, as in Rafiee
  et al.'s TD(lambda) learners; plain SGD is offered too;
* architecture: recurrent layer -> linear value (v = w . h + b).
"""

from __future__ import annotations

import math

import ml_collections

from rtrl_rl import cells, envs
from rtrl_rl.agents.registry import ConfigError

CORE_MODES = ("rtrl", "tbptt")
OPTIMIZERS = ("adam", "sgd")
HEAD_INITS = ("zeros", "normal")


def get_config() -> ml_collections.ConfigDict:
  """Defaults: a non-linear RTU trained by exact RTRL with TD(lambda) and Adam."""
  c = ml_collections.ConfigDict()
  # independent runs (own parameters, own stream) vmapped together; run s uses PRNG seed (experiment seed +
  # s)
  c.num_seeds = 1
  # -- stream ----------------------------------------------------------------------------------
  c.total_env_steps = 100_000  # length of the online stream (one update per step)
  c.chunk_steps = 10_000  # steps per jitted call of `run` (and per metrics record of the CLI)
  c.msre_window = 10_000  # the final MSRE averages the squared return error over the last steps
  # -- network: the core (IMPALA's names, rtrl_rl/agents/impala/config.py) -> a linear value ---
  n = c.network = ml_collections.ConfigDict()
  # "rtu" | "lru" | "elstm" (exact RTRL) | "gru" | "lstm" (T-BPTT) | None (memoryless:
  # Dense(hidden_size)+relu, or linear if hidden_size=0)
  n.cell = "rtu"
  # extra keyword options of cells.make (RTU: nonlinear, activation)
  n.cell_options = ml_collections.ConfigDict({"nonlinear": True, "activation": "relu"})
  n.hidden_size = 32  # the core's hidden size (RTU: N units, output 2N); configs match budgets
  # "rtrl": exact forward RTRL (cells.step) | "tbptt": backprop over the last `truncation` inputs,
  # re-unrolled every step from the carry T back
  n.core_mode = "rtrl"
  # -- TD(lambda) ------------------------------------------------------------------------------
  # the T-BPTT window T of network.core_mode="tbptt" (inputs in the window, the current one included)
  c.truncation = 10
  c.discount = 0.9  # gamma of the prediction target; must equal the env's gamma option
  c.td_lambda = 0.0  # eligibility-trace decay lambda (0: TD(0)); traces span all parameters
  c.head_init = "zeros"  # value-head init: "zeros" (predictions start at 0) | "normal"
  # -- optimiser -------------------------------------------------------------------------------
  c.optimizer = "adam"  # "adam" (Rafiee et al.'s TD learners) | "sgd"
  c.learning_rate = 1e-3  # step size (0: evaluate without learning)
  c.adam_b1 = 0.9  # Adam beta1
  c.adam_b2 = 0.999  # Adam beta2
  c.adam_eps = 1e-8  # Adam epsilon
  c.dtype = "float32"  # parameter, carry and stream dtype ("float64" needs jax x64)
  return c


def _is_int(v, lo=None) -> bool:
  return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo)


def _num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Check the config; raises `ConfigError` (rtrl_rl/agents/registry.py) naming every offending
  field. Returns it."""
  c = config
  n = c.network
  errors = []
  err = errors.append
  for name, lo in (("num_seeds", 1), ("total_env_steps", 2), ("chunk_steps", 1), ("msre_window", 1)):
    if not _is_int(c[name], lo):
      err(f"{name}={c[name]!r} must be an int >= {lo}")
  if _is_int(c.total_env_steps, 2) and _is_int(c.msre_window, 1) and c.msre_window > c.total_env_steps - 1:
    err(
      f"msre_window={c.msre_window} must be <= total_env_steps - 1 = {c.total_env_steps - 1} (the "
      "last prediction has no observed return)"
    )
  if n.cell is not None and n.cell not in cells.REGISTRY:
    err(f"network.cell={n.cell!r}: expected one of {tuple(cells.REGISTRY)} or None (memoryless)")
  if n.core_mode not in CORE_MODES:
    err(f"network.core_mode={n.core_mode!r}: expected one of {CORE_MODES}")
  elif n.cell in cells.REGISTRY:
    if n.core_mode == "rtrl" and n.cell not in cells.RTRL_CELLS:
      err(
        f"network.core_mode='rtrl' with network.cell={n.cell!r}: exact RTRL is supported by "
        f"{cells.RTRL_CELLS}; use network.core_mode='tbptt' (with truncation=T) for "
        f"network.cell={n.cell!r}"
      )
  if n.core_mode == "tbptt" and not _is_int(c.truncation, 1):
    err(f"truncation={c.truncation!r} must be an int >= 1 with network.core_mode='tbptt'")
  if n.cell is None and n.core_mode == "tbptt":
    err(
      "network.core_mode='tbptt' with network.cell=None: a memoryless predictor has nothing to "
      "truncate; use network.core_mode='rtrl'"
    )
  if n.cell is None:
    if not _is_int(n.hidden_size, 0):
      err(
        f"network.hidden_size={n.hidden_size!r} must be an int >= 0 with network.cell=None (0: "
        "linear in the observation)"
      )
  elif not _is_int(n.hidden_size, 1):
    err(f"network.hidden_size={n.hidden_size!r} must be an int >= 1")
  if n.cell is not None and n.cell in cells.REGISTRY and _is_int(n.hidden_size, 1):
    try:
      cells.make(n.cell, n.hidden_size, **n.cell_options.to_dict())
    except (TypeError, ValueError) as e:
      err(f"network.cell_options={n.cell_options.to_dict()!r} for network.cell={n.cell!r}: {e}")
  if not (_num(c.discount) and 0.0 <= c.discount < 1.0):
    err(f"discount={c.discount!r} must be in [0, 1)")
  if not (_num(c.td_lambda) and 0.0 <= c.td_lambda <= 1.0):
    err(f"td_lambda={c.td_lambda!r} must be in [0, 1]")
  if c.head_init not in HEAD_INITS:
    err(f"head_init={c.head_init!r}: expected one of {HEAD_INITS}")
  if c.optimizer not in OPTIMIZERS:
    err(f"optimizer={c.optimizer!r}: expected one of {OPTIMIZERS}")
  if not (_num(c.learning_rate) and c.learning_rate >= 0):
    err(f"learning_rate={c.learning_rate!r} must be >= 0")
  if c.optimizer == "adam":
    for name in ("adam_b1", "adam_b2"):
      if not (_num(c[name]) and 0.0 <= c[name] < 1.0):
        err(f"{name}={c[name]!r} must be in [0, 1)")
    if not (_num(c.adam_eps) and c.adam_eps > 0):
      err(f"adam_eps={c.adam_eps!r} must be > 0")
  if c.dtype not in ("float32", "float64"):
    err(f"dtype={c.dtype!r}: expected 'float32' or 'float64'")
  if errors:
    raise ConfigError("prediction", errors)
  return c


# -- parameter budgets ------------------------------------------------------------------------------
def param_count(cell: str | None, hidden_size: int, input_size: int, cell_options=None) -> int:
  """Parameters of the core (the recurrent layer; the linear value head excluded)."""
  if cell is None:
    return 0 if hidden_size == 0 else (input_size + 1) * hidden_size
  c = cells.make(cell, hidden_size, **dict(cell_options or {}))
  return sum(int(math.prod(s)) for s in c.param_shapes(input_size).values())


def hidden_size_for_budget(cell: str | None, budget: int, input_size: int, cell_options=None) -> int:
  """The largest hidden size whose core has at most `budget` parameters (at least 1)."""
  lo, hi = 1, 1
  while param_count(cell, hi, input_size, cell_options) <= budget:
    lo, hi = hi, 2 * hi
    if hi > 1 << 16:
      break
  while hi - lo > 1:  # count(lo) <= budget < count(hi), or lo == 1
    mid = (lo + hi) // 2
    if param_count(cell, mid, input_size, cell_options) <= budget:
      lo = mid
    else:
      hi = mid
  return lo


# -- the experiment (env + agent) -------------------------------------------------------------------
def validate_experiment(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Check an experiment config whose `algo` is "prediction" (configs/rtu_trace_conditioning.py):
  the env is a functional JAX env with valid options, the learner's gamma is the env's, and
  `config.agent` passes `validate`. Raises `ConfigError` naming every field. Runs no JAX."""
  errors = []
  if config.get("algo") != "prediction":  # its other fields are another learner's: nothing to check
    raise ConfigError(
      "experiment",
      f"algo={config.get('algo')!r}: this learner runs algo='prediction' (python -m rtrl_rl.train "
      "runs the others)",
    )
  if not (isinstance(config.get("seed"), int) and config.seed >= 0):
    errors.append(f"seed={config.get('seed')!r} must be an int >= 0")
  try:
    spec = envs.get_spec(config.env.id)
    opts = spec.resolve(config.env.options.to_dict())
  except (envs.EnvError, ValueError) as e:
    errors.append(f"env.id={config.env.id!r} / env.options: {e}")
  else:
    if not getattr(spec, "functional", False):
      errors.append(
        f"env.id={config.env.id!r} has no functional JAX form; the prediction learner "
        "scans the stream inside jit (jax/... ids)"
      )
    if "gamma" in opts and _num(config.agent.discount) and abs(opts["gamma"] - config.agent.discount) > 1e-12:
      errors.append(
        f"agent.discount={config.agent.discount} differs from env.options.gamma={opts['gamma']}: "
        "the learner would predict another return than MSRE scores"
      )
  try:
    validate(config.agent)
  except ConfigError as e:
    errors.extend("agent." + problem for problem in e.problems)
  if errors:
    raise ConfigError("experiment", errors)
  return config
