"""Environment ids, their options, and lookup with helpful errors.

Id scheme: ``<family>/<name>``; the family says which backend builds it.

=========  ==============================================  =====================
family     name                                            backend
=========  ==============================================  =====================
atari      envpool game name without ``-v5``:              envpool
           ``atari/Pong``, ``atari/MsPacman``
procgen    ``<game>-<mode>``, lower case, mode in          envpool
           easy/hard/memory/extreme/exploration as the
           game offers: ``procgen/chaser-hard``,
           ``procgen/maze-memory``
mujoco     ``<Robot>-F`` (full), ``-P`` (velocities        envpool
           removed), ``-V`` (positions/angles removed) for
           Ant, HalfCheetah, Hopper, Walker2d;
           ``mujoco/Reacher-F``, ``mujoco/Reacher-POMDP``
brax       the ``mujoco`` ids on Brax's robots:            brax (pure JAX),
           ``brax/Ant-P``, ``brax/Walker2d-V``,            positional pipeline
           ``brax/Reacher-F``, ``brax/Reacher-POMDP``      by default
memory     ``minigrid-memory-s7`` .. ``-s13-random``,      envpool
           ``-s17-random``; ``cartpole-masked``
           (velocities hidden), ``cartpole`` (reference)
popgym     ``<Task>-<easy|medium|hard>``, all 16 POPGym    pure JAX (ours, tested
           tasks: ``popgym/CountRecall-easy``              against the package)
popgym-    the same ids from the ``popgym`` package:       popgym (Python loop,
numpy      ``popgym-numpy/CountRecall-easy``               the reference)
jax        ``trace-conditioning``                          pure JAX
gymnax     gymnax registry name: ``gymnax/CartPole-v1``    gymnax (JAX)
dmlab      DMLab-30 level: ``dmlab/rooms_watermaze``       deepmind_lab
=========  ==============================================  =====================

``python -m rtrl_rl.envs --list`` prints every id with its spaces.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
from typing import Any, Callable, Mapping

from rtrl_rl.envs._popgym import LEVELS, TASKS
from rtrl_rl.envs.core import BadOptionError, UnknownEnvError

_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Option:
  """One keyword option of ``make``: a default plus a validity check."""

  name: str
  default: Any
  doc: str
  choices: tuple | None = None
  check: Callable[[Any], bool] | None = None
  expect: str = ""

  def validate(self, env_id: str, value: Any) -> Any:
    if self.choices is not None:
      if value not in self.choices:
        raise BadOptionError(
          f"{env_id}: option {self.name}={value!r} is invalid; valid choices: {list(self.choices)}"
        )
    elif self.check is not None and not self.check(value):
      raise BadOptionError(f"{env_id}: option {self.name}={value!r} is invalid; expected {self.expect}")
    return value


def _is_int(lo: int = 0, hi: int | None = None) -> Callable[[Any], bool]:
  def check(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)

  return check


def _is_prob(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0


def _is_int_range(v: Any) -> bool:
  return (
    isinstance(v, (tuple, list))
    and len(v) == 2
    and all(isinstance(x, int) and x >= 1 for x in v)
    and v[0] <= v[1]
  )


BOOL = (True, False)

# Options every envpool-backed id accepts.
ENVPOOL_COMMON = (
  Option(
    "num_threads", 0, "envpool worker threads (0: envpool's default)", check=_is_int(0), expect="an int >= 0"
  ),
  Option(
    "batch_size",
    None,
    "envs returned per recv() (async); None: num_envs (sync)",
    check=lambda v: v is None or _is_int(1)(v),
    expect="None or an int >= 1",
  ),
)


def _max_steps(default: int | None) -> Option:
  return Option(
    "max_episode_steps",
    default,
    "time limit in agent steps (truncation)",
    check=lambda v: (v is None and default is None) or _is_int(1)(v),
    expect="an int >= 1",
  )


ATARI_OPTIONS = ENVPOOL_COMMON + (
  Option("episodic_life", True, "a life loss ends the episode (terminated)", BOOL),
  Option("fire_reset", True, "press FIRE after reset in games that need it", BOOL),
  Option(
    "noop_max",
    30,
    "up to this many random no-ops at reset (0 or 1: none)",
    check=_is_int(0),
    expect="an int >= 0",
  ),
  Option(
    "sticky_actions",
    0.0,
    "repeat_action_probability (0.25 = Machado et al.)",
    check=_is_prob,
    expect="a probability in [0, 1]",
  ),
  Option(
    "frame_skip", 4, "action repeat; max-pool over the last 2 frames", check=_is_int(1), expect="an int >= 1"
  ),
  Option("stack_num", 4, "frames stacked along axis 1", check=_is_int(1), expect="an int >= 1"),
  Option("reward_clip", False, "clip rewards to {-1, 0, 1} in the env", BOOL),
  Option("full_action_space", False, "use all 18 actions", BOOL),
  _max_steps(27000),
)

PROCGEN_OPTIONS = ENVPOOL_COMMON + (
  Option(
    "split",
    "train",
    "train: levels [start_level, start_level+num_levels); "
    "test: the unbounded level distribution (num_levels=0)",
    ("train", "test"),
  ),
  Option(
    "num_levels", 500, "number of training levels (0: unbounded)", check=_is_int(0), expect="an int >= 0"
  ),
  Option("start_level", 0, "first training level seed", check=_is_int(0), expect="an int >= 0"),
  Option("channel_first", False, "obs [3, 64, 64] instead of [64, 64, 3]", BOOL),
)  # no max_episode_steps: envpool's ProcGen ignores it; each game has its own timeout

MUJOCO_OPTIONS = ENVPOOL_COMMON + (_max_steps(1000),)
REACHER_OPTIONS = ENVPOOL_COMMON + (_max_steps(50),)
BRAX_OPTIONS = (
  Option(
    "backend",
    "positional",
    "brax physics pipeline (positional: the RTU paper's)",
    ("positional", "generalized", "spring", "mjx"),
  ),  # brax.envs.base.PipelineEnv's
  _max_steps(1000),  # Reacher too: we found no RTU-authors' Reacher episode length
)
MINIGRID_OPTIONS = ENVPOOL_COMMON + (
  Option(
    "max_episode_steps",
    None,
    "time limit (None: MiniGrid's 5*size^2)",
    check=lambda v: v is None or _is_int(1)(v),
    expect="None or an int >= 1",
  ),
)
CARTPOLE_OPTIONS = ENVPOOL_COMMON + (_max_steps(500),)

POPGYM_OPTIONS = ()

TRACE_OPTIONS = (
  Option(
    "isi",
    (7, 13),
    "inter-stimulus interval range [lo, hi] (CS onset to US onset)",
    check=_is_int_range,
    expect="(lo, hi) ints with 1 <= lo <= hi",
  ),
  Option(
    "iti",
    (80, 120),
    "inter-trial interval range [lo, hi] (US onset to next CS)",
    check=_is_int_range,
    expect="(lo, hi) ints with 1 <= lo <= hi",
  ),
  Option(
    "num_distractors",
    10,
    "distractor stimuli (onset prob 1/10, 1/20, ..)",
    check=_is_int(0, 10),
    expect="an int in [0, 10]",
  ),
  Option("cs_length", 4, "CS duration in steps", check=_is_int(1), expect="an int >= 1"),
  Option("us_length", 2, "US duration in steps", check=_is_int(1), expect="an int >= 1"),
  Option("distractor_length", 4, "distractor duration", check=_is_int(1), expect="an int >= 1"),
  Option(
    "gamma",
    0.9,
    "discount of the prediction target (for msre)",
    check=lambda v: isinstance(v, float) and 0.0 <= v < 1.0,
    expect="a float in [0, 1)",
  ),
)

CUE_MEMORY_OPTIONS = (
  Option("num_cues", 2, "number of cues K (= actions)", check=_is_int(2), expect="an int >= 2"),
  Option("length", 5, "steps L from the cue to the query", check=_is_int(1), expect="an int >= 1"),
  Option(
    "reward_wrong",
    0.0,
    "reward of a wrong answer",
    check=lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    expect="a number",
  ),
)

GYMNAX_OPTIONS = (
  Option(
    "max_episode_steps",
    None,
    "override params.max_steps_in_episode (truncation)",
    check=lambda v: v is None or _is_int(1)(v),
    expect="None or an int >= 1",
  ),
)

DMLAB_OPTIONS = (
  Option("action_repeat", 4, "engine frames per agent step", check=_is_int(1), expect="an int >= 1"),
  Option("height", 72, "observation height", check=_is_int(1), expect="an int >= 1"),
  Option("width", 96, "observation width", check=_is_int(1), expect="an int >= 1"),
  Option("renderer", "software", "DMLab renderer", ("software", "hardware")),
  Option(
    "max_episode_steps",
    None,
    "extra time limit in agent steps (truncation)",
    check=lambda v: v is None or _is_int(1)(v),
    expect="None or an int >= 1",
  ),
  Option(
    "level_prefix",
    "contributed/dmlab30/",
    "prefix making a level path",
    check=lambda v: isinstance(v, str),
    expect="a string",
  ),
)


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """A registered id: its builder (``module:function``), fixed args, options."""

  env_id: str
  family: str
  builder: str
  args: Mapping[str, Any]
  options: tuple[Option, ...]
  description: str = ""
  functional: bool = False  # has a pure-JAX make_functional() path

  def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``given``; raises BadOptionError on misuse."""
    table = {o.name: o for o in self.options}
    unknown = sorted(set(given) - set(table))
    if unknown:
      valid = ", ".join(sorted(table)) or "(none)"
      raise BadOptionError(f"{self.env_id}: unknown option(s) {unknown}; valid options: {valid}")
    out = {}
    for o in self.options:
      v = given.get(o.name, _MISSING)
      out[o.name] = o.default if v is _MISSING else o.validate(self.env_id, v)
    return out

  def load_builder(self) -> Callable[..., Any]:
    mod, fn = self.builder.split(":")
    return getattr(importlib.import_module(mod), fn)


# ----------------------------------------------------------------------------- tables

MUJOCO_ROBOTS = ("Ant", "HalfCheetah", "Hopper", "Walker2d")
MINIGRID_MEMORY = {
  "s7": "MiniGrid-MemoryS7-v0",
  "s9": "MiniGrid-MemoryS9-v0",
  "s11": "MiniGrid-MemoryS11-v0",
  "s13": "MiniGrid-MemoryS13-v0",
  "s13-random": "MiniGrid-MemoryS13Random-v0",
  "s17-random": "MiniGrid-MemoryS17Random-v0",
}
DMLAB30_LEVELS = (
  "rooms_collect_good_objects_train",
  "rooms_collect_good_objects_test",
  "rooms_exploit_deferred_effects_train",
  "rooms_exploit_deferred_effects_test",
  "rooms_select_nonmatching_object",
  "rooms_watermaze",
  "rooms_keys_doors_puzzle",
  "language_select_described_object",
  "language_select_located_object",
  "language_execute_random_task",
  "language_answer_quantitative_question",
  "lasertag_one_opponent_small",
  "lasertag_three_opponents_small",
  "lasertag_one_opponent_large",
  "lasertag_three_opponents_large",
  "natlab_fixed_large_map",
  "natlab_varying_map_regrowth",
  "natlab_varying_map_randomized",
  "skymaze_irreversible_path_hard",
  "skymaze_irreversible_path_varied",
  "psychlab_arbitrary_visuomotor_mapping",
  "psychlab_continuous_recognition",
  "psychlab_sequential_comparison",
  "psychlab_visual_search",
  "explore_object_locations_small",
  "explore_object_locations_large",
  "explore_obstructed_goals_small",
  "explore_obstructed_goals_large",
  "explore_goal_locations_small",
  "explore_goal_locations_large",
  "explore_object_rewards_few",
  "explore_object_rewards_many",
)

_EP = "rtrl_rl.envs._envpool"


def _atari_specs() -> list[EnvSpec]:
  from rtrl_rl.envs import _envpool  # noqa: PLC0415 - optional dependency: it imports envpool

  return [
    EnvSpec(
      f"atari/{g}",
      "atari",
      f"{_EP}:make_atari",
      {"task": f"{g}-v5"},
      ATARI_OPTIONS,
      f"Atari {g}: 84x84 gray, 4-stack, repeat 4",
    )
    for g in _envpool.atari_games()
  ]


def _procgen_specs() -> list[EnvSpec]:
  from rtrl_rl.envs import _envpool  # noqa: PLC0415 - optional dependency: it imports envpool

  return [
    EnvSpec(
      f"procgen/{game}-{mode}",
      "procgen",
      f"{_EP}:make_procgen",
      {"task": task},
      PROCGEN_OPTIONS,
      f"ProcGen {game} ({mode})",
    )
    for game, mode, task in _envpool.procgen_tasks()
  ]


def _mujoco_specs() -> list[EnvSpec]:
  out = []
  for robot in MUJOCO_ROBOTS:
    for view, what in (("F", "full state"), ("P", "velocities removed"), ("V", "positions/angles removed")):
      out.append(
        EnvSpec(
          f"mujoco/{robot}-{view}",
          "mujoco",
          f"{_EP}:make_mujoco",
          {"robot": robot, "view": view},
          MUJOCO_OPTIONS,
          f"MuJoCo {robot}, {what}",
        )
      )
  out.append(
    EnvSpec(
      "mujoco/Reacher-F",
      "mujoco",
      f"{_EP}:make_mujoco",
      {"robot": "Reacher", "view": "F"},
      REACHER_OPTIONS,
      "MuJoCo Reacher, full",
    )
  )
  out.append(
    EnvSpec(
      "mujoco/Reacher-POMDP",
      "mujoco",
      f"{_EP}:make_mujoco",
      {"robot": "Reacher", "view": "POMDP"},
      REACHER_OPTIONS,
      "Reacher; target seen only on the first step of an episode",
    )
  )
  return out


def _brax_specs() -> list[EnvSpec]:
  views = [
    (robot, view, f"Brax {robot}, {what}")
    for robot in MUJOCO_ROBOTS
    for view, what in (("F", "full state"), ("P", "velocities removed"), ("V", "positions/angles removed"))
  ]
  views += [
    ("Reacher", "F", "Brax Reacher, full"),
    ("Reacher", "POMDP", "Brax Reacher; target seen only on the first step of an episode"),
  ]
  return [
    EnvSpec(
      f"brax/{robot}-{view}",
      "brax",
      "rtrl_rl.envs._brax:make_brax",
      {"robot": robot, "view": view},
      BRAX_OPTIONS,
      doc,
      functional=True,
    )
    for robot, view, doc in views
  ]


def _memory_specs() -> list[EnvSpec]:
  out = [
    EnvSpec(
      f"memory/minigrid-memory-{k}",
      "memory",
      f"{_EP}:make_minigrid",
      {"task": task},
      MINIGRID_OPTIONS,
      f"MiniGrid {task} (7x7x3 egocentric view)",
    )
    for k, task in MINIGRID_MEMORY.items()
  ]
  out.append(
    EnvSpec(
      "memory/cartpole-masked",
      "memory",
      f"{_EP}:make_cartpole",
      {"masked": True},
      CARTPOLE_OPTIONS,
      "CartPole-v1, velocities hidden",
    )
  )
  out.append(
    EnvSpec(
      "memory/cartpole",
      "memory",
      f"{_EP}:make_cartpole",
      {"masked": False},
      CARTPOLE_OPTIONS,
      "CartPole-v1, fully observed",
    )
  )
  return out


def _popgym_specs(family: str = "popgym") -> list[EnvSpec]:
  """``popgym/``: our JAX port (functional); ``popgym-numpy/``: the package on the host."""
  jax_port = family == "popgym"
  builder = "rtrl_rl.envs.popgym_jax:make_popgym_jax" if jax_port else "rtrl_rl.envs._popgym:make_popgym"
  what = "in JAX" if jax_port else "(the popgym package)"
  return [
    EnvSpec(
      f"{family}/{t}-{lvl}",
      family,
      builder,
      {"task": t, "level": lvl},
      POPGYM_OPTIONS,
      f"POPGym {t}{lvl.capitalize()} {what}",
      functional=jax_port,
    )
    for t in TASKS
    for lvl in LEVELS
  ]


def _jax_specs() -> list[EnvSpec]:
  return [
    EnvSpec(
      "jax/trace-conditioning",
      "jax",
      "rtrl_rl.envs._jax:make_trace_conditioning",
      {},
      TRACE_OPTIONS,
      "trace conditioning prediction (Rafiee et al.)",
      functional=True,
    ),
    EnvSpec(
      "jax/cue-memory",
      "jax",
      "rtrl_rl.envs.cue_memory:make_cue_memory",
      {},
      CUE_MEMORY_OPTIONS,
      "cue memory: report the first-step cue after L masked steps",
      functional=True,
    ),
  ]


def _gymnax_specs() -> list[EnvSpec]:
  from rtrl_rl.envs import _jax  # noqa: PLC0415 - start-up time: it imports jax

  return [
    EnvSpec(
      f"gymnax/{n}",
      "gymnax",
      "rtrl_rl.envs._jax:make_gymnax",
      {"name": n},
      GYMNAX_OPTIONS,
      f"gymnax {n}",
      functional=True,
    )
    for n in _jax.gymnax_names()
  ]


def _dmlab_specs() -> list[EnvSpec]:
  return [
    EnvSpec(
      f"dmlab/{lvl}",
      "dmlab",
      "rtrl_rl.envs._dmlab:make_dmlab",
      {"level": lvl},
      DMLAB_OPTIONS,
      f"DMLab-30 {lvl}: 72x96 RGB, 9 actions, repeat 4",
    )
    for lvl in DMLAB30_LEVELS
  ]


FAMILIES: dict[str, Callable[[], list[EnvSpec]]] = {
  "atari": _atari_specs,
  "procgen": _procgen_specs,
  "mujoco": _mujoco_specs,
  "brax": _brax_specs,
  "memory": _memory_specs,
  "popgym": _popgym_specs,
  "popgym-numpy": functools.partial(_popgym_specs, "popgym-numpy"),
  "jax": _jax_specs,
  "gymnax": _gymnax_specs,
  "dmlab": _dmlab_specs,
}


@functools.cache
def family_specs(family: str) -> dict[str, EnvSpec]:
  """All specs of one family, keyed by id (enumerated lazily, then cached)."""
  return {s.env_id: s for s in FAMILIES[family]()}


def list_ids(family: str | None = None) -> list[str]:
  """Every registered id (optionally of one family), in registry order."""
  fams = FAMILIES if family is None else [family]
  return [i for f in fams for i in family_specs(f)]


def get_spec(env_id: str) -> EnvSpec:
  """The spec of ``env_id``; UnknownEnvError lists near matches otherwise."""
  if not isinstance(env_id, str):
    raise UnknownEnvError(f"env_id must be a string like 'atari/Pong', got {env_id!r}")
  family = env_id.split("/", 1)[0] if "/" in env_id else None
  if family in FAMILIES:
    specs = family_specs(family)
    if env_id in specs:
      return specs[env_id]
    pool = list(specs)
  else:
    pool = list_ids()
  lower = {i.lower(): i for i in pool}
  near = [lower[m] for m in difflib.get_close_matches(env_id.lower(), list(lower), n=8, cutoff=0.5)]
  msg = f"unknown env id {env_id!r}."
  if family not in FAMILIES:
    msg += f" Ids look like '<family>/<name>' with family in {sorted(FAMILIES)}."
  if near:
    msg += f" Did you mean: {', '.join(near)}?"
  if family in ("popgym", "popgym-numpy"):
    msg += (
      f" Valid {family} ids: {family}/<Task>-<level> with Task one of {', '.join(TASKS)} "
      f"and level one of {', '.join(LEVELS)}."
    )
  elif family in FAMILIES and len(pool) <= 40:
    msg += f" Valid {family} ids: {', '.join(pool)}."
  msg += " `python -m rtrl_rl.envs --list` prints every id."
  raise UnknownEnvError(msg)
