"""Every experiment config loads and validates; bad arguments fail at load time, naming them."""

import json
import os
import pickle

import pytest

from rtrl_rl import envs, experiment
from rtrl_rl.agents.impala import config as impala_config
from rtrl_rl.agents.ppo import config as ppo_config
from rtrl_rl.agents.prediction import config as prediction_config
from rtrl_rl.envs._popgym import LEVELS, TASKS
from rtrl_rl.io import run_dir

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
  return experiment.load_config(f"configs/{name}" + (f":{arg}" if arg else ""))


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
    assert (a.sequence_length, a.network.core_mode, a.network.stem_grad) == want, core
  with pytest.raises(ValueError, match="sequence_length"):
    experiment.validate(load(name, "core=gru,T=3"))  # 3 does not divide the 2048-step rollout


@pytest.mark.parametrize("name", ["rtu_mujoco_pomdp.py", "rtu_reacher_pomdp.py", "rtu_popgym.py"])
def test_rtu_paper_configs_take_fresh_gradients_and_envs_sharing_the_paper_buffer(name):
  """`gradient=fresh` names its runs apart (their seeds group apart from the stale ones);
  `num_envs=n` keeps the paper's 2048-step buffer and its 32 minibatches of 64 steps."""
  stale, fresh = load(name, "core=rtu_linear"), load(name, "core=rtu_linear,gradient=fresh")
  assert (stale.agent.gradient, fresh.agent.gradient) == ("stale", "fresh")
  assert fresh.name == stale.name + "_fresh"
  config = load(name, "core=gru,num_envs=16")
  experiment.validate(config)
  a = config.agent
  assert (a.num_envs, a.rollout_length, a.num_minibatches, a.minibatch_size) == (16, 128, 32, 64)
  assert a.sequence_length == 16  # T-BPTT windows of T=16 fit the 128-step rollout
  with pytest.raises(ValueError, match="num_envs=3: expected a divisor of the paper's 2048-step buffer"):
    load(name, "num_envs=3")
  with pytest.raises(ValueError, match=r"gradient='recent'.*\('stale', 'fresh'\)"):
    load(name, "gradient=recent")


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
  config = load("default.py")
  config.system.log_every_updates = -1
  with pytest.raises(
    ValueError, match=r"system.log_every_updates=-1 must be an int >= 0 \(0: every log_every_s\)"
  ):
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
    experiment.ConfigError,
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
  with pytest.raises(experiment.ConfigError) as e:
    ppo_config.validate(c)
  for words in ("num_epochs must be an int >= 1", "discount must be in [0, 1]", "policy must be one of"):
    assert words in str(e.value)
  assert len(e.value.problems) == 3 and str(e.value).startswith("invalid PPO config:\n  ")


# Every algorithm's network under agent.network, with IMPALA's names (issue 17).
NETWORK_FIELDS = {
  "impala": {"cell", "cell_options", "hidden_size", "core_mode", "stem_grad", "stem_checkpoint"},
  "ppo": {"cell", "cell_options", "hidden_size", "core_mode", "stem_grad", "stem_checkpoint"},
  "prediction": {"cell", "cell_options", "hidden_size", "core_mode"},
}
NETWORK_FIELDS["impala"] |= {
  "torso",
  "mlp_hidden_sizes",
  "mlp_activation",
  "use_last_action",
  "head_hidden_sizes",
}
NETWORK_FIELDS["ppo"] |= {
  "torso",
  "mlp_hidden_sizes",
  "mlp_activation",
  "use_last_action",
  "head_hidden_sizes",
}


def test_one_vocabulary_the_network_is_agent_network_with_one_name_per_fact():
  """The same network fact has one name in every algorithm (IMPALA's), under `agent.network`; no
  old name is left at the agent level; the run's length is `agent.total_env_steps` everywhere."""
  for algo, fields in NETWORK_FIELDS.items():
    agent = experiment.base_config(algo).agent
    assert fields <= set(agent.network), (algo, fields - set(agent.network))
    assert "total_env_steps" in agent, algo
    old = {path.split(".", 1)[1] for path in experiment.RENAMED_FIELDS if path.startswith("agent.")}
    assert not old & set(agent), (algo, old & set(agent))
  for new in experiment.RENAMED_FIELDS.values():  # every new name is a field of some algorithm
    assert any(_has(experiment.base_config(a), new) for a in experiment.ALGOS), new
  assert experiment.base_config("ppo").agent.network.torso == "mlp"


def _has(config, path):
  for key in path.split("."):
    if key not in config:
      return False
    config = config[key]
  return True


@pytest.mark.parametrize(
  "name,old,new",
  [
    ("rtu_popgym.py", "torso_sizes", "agent.network.mlp_hidden_sizes"),
    ("rtu_popgym.py", "head_sizes", "agent.network.head_hidden_sizes"),
    ("rtu_popgym.py", "activation", "agent.network.mlp_activation"),
    ("rtu_popgym.py", "cell", "agent.network.cell"),
    ("rtu_popgym.py", "hidden_size", "agent.network.hidden_size"),
    ("rtu_popgym.py", "core_mode", "agent.network.core_mode"),
    ("rtu_popgym.py", "stem_grad", "agent.network.stem_grad"),
    ("rtu_popgym.py", "stem_checkpoint", "agent.network.stem_checkpoint"),
    ("rtu_popgym.py", "use_last_action", "agent.network.use_last_action"),
    ("rtu_popgym.py", "cell_options", "agent.network.cell_options"),
    ("rtu_trace_conditioning.py", "mode", "agent.network.core_mode"),
    ("rtu_trace_conditioning.py", "steps", "agent.total_env_steps"),
    ("rtu_trace_conditioning.py", "cell", "agent.network.cell"),
    ("default.py", "hidden_size", "agent.network.hidden_size"),
  ],
)
def test_one_vocabulary_an_old_network_field_in_a_config_file_names_the_new_one(name, old, new):
  config = load(name)
  config.agent[old] = 1
  with pytest.raises(experiment.ConfigError) as e:
    experiment.validate(config, check_env=False)
  assert f"config field agent.{old} was renamed: use {new}" in str(e.value)


def test_one_vocabulary_renamed_field_error_names_the_new_path():
  assert experiment.renamed_field_error(["seed", "agent.torso_sizes"]) == (
    "config field agent.torso_sizes was renamed: use agent.network.mlp_hidden_sizes"
  )
  assert experiment.renamed_field_error(["agent.cell_options.nonlinear"]) == (
    "config field agent.cell_options.nonlinear was renamed: use agent.network.cell_options.nonlinear"
  )
  assert experiment.renamed_field_error(["agent.steps"]) == (
    "config field agent.steps was renamed: use agent.total_env_steps"
  )
  assert experiment.renamed_field_error(["agent.stepsize", "agent.network.cell"]) is None


def test_a_saved_config_from_before_the_renames_is_upgraded_to_the_new_paths():
  """`config.json` of a run written before issue 17 (IMPALA's baseline_cost, the seed in agent/,
  PPO's flat network fields): every old path moves to its new one, nested fields with it."""
  saved = {
    "seed": 3,
    "agent": {
      "seed": 3,
      "baseline_cost": 0.25,
      "torso_sizes": [64, 64],
      "cell_options": {"nonlinear": True},
      "network": {"cell": "rtu"},
    },
  }
  up = experiment.upgrade_saved_config(saved)
  assert up == {
    "seed": 3,
    "agent": {
      "value_cost": 0.25,
      "network": {"cell": "rtu", "mlp_hidden_sizes": [64, 64], "cell_options": {"nonlinear": True}},
    },
  }
  assert saved["agent"]["baseline_cost"] == 0.25  # the input is left as it was
  # both names present (a config saved while a rename was half-way): the new one wins
  both = experiment.upgrade_saved_config({"agent": {"vf_coef": 1.0, "value_cost": 0.5}})
  assert both == {"agent": {"value_cost": 0.5}}
  # every upgraded path is one today's config has
  flat = run_dir.flat_config(experiment.upgrade_saved_config(saved))
  assert experiment.renamed_field_error(list(flat)) is None


def test_one_config_error_for_every_algorithm():
  """One error type, `experiment.ConfigError` (a ValueError), for the experiment's and every
  agent's config; it lists every problem (`problems`) and survives a pickle (from a process)."""
  bad = {
    "impala": (impala_config, {"network": {"cell": "rnn"}, "batch_size": 0}),
    "ppo": (ppo_config, {"network": {"cell": "rnn"}, "num_epochs": 0}),
    "prediction": (prediction_config, {"network": {"cell": "rnn"}, "chunk_steps": 0}),
  }
  for algo, (module, changes) in bad.items():
    c = module.get_config()
    c.update(changes)
    with pytest.raises(experiment.ConfigError) as e:
      module.validate(c)
    assert isinstance(e.value, ValueError) and len(e.value.problems) == 2, (algo, e.value.problems)
    assert "network.cell='rnn'" in str(e.value) or "network.cell must be one of" in str(e.value), algo
    again = pickle.loads(pickle.dumps(e.value))
    assert type(again) is experiment.ConfigError and str(again) == str(e.value)
