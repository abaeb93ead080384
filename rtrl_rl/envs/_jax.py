"""The fully-jitted path: pure functional JAX environments (gymnax, trace conditioning).

:class:`FunctionalEnv` is ONE environment with pure functions

* ``reset(key) -> (state, obs)``
* ``step(key, state, action) -> (state, TimeStep)`` (scalar reward / flags)

that jit, vmap (batch with ``jax.vmap(env.step)``, or :func:`batched` which skips the vmap for
one env) and scan. It follows the
package contract (:mod:`rtrl_rl.envs.core`), including the next-step
autoreset: the step after ``terminated | truncated`` ignores its action and
returns the first observation of a new episode with ``first = True``. (gymnax
itself resets inside the ending step and drops the terminal observation; the
adapter keeps it and resets one step later.) :class:`JaxVecEnv` runs one
jitted, vmapped step per call and returns numpy, for code written against the
numpy :class:`~rtrl_rl.envs.core.Env` interface.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs import trace_conditioning as tc
from rtrl_rl.envs.core import Env, MissingDependencyError, Space, TimeStep, empty_timestep

# core_reset(key) -> (obs, core_state); core_step(key, core_state, action) ->
# (obs, core_state, reward, terminated, truncated)
CoreReset = Callable[[jax.Array], tuple[Any, Any]]
CoreStep = Callable[[jax.Array, Any, Any], tuple[Any, Any, Any, Any, Any]]


class FunctionalState(NamedTuple):
  """core: the wrapped env's state; done: bool[] the previous step ended an episode."""

  core: Any
  done: jax.Array


class FunctionalEnv:
  """One pure JAX env (see module docstring); attributes env_id, observation_space,
  action_space, and ``params`` (task constants, e.g. ``gamma`` for trace conditioning)."""

  def __init__(
    self,
    env_id: str,
    core_reset: CoreReset,
    core_step: CoreStep,
    observation_space: Space,
    action_space: Space,
    params: Any = None,
  ):
    self.env_id = env_id
    self._core_reset = core_reset
    self._core_step = core_step
    self.observation_space = observation_space
    self.action_space = action_space
    self.params = params

  def reset(self, key: jax.Array) -> tuple[FunctionalState, Any]:
    obs, core = self._core_reset(key)
    return FunctionalState(core, jnp.zeros((), bool)), obs

  def step(self, key: jax.Array, state: FunctionalState, action) -> tuple[FunctionalState, TimeStep]:
    """One step, or the autoreset after an ended episode: a ``lax.cond``, so a lone env
    computes only the branch it takes (under ``vmap`` both run and one is selected)."""
    k_step, k_reset = jax.random.split(key)
    # Both branches return the incoming state's dtypes (lax.cond needs equal types).
    typed = functools.partial(jax.tree.map, lambda x, like: jnp.asarray(x, like.dtype))
    obs_dtype = np.dtype(self.observation_space.dtype)

    def advance(_):
      obs, core, rew, term, trunc = self._core_step(k_step, state.core, action)
      return (
        typed(core, state.core),
        jnp.asarray(obs, obs_dtype),
        jnp.asarray(rew, jnp.float32),
        jnp.asarray(term, bool),
        jnp.asarray(trunc, bool),
      )

    def restart(_):
      obs, core = self._core_reset(k_reset)
      return (
        typed(core, state.core),
        jnp.asarray(obs, obs_dtype),
        jnp.zeros((), jnp.float32),
        jnp.zeros((), bool),
        jnp.zeros((), bool),
      )

    d = state.done
    core, obs, rew, term, trunc = jax.lax.cond(d, restart, advance, None)
    trunc = trunc & ~term
    return FunctionalState(core, term | trunc), TimeStep(obs, rew, term, trunc, d, {})

  def __repr__(self) -> str:
    return f"FunctionalEnv({self.env_id!r}, obs={self.observation_space}, act={self.action_space})"


def batched(fn, num_envs: int):
  """``jax.vmap(fn)`` over a leading env axis; for one env, ``fn`` on the env itself (so its
  ``lax.cond``s, e.g. the autoreset, compute only the branch taken)."""
  if num_envs != 1:
    return jax.vmap(fn)

  def single(*args):
    out = fn(*jax.tree.map(lambda x: x[0], args))
    return jax.tree.map(lambda x: jnp.asarray(x)[None], out)

  return single


class JaxVecEnv(Env):
  """``num_envs`` copies of a FunctionalEnv, one jitted vmapped call per step; numpy out.

  Env ``i`` uses key ``split(PRNGKey(seed), num_envs)[i]`` at reset."""

  def __init__(self, fenv: FunctionalEnv, num_envs: int, seed: int):
    self.env_id = fenv.env_id
    self.functional = fenv
    self.num_envs = int(num_envs)
    self.observation_space = fenv.observation_space
    self.action_space = fenv.action_space
    self._seed = int(seed)
    n = self.num_envs

    def _reset(key):
      return jax.vmap(fenv.reset)(jax.random.split(key, n))

    def _step(key, state, actions):
      key, sub = jax.random.split(key)
      state, ts = jax.vmap(fenv.step)(jax.random.split(sub, n), state, actions)
      return key, state, ts

    self._reset_fn = jax.jit(_reset)
    self._step_fn = jax.jit(_step)
    self._key = None
    self._state = None
    self._adtype = np.dtype(self.action_space.dtype)

  def reset(self) -> TimeStep:
    self._key, sub = jax.random.split(jax.random.PRNGKey(self._seed))
    self._state, obs = self._reset_fn(sub)
    return empty_timestep(np.asarray(obs))

  def step(self, actions) -> TimeStep:
    if self._state is None:
      raise RuntimeError(f"{self.env_id}: call reset() before step()")
    actions = np.asarray(actions, dtype=self._adtype)
    if actions.shape[:1] != (self.num_envs,):
      raise ValueError(
        f"{self.env_id}: actions must have leading dim {self.num_envs}, got shape {actions.shape}"
      )
    self._key, self._state, ts = self._step_fn(self._key, self._state, actions)
    return TimeStep(*jax.device_get(tuple(ts)))


# ----------------------------------------------------------------------------- trace conditioning


def trace_conditioning_functional(
  env_id: str = "jax/trace-conditioning",
  *,
  isi=(7, 13),
  iti=(80, 120),
  num_distractors=10,
  cs_length=4,
  us_length=2,
  distractor_length=4,
  gamma=0.9,
) -> FunctionalEnv:
  """Trace conditioning as a FunctionalEnv; ``params.gamma`` is the target discount."""
  p = tc.TraceParams(tuple(isi), tuple(iti), num_distractors, cs_length, us_length, distractor_length)
  obs_space = Space.box((tc.obs_dim(p),), np.float32, 0.0, 1.0)
  params = types.SimpleNamespace(task=p, gamma=float(gamma))
  return FunctionalEnv(
    env_id,
    functools.partial(tc.reset, p=p),
    lambda k, s, a: tc.step(k, s, a, p),
    obs_space,
    Space.discrete(1),
    params,
  )


def make_trace_conditioning(
  env_id: str, num_envs: int, seed: int, *, describe: bool = False, functional: bool = False, **o
):
  """Trace conditioning, obs float32 [B, 2 + num_distractors], a single dummy action."""
  f = trace_conditioning_functional(env_id, **o)
  if describe:
    return f.observation_space, f.action_space
  return f if functional else JaxVecEnv(f, num_envs, seed)


# ----------------------------------------------------------------------------- gymnax


def _import_gymnax():
  """Import gymnax (an install dependency), with a clear error where it is missing."""
  try:
    import gymnax  # noqa: PLC0415 - optional dependency
  except ModuleNotFoundError as e:
    raise MissingDependencyError(
      f"gymnax ids need the `gymnax` package ({e}); pip install 'gymnax>=0.0.8' six"
    ) from e
  return gymnax


# Left out: MNISTBandit downloads MNIST when constructed (no network on the actors).
GYMNAX_EXCLUDED = ("MNISTBandit-bsuite",)


@functools.cache
def gymnax_names() -> tuple[str, ...]:
  return tuple(n for n in _import_gymnax().registered_envs if n not in GYMNAX_EXCLUDED)


def _gymnax_space(space: Any) -> Space:
  if hasattr(space, "n"):
    return Space.discrete(int(space.n), np.int32)
  return Space.box(tuple(space.shape), np.dtype(space.dtype), np.asarray(space.low), np.asarray(space.high))


def gymnax_functional(env_id: str, name: str, max_episode_steps: int | None = None) -> FunctionalEnv:
  """gymnax env ``name`` as a FunctionalEnv; terminated = the env's natural end,
  truncated = ``params.max_steps_in_episode`` reached without terminating."""
  gymnax = _import_gymnax()
  env, params = gymnax.make(name)
  if max_episode_steps is not None:
    params = params.replace(max_steps_in_episode=int(max_episode_steps))

  def core_reset(key):
    return env.reset_env(key, params)

  def core_step(key, s, a):
    obs, s2, rew, term, _ = env.step_env(key, s, a, params)
    trunc = env.is_truncated(s2, params)
    return obs, s2, rew, term, trunc

  return FunctionalEnv(
    env_id,
    core_reset,
    core_step,
    _gymnax_space(env.observation_space(params)),
    _gymnax_space(env.action_space(params)),
    params,
  )


def make_gymnax(
  env_id: str, num_envs: int, seed: int, *, name: str, describe: bool = False, functional: bool = False, **o
):
  """A gymnax env; numpy batched (default) or functional (``functional=True``)."""
  f = gymnax_functional(env_id, name, **o)
  if describe:
    return f.observation_space, f.action_space
  return f if functional else JaxVecEnv(f, num_envs, seed)
