"""Learning (issue 3, test 5) with the fully-jitted Anakin loop, and determinism (test 4).

Cue memory (rtrl_rl/envs/cue_memory.py): a cue shown at the first step must be reported L steps
later. A feed-forward agent provably cannot exceed 1/K expected return (see the module docstring);
the RTRL agents must reach `bound + margin`. PPO learns this task fastest here (a few seconds
after compilation); IMPALA solves CartPole (long).
"""

import time

import jax
import numpy as np
import pytest

from rtrl_rl import envs
from rtrl_rl.agents import ppo
from rtrl_rl.agents.impala import config as impala_config
from rtrl_rl.envs._jax import gymnax_functional
from rtrl_rl.envs.cue_memory import cue_memory_functional
from rtrl_rl.system import anakin

NUM_CUES, LENGTH = 4, 8
MARGIN = 0.45  # threshold = 1/K + margin = 0.7


def memory_config(cell, **overrides):
  c = ppo.get_config()
  c.num_envs, c.rollout_length = 32, 16
  c.num_epochs, c.num_minibatches, c.minibatch_size = 4, 4, 128
  c.network.mlp_hidden_sizes, c.network.head_hidden_sizes, c.network.hidden_size = (32,), (32,), 16
  c.network.cell = cell
  c.learning_rate = 3e-3
  c.discount = 0.9
  c.normalize_reward = False  # rewards are already in [0, 1]
  for k, v in overrides.items():  # a network field (cell, core_mode, ...) in c.network
    where = c.network if k in c.network else c
    assert k in where, f"{k} is not a field of the PPO config"
    where[k] = v
  return ppo.validate(c)


def train(runner, key, max_iterations, threshold, chunk=10):
  """Iterate until the mean episode return over a chunk of iterations reaches `threshold`."""
  state = runner.init(key)
  state, _ = runner.step(state)  # compile
  t0, returns = time.time(), []
  for _ in range(max_iterations // chunk):
    state, metrics = runner.run(state, chunk)
    returns.append(float(np.nanmean(metrics["mean_episode_return"])))
    if returns[-1] >= threshold:
      break
  return state, returns, time.time() - t0


@pytest.fixture(scope="module")
def env():
  return cue_memory_functional(num_cues=NUM_CUES, length=LENGTH)


@pytest.fixture(scope="module")
def rtu_runner(env):
  return anakin.make("ppo", env, memory_config("rtu"))


def _report(name, returns, seconds, chunk=10):
  print(
    f"\n{name}: mean return per {chunk} iterations {np.round(returns, 3).tolist()} "
    f"({seconds:.1f}s after compilation)"
  )


def test_rtrl_rtu_ppo_learns_cue_memory_beyond_the_feedforward_bound(env, rtu_runner):
  bound = env.params.feedforward_bound
  assert bound == pytest.approx(1 / NUM_CUES)
  _, returns, seconds = train(rtu_runner, jax.random.key(0), 300, bound + MARGIN)
  _report("RTRL RTU", returns, seconds)
  assert returns[-1] >= bound + MARGIN


def test_same_seed_gives_bitwise_identical_params_after_20_updates(rtu_runner):
  s1, m1 = rtu_runner.run(rtu_runner.init(jax.random.key(7)), 20)
  s2, m2 = rtu_runner.run(rtu_runner.init(jax.random.key(7)), 20)
  assert int(s1.learner.step) == 20
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
    s1.learner.params,
    s2.learner.params,
  )
  np.testing.assert_array_equal(m1["loss"], m2["loss"])
  s3, _ = rtu_runner.run(rtu_runner.init(jax.random.key(8)), 1)
  assert not all(
    np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(s3.learner.params), jax.tree.leaves(s1.learner.params))
  )


@pytest.mark.long
@pytest.mark.parametrize("gradient", ["stale", "fresh"])
def test_rtrl_elstm_ppo_learns_cue_memory_beyond_the_feedforward_bound(env, gradient):
  c = memory_config("elstm")
  c.gradient = gradient
  bound = env.params.feedforward_bound
  _, returns, seconds = train(anakin.make("ppo", env, c), jax.random.key(0), 300, bound + MARGIN)
  _report(f"RTRL eLSTM ({gradient})", returns, seconds)
  assert returns[-1] >= bound + MARGIN


@pytest.mark.long
def test_tbptt_gru_ppo_with_sequence_minibatches_learns_cue_memory(env):
  """The RTU paper's GRU T-BPTT baseline: minibatches of 16-step sequences replayed from stored
  carries (the cue is 8 steps back, inside the truncation window)."""
  c = memory_config("gru", core_mode="tbptt", sequence_length=16, stem_grad="unroll")
  bound = env.params.feedforward_bound
  _, returns, seconds = train(anakin.make("ppo", env, c), jax.random.key(0), 300, bound + MARGIN)
  _report("T-BPTT(16) GRU", returns, seconds)
  assert returns[-1] >= bound + MARGIN


@pytest.mark.long
def test_feedforward_ppo_stays_at_the_bound_on_cue_memory(env):
  bound = env.params.feedforward_bound
  _, returns, seconds = train(anakin.make("ppo", env, memory_config(None)), jax.random.key(0), 200, 2.0)
  _report("feed-forward", returns, seconds)
  assert np.mean(returns[-5:]) <= bound + 0.1


@pytest.mark.long
def test_feedforward_impala_solves_cartpole():
  env = gymnax_functional("gymnax/CartPole-v1", "CartPole-v1")
  c = impala_config.get_config()
  c.batch_size, c.unroll_length = 32, 20
  c.lr_schedule, c.learning_rate, c.reduction = "constant", 1e-3, "mean"
  c.network.torso, c.network.mlp_hidden_sizes, c.network.cell = "mlp", (64, 64), None
  agent = impala_config.make_agent(c, env.observation_space, env.action_space)
  runner = anakin.make("impala", env, c, agent=agent)
  _, returns, seconds = train(runner, jax.random.key(0), 10000, 475.0, chunk=100)
  _report("IMPALA feed-forward CartPole-v1", returns, seconds, chunk=100)
  assert returns[-1] >= 475.0


# -- POPGym in JAX: RepeatPrevious-easy ----------------------------------------------------------
# The agent sees the suit of the card just dealt and must name the suit of the card shown 3
# observations earlier (k = 4), over the 48 judged steps of a 52-card episode (reward +-1/48 each:
# returns in [-1, 1]). A feed-forward agent acts on the current suit alone (its other inputs, the
# first flag and the last reward, say nothing about the judged card beyond the faint correlations of
# dealing without replacement): its best guess is a suit other than the current one, right with
# probability 13/51, so its expected return is at most 2 * 13/51 - 1 = -0.49. An agent with memory
# can reach 1.
REPEAT_PREVIOUS_FF_BOUND = 2 * 13 / 51 - 1
REPEAT_PREVIOUS_THRESHOLD = 0.5


def repeat_previous_config(cell):
  c = memory_config(
    cell,
    rollout_length=32,
    num_minibatches=4,
    minibatch_size=256,
    hidden_size=32,
    mlp_hidden_sizes=(32,),
    head_hidden_sizes=(32,),
  )
  c.network.cell_options = {"nonlinear": False} if cell == "rtu" else {}
  return ppo.validate(c)


def test_rtrl_rtu_ppo_learns_popgym_repeat_previous_beyond_the_feedforward_bound():
  env = envs.make_functional("popgym/RepeatPrevious-easy")
  runner = anakin.make("ppo", env, repeat_previous_config("rtu"))
  _, returns, seconds = train(runner, jax.random.key(0), 300, REPEAT_PREVIOUS_THRESHOLD)
  _report("RTRL RTU on popgym/RepeatPrevious-easy", returns, seconds)
  assert returns[-1] >= REPEAT_PREVIOUS_THRESHOLD > REPEAT_PREVIOUS_FF_BOUND + 0.9


@pytest.mark.long
def test_feedforward_ppo_stays_at_the_bound_on_popgym_repeat_previous():
  env = envs.make_functional("popgym/RepeatPrevious-easy")
  _, returns, seconds = train(
    anakin.make("ppo", env, repeat_previous_config(None)), jax.random.key(0), 200, 2.0
  )
  _report("feed-forward on popgym/RepeatPrevious-easy", returns, seconds)
  assert np.mean(returns[-5:]) <= REPEAT_PREVIOUS_FF_BOUND + 0.05
