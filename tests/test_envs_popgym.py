"""POPGym (the package, ``popgym-numpy/``): the vectorised env reproduces lone popgym envs
transition by transition, for every task family (discrete, MultiDiscrete-action and Box tasks)."""

import jax
import numpy as np
import pytest

from rtrl_rl import envs
from rtrl_rl.envs import _popgym


def _single_reference(task, level, seed, actions):
  """A lone popgym env driven with the package's next-step autoreset contract."""
  env = _popgym.env_class(task, level)()
  enc = _popgym.encoding(task, level)
  buf = np.zeros(enc.observation_space.shape, np.float32)
  o, _ = env.reset(seed=seed)
  enc.obs(o, buf)
  out = [(buf.copy(), 0.0, False, False, True)]
  done = False
  for a in actions:
    if done:
      o, _ = env.reset()
      r, te, tr, first = 0.0, False, False, True
    else:
      o, r, te, tr, _ = env.step(enc.action(a))
      tr, first = tr and not te, False
    enc.obs(o, buf)
    out.append((buf.copy(), r, te, tr, first))
    done = te or tr
  return out


def _actions(space, rng, shape):
  if space.kind == "discrete":
    return rng.integers(0, space.num_values, shape)
  return rng.uniform(space.low, space.high, shape + space.shape).astype(np.float32)


@pytest.mark.parametrize(
  "task",
  [
    "CountRecall-easy",
    "RepeatFirst-easy",
    "Concentration-easy",
    "Autoencode-easy",
    "HigherLower-easy",
    "CountRecall-hard",
    "Battleship-easy",
    "MineSweeper-easy",
    "PositionOnlyPendulum-hard",
    "NoisyPositionOnlyCartPole-easy",
    "LabyrinthEscape-easy",
  ],
)
def test_vectorised_equals_single_env(task):
  n, seed, steps = 3, 7, 130
  env = envs.make(f"popgym-numpy/{task}", num_envs=n, seed=seed)
  rng = np.random.default_rng(0)
  actions = _actions(env.action_space, rng, (steps, n))
  ts = [env.reset()] + [env.step(actions[t]) for t in range(steps)]
  assert ts[0].obs.shape == (n,) + env.observation_space.shape
  assert ts[0].obs.dtype == np.float32 and ts[1].reward.dtype == np.float32
  n_first = 0
  for i in range(n):
    ref = _single_reference(*task.split("-"), seed + i, actions[:, i])
    for t, (obs, r, te, tr, first) in enumerate(ref):
      np.testing.assert_array_equal(ts[t].obs[i], obs)
      assert ts[t].reward[i] == np.float32(r)
      assert (ts[t].terminated[i], ts[t].truncated[i], ts[t].first[i]) == (te, tr, first)
      n_first += first
  if task.startswith(("RepeatFirst", "CountRecall-easy", "HigherLower")):
    assert n_first > n  # the rollout crossed episode boundaries


def test_one_hot_encoding_and_seeds():
  env = envs.make("popgym-numpy/Autoencode-easy", num_envs=2, seed=0)
  obs = env.reset().obs
  assert env.observation_space.shape == (6,)  # Tuple(Discrete(2), Discrete(4))
  np.testing.assert_array_equal(obs.sum(1), [2.0, 2.0])
  a = envs.make("popgym-numpy/CountRecall-easy", 4, seed=3).reset().obs
  b = envs.make("popgym-numpy/CountRecall-easy", 4, seed=3).reset().obs
  np.testing.assert_array_equal(a, b)


def test_multidiscrete_actions_are_one_row_major_discrete_and_box_passes_through():
  bs = _popgym.encoding("Battleship", "medium")  # MultiDiscrete([10, 10])
  assert bs.action_space == envs.Space.discrete(100)
  np.testing.assert_array_equal(bs.action(37), [3, 7])
  pend = _popgym.encoding("PositionOnlyPendulum", "easy")  # Box obs and actions
  assert pend.observation_space.kind == "box" and pend.observation_space.shape == (2,)
  assert pend.action_space.kind == "box" and pend.action_space.shape == (1,)
  np.testing.assert_array_equal(pend.action_space.high, [2.0])
  out = np.zeros(2, np.float32)
  pend.obs(np.array([0.5, -0.25]), out)
  np.testing.assert_array_equal(out, [0.5, -0.25])


def test_every_task_level_is_listed_in_both_families():
  for family in ("popgym", "popgym-numpy"):
    ids = envs.list_ids(family)
    assert len(ids) == 48 == len(set(ids))
    assert {i.split("/")[1] for i in ids} == {f"{t}-{lvl}" for t in _popgym.TASKS for lvl in _popgym.LEVELS}


@pytest.mark.parametrize("task", _popgym.TASKS)
def test_jax_ids_have_the_package_spaces_and_trace_to_them(task):
  """Every ``popgym/`` id: the package's spaces, and its functional reset/step (traced, not
  compiled) return observations of that shape and dtype and scalar reward and flags."""
  for level in _popgym.LEVELS:
    env_id = f"popgym/{task}-{level}"
    obs_space, act_space = envs.describe(env_id)
    assert (obs_space, act_space) == envs.describe(f"popgym-numpy/{task}-{level}")
    fenv = envs.make_functional(env_id)
    key = jax.random.PRNGKey(0)
    state, obs = jax.eval_shape(fenv.reset, key)
    action = jax.ShapeDtypeStruct(act_space.shape, act_space.dtype)
    _, ts = jax.eval_shape(fenv.step, key, state, action)
    for o in (obs, ts.obs):
      assert (o.shape, o.dtype) == (obs_space.shape, obs_space.dtype), env_id
    assert ts.reward.shape == ts.terminated.shape == ts.first.shape == ()


def test_jax_numpy_form_steps_every_family_with_autoreset():
  """The batched numpy form of ``popgym/`` ids (one jitted vmapped step per call): shapes, and
  ``first`` exactly on the step after an episode ended (RepeatFirst-easy: 51 steps)."""
  env = envs.make("popgym/RepeatFirst-easy", num_envs=3, seed=0)
  ts = env.reset()
  assert ts.obs.shape == (3, 4) and ts.first.all()
  ends, firsts = [], []
  for t in range(1, 110):
    ts = env.step(np.zeros(3, np.int32))
    assert ts.obs.shape == (3, 4) and ts.obs.dtype == np.float32
    ends.append(bool(ts.terminated[0]))
    firsts.append(bool(ts.first[0]))
  assert [t for t, e in enumerate(ends, 1) if e] == [51, 103]
  assert [t for t, f in enumerate(firsts, 1) if f] == [52, 104]
  with pytest.raises(envs.UnknownEnvError, match="popgym/RepeatFirst-easy") as e:
    envs.make("popgym/RepeatFirst-eazy")
  assert "VelocityOnlyCartPole" in str(e.value) and "easy, medium, hard" in str(e.value)
