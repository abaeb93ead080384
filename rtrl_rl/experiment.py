"""An experiment's configuration: environment, algorithm (agent + learner), and system.

    config = experiment.base_config("impala")     # configs/*.py start from this
    experiment.validate(config)                   # fails before any compute, naming the fields
    config = experiment.load_config("configs/rtu_popgym.py:core=gru", {"seed": 1})  # a config file

Fields shared by every experiment live here; the learner's own fields are `config.agent` (see
rtrl_rl/agents/<algo>/config.py), its network `config.agent.network`, one name per fact in every
algorithm (`RENAMED_FIELDS` maps the old names to the new). The unroll length M lives in one
place, `config.agent.unroll_length` (IMPALA), and flows to the actors (rollout length) and the
learner (batch shape) from there.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
from typing import Any, Mapping

import ml_collections
import psutil

from rtrl_rl import envs
from rtrl_rl.agents import registry
from rtrl_rl.system.actors import ACTOR_DEVICES

ALGOS = registry.NAMES
BACKENDS = ("actors", "anakin", "sync")
_BACKEND_USE = {  # what each backend runs on, for messages
  "actors": "actor processes on host environments",
  "anakin": "one jitted loop on JAX environments",
  "sync": "acting on host environments, then updating",
}


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # relative config paths start here


@functools.cache
def config_module(path: str):
  """The module of a config file (its `get_config` and constants), loaded once; a relative `path`
  starts at the repository root."""
  path = os.path.join(REPO, path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no config file {path}")
  name = "_config_" + os.path.relpath(path, REPO).replace(os.sep, "_")[:-3]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The config of `configs/<x>.py[:arg]` (its `get_config(arg)`, a relative path from the
  repository root) with `overrides` applied (dotted fields, e.g. a sweep run's {"seed": 1}), as
  `--config=<spec> --config.<field>=<value>` would give it to a command line."""
  path, _, arg = spec.partition(":")
  module = config_module(path)
  config = module.get_config(arg) if arg else module.get_config()
  if overrides:
    config.update_from_flattened_dict(dict(overrides))
  return config


def base_config(algo: str = "impala") -> ml_collections.ConfigDict:
  """Defaults for an experiment with learner `algo` ("impala" | "ppo" | "prediction")."""
  if algo not in ALGOS:
    raise ValueError(f"algo={algo!r}: expected one of {ALGOS}")
  c = ml_collections.ConfigDict()
  c.name = "experiment"  # experiment name: run-directory prefix and plot group
  c.algo = algo  # learner: "impala" (V-trace) | "ppo" | "prediction" (online TD)
  c.seed = 0  # seeds the learner, the actors and the environments
  e = c.env = ml_collections.ConfigDict()
  e.id = "memory/cartpole-masked"  # an id of `python -m rtrl_rl.envs --list`
  e.options = ml_collections.ConfigDict()  # family options passed to rtrl_rl.envs.make
  s = c.system = ml_collections.ConfigDict()
  # "actors": actor processes + queue (IMPALA) | "anakin": one jitted loop (JAX envs) | "sync": PPO acting
  # on host envs, then updating
  s.backend = "actors"
  s.num_actors = 2  # actor processes per host (backend "actors")
  s.envs_per_actor = 16  # environments in one record (a rollout of these envs)
  # where actors run the policy: "cpu" (host CPUs) | "gpu" (actor k on local GPU k mod #GPUs, shared with
  # the learner; NVIDIA CUDA)
  s.actor_device = "cpu"
  s.actor_pools = 2  # env pools per actor, stepped alternately (double buffering)
  s.records_per_pool = 1  # records per pool: the policy runs on records x envs_per_actor envs
  s.queue_capacity = 4  # rollout records buffered between actors and learner (back-pressure)
  s.max_actor_restarts = 3  # restarts per actor before the run stops with a checkpoint
  s.stall_timeout_s = 60.0  # an actor alive but delivering nothing this long is restarted
  s.log_every_s = 10.0  # progress line and metrics period (seconds)
  # > 0: a metrics row every this many updates instead of every log_every_s (rows that do not depend
  # on the machine's speed: a deterministic run writes the same curve every time)
  s.log_every_updates = 0
  s.checkpoint_every_s = 120.0  # checkpoint period (seconds); one is always written at the end
  s.keep_checkpoints = 3  # checkpoints kept on disk
  s.plot = True  # write learning_curve.png into the run directory at the end
  s.coordinator_address = ""  # jax.distributed coordinator "host:port" (multi-host); "" = one process
  s.num_processes = 1  # processes in a multi-host run
  s.process_id = 0  # this process's index in a multi-host run
  # multi-host: a process silent this long is lost, and jax.distributed stops the others (a failed
  # collective stops them sooner)
  s.heartbeat_timeout_s = 100
  # persistent JAX compilation cache: a later start of the same programs (a resumed run, a sweep's
  # other seeds) loads them instead of compiling them; "" turns it off; JAX_COMPILATION_CACHE_DIR,
  # when set, is used instead
  s.compilation_cache = "~/.cache/rtrl_rl/jax"
  algorithm = registry.get(algo)
  c.agent = algorithm.get_config()
  algorithm.configure(c)
  return c


# Fields renamed so that every algorithm speaks one vocabulary (issue 17): old path -> new path. The
# network of every algorithm is `agent.network` with IMPALA's names; a field under an old path (e.g.
# agent.cell_options.nonlinear) moved with it.
RENAMED_FIELDS = {
  "agent.gamma": "agent.discount",
  "agent.ent_coef": "agent.entropy_cost",
  "agent.vf_coef": "agent.value_cost",
  "agent.baseline_cost": "agent.value_cost",
  "agent.seed": "seed",
  # PPO's and prediction's flat network fields
  "agent.torso_sizes": "agent.network.mlp_hidden_sizes",
  "agent.activation": "agent.network.mlp_activation",
  "agent.head_sizes": "agent.network.head_hidden_sizes",
  "agent.cell": "agent.network.cell",
  "agent.cell_options": "agent.network.cell_options",
  "agent.hidden_size": "agent.network.hidden_size",
  "agent.core_mode": "agent.network.core_mode",
  "agent.stem_grad": "agent.network.stem_grad",
  "agent.stem_checkpoint": "agent.network.stem_checkpoint",
  "agent.use_last_action": "agent.network.use_last_action",
  # prediction's
  "agent.mode": "agent.network.core_mode",
  "agent.steps": "agent.total_env_steps",
}


def renamed_field_error(paths) -> str | None:
  """The message for the first of `paths` (dotted config paths) that is an old name, or lies under
  one (agent.cell_options.nonlinear), or None."""
  for path in paths:
    for old, new in RENAMED_FIELDS.items():
      if path == old or path.startswith(old + "."):
        return f"config field {path} was renamed: use {new}{path[len(old) :]}"
  return None


def upgrade_saved_config(saved: Mapping[str, Any]) -> dict[str, Any]:
  """A run's saved config (`config.json`, JSON dicts) with every `RENAMED_FIELDS` path moved to its
  new name, so that runs written before the renames are evaluated, resumed and compared as today's.
  Where both names are present the new one wins (the old is dropped)."""
  out = copy.deepcopy(dict(saved))
  for old, new in RENAMED_FIELDS.items():
    *old_parents, old_key = old.split(".")
    parent = out
    for key in old_parents:
      parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or old_key not in parent:
      continue
    value = parent.pop(old_key)
    *new_parents, new_key = new.split(".")
    target = out
    for key in new_parents:
      target = target.setdefault(key, {})
    target.setdefault(new_key, value)
  return out


def _unknown_fields(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict, prefix: str):
  """Dotted paths of `config` that `defaults` does not have (nested ConfigDicts compared too)."""
  out = []
  for key, value in config.items():
    path = f"{prefix}.{key}"
    if key not in defaults:
      out.append(path)
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(
      defaults[key], ml_collections.ConfigDict
    ):
      if key not in ("options", "cell_options"):  # free-form options of an env or a cell
        out.extend(_unknown_fields(value, defaults[key], path))
  return out


# The one error of a bad config (the experiment's or an agent's), reported without a traceback.
ConfigError = registry.ConfigError


def _positive_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool) and x > 0


def validate(config: ml_collections.ConfigDict, *, check_env: bool = True) -> None:
  """Raise `ConfigError` naming every offending field; runs no JAX computation.

  Checks the system fields, the env id and options (`check_env`), the backend/algorithm/env
  combination, then the learner's own `validate` with the env's spaces.
  """
  errors = []
  err = errors.append
  if config.algo not in ALGOS:
    err(f"algo={config.algo!r}: expected one of {ALGOS}")
  s = config.system
  if s.backend not in BACKENDS:
    err(f"system.backend={s.backend!r}: expected one of {BACKENDS}")
  for name in (
    "num_actors",
    "envs_per_actor",
    "actor_pools",
    "records_per_pool",
    "queue_capacity",
    "keep_checkpoints",
    "num_processes",
  ):
    if not _positive_int(s[name]):
      err(f"system.{name}={s[name]!r} must be a positive int")
  for name in ("log_every_s", "checkpoint_every_s", "heartbeat_timeout_s", "stall_timeout_s"):
    if not s[name] > 0:
      err(f"system.{name}={s[name]!r} must be > 0")
  if not (isinstance(s.log_every_updates, int) and s.log_every_updates >= 0):
    err(f"system.log_every_updates={s.log_every_updates!r} must be an int >= 0 (0: every log_every_s)")
  if s.actor_device not in ACTOR_DEVICES:
    err(f"system.actor_device={s.actor_device!r}: expected one of {ACTOR_DEVICES}")
  elif s.actor_device != "cpu" and s.backend != "actors":
    err(
      f"system.actor_device={s.actor_device!r} places actor processes (backend 'actors'); "
      f"backend {s.backend!r} acts on the learner's devices"
    )
  if not (isinstance(s.max_actor_restarts, int) and s.max_actor_restarts >= 0):
    err(f"system.max_actor_restarts={s.max_actor_restarts!r} must be an int >= 0")
  if _positive_int(s.num_processes) and s.num_processes > 1:
    if not s.coordinator_address:
      err(f"system.num_processes={s.num_processes} needs system.coordinator_address (host:port)")
    if not (isinstance(s.process_id, int) and 0 <= s.process_id < s.num_processes):
      err(f"system.process_id={s.process_id!r} must be in [0, system.num_processes)")
    single = (
      f"algo={config.algo!r}"
      if config.algo in ALGOS and registry.get(config.algo).single_process
      else "system.backend='sync'"
      if s.backend == "sync"
      else None
    )
    if single:
      err(
        f"system.num_processes={s.num_processes}: {single} runs on one process (its local "
        "devices); several processes run backend 'actors' (host environments, IMPALA) or "
        "'anakin' (JAX environments)"
      )
  if config.algo in ALGOS and s.backend in BACKENDS:
    algorithm = registry.get(config.algo)
    if s.backend not in algorithm.backends:
      err(
        f"system.backend={s.backend!r}: algo={config.algo!r} runs on "
        + " or ".join(f"{b!r} ({_BACKEND_USE[b]})" for b in algorithm.backends)
      )
  spaces = None
  if check_env:
    try:
      spec = envs.get_spec(config.env.id)
      spaces = envs.describe(config.env.id, **config.env.options.to_dict())
    except (envs.EnvError, envs.MissingDependencyError, ValueError) as e:
      err(f"env.id={config.env.id!r} / env.options: {e}")
    else:
      functional = getattr(spec, "functional", False)
      if s.backend == "anakin" and not functional:
        err(
          f"system.backend='anakin' needs a JAX environment (jax/..., gymnax/..., popgym/..., brax/...); "
          f"env.id={config.env.id!r} is not one"
        )
  if config.algo in ALGOS and isinstance(config.get("agent"), ml_collections.ConfigDict):
    for path in _unknown_fields(config.agent, registry.get(config.algo).get_config(), "agent"):
      err(
        renamed_field_error([path])
        or f"{path}: not a field of the {config.algo} agent's config (rtrl_rl/agents/{config.algo}/config.py)"
      )
  if errors:
    raise ConfigError("experiment", errors)
  registry.get(config.algo).validate(config, spaces)


def device_memory_bytes() -> int:
  """Memory that holds the learner's buffers: the local accelerators' limits added up (the envs,
  and so the buffer, split over them), or the host's RAM on CPU."""
  import jax  # noqa: PLC0415 - start-up time: the module imports no jax (configs, train.py)

  devices = jax.local_devices()
  if devices[0].platform != "cpu":
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    if all(limits):
      return int(sum(limits))
  return int(psutil.virtual_memory().total)


def parse_args(arg: str | None, **defaults):
  """Config-file arguments `"key=value,key=value"` (after `configs/x.py:`) over typed `defaults`.

  Values take the type of their default (int, float, bool, str); an unknown key or a bad value
  raises naming the valid keys. Returns a `dict`.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or key not in defaults:
      raise ValueError(f"config argument {item!r}: expected key=value with key one of {sorted(defaults)}")
    kind = type(defaults[key])
    try:
      if kind is bool:
        if value.lower() not in ("true", "false", "1", "0"):
          raise ValueError(value)
        out[key] = value.lower() in ("true", "1")
      else:
        out[key] = kind(value)
    except ValueError:
      raise ValueError(f"config argument {key}={value!r}: expected a {kind.__name__}") from None
  return out


def irie_core(agent_config, mode: str, cell: str) -> None:
  """The IMPALA configs' core variants (Irie et al.): "rtrl" | "tbptt" (the cell `cell`) or "ff" (none)."""
  n = agent_config.network
  if mode == "ff":
    n.cell = None
  elif mode in ("rtrl", "tbptt"):
    n.cell, n.core_mode = cell, mode
  else:
    raise ValueError(f"mode={mode!r}: expected one of ('rtrl', 'tbptt', 'ff')")


def rtu_paper_ppo(
  name: str,
  env_name: str,
  core: str,
  seed: int,
  total_env_steps: int,
  truncation: int,
  env_family: str,
  families: dict[str, tuple[str, str]],
  gradient: str = "stale",
  num_envs: int = 1,
):
  """The RTU paper's PPO experiment (its defaults) with a budget-matched core variant from
  `rtrl_rl.agents.ppo.config.RTU_PAPER_CORES`; `truncation` is the T of the T-BPTT variants
  (`lru_tbptt`, `gru`). `families` maps each `env_family` a config offers to (id family, backend):
  the env is `<id family>/<env_name>` on that backend (e.g. "brax" -> ("brax", "anakin")).
  `gradient`: "stale" (the paper's default) | "fresh" (the run's name ends in `_fresh`).
  `num_envs`: the paper acts in 1 environment with a rollout of 2048 steps; n > 1 environments
  share the same 2048-step buffer (rollout 2048 / n, the same 32 minibatches of 64 steps), which
  acts n times faster on a CPU."""
  from rtrl_rl.agents.ppo import config as ppo_config  # noqa: PLC0415 - start-up time: it imports jax

  if env_family not in families:
    raise ValueError(f"env_family={env_family!r}: expected one of {tuple(families)}")
  if gradient not in ppo_config.GRADIENTS:
    raise ValueError(f"gradient={gradient!r}: expected one of {ppo_config.GRADIENTS}")
  prefix, backend = families[env_family]
  c = base_config("ppo")
  buffer = c.agent.rollout_length * c.agent.num_envs
  if num_envs < 1 or buffer % num_envs:
    raise ValueError(f"num_envs={num_envs}: expected a divisor of the paper's {buffer}-step buffer")
  c.name = f"{name}_{core}" + ("_fresh" if gradient == "fresh" else "")
  c.seed = seed
  c.env.id = f"{prefix}/{env_name}"
  c.system.backend = backend
  c.system.log_every_updates = 1  # a metrics row per update: the same curve on any machine
  c.agent.total_env_steps = total_env_steps
  c.agent.gradient = gradient
  c.agent.num_envs, c.agent.rollout_length = num_envs, buffer // num_envs
  ppo_config.rtu_paper_core(c.agent, core, truncation)
  return c
