"""The papers' environment suites behind one factory.

    env = rtrl_rl.envs.make("atari/Pong", num_envs=8, seed=0)
    ts = env.reset()                 # TimeStep, first all True
    ts = env.step(actions)           # actions [8]
    env.close()

Every family returns :class:`TimeStep` (obs [B, ...], reward [B] float32,
terminated/truncated/first [B] bool, info) under one contract: next-step
autoreset, ``first`` = the cells' ``resets``, truncation bootstraps and
termination does not (details in :mod:`rtrl_rl.envs.core`). The id scheme
and families are documented in :mod:`rtrl_rl.envs.registry`; envpool families
also expose ``async_reset()/send()/recv()`` (pass ``batch_size < num_envs``);
the JAX families (``jax``, ``gymnax``, ``popgym``, ``brax``) also have a pure
functional form, :func:`make_functional`.
"""

from __future__ import annotations

from typing import Any

from rtrl_rl.envs.core import (
  BadOptionError,
  Env,
  EnvError,
  MissingDependencyError,
  Space,
  TimeStep,
  UnknownEnvError,
)
from rtrl_rl.envs.registry import FAMILIES, EnvSpec, Option, get_spec, list_ids

__all__ = [
  "make",
  "make_functional",
  "describe",
  "list_ids",
  "get_spec",
  "FAMILIES",
  "EnvSpec",
  "Option",
  "Env",
  "Space",
  "TimeStep",
  "EnvError",
  "UnknownEnvError",
  "BadOptionError",
  "MissingDependencyError",
]


def _check_common(env_id: str, num_envs: Any, seed: Any) -> None:
  if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
    raise BadOptionError(f"{env_id}: num_envs must be an int >= 1, got {num_envs!r}")
  if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
    raise BadOptionError(f"{env_id}: seed must be an int in [0, 2**31), got {seed!r}")


def make(env_id: str, num_envs: int = 1, seed: int = 0, **options: Any) -> Env:
  """A batched env of ``num_envs`` copies of ``env_id``, seeded by ``seed``.

  ``options`` are the id's family options (see ``--list`` / ``describe``);
  unknown ids, unknown or invalid options raise :class:`EnvError` subclasses
  naming the valid choices; a missing optional backend raises
  :class:`MissingDependencyError` with install instructions.
  """
  spec = get_spec(env_id)
  _check_common(env_id, num_envs, seed)
  opts = spec.resolve(options)
  if opts.get("batch_size") is not None and opts["batch_size"] > num_envs:
    raise BadOptionError(f"{env_id}: option batch_size={opts['batch_size']} must be <= num_envs={num_envs}")
  return spec.load_builder()(env_id, num_envs, seed, **spec.args, **opts)


def make_functional(env_id: str, **options: Any):
  """The pure JAX form (:class:`rtrl_rl.envs._jax.FunctionalEnv`) of a ``jax/``,
  ``gymnax/``, ``popgym/`` or ``brax/`` id: ``reset(key) -> (state, obs)``,
  ``step(key, state, action) -> (state, TimeStep)``, single env, vmappable."""
  spec = get_spec(env_id)
  if not spec.functional:
    raise BadOptionError(
      f"{env_id}: no functional JAX form; only 'jax/...', "
      f"'gymnax/...', 'popgym/...' and 'brax/...' ids have one"
    )
  opts = spec.resolve(options)
  return spec.load_builder()(env_id, 1, 0, functional=True, **spec.args, **opts)


def describe(env_id: str, **options: Any) -> tuple[Space, Space]:
  """(observation_space, action_space) of ``env_id`` without stepping an env."""
  spec = get_spec(env_id)
  opts = spec.resolve(options)
  return spec.load_builder()(env_id, 1, 0, describe=True, **spec.args, **opts)
