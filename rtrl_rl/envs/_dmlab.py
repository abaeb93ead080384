"""DeepMind Lab adapter (IMPALA / Irie et al. settings), used when ``deepmind_lab`` imports.

Observation: ``RGB_INTERLEAVED`` uint8 [B, 72, 96, 3]. Actions: the 9-action set
of IMPALA (Espeholt et al. 2018, Table D.2), each repeated ``action_repeat`` (4)
engine frames; ``reward`` is their sum. Levels: ``dmlab/<name>`` plays
``contributed/dmlab30/<name>``. A level ending its episode (``is_running()``
False: DMLab-30 levels end on their own clock) counts as ``terminated``; the
terminal step repeats the last rendered frame (DMLab renders none after the
end). ``max_episode_steps`` adds a truncating time limit. Env ``i`` is seeded
from ``numpy.random.default_rng(seed)``; every reset draws a fresh level seed.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from rtrl_rl.envs.core import Env, MissingDependencyError, Space, TimeStep, empty_timestep

# [look_left_right_pixels_per_frame, look_down_up_pixels_per_frame,
#  strafe_left_right, move_back_forward, fire, jump, crouch]
IMPALA_ACTIONS = np.array(
  [
    (0, 0, 0, 1, 0, 0, 0),  # forward
    (0, 0, 0, -1, 0, 0, 0),  # backward
    (0, 0, -1, 0, 0, 0, 0),  # strafe left
    (0, 0, 1, 0, 0, 0, 0),  # strafe right
    (-20, 0, 0, 0, 0, 0, 0),  # look left
    (20, 0, 0, 0, 0, 0, 0),  # look right
    (-20, 0, 0, 1, 0, 0, 0),  # look left + forward
    (20, 0, 0, 1, 0, 0, 0),  # look right + forward
    (0, 0, 0, 0, 1, 0, 0),  # fire
  ],
  dtype=np.intc,
)

OBS_NAME = "RGB_INTERLEAVED"

INSTALL_HELP = """DeepMind Lab is not installed (the Python module `deepmind_lab` cannot be imported).
There is no wheel on PyPI; build one from source (needs bazel, a C toolchain, and network access
for the build's downloads):
  git clone https://github.com/google-deepmind/lab && cd lab
  bazel build -c opt --python_version=PY3 //python/pip_package:build_pip_package
  ./bazel-bin/python/pip_package/build_pip_package /tmp/dmlab_pkg
  .venv/bin/python -m pip install /tmp/dmlab_pkg/deepmind_lab-*.whl
See https://github.com/google-deepmind/lab/blob/master/docs/users/build.md (system packages,
Python headers) and python/pip_package/README.md. The DMLab-30 levels ship with the package."""


def import_deepmind_lab() -> Any:
  """The ``deepmind_lab`` module, or MissingDependencyError with build instructions."""
  try:
    return importlib.import_module("deepmind_lab")
  except ImportError as e:
    raise MissingDependencyError(INSTALL_HELP) from e


class DmLabEnv(Env):
  """``num_envs`` ``deepmind_lab.Lab`` instances stepped in a Python loop."""

  def __init__(
    self,
    env_id: str,
    level: str,
    num_envs: int,
    seed: int,
    *,
    action_repeat: int,
    height: int,
    width: int,
    renderer: str,
    max_episode_steps: int | None,
    level_prefix: str,
  ):
    lab = import_deepmind_lab()
    self.env_id = env_id
    self.num_envs = int(num_envs)
    self.level = level_prefix + level
    self.action_repeat = int(action_repeat)
    self.max_episode_steps = max_episode_steps
    config = {"width": str(width), "height": str(height), "logLevel": "WARN"}
    self._labs = [lab.Lab(self.level, [OBS_NAME], config=config, renderer=renderer) for _ in range(num_envs)]
    self._rng = np.random.default_rng(seed)
    self.observation_space = Space.box((height, width, 3), np.uint8, 0, 255)
    self.action_space = Space.discrete(len(IMPALA_ACTIONS))
    self._shape = (height, width, 3)
    self._last = np.zeros((num_envs,) + self._shape, np.uint8)
    self._done = np.zeros(num_envs, bool)
    self._t = np.zeros(num_envs, np.int64)

  def _reset_one(self, i: int) -> None:
    self._labs[i].reset(seed=int(self._rng.integers(0, 2**31 - 1)))
    self._last[i] = self._labs[i].observations()[OBS_NAME]
    self._t[i] = 0

  def reset(self) -> TimeStep:
    for i in range(self.num_envs):
      self._reset_one(i)
    self._done[:] = False
    return empty_timestep(self._last.copy())

  def step(self, actions) -> TimeStep:
    actions = np.asarray(actions)
    if actions.shape != (self.num_envs,):
      raise ValueError(f"{self.env_id}: actions must have shape ({self.num_envs},), got {actions.shape}")
    b = self.num_envs
    rew = np.zeros(b, np.float32)
    term = np.zeros(b, bool)
    trunc = np.zeros(b, bool)
    first = self._done.copy()
    for i, lab in enumerate(self._labs):
      if first[i]:
        self._reset_one(i)
        continue
      rew[i] = lab.step(IMPALA_ACTIONS[int(actions[i])], num_steps=self.action_repeat)
      self._t[i] += 1
      if lab.is_running():
        self._last[i] = lab.observations()[OBS_NAME]
        trunc[i] = self.max_episode_steps is not None and self._t[i] >= self.max_episode_steps
      else:
        term[i] = True
    self._done = term | trunc
    return TimeStep(self._last.copy(), rew, term, trunc, first, {})

  def close(self) -> None:
    for lab in self._labs:
      lab.close()
    self._labs = []


def make_dmlab(env_id: str, num_envs: int, seed: int, *, level: str, describe: bool = False, **o):
  """DMLab level ``level`` (obs uint8 [B, height, width, 3], 9 actions)."""
  if describe:
    return (Space.box((o["height"], o["width"], 3), np.uint8, 0, 255), Space.discrete(len(IMPALA_ACTIONS)))
  return DmLabEnv(env_id, level, num_envs, seed, **o)
