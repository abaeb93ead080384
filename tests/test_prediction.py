"""Online TD(lambda) prediction learner (rtrl_rl/agents/prediction): exactness and configuration.

Gradients are checked in float64 against jax.grad through cells.unroll(mode="bptt") over the whole
history, with the step size 0 so that the parameters are the same at every step.
"""

import functools
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rtrl_rl import cells, envs, experiment
from rtrl_rl.agents import prediction as P
from rtrl_rl.agents.prediction import config as config_lib
from rtrl_rl.agents.prediction.algorithm import ALGORITHM as PREDICTION
from rtrl_rl.agents.registry import ConfigError
from rtrl_rl.envs import trace_conditioning as tc
from rtrl_rl.system import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = 4  # 2 + 2 distractors
GAMMA = 0.9


@functools.lru_cache(maxsize=None)
def _raw_stream(steps, seed):
  fenv = envs.make_functional("jax/trace-conditioning", isi=(2, 4), iti=(4, 7), num_distractors=2)
  s = P.make_stream(fenv, jax.random.key(seed), steps)
  return np.asarray(s.obs), np.asarray(s.cumulant)


def _stream(steps, seed=3, dtype=jnp.float64):
  obs, cum = _raw_stream(steps, seed)
  return P.Stream(jnp.asarray(obs, dtype), jnp.asarray(cum, dtype))


def _config(cell="rtu", opts=None, core_mode="rtrl", lam=0.0, lr=0.0, T=10, hidden=3):
  c = P.get_config()
  n = c.network
  n.cell, n.core_mode, n.hidden_size, c.truncation = cell, core_mode, hidden, T
  n.cell_options = ml_collections.ConfigDict(opts or {})
  c.td_lambda, c.learning_rate, c.optimizer = lam, lr, "sgd"
  c.head_init, c.dtype, c.discount = "normal", "float64", GAMMA
  return c


def _bptt_value(learner, params, obs):
  """v of the last observation, by BPTT through the whole history from a zero carry."""
  cell = learner.cell
  resets = jnp.zeros((obs.shape[0], 1), bool).at[0, 0].set(True)
  ys, _ = cells.unroll(
    cell, params["core"], cell.initial_carry(1, jnp.float64, traces=False), obs[:, None], resets, mode="bptt"
  )
  return ys[-1, 0] @ params["head"]["w"] + params["head"]["b"]


def _max_err(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)))


RTRL_CASES = [("rtu", {"nonlinear": True, "activation": "tanh"}), ("lru", {})]


@pytest.mark.parametrize("cell,opts", RTRL_CASES, ids=["rtu_nonlinear", "lru"])
def test_td0_rtrl_step_equals_bptt_gradient_and_sgd_update(cell, opts):
  with jax.enable_x64(True):
    s = 17
    stream = _stream(s + 1)
    learner = P.make_learner(_config(cell, opts, lam=0.0, lr=0.0), D)
    state, m = learner.run(learner.init(jax.random.key(0)), P.Stream(stream.obs[:s], stream.cumulant[:s]))
    # lambda = 0: the eligibility is the gradient of the last value, computed online by RTRL
    ref_v, ref_g = jax.value_and_grad(_bptt_value, argnums=1)(learner, state.params, stream.obs[:s])
    assert abs(float(m["prediction"][-1] - ref_v)) < 1e-12
    assert _max_err(state.eligibility, ref_g) < 1e-10
    assert min(float(jnp.abs(g).max()) for g in jax.tree.leaves(state.eligibility["core"])) > 0
    # one more step with SGD (alpha): theta' = theta + alpha * delta * grad v_{s-1}
    alpha = 0.05
    stepper = P.make_learner(_config(cell, opts, lam=0.0, lr=alpha), D)
    new, m1 = stepper.run(state, P.Stream(stream.obs[s:], stream.cumulant[s:]))
    v_next = _bptt_value(learner, state.params, stream.obs)
    delta = stream.cumulant[s] + GAMMA * v_next - ref_v
    assert abs(float(m1["td_error"][0] - delta)) < 1e-10
    want = jax.tree.map(lambda p, g: p + alpha * delta * g, state.params, ref_g)
    assert _max_err(new.params, want) < 1e-10


def test_eligibility_trace_recursion_lambda():
  """lambda > 0 (linear RTU): e_t = gamma lambda e_{t-1} + grad v_t, with each grad v_t by BPTT."""
  with jax.enable_x64(True):
    s, lam = 6, 0.7
    stream = _stream(s)
    cfg = _config("rtu", {"nonlinear": False, "activation": "relu"}, lam=lam)
    learner = P.make_learner(cfg, D)
    state, _ = learner.run(learner.init(jax.random.key(1)), stream)
    c = learner.cell
    resets = jnp.zeros((s, 1), bool).at[0, 0].set(True)

    @jax.jit
    @functools.partial(jax.grad, argnums=0)
    def grad_v(params, j):  # grad of v_j (the value of obs j) by BPTT over obs 0..j
      ys, _ = cells.unroll(
        c,
        params["core"],
        c.initial_carry(1, jnp.float64, traces=False),
        stream.obs[:, None],
        resets,
        mode="bptt",
      )
      return ys[j, 0] @ params["head"]["w"] + params["head"]["b"]

    grads = [grad_v(state.params, j) for j in range(s)]
    z = jax.tree.map(jnp.zeros_like, state.params)
    for g in grads:  # by hand
      z = jax.tree.map(lambda a, b: GAMMA * lam * a + b, z, g)
    assert _max_err(state.eligibility, z) < 1e-10
    # and it really differs from lambda = 0 (the trace carries the past gradients)
    assert _max_err(state.eligibility, grads[-1]) > 1e-3


@pytest.mark.parametrize("cell", ["gru"])
def test_tbptt_truncates(cell):
  with jax.enable_x64(True):
    s, t = 9, 3
    stream = _stream(s)
    full = jax.grad(_bptt_value, argnums=1)
    grads = {}
    for big_t in (t, s):
      learner = P.make_learner(_config(cell, core_mode="tbptt", T=big_t), D)
      state, m = learner.run(learner.init(jax.random.key(2)), stream)
      grads[big_t] = (learner, state, m)
    learner, state, m = grads[s]
    assert _max_err(state.eligibility, full(learner, state.params, stream.obs)) < 1e-10  # T >= history
    learner, state, m = grads[t]
    ref_full = full(learner, state.params, stream.obs)
    assert _max_err(state.eligibility, ref_full) > 1e-4  # T < history
    # the truncated reference: the state at s - T is a constant, backprop through the last T steps
    c = learner.cell
    resets = jnp.zeros((s, 1), bool).at[0, 0].set(True)
    _, start = cells.unroll(
      c,
      state.params["core"],
      c.initial_carry(1, jnp.float64, traces=False),
      stream.obs[: s - t, None],
      resets[: s - t],
      mode="tbptt",
    )

    def v_trunc(params):
      ys, _ = cells.unroll(c, params["core"], start, stream.obs[s - t :, None], resets[s - t :], mode="tbptt")
      return ys[-1, 0] @ params["head"]["w"] + params["head"]["b"]

    v, g = jax.value_and_grad(v_trunc)(state.params)
    assert abs(float(m["prediction"][-1] - v)) < 1e-12  # the forward value is the full-history one
    assert _max_err(state.eligibility, g) < 1e-10


@pytest.mark.parametrize("cell,core_mode", [("rtu", "rtrl"), ("lru", "tbptt")])
def test_chunks_chain_exactly_and_learning_changes_params(cell, core_mode):
  stream = _stream(40, dtype=jnp.float32)
  opts = {"nonlinear": True} if cell == "rtu" else {}
  cfg = _config(cell, opts, core_mode=core_mode, lam=0.9, lr=1e-2, T=4)
  cfg.dtype, cfg.optimizer = "float32", "adam"
  learner = P.make_learner(cfg, D)
  st0 = learner.init(jax.random.key(0))
  half, m1 = learner.run(st0, P.Stream(stream.obs[:20], stream.cumulant[:20]))
  half, m2 = learner.run(half, P.Stream(stream.obs[20:], stream.cumulant[20:]))
  # two chunks of 20 equal 40 chunks of one step: the state carries everything
  st, one = st0, []
  for i in range(40):
    st, m = learner.run(st, P.Stream(stream.obs[i : i + 1], stream.cumulant[i : i + 1]))
    one.append(m["prediction"])
  np.testing.assert_allclose(
    np.concatenate(one), np.concatenate([m1["prediction"], m2["prediction"]]), rtol=1e-5, atol=1e-6
  )
  assert _max_err(st.params, half.params) < 1e-5
  assert _max_err(half.params, st0.params) > 1e-4
  assert int(half.t) == 40


def test_msre_matches_environment_measure():
  c = jnp.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
  p = jnp.linspace(0.0, 1.0, 8)
  g = np.zeros(7)
  for i in range(7):  # G_i = sum_k gamma^k c_{i+1+k}, truncated at the stream's end
    g[i] = sum(GAMMA**k * float(c[i + 1 + k]) for k in range(7 - i))
  want = np.mean((np.asarray(p[:-1]) - g) ** 2)
  assert abs(float(P.msre(p, c, GAMMA)) - want) < 1e-6
  assert abs(float(P.msre(p, c, GAMMA)) - float(tc.msre(p[:-1], c[1:], GAMMA))) < 1e-7
  assert abs(float(P.msre(p, c, GAMMA, last=3)) - np.mean((np.asarray(p[4:7]) - g[4:]) ** 2)) < 1e-6
  r = P.msre_report(p, c, GAMMA, 7)
  assert abs(r["msre_zero"] - np.mean(g**2)) < 1e-6 and abs(r["msre_const"] - np.var(g)) < 1e-6


# -- configuration ------------------------------------------------------------------------------------
def _experiment_config(arg):
  return experiment.load_config(f"configs/rtu_trace_conditioning.py:{arg}")


def test_validate_names_the_fields():
  c = P.get_config()
  c.network.cell, c.network.core_mode = "gru", "rtrl"
  with pytest.raises(ConfigError, match=r"network.core_mode='rtrl' with network.cell='gru'.*tbptt"):
    P.validate(c)
  c = P.get_config()
  c.td_lambda, c.learning_rate, c.optimizer, c.network.cell = 1.5, -1.0, "rmsprop", "transformer"
  with pytest.raises(ConfigError) as e:
    P.validate(c)
  for field in ("td_lambda", "learning_rate", "optimizer", "network.cell"):
    assert field in str(e.value)
  assert len(e.value.problems) == 4  # every problem at once
  c = P.get_config()
  c.network.cell, c.network.core_mode, c.truncation = None, "tbptt", 0
  with pytest.raises(ConfigError, match="network.cell=None"):
    P.validate(c)
  c = P.get_config()
  c.total_env_steps, c.msre_window = 100, 100
  with pytest.raises(ConfigError, match="msre_window=100 must be <= total_env_steps - 1"):
    P.validate(c)
  c = P.get_config()
  c.network.cell_options = ml_collections.ConfigDict({"activation": "swish"})
  with pytest.raises(ConfigError, match="network.cell_options"):
    P.validate(c)
  P.validate(P.get_config())


VARIANTS = [
  "cell=rtu_nonlinear",
  "cell=rtu_linear",
  "cell=lru",
  "cell=gru,T=10",
  "cell=lru_tbptt,T=10",
  "cell=lstm,T=5",
  "cell=ff",
  "",
]


def test_experiment_config_variants_load_validate_and_match_budgets():
  mod = experiment.config_module("configs/rtu_trace_conditioning.py")
  budgets = {}
  for v in VARIANTS:
    c = mod.get_config(v)
    config_lib.validate_experiment(c)
    a = c.agent
    assert c.algo == "prediction" and a.discount == c.env.options.gamma == 0.9
    net = a.network
    n = config_lib.param_count(net.cell, net.hidden_size, 12, net.cell_options.to_dict())
    assert (
      n
      <= mod.DEFAULT_BUDGET
      < config_lib.param_count(net.cell, net.hidden_size + 1, 12, net.cell_options.to_dict())
    )
    budgets[v] = n
  assert mod.get_config("cell=gru,T=7").agent.truncation == 7
  assert mod.get_config("cell=gru,T=7").agent.network.core_mode == "tbptt"
  assert mod.get_config("cell=lru").agent.network.core_mode == "rtrl"
  assert mod.get_config("cell=rtu_linear").agent.network.cell_options.nonlinear is False
  assert mod.get_config("cell=rtu_nonlinear,hidden=8").agent.network.hidden_size == 8
  assert mod.get_config("steps=5000").agent.total_env_steps == 5000
  assert abs(mod.get_config("isi=3-5").agent.discount - 0.75) < 1e-9
  with pytest.raises(ValueError, match="T=10 is the truncation"):
    mod.get_config("cell=rtu_nonlinear,T=10")
  with pytest.raises(ValueError, match="unknown key"):
    mod.get_config("cell=gru,trunc=10")
  with pytest.raises(ValueError, match="expected one of"):
    mod.get_config("cell=transformer")
  c = mod.get_config("cell=gru,T=10")
  c.agent.discount = 0.99
  with pytest.raises(ConfigError, match=r"agent.discount=0.99 differs from env.options.gamma"):
    config_lib.validate_experiment(c)
  c = mod.get_config("cell=gru,T=10")
  c.agent.network.core_mode = "rtrl"
  c.env.id = "atari/Pong"
  with pytest.raises(ConfigError) as e:
    config_lib.validate_experiment(c)
  assert "agent.network.core_mode='rtrl' with network.cell='gru'" in str(e.value)
  assert "env.id" in str(e.value)


def test_the_training_cli_runs_a_prediction_experiment_and_reports_its_msre(tmp_path):
  run_dir = tmp_path / "run"
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "rtrl_rl.train",
      "--config=configs/rtu_trace_conditioning.py:cell=rtu_nonlinear,steps=600,chunk=300,window=200,seeds=2,"
      "hidden=4",
      f"--run_dir={run_dir}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads(out.stdout.strip().splitlines()[-1].split(": ", 1)[1])  # "run finished in ...: {...}"
  assert np.isfinite(summary["msre"]) and summary["num_seeds"] == 2
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  last, final = records[-2:]
  assert (last["frames"], last["updates"]) == (600, 2) and np.isfinite(last["chunk_msre"])
  assert len(final["final_msre_per_seed"]) == 2 and np.isfinite(final["final_msre"])
  assert json.loads((run_dir / "config.json").read_text())["algo"] == "prediction"


def test_interrupted_run_resumes_from_its_checkpoint_and_equals_an_uninterrupted_run(tmp_path, monkeypatch):
  """A run stopped by SIGTERM after 2 of 4 chunks leaves a checkpoint; the rerun on the same
  directory continues the same streams and ends with the uninterrupted run's MSRE per seed."""
  c = _experiment_config("cell=rtu_nonlinear,steps=800,chunk=200,window=300,seeds=2,hidden=4")
  full = P.run_experiment(c)
  make_iterations = PREDICTION.iterations

  def sigterm_after_two_chunks(config):
    it, chunks = make_iterations(config), [0]

    def step(state):
      chunks[0] += 1
      if chunks[0] == 2:
        os.kill(os.getpid(), signal.SIGTERM)  # the trainer stops before the next chunk
      return it.step(state)

    return it._replace(step=step)

  run_dir = str(tmp_path / "run")
  monkeypatch.setattr(PREDICTION, "iterations", sigterm_after_two_chunks)
  first = trainer.run(c, run_dir)
  assert first["stopped_early"] and (first["steps"], first["updates"]) == (400, 2)
  monkeypatch.undo()
  resumed = trainer.run(c, run_dir)
  assert not resumed["stopped_early"] and (resumed["steps"], resumed["updates"]) == (800, 4)
  np.testing.assert_allclose(resumed["msre_per_seed"], full["msre_per_seed"], rtol=1e-6)
  assert full["msre_per_seed"][0] != full["msre_per_seed"][1]  # the seeds' streams differ
