"""Every envpool-backed family. The ONLY module of rtrl_rl that imports envpool.

The wrapper is numpy-only and vectorised (no per-env Python loops). It keeps
envpool's own "next step" autoreset (a step after ``terminated | truncated``
returns the new episode's first observation with reward 0, and envpool's
``elapsed_step`` restarts at 0), so ``first = elapsed_step == 0``. Atari's
episodic-life "soft resets" are the exception (a new life does not restart the
game, so ``elapsed_step`` keeps counting): there ``first`` also ORs in whether
the env's previous step ended, tracked per env id.

Per step the wrapper makes few numpy calls: right after a pool step each costs
2-4x its hot-loop time (the step evicts the caches), and every returned array
is new (callers keep earlier TimeSteps).

Sync use: ``env.reset()`` / ``env.step(actions)`` with actions ``[num_envs]``.
Async use (``batch_size < num_envs``, for actor processes):
``env.async_reset()``, then repeatedly ``ts, ids = env.recv()`` (``batch_size``
envs, whichever finished first) and ``env.send(actions, ids)``.
"""

from __future__ import annotations

import functools
import re
import warnings
from typing import Any, Callable

import numpy as np

with warnings.catch_warnings():  # gymnasium warns about float64 Box bounds
  warnings.simplefilter("ignore")
  import envpool
  from envpool.registration import registry as _registry

from rtrl_rl.envs import pomdp
from rtrl_rl.envs.core import Env, Space, TimeStep

ObsFn = Callable[[Any, np.ndarray], np.ndarray]  # (raw obs, first [B]) -> obs
_F32 = np.dtype(np.float32)


# ----------------------------------------------------------------------------- catalogue


@functools.cache
def atari_games() -> tuple[str, ...]:
  """Atari game names envpool provides (``Pong``, ``MsPacman``, ...)."""
  return tuple(k[:-3] for k, v in _registry.specs.items() if v[0] == "envpool.atari" and k.endswith("-v5"))


@functools.cache
def procgen_tasks() -> tuple[tuple[str, str, str], ...]:
  """(game, mode, envpool task) for every ProcGen game/mode envpool provides."""
  out = []
  for k, v in _registry.specs.items():
    m = re.fullmatch(r"([A-Z][a-z]+)(Easy|Hard|Memory|Extreme|Exploration)-v0", k)
    if v[0] == "envpool.procgen" and m:
      out.append((m.group(1).lower(), m.group(2).lower(), k))
  return tuple(out)


def _space(gspace: Any, float_dtype=np.float32) -> Space:
  """Convert a gymnasium space of envpool to our :class:`Space`."""
  if hasattr(gspace, "n"):
    return Space.discrete(int(gspace.n), np.int32)
  dtype = gspace.dtype
  if np.issubdtype(dtype, np.floating):
    dtype = float_dtype
  return Space.box(gspace.shape, dtype, np.asarray(gspace.low), np.asarray(gspace.high))


def _suppress_warnings(fn):
  @functools.wraps(fn)
  def inner(*a, **k):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return fn(*a, **k)

  return inner


@_suppress_warnings
def make_raw(task: str, num_envs: int, seed: int, **kwargs) -> Any:
  """A raw envpool gymnasium pool (for benchmarks / debugging)."""
  return envpool.make(task, env_type="gymnasium", num_envs=num_envs, seed=seed, **kwargs)


@_suppress_warnings
def raw_spaces(task: str, **kwargs) -> tuple[Any, Any]:
  """(observation_space, action_space) of envpool's own gymnasium spec."""
  spec = envpool.make_spec(task, **kwargs)
  return spec.observation_space, spec.action_space


# ----------------------------------------------------------------------------- env


class EnvpoolEnv(Env):
  """An envpool pool behind the :class:`TimeStep` contract.

  obs_fn maps envpool's raw observation batch (and the ``first`` flags of the
  same rows) to ours; info_fn picks extra [B] arrays from envpool's info;
  soft_resets: an episode can end without envpool resetting ``elapsed_step``
  (Atari episodic life).
  """

  def __init__(
    self,
    env_id: str,
    task: str,
    num_envs: int,
    seed: int,
    *,
    pool_kwargs: dict,
    obs_fn: ObsFn | None,
    obs_space: Space,
    info_fn: Callable[[dict], dict] | None = None,
    soft_resets: bool = False,
  ):
    batch_size = pool_kwargs.pop("batch_size", None) or num_envs
    if batch_size > num_envs:
      raise ValueError(f"{env_id}: batch_size={batch_size} > num_envs={num_envs}")
    self.env_id = env_id
    self.num_envs = int(num_envs)
    self.batch_size = int(batch_size)
    self._pool = make_raw(task, num_envs, seed, batch_size=batch_size, **pool_kwargs)
    self._obs_fn = obs_fn
    self._info_fn = info_fn
    self.observation_space = obs_space
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      self.action_space = _space(self._pool.action_space)
      _ = self._pool.observation_space  # built lazily by gymnasium (warns once)
    self._soft_resets = soft_resets
    self._done = np.zeros(num_envs, bool)  # did env i's previous step end (soft_resets)?
    self._batch_shape = (self.num_envs,)
    self._sync = batch_size == num_envs
    self._in_flight = 0  # envs sent (or async-reset) and not yet received
    self._closed = False

  @property
  def raw(self) -> Any:
    """The underlying envpool pool (benchmarks, debugging); bypasses the contract."""
    return self._pool

  # -- contract
  def _timestep(self, obs, rew, term, trunc, info) -> TimeStep:
    first = np.logical_not(info["elapsed_step"])  # elapsed_step == 0
    if self._soft_resets:
      if self._sync:  # envpool returns env ids in order 0..B-1 in sync mode
        first |= self._done
        self._done = term | trunc
      else:
        ids = info["env_id"]
        first |= self._done.take(ids)
        self._done[ids] = term | trunc
    if self._obs_fn is not None:
      obs = self._obs_fn(obs, first)
    extra = self._info_fn(info) if self._info_fn is not None else {}
    if rew.dtype != _F32:
      rew = rew.astype(_F32)
    return TimeStep(obs, rew, term, trunc, first, extra)

  def reset(self) -> TimeStep:
    with warnings.catch_warnings():  # gymnasium's float64-bounds warning on first use
      warnings.simplefilter("ignore")
      obs, info = self._pool.reset()
    self._done[:] = False
    b = len(info["env_id"])
    z = np.zeros(b, bool)
    return self._timestep(obs, np.zeros(b, np.float32), z, z.copy(), info)

  def step(self, actions) -> TimeStep:
    if not self._sync:
      raise RuntimeError(f"{self.env_id}: batch_size < num_envs; use send()/recv()")
    actions = np.asarray(actions)
    if actions.shape[:1] != self._batch_shape:
      raise ValueError(
        f"{self.env_id}: actions must have leading dim {self.num_envs}, got shape {actions.shape}"
      )
    return self._timestep(*self._pool.step(actions))

  # -- async (envpool send/recv)
  def async_reset(self) -> None:
    """Reset all envs; their first TimeSteps arrive through recv(). Only valid
    when no env is in flight (envpool corrupts memory otherwise)."""
    if self._in_flight:
      raise RuntimeError(
        f"{self.env_id}: async_reset() with {self._in_flight} envs in flight; recv() them first"
      )
    self._in_flight = self.num_envs
    self._done[:] = False
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      self._pool.async_reset()

  def send(self, actions, env_ids) -> None:
    """Step the envs ``env_ids`` [k] with ``actions`` [k, ...]."""
    env_ids = np.asarray(env_ids, dtype=np.int32)
    self._pool.send(np.asarray(actions), env_ids)
    self._in_flight += len(env_ids)

  def recv(self) -> tuple[TimeStep, np.ndarray]:
    """The next ``batch_size`` finished envs: (TimeStep [batch_size], env_ids [batch_size])."""
    if self._in_flight < self.batch_size:
      raise RuntimeError(
        f"{self.env_id}: recv() with {self._in_flight} envs in flight "
        f"< batch_size={self.batch_size} would block forever"
      )
    out = self._pool.recv()
    self._in_flight -= self.batch_size
    return self._timestep(*out), out[4]["env_id"]

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      close = getattr(self._pool, "close", None)
      if close is not None:
        close()


def _pool_kwargs(opts: dict) -> dict:
  return {"num_threads": opts["num_threads"], "batch_size": opts["batch_size"]}


def _build_or_describe(
  env_id, num_envs, seed, describe, task, kw, obs_fn, obs_space, info_fn=None, soft_resets=False
):
  if describe:
    _, act = raw_spaces(task, **{k: v for k, v in kw.items() if k not in ("batch_size",)})
    return obs_space, _space(act)
  return EnvpoolEnv(
    env_id,
    task,
    num_envs,
    seed,
    pool_kwargs=kw,
    obs_fn=obs_fn,
    obs_space=obs_space,
    info_fn=info_fn,
    soft_resets=soft_resets,
  )


# ----------------------------------------------------------------------------- families


def _atari_info(info: dict) -> dict:
  # game_over: the real end of a game (with episodic_life, `terminated` also fires on life loss)
  return {"lives": info["lives"], "game_over": info["terminated"].astype(bool)}


def make_atari(env_id: str, num_envs: int, seed: int, *, task: str, describe: bool = False, **o) -> Any:
  """Atari, IMPALA preprocessing: obs [B, stack_num, 84, 84] uint8 (gray, resized
  with INTER_AREA, max-pool of the last 2 of ``frame_skip`` frames), up to
  ``noop_max`` no-ops at reset, optional FIRE reset / episodic life / sticky
  actions. ``info``: ``lives`` [B] int32, ``game_over`` [B] bool."""
  kw = dict(
    _pool_kwargs(o),
    episodic_life=o["episodic_life"],
    use_fire_reset=o["fire_reset"],
    # envpool 1.2.5 crashes with noop_max=0; 1 gives the same deterministic start
    noop_max=max(1, o["noop_max"]),
    repeat_action_probability=float(o["sticky_actions"]),
    frame_skip=o["frame_skip"],
    stack_num=o["stack_num"],
    reward_clip=o["reward_clip"],
    full_action_space=o["full_action_space"],
    max_episode_steps=o["max_episode_steps"],
    img_height=84,
    img_width=84,
    gray_scale=True,
  )
  obs_space = Space.box((o["stack_num"], 84, 84), np.uint8, 0, 255)
  return _build_or_describe(
    env_id, num_envs, seed, describe, task, kw, None, obs_space, _atari_info, soft_resets=o["episodic_life"]
  )


def make_procgen(env_id: str, num_envs: int, seed: int, *, task: str, describe: bool = False, **o) -> Any:
  """ProcGen, obs [B, 64, 64, 3] uint8 (or [B, 3, 64, 64] with channel_first),
  15 actions, no action repeat. split="train" plays levels
  [start_level, start_level + num_levels); split="test" plays the unbounded
  level distribution (num_levels=0; overlap with training levels has
  probability ~num_levels / 2**31)."""
  if o["split"] == "test":
    levels, start = 0, 0
  else:
    levels, start = o["num_levels"], o["start_level"]
  kw = dict(_pool_kwargs(o), num_levels=levels, start_level=start, channel_first=o["channel_first"])
  shape = (3, 64, 64) if o["channel_first"] else (64, 64, 3)
  info_fn = lambda info: {"level_seed": info["level_seed"]}  # noqa: E731
  return _build_or_describe(
    env_id, num_envs, seed, describe, task, kw, None, Space.box(shape, np.uint8, 0, 255), info_fn
  )


def _to_f32(obs, first):
  return obs.astype(np.float32)


def make_mujoco(
  env_id: str, num_envs: int, seed: int, *, robot: str, view: str, describe: bool = False, **o
) -> Any:
  """MuJoCo (envpool ``<robot>-v5``), obs float32 [B, d]; see
  :mod:`rtrl_rl.envs.pomdp` for the kept indices of -P / -V / Reacher-POMDP."""
  kw = dict(_pool_kwargs(o), max_episode_steps=o["max_episode_steps"])
  task = f"{robot}-v5"
  if robot == "Reacher":
    dim = pomdp.REACHER_DIM
    if view == "POMDP":
      # scale[first[b]]: all ones on first steps, else zero at the hidden dims (3 numpy calls;
      # a casting np.multiply(obs, ..., dtype=f32) is slower right after a pool step)
      scale = np.ones((2, dim), np.float32)
      scale[0, list(pomdp.REACHER_HIDDEN_AFTER_FIRST)] = 0

      def obs_fn(obs, first):
        out = obs.astype(np.float32)
        out *= scale.take(first, 0)  # bool first indexes rows 0/1
        return out
    else:
      obs_fn = _to_f32
  else:
    if robot == "Ant":
      kw["use_contact_force"] = False
    dim, p, v = pomdp.MUJOCO_POMDP[robot]
    if view == "F":
      obs_fn = _to_f32
    else:
      sl = p if view == "P" else v
      dim = sl.stop - sl.start

      def obs_fn(obs, first, sl=sl):
        return obs[:, sl].astype(np.float32)

  return _build_or_describe(env_id, num_envs, seed, describe, task, kw, obs_fn, Space.box((dim,), np.float32))


def _minigrid_image(obs, first):
  return obs["image"]


def make_minigrid(env_id: str, num_envs: int, seed: int, *, task: str, describe: bool = False, **o) -> Any:
  """MiniGrid Memory, obs [B, 7, 7, 3] uint8 (egocentric partial view:
  object, colour, state ids), 7 actions; reward ``1 - 0.9 t / T`` on success."""
  kw = _pool_kwargs(o)
  if o["max_episode_steps"] is not None:
    kw["max_episode_steps"] = o["max_episode_steps"]
  return _build_or_describe(
    env_id, num_envs, seed, describe, task, kw, _minigrid_image, Space.box((7, 7, 3), np.uint8, 0, 255)
  )


def make_cartpole(env_id: str, num_envs: int, seed: int, *, masked: bool, describe: bool = False, **o) -> Any:
  """CartPole-v1, obs float32 [B, 2] (x, theta) if masked else [B, 4]."""
  kw = dict(_pool_kwargs(o), max_episode_steps=o["max_episode_steps"])
  if masked:
    kept = pomdp.CARTPOLE_KEPT  # (0, 2) as a slice: copying it is 3x cheaper than obs[:, kept]
    cols = slice(kept[0], kept[-1] + 1, kept[1] - kept[0])
    obs_fn = lambda obs, first: obs[:, cols].copy()  # noqa: E731
    dim = len(kept)
  else:
    obs_fn, dim = None, 4
  return _build_or_describe(
    env_id, num_envs, seed, describe, "CartPole-v1", kw, obs_fn, Space.box((dim,), np.float32)
  )
