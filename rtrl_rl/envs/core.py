"""The one time-step contract shared by every environment family.

Conventions (all families, sync and async, numpy and JAX):

* A batched environment holds ``B = num_envs`` independent episodes.
* ``reset()`` starts every episode: ``first`` is all True, ``reward`` is 0,
  ``terminated`` and ``truncated`` are all False.
* ``step(actions)`` advances every env by one agent step and returns the
  resulting :class:`TimeStep`.
* **Autoreset ("next step")**: when a step returns ``terminated | truncated``
  for env ``b``, the observation of that step is the *last* observation of
  the episode. The NEXT ``step`` ignores ``actions[b]``, starts a new episode
  for env ``b`` and returns its first observation with ``first[b] = True``,
  ``reward[b] = 0`` and ``terminated[b] = truncated[b] = False``.
  envpool behaves this way natively (we verified it and additionally derive
  ``first`` from its ``elapsed_step == 0``); gymnax/POPGym/DMLab/JAX tasks are
  wrapped to match (gymnax itself resets within the same step).
* ``first[t, b]`` is exactly what the recurrent cells consume as
  ``resets[t, b]``: "step t starts a new episode; zero the recurrent state
  (and RTRL traces) before processing ``obs[t, b]``".
* **Termination vs truncation**: ``terminated`` means the MDP reached a
  terminal state, so the return after it is 0 (no bootstrap). ``truncated``
  means the episode was cut (time limit) from a non-terminal state: targets
  must bootstrap from the value of that step's observation. The two are never
  both True.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np


class TimeStep(NamedTuple):
  """One batched time step (numpy arrays, or jax arrays on the JAX path).

  obs:        [B, *observation_space.shape], dtype observation_space.dtype.
  reward:     [B] float32; reward of the transition that produced ``obs``
              (0 on first steps).
  terminated: [B] bool; ``obs`` is terminal: do not bootstrap.
  truncated:  [B] bool; episode cut by a time limit: bootstrap from ``obs``.
  first:      [B] bool; ``obs`` is the first observation of an episode
              (= the cells' ``resets``).
  info:       dict of extra [B]-leading arrays (family specific, e.g. Atari
              ``lives`` and ``game_over``); may be empty.

  Every step returns new arrays: callers may keep TimeSteps (rollout lists;
  JAX on CPU may alias numpy memory), later steps never write into them.
  """

  obs: Any
  reward: Any
  terminated: Any
  truncated: Any
  first: Any
  info: Any = None


def episode_step(ret, length, reward, ended, valid, xp=np):
  """One step of each env's running episode return and length: `((ret, length), (ret', length'))`.

  `ret`, `length` [B]: the episode so far, before this step; `reward` [B]: this step's; `ended` [B]:
  this step's ``terminated | truncated``; `valid` [B]: this step is an action of the episode, i.e.
  the previous step ended none (``~(terminated | truncated)`` of the previous step; True on the
  first step after ``reset()``). Returns the totals with this step counted (each env's finished
  episode where `ended`) and the state for the next step (zeros where `ended`). Length counts the
  episode's actions: an episode of observations o_0 .. o_k has length k.

  `xp` is the array module, numpy (the actor processes: jax.numpy ops on host arrays would dispatch
  to XLA one by one) or jax.numpy (inside the jitted acting step); dtypes follow `ret` and `length`.

  Relies on the next-step autoreset above: the step after an episode's end is the next episode's
  reset step, with reward 0 and ``first`` True, and ``first`` is True after no other step. Under
  it, zeroing the state at an end and counting `valid` steps equals zeroing it at ``first`` and
  counting every step. An env that broke the contract would see the two differ: a reward on the
  reset step is counted into the new episode here (the ``first`` way drops it), and a ``first``
  with no end before it does not cut the episode here.
  """
  ret = ret + reward
  length = length + valid.astype(length.dtype)
  return (ret, length), (xp.where(ended, 0.0, ret), xp.where(ended, 0, length))


@dataclasses.dataclass(frozen=True, eq=False)
class Space:
  """Per-env description of an observation or action space (no batch dim).

  kind: ``"discrete"`` (``shape == ()``, integer in ``[0, num_values)``) or
    ``"box"`` (array of ``shape`` with element-wise ``low``/``high`` bounds).
  """

  kind: str
  shape: tuple[int, ...]
  dtype: np.dtype
  num_values: int | None = None
  low: Any = None
  high: Any = None

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Space):
      return NotImplemented
    return (
      self.kind == other.kind
      and self.shape == other.shape
      and np.dtype(self.dtype) == np.dtype(other.dtype)
      and self.num_values == other.num_values
      and all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in ((self.low, other.low), (self.high, other.high))
      )
    )

  def __hash__(self) -> int:
    return hash((self.kind, self.shape, np.dtype(self.dtype).str, self.num_values))

  def __str__(self) -> str:
    dt = np.dtype(self.dtype).name
    if self.kind == "discrete":
      return f"Discrete({self.num_values}, {dt})"
    lo, hi = _bound_str(self.low), _bound_str(self.high)
    return f"Box({lo}, {hi}, {self.shape}, {dt})"

  @staticmethod
  def discrete(n: int, dtype=np.int32) -> "Space":
    return Space("discrete", (), np.dtype(dtype), num_values=int(n))

  @staticmethod
  def box(shape: Sequence[int], dtype, low=-np.inf, high=np.inf) -> "Space":
    return Space("box", tuple(int(s) for s in shape), np.dtype(dtype), None, low, high)


def _bound_str(b: Any) -> str:
  a = np.asarray(b)
  if a.size == 0:
    return "?"
  if a.ndim == 0 or np.all(a == a.flat[0]):
    v = float(a.flat[0])
    return f"{v:g}"
  return "[" + ", ".join(f"{float(x):g}" for x in a.flat[:4]) + (", ...]" if a.size > 4 else "]")


# ----------------------------------------------------------------------------- errors


class EnvError(ValueError):
  """Base class for configuration errors raised by :func:`rtrl_rl.envs.make`."""


class UnknownEnvError(EnvError, KeyError):
  """An id that is not in the registry (message lists near matches)."""

  def __str__(self) -> str:  # KeyError would repr() the message
    return str(self.args[0]) if self.args else ""


class BadOptionError(EnvError, TypeError):
  """An unknown option name or an invalid option value."""


class MissingDependencyError(ImportError):
  """An optional dependency (e.g. ``deepmind_lab``) is not importable."""


# ----------------------------------------------------------------------------- envs


class Env(abc.ABC):
  """A batched environment following the :class:`TimeStep` contract.

  Attributes: ``env_id``, ``num_envs`` (B), ``observation_space`` and
  ``action_space`` (:class:`Space`, per env). ``step`` takes actions of shape
  ``[B]`` (discrete) or ``[B, *action_space.shape]`` (box).
  """

  env_id: str
  num_envs: int
  observation_space: Space
  action_space: Space

  @abc.abstractmethod
  def reset(self) -> TimeStep:
    """Start every episode; returns a TimeStep with ``first`` all True."""

  @abc.abstractmethod
  def step(self, actions) -> TimeStep:
    """Advance all envs by one agent step (next-step autoreset)."""

  def close(self) -> None:
    """Release native resources. Idempotent."""

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}({self.env_id!r}, num_envs={self.num_envs}, "
      f"obs={self.observation_space}, act={self.action_space})"
    )


def empty_timestep(obs: np.ndarray, info: Mapping[str, Any] | None = None) -> TimeStep:
  """The TimeStep returned by ``reset()``: first=True, reward 0, no ends."""
  b = obs.shape[0]
  return TimeStep(
    obs, np.zeros(b, np.float32), np.zeros(b, bool), np.zeros(b, bool), np.ones(b, bool), dict(info or {})
  )
