"""Brax robots as pure JAX envs (``brax/`` ids). The ONLY module of rtrl_rl that imports brax.

The RTU paper's MuJoCo POMDP setup (Elelimy et al. 2024): Brax's Ant,
HalfCheetah, Hopper, Walker2d (``-F`` full, ``-P`` positions/angles, ``-V``
velocities; index sets in :mod:`rtrl_rl.envs.pomdp`) and Reacher (``-F``,
``-POMDP``: target and fingertip-to-target shown on first steps only), on the
``positional`` pipeline by default, 1000-step episodes.

The raw brax env is wrapped without brax's training wrappers: the core state is
``(brax State, t)``, ``t`` the steps taken in the episode;
``terminated = brax done`` (unhealthy Ant/Hopper/Walker2d; never for
HalfCheetah/Reacher) and ``truncated = t == max_episode_steps`` without
termination. :class:`~rtrl_rl.envs._jax.FunctionalEnv` adds the next-step
autoreset. Brax clips actions to the actuators' ctrl range [-1, 1] (its control
cost uses the unclipped action).
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs import pomdp
from rtrl_rl.envs._jax import FunctionalEnv, JaxVecEnv
from rtrl_rl.envs.core import MissingDependencyError, Space

# robot -> (brax env name, action size for describe(); the built env reads brax's)
ROBOTS = {
  "Ant": ("ant", 8),
  "HalfCheetah": ("halfcheetah", 6),
  "Hopper": ("hopper", 3),
  "Walker2d": ("walker2d", 6),
  "Reacher": ("reacher", 2),
}


class BraxCore(NamedTuple):
  """state: brax.envs.State; t: int32[] steps taken in this episode."""

  state: Any
  t: jax.Array


@contextlib.contextmanager
def _quiet():
  """Silence brax's notices that are no one's to act on: "unmaintained" (each construction),
  JAXopt's (import) and brax's use of mujoco 4's deprecated ``Data`` fields (each trace)."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Brax System, piplines", UserWarning)
    warnings.filterwarnings("ignore", "JAXopt is no longer maintained", DeprecationWarning)
    warnings.filterwarnings("ignore", "Accessing `.*` directly from `Data`", DeprecationWarning)
    yield


@functools.cache
def _raw_env(robot: str, backend: str):
  """brax.envs.get_environment, silencing import and construction noise (cached: stateless)."""
  try:
    # mujoco.mjx prints "Failed to import warp" (and mujoco_warp) where warp is not installed
    with _quiet(), contextlib.redirect_stdout(io.StringIO()):
      import mujoco  # noqa: PLC0415 - optional dependency (with brax)
      from brax import envs  # noqa: PLC0415 - optional dependency
  except ModuleNotFoundError as e:
    raise MissingDependencyError(f"brax ids need the `brax` package ({e}); pip install brax==0.14.2") from e
  old = mujoco.get_mju_user_warning()
  mujoco.set_mju_user_warning(lambda msg: None)  # deprecated attributes in brax's bundled XML
  try:
    with _quiet():
      return envs.get_environment(ROBOTS[robot][0], backend=backend)
  finally:
    mujoco.set_mju_user_warning(old)


def _spaces(robot: str, view: str, n: int) -> tuple[Space, Space]:
  """Observation Box float32 [d], action Box float32 [n] in [-1, 1]."""
  if robot == "Reacher":
    dim = pomdp.BRAX_REACHER_DIM
  else:
    dim = len(pomdp.kept_indices(robot, view))
  return (
    Space.box((dim,), np.float32),
    Space.box((n,), np.float32, np.full(n, -1.0, np.float32), np.full(n, 1.0, np.float32)),
  )


def brax_functional(
  env_id: str, robot: str, view: str, backend: str, max_episode_steps: int
) -> FunctionalEnv:
  """Brax ``robot`` as a FunctionalEnv: obs float32 [d], action float32 [action_size]."""
  env = _raw_env(robot, backend)
  if robot == "Reacher":
    first_obs = lambda obs: obs  # noqa: E731
    if view == "POMDP":
      shown = np.ones(pomdp.BRAX_REACHER_DIM, bool)
      shown[list(pomdp.BRAX_REACHER_HIDDEN_AFTER_FIRST)] = False
      later_obs = lambda obs: jnp.where(shown, obs, 0.0)  # noqa: E731
    else:
      later_obs = first_obs
  else:
    kept = np.asarray(pomdp.kept_indices(robot, view))
    first_obs = later_obs = lambda obs: obs[kept]  # noqa: E731

  def core_reset(key):
    with _quiet():
      s = env.reset(key)
    return first_obs(s.obs).astype(jnp.float32), BraxCore(s, jnp.zeros((), jnp.int32))

  def core_step(key, c, action):
    # brax's step updates state.metrics in place: give it a copy, keep `c` unchanged
    with _quiet():
      s = env.step(c.state.replace(metrics=dict(c.state.metrics)), action)
    t = c.t + 1
    return (
      later_obs(s.obs).astype(jnp.float32),
      BraxCore(s, t),
      s.reward.astype(jnp.float32),
      s.done > 0.5,
      t >= max_episode_steps,
    )

  return FunctionalEnv(env_id, core_reset, core_step, *_spaces(robot, view, env.action_size))


def make_brax(
  env_id: str,
  num_envs: int,
  seed: int,
  *,
  robot: str,
  view: str,
  describe: bool = False,
  functional: bool = False,
  **o,
):
  """A Brax robot; numpy batched (default) or functional (``functional=True``).
  ``describe=True`` returns (observation_space, action_space) without importing brax."""
  if describe:
    return _spaces(robot, view, ROBOTS[robot][1])
  f = brax_functional(env_id, robot, view, o["backend"], o["max_episode_steps"])
  return f if functional else JaxVecEnv(f, num_envs, seed)
