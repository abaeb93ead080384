"""The ``popgym`` package (numpy): the reference POPGym tasks, vectorised over single envs.

The only module that imports ``popgym``. Ids ``popgym-numpy/<Task>-<level>``
build :class:`PopgymVecEnv`; the fast JAX ports (``popgym/<Task>-<level>``,
:mod:`rtrl_rl.envs.popgym_jax`) are tested against it.

Env ``i`` is seeded with ``seed + i`` at the first reset (later resets keep
drawing from its own generator), so env ``i`` of a batch produces exactly the
transitions of a lone ``popgym`` env reset with ``seed + i`` and fed the same
actions. Autoreset follows the package's next-step contract (see
:mod:`rtrl_rl.envs.core`).

Encoding, shared with the JAX ports (:class:`Encoding`):

* observations: Discrete / MultiDiscrete / Tuple of them become concatenated
  one-hot vectors, float32 ``[sum of sizes]``; Box observations pass through
  as float32 ``[*shape]``;
* actions: Discrete stays Discrete; MultiDiscrete ``[n_1, .., n_k]`` becomes
  one Discrete ``(n_1 * .. * n_k)`` in row-major order (the agents have one
  categorical head; ``a = i_1 * n_2 * .. * n_k + .. + i_k``); Box stays Box.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from rtrl_rl.envs.core import Env, MissingDependencyError, Space, TimeStep, empty_timestep

# The package's 16 task families (class name prefixes), each at easy / medium / hard.
TASKS = (
  "Autoencode",
  "Battleship",
  "Concentration",
  "CountRecall",
  "HigherLower",
  "LabyrinthEscape",
  "LabyrinthExplore",
  "MineSweeper",
  "MultiarmedBandit",
  "NoisyPositionOnlyCartPole",
  "NoisyPositionOnlyPendulum",
  "PositionOnlyCartPole",
  "PositionOnlyPendulum",
  "RepeatFirst",
  "RepeatPrevious",
  "VelocityOnlyCartPole",
)
LEVELS = ("easy", "medium", "hard")


def _import_popgym_envs():
  try:
    import popgym.envs as pe  # noqa: PLC0415 - optional dependency
  except ImportError as e:  # pragma: no cover - popgym is a project dependency
    raise MissingDependencyError("POPGym ids need the `popgym` package: pip install 'popgym>=1.0.7'") from e
  return pe


def env_class(task: str, level: str):
  """The package's class for ``task`` at ``level`` (e.g. ``CountRecallEasy``).

  The Labyrinth tasks exist only where ``mazelib`` is importable (a project
  dependency); a missing one raises :class:`MissingDependencyError`."""
  pe = _import_popgym_envs()
  name = task + level.capitalize()
  if not hasattr(pe, name):
    if task.startswith("Labyrinth"):
      raise MissingDependencyError(f"popgym's {task} needs the `mazelib` package: pip install mazelib")
    raise AttributeError(f"popgym.envs has no class {name}")
  return getattr(pe, name)


def _sizes(space: Any) -> list[int]:
  """Category counts of a Discrete / MultiDiscrete / Tuple observation space."""
  if hasattr(space, "spaces"):  # Tuple
    return [n for s in space.spaces for n in _sizes(s)]
  if hasattr(space, "nvec"):
    return [int(n) for n in np.asarray(space.nvec).ravel()]
  if hasattr(space, "n"):
    return [int(space.n)]
  raise TypeError(f"unsupported POPGym observation space {space}")


class Encoding:
  """The package's spaces as ours, and its observations/actions to and from our encoding."""

  def __init__(self, observation_space: Any, action_space: Any):
    self.box_obs = hasattr(observation_space, "low") and not hasattr(observation_space, "nvec")
    if self.box_obs:
      shape = tuple(observation_space.shape)
      self.observation_space = Space.box(
        shape,
        np.float32,
        np.asarray(observation_space.low, np.float32),
        np.asarray(observation_space.high, np.float32),
      )
    else:
      self.sizes = _sizes(observation_space)
      self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
      self.observation_space = Space.box((int(sum(self.sizes)),), np.float32, 0.0, 1.0)
    if hasattr(action_space, "nvec"):
      self.action_nvec = tuple(int(n) for n in np.asarray(action_space.nvec).ravel())
      self.action_space = Space.discrete(int(np.prod(self.action_nvec)))
    elif hasattr(action_space, "n"):
      self.action_nvec = None
      self.action_space = Space.discrete(int(action_space.n))
    else:
      self.action_nvec = None
      self.action_space = Space.box(
        tuple(action_space.shape),
        np.float32,
        np.asarray(action_space.low, np.float32),
        np.asarray(action_space.high, np.float32),
      )

  def obs(self, obs: Any, out: np.ndarray) -> None:
    """Write the encoding of one package observation into ``out`` (float32 [d])."""
    if self.box_obs:
      out[:] = np.asarray(obs, np.float32).ravel()
      return
    idx = np.asarray(obs, dtype=np.int64).ravel()
    out[:] = 0.0
    out[self.offsets + idx] = 1.0

  def action(self, a: Any) -> Any:
    """Our action (int, or float32 [*shape]) as the package's."""
    if self.action_space.kind == "box":
      return np.asarray(a, np.float32).reshape(self.action_space.shape)
    a = int(a)
    if self.action_nvec is not None:
      return np.array(np.unravel_index(a, self.action_nvec), np.int64)
    return a


@functools.cache
def encoding(task: str, level: str) -> Encoding:
  """The :class:`Encoding` of a task-level (from one instance of the package's env)."""
  env = env_class(task, level)()
  return Encoding(env.observation_space, env.action_space)


class PopgymVecEnv(Env):
  """``num_envs`` popgym envs of ``task``-``level`` behind the TimeStep contract."""

  def __init__(self, env_id: str, task: str, level: str, num_envs: int, seed: int):
    cls = env_class(task, level)
    self.env_id = env_id
    self.num_envs = int(num_envs)
    self.seed = int(seed)
    self._envs = [cls() for _ in range(num_envs)]
    self._enc = encoding(task, level)
    self.observation_space = self._enc.observation_space
    self.action_space = self._enc.action_space
    self._done = np.zeros(num_envs, bool)
    self._seeded = False

  def _obs_buffer(self) -> np.ndarray:
    return np.zeros((self.num_envs,) + self.observation_space.shape, np.float32)

  def reset(self) -> TimeStep:
    obs = self._obs_buffer()
    for i, env in enumerate(self._envs):
      o, _ = env.reset(seed=None if self._seeded else self.seed + i)
      self._enc.obs(o, obs[i])
    self._seeded = True
    self._done[:] = False
    return empty_timestep(obs)

  def step(self, actions) -> TimeStep:
    actions = np.asarray(actions)
    want = (self.num_envs,) + self.action_space.shape
    if actions.shape != want:
      raise ValueError(f"{self.env_id}: actions must have shape {want}, got {actions.shape}")
    b = self.num_envs
    obs = self._obs_buffer()
    rew = np.zeros(b, np.float32)
    term = np.zeros(b, bool)
    trunc = np.zeros(b, bool)
    first = self._done.copy()
    for i, env in enumerate(self._envs):
      if first[i]:
        o, _ = env.reset()
      else:
        o, r, te, tr, _ = env.step(self._enc.action(actions[i]))
        rew[i], term[i], trunc[i] = r, te, tr and not te
      self._enc.obs(o, obs[i])
    self._done = term | trunc
    return TimeStep(obs, rew, term, trunc, first, {})


def make_popgym(env_id: str, num_envs: int, seed: int, *, task: str, level: str, describe: bool = False):
  """POPGym ``task`` at ``level`` from the package (host envs, a Python loop)."""
  if describe:
    enc = encoding(task, level)
    return enc.observation_space, enc.action_space
  return PopgymVecEnv(env_id, task, level, num_envs, seed)
