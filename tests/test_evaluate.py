"""rtrl_rl.evaluate on tiny runs: the CLI writes eval.json with N finite episodes per repeat, greedy
evaluation is deterministic, and PPO (jitted-loop) checkpoints evaluate with their PPO agent."""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from rtrl_rl import envs, evaluate, experiment
from rtrl_rl.agents.ppo.algorithm import SavedHostLoop
from rtrl_rl.io.checkpoint import Checkpointer, find_subtree
from rtrl_rl.system import anakin
from tests.test_cli import run_cli
from tests.test_launch import ROOT, default_sweep_root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A tiny finished run of configs/default.py (the default sweep; reused when test_launch made it)."""
  root = default_sweep_root(tmp_path_factory)
  path = os.path.join(root, "default", "default_elstm_seed0")
  assert os.path.exists(os.path.join(path, "summary.json"))
  return path


def test_cli_writes_eval_json(run_dir):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "rtrl_rl.evaluate",
      f"--run_dir={run_dir}",
      "--episodes=6",
      "--repeats=2",
      "--greedy",
      "--num_envs=4",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stdout + out.stderr
  assert "repeat 1: mean return" in out.stdout and "overall:" in out.stdout
  record = json.load(open(os.path.join(run_dir, "eval.json")))
  assert record["greedy"] and record["episodes"] == 6 and record["repeats"] == 2
  assert record["checkpoint_step"] == json.load(open(os.path.join(run_dir, "summary.json")))["updates"]
  for rep in record["per_repeat"]:
    assert len(rep["returns"]) == 6 and all(math.isfinite(r) and r > 0 for r in rep["returns"])
  assert math.isfinite(record["mean"]) and math.isfinite(record["std"])


def test_greedy_is_deterministic_and_sampling_differs(run_dir):
  kw = dict(episodes=5, repeats=1, num_envs=5, seed=7, log=lambda *_: None)
  a = evaluate.evaluate(run_dir, greedy=True, **kw)
  b = evaluate.evaluate(run_dir, greedy=True, **kw)
  assert a["per_repeat"][0]["returns"] == b["per_repeat"][0]["returns"]
  assert a["per_repeat"][0]["lengths"] == b["per_repeat"][0]["lengths"]
  with pytest.raises(evaluate.EvaluationError, match="procgen"):
    evaluate.evaluate(run_dir, split="test", **kw)


def test_a_run_saved_before_the_renames_evaluates_as_it_did(run_dir, tmp_path):
  """A run directory written before issue 17's renames (config.json with IMPALA's
  agent.baseline_cost and the seed stored again as agent.seed) evaluates, to the same returns."""
  old = str(tmp_path / "old_run")
  shutil.copytree(run_dir, old)
  path = os.path.join(old, "config.json")
  config = json.load(open(path))
  config["agent"]["baseline_cost"] = config["agent"].pop("value_cost")
  config["agent"]["seed"] = config["seed"]
  json.dump(config, open(path, "w"))
  kw = dict(episodes=3, repeats=1, num_envs=3, seed=5, greedy=True, log=lambda *_: None)
  assert (
    evaluate.evaluate(old, **kw)["per_repeat"][0]["returns"]
    == evaluate.evaluate(run_dir, **kw)["per_repeat"][0]["returns"]
  )


def _ppo_run(run: str, layout: str = "anakin"):
  """A run directory of the jitted PPO loop with random parameters; returns its checkpointed state
  (an AnakinState: learner params + normaliser)."""
  c = experiment.base_config("ppo")
  c.env.id = "gymnax/CartPole-v1"
  a = c.agent
  a.num_envs, a.rollout_length, a.num_minibatches, a.minibatch_size = 2, 8, 1, 16
  a.network.cell, a.network.hidden_size, a.network.cell_options = "lru", 8, {}
  a.network.mlp_hidden_sizes, a.network.head_hidden_sizes = (8,), (8,)
  os.makedirs(run)
  with open(os.path.join(run, "config.json"), "w") as f:
    json.dump(json.loads(c.to_json_best_effort()), f)
  loop = anakin.make("ppo", envs.make_functional(c.env.id), a)
  shapes = jax.eval_shape(loop.init, jax.random.PRNGKey(0))  # the checkpointed state's structure
  rng = np.random.default_rng(0)
  state = jax.tree.map(
    lambda s: (
      (rng.normal(size=s.shape) * 0.3).astype(s.dtype)
      if np.issubdtype(s.dtype, np.floating)
      else np.zeros(s.shape, s.dtype)
    ),
    shapes,
  )
  state = state._replace(
    actor=state.actor._replace(
      norm=state.actor.norm._replace(
        obs=state.actor.norm.obs._replace(
          mean=np.full(shapes.actor.norm.obs.mean.shape, 0.5, np.float32),
          var=np.ones(shapes.actor.norm.obs.var.shape, np.float32),
        )
      )
    )
  )
  saved = state if layout == "anakin" else SavedHostLoop(learner=state.learner, norm=state.actor.norm)
  ckpt = Checkpointer(os.path.join(run, "checkpoints"))
  ckpt.save(3, saved, {"frames": 48, "updates": 3}, wait=True)
  ckpt.close()
  return state


@pytest.mark.parametrize("layout", ["anakin", "sync"])
def test_ppo_checkpoint_evaluates_with_ppo_agent(tmp_path, layout):
  """Checkpoints of both PPO loops (the jitted loop's whole state; the host loop's learner and
  statistics) evaluate with the PPO agent, the parameters (not the optimiser's moments) and the
  observation statistics found in them."""
  run = str(tmp_path / "ppo_run")
  state = _ppo_run(run, layout)
  flat = evaluate.load_checkpoint(run)[1]
  params = find_subtree(flat, state.learner.params, "params")
  assert all(
    np.array_equal(x, y) for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(state.learner.params))
  )
  np.testing.assert_allclose(find_subtree(flat, state.actor.norm.obs, "norm.obs").mean, 0.5)
  rec = evaluate.evaluate(run, episodes=3, repeats=2, greedy=True, num_envs=3, log=lambda *_: None)
  assert rec["algo"] == "ppo" and rec["checkpoint_step"] == 3 and rec["frames"] == 48
  assert [len(r["returns"]) for r in rec["per_repeat"]] == [3, 3]
  assert all(math.isfinite(x) and x >= 1 for r in rec["per_repeat"] for x in r["returns"])


def test_read_only_run_dir_is_refused_before_evaluating_and_out_writes_elsewhere(tmp_path):
  """A run directory this user cannot write: no scores then a traceback, but one message naming --out
  before any episode; with --out the evaluation reads the run directory only."""
  run = str(tmp_path / "ppo_run")
  _ppo_run(run)
  os.chmod(run, 0o555)
  try:
    args = [f"--run_dir={run}", "--episodes=2", "--num_envs=2", "--greedy"]
    out = run_cli("rtrl_rl.evaluate", *args, honour_permissions=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert "--out" in out.stderr and "read-only" in out.stderr and "repeat 0" not in out.stdout
    elsewhere = str(tmp_path / "eval.json")
    out = run_cli("rtrl_rl.evaluate", *args, f"--out={elsewhere}", honour_permissions=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.load(open(elsewhere))["episodes"] == 2 and not os.path.exists(os.path.join(run, "eval.json"))
  finally:
    os.chmod(run, 0o755)


def test_episodes_unfinished_within_max_steps_fail_with_exit_1(tmp_path):
  run = str(tmp_path / "ppo_run")
  _ppo_run(run)
  out = run_cli("rtrl_rl.evaluate", f"--run_dir={run}", "--episodes=2", "--num_envs=2", "--max_steps=4")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
  assert "error: 0/2 episodes after 4 env steps (--max_steps=4)" in out.stderr
