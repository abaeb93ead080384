"""The brax family: spaces, observation layouts and masks, episode ends, numpy form.

Compiling a brax physics step takes 10-20 s on CPU, so the file compiles few programs: one with
the resets of every id, the numpy Hopper-F (reset, step) and one Reacher-POMDP scan.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl import envs
from rtrl_rl.envs import _brax, pomdp

ROBOTS = ("Ant", "HalfCheetah", "Hopper", "Walker2d")
IDS = [f"brax/{r}-{v}" for r in ROBOTS for v in "FPV"] + ["brax/Reacher-F", "brax/Reacher-POMDP"]


def _rollout(fenv, seed, actions):
  """Roll ``B = actions.shape[1]`` envs from ``PRNGKey(seed)``; actions [T, B, n]. Returns
  reset obs [B, d], TimeSteps [T, B] and brax's full obs of each step's state [T, B, d']."""
  b = actions.shape[1]
  key, sub = jax.random.split(jax.random.PRNGKey(seed))
  state, obs0 = jax.vmap(fenv.reset)(jax.random.split(sub, b))

  def body(carry, a):
    state, key = carry
    key, sub = jax.random.split(key)
    state, ts = jax.vmap(fenv.step)(jax.random.split(sub, b), state, a)
    return (state, key), (ts, state.core.state.obs)

  _, (ts, full) = jax.lax.scan(body, (state, key), actions)
  return jax.device_get((obs0, ts, full))


def _check_first_flags(ts):
  """first[t + 1] == terminated[t] | truncated[t]; first steps have reward 0 and no end."""
  done = ts.terminated | ts.truncated
  np.testing.assert_array_equal(ts.first[1:], done[:-1])
  assert not (ts.terminated & ts.truncated).any()
  assert (ts.reward[ts.first] == 0).all() and not done[ts.first].any()


def _resets(fenvs, key):
  """Every id's reset obs, and the positions/velocities of the F ids' brax states."""
  out = {}
  for env_id, f in fenvs.items():
    state, out[env_id] = f.reset(key)
    if env_id.endswith("-F"):
      ps = state.core.state.pipeline_state
      out[env_id + ":q,qd,height"] = ps.q, ps.qd, ps.x.pos[0, 2]  # only these: outputs of
  return out  # whole brax states would take ~20 s longer to compile


def test_spaces_and_observation_layouts_at_reset():
  fenvs = {i: envs.make_functional(i) for i in IDS}
  for env_id, f in fenvs.items():
    assert (f.observation_space, f.action_space) == envs.describe(env_id)
    assert f.observation_space.dtype == np.float32 and f.action_space.dtype == np.float32
    assert (f.action_space.low == -1).all() and (f.action_space.high == 1).all()
  for env_id in ("brax/Ant-P", "brax/Hopper-V"):  # the views apply to every step's obs
    f = fenvs[env_id]
    state, _ = jax.eval_shape(f.reset, jax.random.PRNGKey(0))
    action = jnp.zeros(f.action_space.shape)
    _, ts = jax.eval_shape(f.step, jax.random.PRNGKey(0), state, action)
    assert ts.obs.shape == f.observation_space.shape and ts.obs.dtype == np.float32
    assert ts.reward.dtype == np.float32 and ts.terminated.dtype == ts.truncated.dtype == bool
  out = jax.device_get(jax.jit(lambda k: _resets(fenvs, k))(jax.random.PRNGKey(3)))
  for env_id, f in fenvs.items():
    assert out[env_id].shape == f.observation_space.shape and out[env_id].dtype == np.float32
  for robot in ROBOTS:
    full = out[f"brax/{robot}-F"]
    dim, p, v = pomdp.BRAX_POMDP[robot]
    kept = {view: pomdp.kept_indices(robot, view) for view in "PV"}
    assert sorted(kept["P"] + kept["V"]) == list(range(dim))
    for view in "PV":  # same key, same state: the view is the documented indices of F
      np.testing.assert_array_equal(out[f"brax/{robot}-{view}"], full[kept[view]])
    # the documented layout: P = the positions/angles q[k:], V = the velocities qd
    q, qd, height = out[f"brax/{robot}-F:q,qd,height"]
    positions = q[len(q) - (p.stop - p.start) :].copy()
    if robot in ("Hopper", "Walker2d"):
      positions[0] = height  # brax observes the torso's world height
    np.testing.assert_array_equal(full[p], positions)
    np.testing.assert_array_equal(full[v], qd)
    assert (qd != 0).all()
  full, part = out["brax/Reacher-F"], out["brax/Reacher-POMDP"]
  np.testing.assert_array_equal(part, full)  # the first step shows everything
  np.testing.assert_array_equal(full[4:6], out["brax/Reacher-F:q,qd,height"][0][2:])  # target
  assert (full[[4, 5, 8, 9]] != 0).all()


def test_hopper_termination_truncation_determinism_numpy_form():
  env = envs.make("brax/Hopper-F", num_envs=2, seed=0, max_episode_steps=10)
  acts = np.zeros((2, 3), np.float32)
  acts[1] = -1.0  # env 1 falls within ~8 steps; env 0 (no torque) stands past 10 steps

  def play():
    out = [env.reset()] + [env.step(acts) for _ in range(23)]
    return jax.tree.map(lambda *x: np.stack(x), *out)

  ts = play()
  assert isinstance(ts.obs, np.ndarray) and ts.obs.shape == (24, 2, 11)
  assert ts.obs.dtype == ts.reward.dtype == np.float32 and ts.first[0].all()
  _check_first_flags(ts)
  assert list(np.flatnonzero(ts.truncated[:, 0])) == [10, 21] and not ts.terminated[:, 0].any()
  assert ts.terminated[:, 1].sum() >= 2 and not ts.truncated[:, 1].any()
  # terminated exactly where brax's health check fails: height <= 0.7 or |angle| >= 0.2
  unhealthy = (ts.obs[..., 0] <= 0.7) | (np.abs(ts.obs[..., 1]) >= 0.2)
  np.testing.assert_array_equal(unhealthy & ~ts.first, ts.terminated)
  again = play()  # reset() restarts from the seed: bitwise the same trajectory
  for a, b in zip(ts, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(envs.make("brax/Hopper-F", 2, seed=1).reset().obs, ts.obs[0])


def test_reacher_pomdp_shows_target_only_on_first_steps():
  hidden = list(pomdp.BRAX_REACHER_HIDDEN_AFTER_FIRST)
  shown = [i for i in range(pomdp.BRAX_REACHER_DIM) if i not in hidden]
  fenv = envs.make_functional("brax/Reacher-POMDP", max_episode_steps=5)
  acts = np.stack([np.full((2, 2), 0.5 * (-1) ** (t // 3), np.float32) for t in range(13)])
  run = jax.jit(_rollout, static_argnums=0)
  obs0, ts, full = run(fenv, 4, acts)
  assert obs0.shape == (2, 11) and ts.obs.shape == (13, 2, 11)
  assert not ts.first[0].any()
  _check_first_flags(ts)
  assert list(np.flatnonzero(ts.truncated[:, 0])) == [4, 10] and not ts.terminated.any()
  # same state: shown dims are brax's full obs; hidden dims only on first steps
  np.testing.assert_array_equal(ts.obs[:, :, shown], full[:, :, shown])
  np.testing.assert_array_equal(ts.obs[ts.first], full[ts.first])
  assert (ts.obs[~ts.first][:, hidden] == 0).all() and (full[:, :, [4, 5, 8, 9]] != 0).all()
  again = run(fenv, 4, acts)  # same key: bitwise the same trajectory
  for a, b in zip(jax.tree.leaves((obs0, ts)), jax.tree.leaves(again[:2])):
    np.testing.assert_array_equal(a, b)


def test_backend_option_and_missing_brax(monkeypatch):
  with pytest.raises(
    envs.BadOptionError, match=r"backend='warp'.*\['positional', 'generalized', 'spring', 'mjx'\]"
  ):
    envs.make("brax/Ant-P", 1, 0, backend="warp")
  with pytest.raises(envs.BadOptionError, match="max_episode_steps=0"):
    envs.make_functional("brax/Hopper-F", max_episode_steps=0)
  for backend in ("positional", "generalized", "spring", "mjx"):  # the option reaches brax
    f = envs.make_functional("brax/Reacher-POMDP", backend=backend)
    state, obs = jax.eval_shape(f.reset, jax.random.PRNGKey(0))
    assert type(state.core.state.pipeline_state).__module__ == f"brax.{backend}.base"
    assert obs.shape == (pomdp.BRAX_REACHER_DIM,)
  monkeypatch.setitem(sys.modules, "brax", None)  # as if brax were not installed
  with pytest.raises(envs.MissingDependencyError, match="pip install brax"):
    _brax._raw_env.__wrapped__("Reacher", "positional")
