"""Every experiment config loads and validates; bad arguments fail at load time, naming them."""

import importlib.util
import json
import os

import pytest

from rtrl_rl import envs, experiment
from rtrl_rl.agents.ppo import config as ppo_config
from rtrl_rl.envs._popgym import LEVELS, TASKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = [  # (config file, argument): the papers' grids, one of each kind
  ("default.py", None),
  ("default.py", "ff"),
  ("default.py", "rtu"),
  ("default.py", "lru"),
  *[
    ("irie_atari.py", f"game={g},mode={m}")
    for g in ("Breakout", "Gravitar", "MsPacman", "Qbert", "Seaquest")
    for m in ("rtrl", "tbptt", "ff")
  ],
  *[
    ("irie_procgen.py", f"game={g},distribution=memory,M={m}")
    for g in ("dodgeball", "heist", "maze", "miner", "caveflyer", "jumper")
    for m in (5, 50)
  ],
  ("irie_procgen.py", "game=chaser,distribution=hard,mode=tbptt,M=5"),
  *[
    ("irie_dmlab.py", f"level={level},mode={m},M={n}")
    for level in ("rooms_select_nonmatching_object", "rooms_watermaze", "rooms_keys_doors_puzzle")
    for m in ("rtrl", "tbptt")
    for n in (10, 50, 100)
  ],
  *[
    ("rtu_mujoco_pomdp.py", f"env={e},core={c}")
    for e in ("Ant-P", "HalfCheetah-V", "Hopper-P", "Walker2d-V")
    for c in ("rtu_nonlinear", "rtu_linear", "lru", "lru_tbptt", "gru", "ff")
  ],
  ("rtu_reacher_pomdp.py", "core=rtu_nonlinear"),
  *[
    ("claims_irie_m.py", f"core={c},mode={m},M={n}")
    for c in ("elstm", "rtu", "ff")
    for m in ("rtrl", "tbptt")
    for n in (2, 16)
  ],
  ("claims_irie_m.py", "task=repeat_previous,core=rtu,mode=tbptt,M=2"),
  ("rtu_mujoco_pomdp.py", "env=Hopper-V,core=rtu_linear,env_family=envpool"),
  ("rtu_reacher_pomdp.py", "core=gru,env_family=envpool"),
  *[
    ("rtu_popgym.py", f"task={t},level={level}")
    for t in ("CountRecall", "RepeatFirst", "Concentration", "Autoencode", "HigherLower")
    for level in ("easy", "hard")
  ],
  ("rtu_popgym.py", "task=PositionOnlyPendulum,level=hard,core=rtu_linear"),  # Box actions
  ("rtu_popgym.py", "task=Battleship,level=medium,env_family=numpy"),  # host path
]


def test_rtu_mujoco_configs_run_brax_on_the_jitted_loop_or_envpool_on_the_host():
  c = load("rtu_mujoco_pomdp.py")
  assert (c.env.id, c.system.backend) == ("brax/Ant-P", "anakin")
  c = load("rtu_mujoco_pomdp.py", "env=Walker2d-V,env_family=envpool")
  assert (c.env.id, c.system.backend) == ("mujoco/Walker2d-V", "sync")
  c = load("rtu_reacher_pomdp.py")
  assert (c.env.id, c.system.backend) == ("brax/Reacher-POMDP", "anakin")
  assert load("rtu_reacher_pomdp.py", "env_family=envpool").env.id == "mujoco/Reacher-POMDP"
  for name in ("rtu_mujoco_pomdp.py", "rtu_reacher_pomdp.py"):
    with pytest.raises(ValueError, match=r"env_family='mjx'.*\('brax', 'envpool'\)"):
      load(name, "env_family=mjx")


def test_rtu_popgym_runs_every_task_on_the_jitted_loop_or_the_package_on_the_host():
  for task in TASKS:
    for level in LEVELS:
      c = load("rtu_popgym.py", f"task={task},level={level}")
      assert (c.env.id, c.system.backend) == (f"popgym/{task}-{level}", "anakin")
  c = load("rtu_popgym.py", "task=MineSweeper,level=hard,env_family=numpy")
  assert (c.env.id, c.system.backend) == ("popgym-numpy/MineSweeper-hard", "sync")
  with pytest.raises(ValueError, match=r"env_family='torch'.*\('jax', 'numpy'\)"):
    load("rtu_popgym.py", "env_family=torch")
  with pytest.raises(ValueError, match="LabyrinthExplore"):
    load("rtu_popgym.py", "task=Labyrinth")


def load(name, arg=None):
  spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(ROOT, "configs", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


@pytest.mark.parametrize("name,arg", CASES, ids=lambda x: str(x))
def test_config_loads_and_validates(name, arg):
  config = load(name, arg)
  experiment.validate(config)
  assert config.name and config.env.id


def test_every_config_file_is_covered():
  files = {
    f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py") and not f.startswith("_")
  }
  covered = {name for name, _ in CASES} | {"rtu_trace_conditioning.py"}  # tested in test_prediction.py
  assert files <= covered, files - covered


@pytest.mark.parametrize("name", ["rtu_mujoco_pomdp.py", "rtu_reacher_pomdp.py", "rtu_popgym.py"])
def test_rtu_paper_tbptt_cores_learn_from_sequences_of_T_steps(name):
  """The GRU / LRU T-BPTT baselines replay sequences of T steps (torso backpropagated through the
  window); the RTRL cores learn from single steps with the immediate torso gradient (the paper)."""
  for core, t, want in (
    ("gru", 8, (8, "tbptt", "unroll")),
    ("lru_tbptt", 32, (32, "tbptt", "unroll")),
    ("rtu_nonlinear", 8, (1, "rtrl", "immediate")),
    ("lru", 8, (1, "rtrl", "immediate")),
  ):
    a = load(name, f"core={core},T={t}").agent
    assert (a.sequence_length, a.core_mode, a.stem_grad) == want, core
  with pytest.raises(ValueError, match="sequence_length"):
    experiment.validate(load(name, "core=gru,T=3"))  # 3 does not divide the 2048-step rollout


def test_bad_arguments_name_the_keys():
  with pytest.raises(ValueError, match=r"config argument 'gam=Breakout'.*'game'"):
    load("irie_atari.py", "gam=Breakout")
  with pytest.raises(ValueError, match=r"config argument M='fifty': expected a int"):
    load("irie_atari.py", "M=fifty")
  with pytest.raises(ValueError, match="mode='rtlr'"):
    load("irie_atari.py", "mode=rtlr")
  with pytest.raises(ValueError, match="core='rtu'"):
    load("rtu_popgym.py", "core=rtu")


def test_invalid_combinations_fail_at_load_time_naming_the_fields():
  config = load("irie_atari.py", "mode=tbptt")
  with config.unlocked():
    config.agent.network.cell = "gru"
    config.agent.network.core_mode = "rtrl"
    config.system.backend = "sync"
  with pytest.raises(ValueError, match="system.backend='sync'"):
    experiment.validate(config)
  config.system.backend = "actors"
  with pytest.raises(ValueError, match=r"network.core_mode='rtrl' with network.cell='gru'"):
    experiment.validate(config)
  config = load("default.py")
  config.system.envs_per_actor = 5
  with pytest.raises(ValueError, match="agent.batch_size=32 must split into whole actor records"):
    experiment.validate(config)
  config = load("default.py")
  config.system.actor_device = "tpu"
  with pytest.raises(ValueError, match=r"system.actor_device='tpu': expected one of \('cpu', 'gpu'\)"):
    experiment.validate(config)
  config = load("rtu_popgym.py", "env_family=numpy")  # backend "sync": one process
  config.system.num_processes, config.system.coordinator_address = 2, "127.0.0.1:1234"
  with pytest.raises(ValueError, match="system.backend='sync' runs on one process"):
    experiment.validate(config)
  config = load("rtu_trace_conditioning.py")
  config.system.num_processes, config.system.coordinator_address = 2, "127.0.0.1:1234"
  with pytest.raises(ValueError, match="algo='prediction' runs on one process"):
    experiment.validate(config)
  config = load("rtu_trace_conditioning.py")
  config.system.actor_device = "gpu"
  with pytest.raises(ValueError, match="system.actor_device='gpu' places actor processes"):
    experiment.validate(config)


def test_reference_scores_name_real_config_groups():
  """configs/reference_scores.json (for `rtrl_rl.plot --reference`) uses the configs' run names."""
  with open(os.path.join(ROOT, "configs", "reference_scores.json")) as f:
    reference = json.load(f)
  names = {load(name, arg).name for name, arg in CASES if name.startswith("irie_")}
  assert set(reference) <= names, set(reference) - names
  assert reference["irie_atari_Qbert_rtrl_M50"] == 12484
  assert reference["irie_dmlab_rooms_watermaze_rtrl_M10"] == 40.2


def test_a_ppo_buffer_that_cannot_fit_is_refused_with_the_size_it_needs():
  """The stored carries dominate PPO's buffer (non-linear RTU, d_rec 192: ~200 KB per step); a config
  whose buffer (x2 for the update's working copies) exceeds the machine fails at validation."""
  config = load("rtu_popgym.py", "core=rtu_nonlinear")
  per_step = ppo_config.stored_carry_bytes(config.agent, *envs.describe(config.env.id)) / 2048
  assert 195_000 < per_step < 215_000  # 2N + 4DN + 4N floats, N = 192, D = 65
  experiment.validate(config)  # 400 MB: fits
  config.agent.num_envs, config.agent.num_minibatches = 1024, 32 * 1024  # 400 GB
  with pytest.raises(
    experiment.ExperimentConfigError,
    match=r"2048 x 1024 carries.*GiB.*lower "
    r"agent.rollout_length or agent.num_envs",
  ):
    experiment.validate(config)


def test_one_vocabulary_an_old_or_unknown_field_is_named():
  """Every algorithm says discount / entropy_cost / value_cost (and the seed is `config.seed`
  only); a config that sets an old name, or a field its algorithm does not have, fails naming it."""
  for algo in experiment.ALGOS:
    agent = experiment.base_config(algo).agent
    assert "discount" in agent and "gamma" not in agent and "seed" not in agent
  for algo in ("impala", "ppo"):
    agent = experiment.base_config(algo).agent
    assert {"entropy_cost", "value_cost"} <= set(agent)
  config = load("rtu_popgym.py")
  config.agent.vf_coef = 0.5
  config.agent.network_size = 3
  with pytest.raises(ValueError) as e:
    experiment.validate(config, check_env=False)
  assert "agent.vf_coef was renamed: use agent.value_cost" in str(e.value)
  assert "agent.network_size: not a field of the ppo agent's config" in str(e.value)
  config = load("default.py")
  config.agent.network.mlp_hidden = (8,)
  with pytest.raises(ValueError, match=r"agent.network.mlp_hidden: not a field"):
    experiment.validate(config, check_env=False)


def test_a_ppo_config_error_names_every_problem():
  """PPO's validation collects every problem into one error, as IMPALA's and prediction's do."""
  c = ppo_config.get_config()
  c.num_epochs, c.discount, c.policy = 0, 1.5, "beta"
  with pytest.raises(ppo_config.ConfigError) as e:
    ppo_config.validate(c)
  for words in ("num_epochs must be an int >= 1", "discount must be in [0, 1]", "policy must be one of"):
    assert words in str(e.value)
