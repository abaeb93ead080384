"""envpool families: Atari, ProcGen, MuJoCo POMDP, MiniGrid Memory, masked CartPole."""

import numpy as np
import pytest

from rtrl_rl import envs
from rtrl_rl.envs import _envpool, pomdp


def _rollout(env, actions_fn, steps):
  """TimeSteps [reset, step 1..steps] stacked along a leading time axis."""
  out = [env.reset()]
  for t in range(steps):
    out.append(env.step(actions_fn(t, out[-1])))
  return out


def _check_first_flags(ts_list):
  """first[0] all True; afterwards first[t] == terminated[t-1] | truncated[t-1]."""
  first = np.stack([t.first for t in ts_list])
  done = np.stack([t.terminated | t.truncated for t in ts_list])
  assert first[0].all()
  np.testing.assert_array_equal(first[1:], done[:-1])
  assert not (np.stack([t.terminated for t in ts_list]) & np.stack([t.truncated for t in ts_list])).any()
  for t in ts_list:  # a first step carries no reward and no end
    assert (t.reward[t.first] == 0).all()
    assert not (t.terminated | t.truncated)[t.first].any()
  return first, done


# ----------------------------------------------------------------------------- CartPole


def test_cartpole_termination_and_first_flags():
  # constant action 0 drops the pole in ~10 steps: several terminal episodes
  env = envs.make("memory/cartpole", num_envs=3, seed=0)
  ts = _rollout(env, lambda t, _: np.zeros(3, np.int64), 60)
  first, done = _check_first_flags(ts)
  term = np.stack([t.terminated for t in ts])
  assert term.sum(0).min() >= 3 and not np.stack([t.truncated for t in ts]).any()
  for t in ts[1:]:
    np.testing.assert_array_equal(t.reward, np.where(t.first, 0.0, 1.0))
    # a new episode starts near the origin; a terminal obs has a fallen pole or left track
    assert (np.abs(t.obs[t.first]) <= 0.05).all()
    fallen = (np.abs(t.obs[:, 2]) > 0.2094) | (np.abs(t.obs[:, 0]) > 2.4)
    np.testing.assert_array_equal(fallen, t.terminated)
  env.close()


def test_cartpole_truncation_bootstraps():
  env = envs.make("memory/cartpole", num_envs=2, seed=0, max_episode_steps=5)
  ts = _rollout(env, lambda t, _: np.full(2, t % 2), 13)  # balancing: never falls in 5 steps
  _check_first_flags(ts)
  trunc = np.stack([t.truncated for t in ts])[:, 0]
  assert list(np.flatnonzero(trunc)) == [5, 11]  # 5 steps, reset step, 5 steps
  assert not np.stack([t.terminated for t in ts]).any()


def test_cartpole_masked_hides_velocities():
  a = envs.make("memory/cartpole", 2, seed=4)
  m = envs.make("memory/cartpole-masked", 2, seed=4)
  assert m.observation_space.shape == (2,)
  act = lambda t, _: np.array([t % 2, 0])  # noqa: E731
  for x, y in zip(_rollout(a, act, 30), _rollout(m, act, 30)):
    np.testing.assert_array_equal(y.obs, x.obs[:, list(pomdp.CARTPOLE_KEPT)])
    np.testing.assert_array_equal(y.first, x.first)


def test_same_seed_same_observations_and_async():
  a = envs.make("memory/cartpole", 4, seed=11)
  b = envs.make("memory/cartpole", 4, seed=11)
  c = envs.make("memory/cartpole", 4, seed=12)
  ra, rb = a.reset(), b.reset()
  np.testing.assert_array_equal(ra.obs, rb.obs)
  assert not np.array_equal(ra.obs, c.reset().obs)
  # async: whichever envs are ready; first flags tracked per env id
  env = envs.make("memory/cartpole", num_envs=4, seed=11, batch_size=2)
  with pytest.raises(RuntimeError, match="send"):
    env.step(np.zeros(4))
  env.async_reset()
  prev_done = {i: None for i in range(4)}
  seen_first = {i: 0 for i in range(4)}
  for _ in range(120):
    ts, ids = env.recv()
    assert ts.obs.shape == (2, 4) and ids.shape == (2,)
    for k, i in enumerate(ids):
      expected = True if prev_done[i] is None else prev_done[i]
      assert ts.first[k] == expected
      if prev_done[i] is None:  # the reset obs equals the sync env's (same seed)
        np.testing.assert_array_equal(ts.obs[k], ra.obs[i])
      prev_done[i] = bool(ts.terminated[k] | ts.truncated[k])
      seen_first[i] += int(ts.first[k])
    env.send(np.zeros(2, np.int64), ids)
  assert min(seen_first.values()) >= 2  # every env went through an autoreset
  with pytest.raises(RuntimeError, match="in flight"):
    env.async_reset()  # 4 envs are still stepping: envpool would corrupt memory
  env.recv(), env.recv()
  with pytest.raises(RuntimeError, match="block forever"):
    env.recv()
  env.async_reset()
  assert env.recv()[0].first.all()


# ----------------------------------------------------------------------------- Atari


def test_atari_shapes_episodic_life_and_determinism():
  env = envs.make("atari/Breakout", num_envs=2, seed=3, num_threads=2)
  assert env.observation_space.shape == (4, 84, 84) and env.action_space.num_values == 4
  rng = np.random.default_rng(0)
  acts = rng.integers(0, 4, (400, 2))
  ts = _rollout(env, lambda t, _: acts[t], 400)
  assert ts[0].obs.shape == (2, 4, 84, 84) and ts[0].obs.dtype == np.uint8
  assert ts[1].reward.dtype == np.float32
  _check_first_flags(ts)
  term = np.stack([t.terminated for t in ts])
  over = np.stack([t.info["game_over"] for t in ts])
  lives = np.stack([t.info["lives"] for t in ts])
  life_loss = term & ~over
  assert life_loss.any(), "episodic_life: a lost life must terminate the episode"
  t_, b_ = np.argwhere(life_loss)[0]
  assert lives[t_, b_] < lives[t_ - 1, b_]
  assert not over[~term].any()
  # same seed and actions -> identical observations
  env2 = envs.make("atari/Breakout", num_envs=2, seed=3, num_threads=2)
  ts2 = _rollout(env2, lambda t, _: acts[t], 30)
  for x, y in zip(ts[:31], ts2):
    np.testing.assert_array_equal(x.obs, y.obs)


def test_atari_truncation_and_options():
  env = envs.make(
    "atari/Pong",
    num_envs=2,
    seed=0,
    max_episode_steps=20,
    sticky_actions=0.25,
    episodic_life=False,
    noop_max=0,
  )
  ts = _rollout(env, lambda t, _: np.ones(2, np.int64), 45)
  _check_first_flags(ts)
  trunc = np.stack([t.truncated for t in ts])[:, 0]
  assert list(np.flatnonzero(trunc)) == [20, 41]


def test_atari_sticky_actions_repeat_the_previous_action():
  """sticky_actions=p: with probability p the emulator repeats the previous action. p=1 repeats
  the initial NOOP forever, so two different action sequences give the same frames; p=0 not."""

  def frames(p, action_seed):
    env = envs.make("atari/Breakout", num_envs=1, seed=0, sticky_actions=p, noop_max=1)
    rng = np.random.default_rng(action_seed)
    ts = _rollout(env, lambda t, _: rng.integers(0, 4, size=1), 60)
    env.close()
    return np.stack([t.obs for t in ts])

  assert not np.array_equal(frames(0.0, 1), frames(0.0, 2))
  np.testing.assert_array_equal(frames(1.0, 1), frames(1.0, 2))


# ----------------------------------------------------------------------------- ProcGen


def test_procgen_runs_and_splits_levels():
  # proves the Qt5 runtime (libqt5gui5) is present: envpool's ProcGen needs it
  env = envs.make(
    "procgen/dodgeball-memory", num_envs=4, seed=5, num_levels=10, start_level=100, num_threads=2
  )
  assert env.observation_space.shape == (64, 64, 3) and env.action_space.num_values == 15
  rng = np.random.default_rng(0)
  ts = _rollout(env, lambda t, _: rng.integers(0, 15, 4), 100)
  assert ts[0].obs.shape == (4, 64, 64, 3) and ts[0].obs.dtype == np.uint8
  _check_first_flags(ts)
  assert np.stack([t.truncated | t.terminated for t in ts]).sum() >= 2
  train_levels = np.concatenate([t.info["level_seed"] for t in ts])
  assert ((train_levels >= 100) & (train_levels < 110)).all()
  test = envs.make(
    "procgen/dodgeball-memory", num_envs=4, seed=5, split="test", num_levels=10, start_level=100
  )
  test_levels = test.reset().info["level_seed"]
  assert not ((test_levels >= 100) & (test_levels < 110)).any()
  same = envs.make("procgen/dodgeball-memory", num_envs=4, seed=5, num_levels=10, start_level=100)
  np.testing.assert_array_equal(same.reset().obs, ts[0].obs)
  chw = envs.make("procgen/maze-memory", 1, 0, channel_first=True)
  assert chw.reset().obs.shape == (1, 3, 64, 64)


# ----------------------------------------------------------------------------- MuJoCo POMDP


@pytest.mark.filterwarnings("ignore::UserWarning")  # gymnasium, on the raw pool's reset
@pytest.mark.parametrize("robot", ["Ant", "HalfCheetah", "Hopper", "Walker2d"])
def test_mujoco_pomdp_masks_are_the_documented_indices(robot):
  dim, p, v = pomdp.MUJOCO_POMDP[robot]
  assert sorted(pomdp.kept_indices(robot, "P") + pomdp.kept_indices(robot, "V")) == list(range(dim))
  kw = {"use_contact_force": False} if robot == "Ant" else {}
  raw = _envpool.make_raw(f"{robot}-v5", 2, 9, **kw)
  made = {view: envs.make(f"mujoco/{robot}-{view}", 2, seed=9, max_episode_steps=6) for view in "FPV"}
  rng = np.random.default_rng(1)
  act_dim = made["F"].action_space.shape[0]
  acts = rng.uniform(-1, 1, (15, 2, act_dim)).astype(np.float32)
  roll = {view: _rollout(e, lambda t, _: acts[t], 15) for view, e in made.items()}
  raw_obs = [raw.reset()[0]] + [raw.step(acts[t])[0] for t in range(6)]
  for t in range(16):
    full = roll["F"][t].obs
    assert full.dtype == np.float32 and full.shape == (2, dim)
    if t < 7:  # F is envpool's full observation (before our time limit matters)
      np.testing.assert_array_equal(full, raw_obs[t].astype(np.float32))
    np.testing.assert_array_equal(roll["P"][t].obs, full[:, pomdp.kept_indices(robot, "P")])
    np.testing.assert_array_equal(roll["V"][t].obs, full[:, pomdp.kept_indices(robot, "V")])
  _check_first_flags(roll["F"])
  assert np.stack([t.truncated | t.terminated for t in roll["F"]]).any()


def test_reacher_pomdp_shows_target_only_on_first_step():
  full = envs.make("mujoco/Reacher-F", 2, seed=2, max_episode_steps=4)
  part = envs.make("mujoco/Reacher-POMDP", 2, seed=2, max_episode_steps=4)
  act = lambda t, _: np.full((2, 2), 0.3 * (-1) ** t, np.float32)  # noqa: E731
  hidden = list(pomdp.REACHER_HIDDEN_AFTER_FIRST)
  shown = [i for i in range(pomdp.REACHER_DIM) if i not in hidden]
  n_first = 0
  for x, y in zip(_rollout(full, act, 12), _rollout(part, act, 12)):
    np.testing.assert_array_equal(y.first, x.first)
    np.testing.assert_array_equal(y.obs[:, shown], x.obs[:, shown])
    np.testing.assert_array_equal(y.obs[x.first], x.obs[x.first])
    assert (y.obs[~x.first][:, hidden] == 0).all()
    assert (x.obs[:, 4:6] != 0).any()
    n_first += x.first.sum()
  assert n_first >= 4  # several episodes, target revealed at each start


# ----------------------------------------------------------------------------- MiniGrid


def test_minigrid_memory():
  env = envs.make("memory/minigrid-memory-s7", num_envs=2, seed=1, max_episode_steps=6)
  assert env.observation_space.shape == (7, 7, 3) and env.action_space.num_values == 7
  ts = _rollout(env, lambda t, _: np.full(2, 2), 14)  # "forward"
  assert ts[0].obs.shape == (2, 7, 7, 3) and ts[0].obs.dtype == np.uint8
  _check_first_flags(ts)
  assert np.stack([t.truncated | t.terminated for t in ts]).sum() >= 2
  again = envs.make("memory/minigrid-memory-s7", num_envs=2, seed=1)
  np.testing.assert_array_equal(again.reset().obs, ts[0].obs)


# ----------------------------------------------------------------------------- array ownership


def _leaves(ts):
  return [ts.obs, ts.reward, ts.terminated, ts.truncated, ts.first, *ts.info.values()]


def _copies(ts):
  return [np.array(x) for x in _leaves(ts)]


def _assert_own_arrays(kept, snapshots):
  """The kept TimeSteps still hold their values at return time and share no memory."""
  for ts, snap in zip(kept, snapshots):
    for x, y in zip(_leaves(ts), snap):
      np.testing.assert_array_equal(x, y)
  leaves = [x for ts in kept for x in _leaves(ts)]
  for i, x in enumerate(leaves):
    for y in leaves[i + 1 :]:
      assert not np.shares_memory(x, y)


@pytest.mark.parametrize(
  "env_id,opts",
  [
    ("memory/cartpole-masked", {"max_episode_steps": 3}),
    ("mujoco/Reacher-POMDP", {"max_episode_steps": 3}),
    ("mujoco/Ant-P", {"max_episode_steps": 3}),
    ("memory/minigrid-memory-s7", {"max_episode_steps": 3}),
    ("atari/Pong", {"max_episode_steps": 3}),
    ("procgen/maze-memory", {}),
  ],
)
def test_timesteps_own_their_arrays(env_id, opts):
  """Callers keep earlier TimeSteps (rollout lists; jax may alias numpy memory on CPU): later
  steps never write into an earlier TimeStep's arrays, no two returned arrays share memory, and
  writing into a returned TimeStep changes nothing the env returns later."""
  env, twin = (envs.make(env_id, num_envs=2, seed=0, **opts) for _ in range(2))
  space = env.action_space
  kept, ts = [twin.reset()], env.reset()
  twin_snaps, env_snaps = [_copies(kept[0])], [_copies(ts)]
  for a in np.zeros((12, 2, *space.shape), space.dtype):
    for x in _leaves(ts):  # the caller of `env` overwrites every TimeStep it gets
      x[...] = np.ones_like(x)
    ts = env.step(a)
    env_snaps.append(_copies(ts))
    kept.append(twin.step(a))
    twin_snaps.append(_copies(kept[-1]))
  _assert_own_arrays(kept, twin_snaps)
  for x, y in zip(env_snaps, twin_snaps):
    for a, b in zip(x, y):
      np.testing.assert_array_equal(a, b)
  _check_first_flags(kept)
  env.close(), twin.close()


@pytest.mark.parametrize(
  "env_id,opts,steps",
  [
    ("memory/cartpole-masked", {"max_episode_steps": 3}, 16),
    ("atari/Breakout", {"num_threads": 2}, 300),  # episodic life: soft resets, tracked per env id
  ],
)
def test_async_timesteps_own_their_arrays_and_first_per_env(env_id, opts, steps):
  """recv(): first == the env id's previous step ended; the last 16 TimeSteps own their arrays."""
  env = envs.make(env_id, num_envs=2, seed=0, batch_size=1, **opts)
  rng = np.random.default_rng(0)
  env.async_reset()
  kept, snaps, prev_done, n_first = [], [], {}, 0
  for _ in range(steps):
    ts, ids = env.recv()
    kept.append(ts), snaps.append(_copies(ts))
    i = int(ids[0])
    assert ts.first[0] == prev_done.get(i, True)
    prev_done[i] = bool(ts.terminated[0] | ts.truncated[0])
    n_first += int(ts.first[0])
    env.send(rng.integers(0, env.action_space.num_values, 1), ids)
  _assert_own_arrays(kept[-16:], snaps[-16:])
  assert n_first >= 4
  env.close()
