"""Observation index sets of the partially observed control tasks (pure data).

MuJoCo POMDP ("-P": velocities removed, only positions/angles kept; "-V":
positions/angles removed, only velocities kept). Naming follows the standard
POMDP benchmark of Han et al. 2020 (VRM) as packaged by Ni et al. 2022,
"Recurrent Model-Free RL Can Be a Strong Baseline for Many POMDPs"
(github.com/twni2016/pomdp-baselines, envs/pomdp/__init__.py), used by the
RTU paper (Elelimy et al. 2024). That benchmark's index lists are written for
the PyBullet robots; for the MuJoCo robots used here (envpool ``*-v5``, same
layout as Gymnasium v5 with ``exclude_current_positions_from_observation``)
the observation is ``[qpos[k:], qvel]`` so the split is by that boundary, the
same sets as the "remove velocity" POMDP of Meng et al. 2021 (LSTM-TD3,
github.com/LinghengMeng/LSTM-TD3, env_wrapper/pomdp_wrapper.py) for
HalfCheetah/Hopper/Walker2d:

============  ====  ================================  ===========================
robot         dim   P (positions/angles kept)         V (velocities kept)
============  ====  ================================  ===========================
HalfCheetah   17    0..7   rootz, rooty, 6 joint angles  8..16  9 qvel
Hopper        11    0..4   rootz, rooty, 3 joint angles  5..10  6 qvel (clipped +-10)
Walker2d      17    0..7   rootz, rooty, 6 joint angles  8..16  9 qvel (clipped +-10)
Ant           27    0..12  z, quaternion(4), 8 joints    13..26 14 qvel
============  ====  ================================  ===========================

Ant uses the 27-dim observation without contact forces (envpool
``use_contact_force=False``, the Gymnasium v4 default), so that -P and -V
partition it exactly.

Brax (``brax/`` ids, brax 0.14 ``brax/envs/<robot>.py`` ``_get_obs``) has the
same layout, ``[q[k:], qd]`` with the world x (Ant: x, y) dropped, so
:data:`BRAX_POMDP` is this table: Ant has no contact forces (brax raises
``NotImplementedError`` for ``use_contact_forces``); Hopper/Walker2d replace
dim 0 by the torso's world height ``x.pos[torso, z]`` (still a position) and
clip ``qd`` to +-10 as Gymnasium does. The RTU authors' Brax wrappers
(``src/envs/wrappers/pobrax_{p,v}.py`` of their ``rtus`` code, seen at
github.com/SakodaShintaro/rtus) keep ``obs[:n]`` / ``obs[-n:]`` with n = Ant
13 / 14 (Ant-P = first 13 of 27), Hopper 5 / 6, Walker2d 8 / 9 (the sets
above), but HalfCheetah 9 / 8: their Cheetah-P includes the root x velocity
(dim 8) and their Cheetah-V drops it; we keep the position/velocity boundary.

Reacher POMDP (RTU paper's long-term-cue Reacher): Reacher-v5 observation
``[cos q0, cos q1, sin q0, sin q1, target_x, target_y, qdot0, qdot1,
(fingertip - target)_x, (fingertip - target)_y]``; the target position
(4, 5) and the fingertip-to-target vector (8, 9) are shown only on the first
step of each episode and zeroed on every later step, so the target must be
remembered for the whole episode. The observation keeps its 10 dims.
Brax's Reacher observation has 11 dims, ``[cos q0, cos q1, sin q0, sin q1,
target_x, target_y, tip_vx, tip_vy, (fingertip - target)_{x,y,z}]`` (tip
velocity instead of joint velocities; the z difference is small but not
constant), so its hidden dims are (4, 5, 8, 9, 10).

CartPole with velocities hidden (``memory/cartpole-masked``): keep
``[0, 2]`` (cart position, pole angle) of ``[x, x_dot, theta, theta_dot]``,
the "CartPole-P" task of pomdp-baselines.
"""

from __future__ import annotations

# robot -> (full dim, slice kept by -P, slice kept by -V)
MUJOCO_POMDP: dict[str, tuple[int, slice, slice]] = {
  "HalfCheetah": (17, slice(0, 8), slice(8, 17)),
  "Hopper": (11, slice(0, 5), slice(5, 11)),
  "Walker2d": (17, slice(0, 8), slice(8, 17)),
  "Ant": (27, slice(0, 13), slice(13, 27)),
}

# Brax's layout is envpool's (module docstring); the brax tests check it against the brax state.
BRAX_POMDP = MUJOCO_POMDP

REACHER_DIM = 10
REACHER_HIDDEN_AFTER_FIRST = (4, 5, 8, 9)
BRAX_REACHER_DIM = 11
BRAX_REACHER_HIDDEN_AFTER_FIRST = (4, 5, 8, 9, 10)

CARTPOLE_KEPT = (0, 2)


def kept_indices(robot: str, view: str) -> list[int]:
  """Indices of the full observation kept by ``view`` in {"F", "P", "V"}."""
  dim, p, v = MUJOCO_POMDP[robot]
  sl = {"F": slice(0, dim), "P": p, "V": v}[view]
  return list(range(dim))[sl]
