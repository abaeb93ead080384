"""POPGym memory tasks, vectorised over ``num_envs`` single popgym envs.

Env ``i`` is seeded with ``seed + i`` at the first reset (later resets keep
drawing from its own generator), so env ``i`` of a batch produces exactly the
transitions of a lone ``popgym`` env reset with ``seed + i`` and fed the same
actions. Observations (Discrete / MultiDiscrete / Tuple of them) are encoded
as concatenated one-hot vectors, float32 [B, sum of sizes]. Autoreset follows
the package's next-step contract (see :mod:`rtrl_rl.envs.core`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from rtrl_rl.envs.core import Env, MissingDependencyError, Space, TimeStep, empty_timestep


def _import_popgym_envs():
    try:
        import popgym.envs as pe
    except ImportError as e:  # pragma: no cover - popgym is a project dependency
        raise MissingDependencyError(
            "POPGym ids need the `popgym` package: pip install 'popgym>=1.0.7'") from e
    return pe


def _sizes(space: Any) -> list[int]:
    """Category counts of a Discrete / MultiDiscrete / Tuple observation space."""
    if hasattr(space, "spaces"):  # Tuple
        return [n for s in space.spaces for n in _sizes(s)]
    if hasattr(space, "nvec"):
        return [int(n) for n in np.asarray(space.nvec).ravel()]
    if hasattr(space, "n"):
        return [int(space.n)]
    raise TypeError(f"unsupported POPGym observation space {space}")


class OneHot:
    """Encodes a POPGym observation into a float32 one-hot vector [sum(sizes)]."""

    def __init__(self, space: Any):
        self.sizes = _sizes(space)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.dim = int(sum(self.sizes))

    def __call__(self, obs: Any, out: np.ndarray) -> None:
        idx = np.asarray(obs, dtype=np.int64).ravel()
        out[:] = 0.0
        out[self.offsets + idx] = 1.0


class PopgymVecEnv(Env):
    """``num_envs`` popgym envs of class ``cls`` behind the TimeStep contract."""

    def __init__(self, env_id: str, cls_name: str, num_envs: int, seed: int):
        pe = _import_popgym_envs()
        cls = getattr(pe, cls_name)
        self.env_id = env_id
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        self._envs = [cls() for _ in range(num_envs)]
        self._enc = OneHot(self._envs[0].observation_space)
        self.observation_space = Space.box((self._enc.dim,), np.float32, 0.0, 1.0)
        self.action_space = Space.discrete(int(self._envs[0].action_space.n))
        self._done = np.zeros(num_envs, bool)
        self._seeded = False

    def reset(self) -> TimeStep:
        obs = np.zeros((self.num_envs, self._enc.dim), np.float32)
        for i, env in enumerate(self._envs):
            o, _ = env.reset(seed=None if self._seeded else self.seed + i)
            self._enc(o, obs[i])
        self._seeded = True
        self._done[:] = False
        return empty_timestep(obs)

    def step(self, actions) -> TimeStep:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"{self.env_id}: actions must have shape ({self.num_envs},), "
                             f"got {actions.shape}")
        b = self.num_envs
        obs = np.zeros((b, self._enc.dim), np.float32)
        rew = np.zeros(b, np.float32)
        term = np.zeros(b, bool)
        trunc = np.zeros(b, bool)
        first = self._done.copy()
        for i, env in enumerate(self._envs):
            if first[i]:
                o, _ = env.reset()
            else:
                o, r, te, tr, _ = env.step(int(actions[i]))
                rew[i], term[i], trunc[i] = r, te, tr and not te
            self._enc(o, obs[i])
        self._done = term | trunc
        return TimeStep(obs, rew, term, trunc, first, {})


def make_popgym(env_id: str, num_envs: int, seed: int, *, cls: str, describe: bool = False):
    """POPGym task ``cls`` (e.g. ``CountRecallEasy``); obs one-hot float32 [B, d]."""
    env = PopgymVecEnv(env_id, cls, 1 if describe else num_envs, seed)
    if describe:
        return env.observation_space, env.action_space
    return env
