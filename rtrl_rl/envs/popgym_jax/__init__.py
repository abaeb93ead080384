"""POPGym in JAX: every task of the ``popgym`` package as a pure functional env.

Written for this project from the package's rules (``popgym`` 1.0.x, the
reference the RTU paper's numbers were made with); each module is tested
against the package (``tests/test_popgym_jax_*.py``). Spaces and encodings are
the package's as :class:`rtrl_rl.envs._popgym.Encoding` states them: one-hot
float32 observations for discrete ones, float32 Box where the package has Box;
MultiDiscrete actions flattened row-major into one Discrete.

A task module ``<task>.py`` exposes

* ``Params``: a NamedTuple of a level's constants (Python scalars, static
  under jit), and ``LEVELS = {"easy": Params, "medium": ..., "hard": ...}``
  with the package's values;
* ``spaces(p) -> (observation_space, action_space)`` (:class:`Space`);
* ``reset(key, p) -> (obs, state)``;
* ``step(key, state, action, p) -> (obs, state, reward, terminated, truncated)``
  (scalars: float32 reward, bool flags; ``terminated`` and ``truncated`` as the
  package's ``step`` returns them).

:func:`functional_env` wraps a module into a
:class:`~rtrl_rl.envs._jax.FunctionalEnv` (next-step autoreset, ``first``);
:func:`make_popgym_jax` is the factory's builder for ``popgym/<Task>-<level>``.
"""

from __future__ import annotations

import functools
import importlib

from rtrl_rl.envs._jax import FunctionalEnv, JaxVecEnv

# Task family -> module of this package.
MODULES = {
  "Autoencode": "autoencode",
  "Battleship": "battleship",
  "Concentration": "concentration",
  "CountRecall": "count_recall",
  "HigherLower": "higher_lower",
  "LabyrinthEscape": "labyrinth_escape",
  "LabyrinthExplore": "labyrinth_explore",
  "MineSweeper": "minesweeper",
  "MultiarmedBandit": "multiarmed_bandit",
  "NoisyPositionOnlyCartPole": "cartpole",
  "PositionOnlyCartPole": "cartpole",
  "VelocityOnlyCartPole": "cartpole",
  "NoisyPositionOnlyPendulum": "pendulum",
  "PositionOnlyPendulum": "pendulum",
  "RepeatFirst": "repeat_first",
  "RepeatPrevious": "repeat_previous",
}


def task_module(task: str):
  """The module implementing ``task`` (a key of :data:`MODULES`)."""
  return importlib.import_module(f"{__name__}.{MODULES[task]}")


def params(task: str, level: str):
  """The ``Params`` of ``task`` at ``level``; modules shared by several tasks
  (cartpole, pendulum) key their ``LEVELS`` by ``(task, level)``."""
  levels = task_module(task).LEVELS
  return levels[(task, level)] if (task, level) in levels else levels[level]


def functional_env(env_id: str, task: str, level: str) -> FunctionalEnv:
  """``task`` at ``level`` as a FunctionalEnv (single env, vmappable)."""
  mod, p = task_module(task), params(task, level)
  obs_space, act_space = mod.spaces(p)
  return FunctionalEnv(
    env_id, functools.partial(mod.reset, p=p), functools.partial(mod.step, p=p), obs_space, act_space, p
  )


def make_popgym_jax(
  env_id: str,
  num_envs: int,
  seed: int,
  *,
  task: str,
  level: str,
  describe: bool = False,
  functional: bool = False,
):
  """POPGym ``task`` at ``level`` in JAX: batched numpy (default) or functional."""
  f = functional_env(env_id, task, level)
  if describe:
    return f.observation_space, f.action_space
  return f if functional else JaxVecEnv(f, num_envs, seed)
