"""Registry, options, errors, CLI and the DMLab adapter (with a fake deepmind_lab)."""

import sys
import types

import numpy as np
import pytest

from rtrl_rl import envs
from rtrl_rl.envs import BadOptionError, MissingDependencyError, UnknownEnvError, _dmlab
from rtrl_rl.envs import __main__ as cli


def test_id_scheme_covers_every_family():
  ids = envs.list_ids()
  assert len(ids) == len(set(ids))
  assert all(i.split("/", 1)[0] in envs.FAMILIES for i in ids)
  for must in [
    "atari/Pong",
    "atari/MsPacman",
    "procgen/chaser-hard",
    "procgen/maze-memory",
    "procgen/dodgeball-memory",
    "procgen/heist-memory",
    "procgen/miner-memory",
    "procgen/caveflyer-memory",
    "procgen/jumper-memory",
    "mujoco/Ant-P",
    "mujoco/Walker2d-V",
    "mujoco/Reacher-POMDP",
    "memory/minigrid-memory-s7",
    "memory/cartpole-masked",
    "popgym/CountRecall-easy",
    "popgym/HigherLower-hard",
    "jax/trace-conditioning",
    "gymnax/CartPole-v1",
    "dmlab/rooms_watermaze",
    "dmlab/rooms_select_nonmatching_object",
  ]:
    assert must in ids, must


def test_unknown_id_suggests_near_matches():
  with pytest.raises(UnknownEnvError, match="atari/Pong") as e:
    envs.make("atari/pong", 1, 0)
  assert "--list" in str(e.value)
  with pytest.raises(UnknownEnvError, match="popgym/CountRecall-easy"):
    envs.make("popgym/CountRecall-ez", 1, 0)
  with pytest.raises(UnknownEnvError, match="family in"):
    envs.make("Pong-v5", 1, 0)
  # a small family lists all its ids
  with pytest.raises(UnknownEnvError, match="memory/cartpole-masked"):
    envs.make("memory/nothing-like-it", 1, 0)
  assert isinstance(UnknownEnvError("x"), ValueError)


def test_bad_options_name_the_option_and_valid_choices():
  with pytest.raises(BadOptionError, match=r"unknown option.*'stiky'.*sticky_actions"):
    envs.make("atari/Pong", 1, 0, stiky=0.25)
  with pytest.raises(BadOptionError, match=r"split='val'.*\['train', 'test'\]"):
    envs.make("procgen/chaser-hard", 1, 0, split="val")
  with pytest.raises(BadOptionError, match="sticky_actions=2.*probability"):
    envs.make("atari/Pong", 1, 0, sticky_actions=2.0)
  with pytest.raises(BadOptionError, match="num_envs"):
    envs.make("memory/cartpole", 0, 0)
  with pytest.raises(BadOptionError, match="batch_size"):
    envs.make("memory/cartpole", 2, 0, batch_size=3)
  with pytest.raises(BadOptionError, match="valid options: \\(none\\)"):
    envs.make("popgym/RepeatFirst-easy", 1, 0, max_episode_steps=3)
  with pytest.raises(BadOptionError, match="functional"):
    envs.make_functional("atari/Pong")


def test_describe_matches_built_env():
  for env_id in [
    "memory/cartpole-masked",
    "mujoco/Hopper-V",
    "popgym/Autoencode-easy",
    "jax/trace-conditioning",
  ]:
    obs_space, act_space = envs.describe(env_id)
    with envs.make(env_id, 2, 0) as env:
      assert env.observation_space.shape == obs_space.shape
      assert env.action_space == act_space
      ts = env.reset()
      assert ts.obs.shape == (2,) + obs_space.shape
      assert ts.obs.dtype == obs_space.dtype


def test_cli_lists_ids_with_spaces(capsys):
  assert cli.main(["--list", "memory", "dmlab", "--options"]) == 0
  out = capsys.readouterr().out
  assert "memory/cartpole-masked" in out and "obs=Box(-inf, inf, (2,), float32)" in out
  assert "act=Discrete(2, int32)" in out
  assert "dmlab/rooms_watermaze" in out and "(72, 96, 3), uint8" in out
  assert "option max_episode_steps" in out


# ----------------------------------------------------------------------------- DMLab


def test_dmlab_missing_gives_build_instructions(monkeypatch):
  monkeypatch.setitem(sys.modules, "deepmind_lab", None)  # makes the import fail
  with pytest.raises(MissingDependencyError, match="not installed") as e:
    envs.make("dmlab/rooms_watermaze", 1, 0)
  msg = str(e.value)
  assert "bazel" in msg and "github.com/google-deepmind/lab" in msg
  assert isinstance(e.value, ImportError)


class _FakeLab:
  """Stands in for deepmind_lab.Lab: an episode lasts 3 agent steps."""

  instances = []

  def __init__(self, level, observations, config, renderer):
    self.level, self.observations_names, self.config, self.renderer = (level, observations, config, renderer)
    self.calls = []
    self.t = 0
    self.running = False
    _FakeLab.instances.append(self)

  def reset(self, seed=None):
    self.seed, self.t, self.running = seed, 0, True

  def step(self, action, num_steps=1):
    self.calls.append((np.array(action), num_steps))
    self.t += 1
    if self.t >= 3:
      self.running = False
    return float(action[3] + 10 * action[4])

  def is_running(self):
    return self.running

  def observations(self):
    assert self.running, "DMLab has no observation after the episode ended"
    h, w = int(self.config["height"]), int(self.config["width"])
    return {"RGB_INTERLEAVED": np.full((h, w, 3), self.t, np.uint8)}

  def close(self):
    pass


@pytest.fixture
def fake_dmlab(monkeypatch):
  _FakeLab.instances = []
  monkeypatch.setitem(sys.modules, "deepmind_lab", types.SimpleNamespace(Lab=_FakeLab))
  return _FakeLab


def test_dmlab_adapter_with_fake_module(fake_dmlab):
  env = envs.make("dmlab/rooms_watermaze", 2, 0)
  lab = fake_dmlab.instances[0]
  assert lab.level == "contributed/dmlab30/rooms_watermaze"
  assert lab.config["width"] == "96" and lab.config["height"] == "72"
  assert lab.observations_names == ["RGB_INTERLEAVED"]
  assert env.action_space.num_values == 9
  ts = env.reset()
  assert ts.obs.shape == (2, 72, 96, 3) and ts.obs.dtype == np.uint8 and ts.first.all()
  firsts, terms, rewards, frames = [], [], [], []
  for a in [0, 8, 1, 0, 0]:
    ts = env.step(np.array([a, a]))
    firsts.append(ts.first[0]), terms.append(ts.terminated[0])
    rewards.append(ts.reward[0]), frames.append(ts.obs[0, 0, 0, 0])
  # steps 1-3 play the episode (ends on the 3rd), step 4 resets, step 5 plays
  assert terms == [False, False, True, False, False]
  assert firsts == [False, False, False, True, False]
  assert rewards == [1.0, 10.0, -1.0, 0.0, 1.0]
  assert frames == [1, 2, 2, 0, 1]  # terminal step repeats the last frame
  actions = [c[0] for c in lab.calls]
  np.testing.assert_array_equal(actions[0], _dmlab.IMPALA_ACTIONS[0])
  np.testing.assert_array_equal(actions[1], [0, 0, 0, 0, 1, 0, 0])  # fire
  assert all(c[1] == 4 for c in lab.calls)  # action repeat 4
  assert not ts.truncated.any()
  env.close()


def test_dmlab_truncation(fake_dmlab):
  env = envs.make("dmlab/rooms_select_nonmatching_object", 1, 3, max_episode_steps=2, action_repeat=2)
  env.reset()
  out = [env.step(np.array([0])) for _ in range(4)]
  assert [bool(t.truncated[0]) for t in out] == [False, True, False, False]
  assert [bool(t.terminated[0]) for t in out] == [False, False, False, False]
  assert [bool(t.first[0]) for t in out] == [False, False, True, False]
  assert fake_dmlab.instances[0].calls[0][1] == 2
