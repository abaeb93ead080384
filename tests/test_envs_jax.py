"""The JAX families: gymnax adapter and trace conditioning (functional and numpy forms)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl import envs
from rtrl_rl.envs import trace_conditioning as tc


def _scan(fenv, key, actions):
  """Roll a vmapped FunctionalEnv; actions [T, B]. Returns reset obs and TimeSteps [T, B]."""
  b = actions.shape[1]
  state, obs0 = jax.vmap(fenv.reset)(jax.random.split(key, b))

  def body(carry, a):
    state, k = carry
    k, sub = jax.random.split(k)
    state, ts = jax.vmap(fenv.step)(jax.random.split(sub, b), state, a)
    return (state, k), ts

  _, ts = jax.lax.scan(body, (state, key), actions)
  return obs0, ts


# ----------------------------------------------------------------------------- gymnax


def test_gymnax_functional_first_flags_and_terminal_obs():
  fenv = envs.make_functional("gymnax/CartPole-v1")
  acts = jnp.zeros((60, 3), jnp.int32)  # constant push: terminates every ~10 steps
  obs0, ts = jax.jit(_scan, static_argnums=0)(fenv, jax.random.PRNGKey(0), acts)
  ts = jax.device_get(ts)
  assert obs0.shape == (3, 4) and ts.obs.shape == (60, 3, 4) and ts.reward.dtype == np.float32
  assert not ts.first[0].any()
  np.testing.assert_array_equal(ts.first[1:], ts.terminated[:-1] | ts.truncated[:-1])
  assert ts.terminated.sum(0).min() >= 3 and not ts.truncated.any()
  # the terminal observation is kept (gymnax alone would return the reset obs here)
  fallen = (np.abs(ts.obs[..., 2]) > 0.2094) | (np.abs(ts.obs[..., 0]) > 2.4)
  np.testing.assert_array_equal(fallen, ts.terminated)
  np.testing.assert_array_equal(ts.reward, np.where(ts.first, 0.0, 1.0))
  assert (np.abs(ts.obs[ts.first]) <= 0.05).all()


def test_gymnax_truncation_and_numpy_form():
  env = envs.make("gymnax/CartPole-v1", num_envs=2, seed=1, max_episode_steps=5)
  assert env.observation_space.shape == (4,) and env.action_space.num_values == 2
  out = [env.reset()] + [env.step(np.full(2, t % 2)) for t in range(13)]
  assert isinstance(out[1].obs, np.ndarray) and out[1].obs.dtype == np.float32
  trunc = np.stack([t.truncated for t in out])[:, 0]
  assert list(np.flatnonzero(trunc)) == [5, 11]
  assert not np.stack([t.terminated for t in out]).any()
  first = np.stack([t.first for t in out])
  assert first[0].all()
  np.testing.assert_array_equal(first[1:], np.stack([t.truncated for t in out])[:-1])
  same = envs.make("gymnax/CartPole-v1", num_envs=2, seed=1).reset().obs
  other = envs.make("gymnax/CartPole-v1", num_envs=2, seed=2).reset().obs
  np.testing.assert_array_equal(same, out[0].obs)
  assert not np.array_equal(same, other)


# ----------------------------------------------------------------------------- trace conditioning


def _runs(x):
  """(start, length) of the runs of ones in a 0/1 vector."""
  d = np.diff(np.concatenate([[0], x.astype(int), [0]]))
  starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
  return starts, ends - starts


def test_trace_conditioning_stream_structure():
  fenv = envs.make_functional("jax/trace-conditioning")
  assert fenv.params.gamma == 0.9
  T, B = 3000, 3
  obs0, ts = jax.jit(_scan, static_argnums=0)(fenv, jax.random.PRNGKey(3), jnp.zeros((T, B), jnp.int32))
  obs = np.concatenate([np.asarray(obs0)[None], np.asarray(ts.obs)])  # [T+1, B, 12]
  assert obs.shape == (T + 1, B, 12) and set(np.unique(obs)) <= {0.0, 1.0}
  np.testing.assert_array_equal(np.asarray(ts.reward), obs[1:, :, 0])  # cumulant = US bit
  assert not np.asarray(ts.terminated | ts.truncated | ts.first).any()  # continuing task
  for b in range(B):
    cs_start, cs_len = _runs(obs[:, b, 1])
    us_start, us_len = _runs(obs[:, b, 0])
    assert cs_start[0] == 0 and (cs_len[:-1] == 4).all()
    assert (us_len[:-1] == 2).all()
    k = min(len(cs_start), len(us_start))
    isi = us_start[:k] - cs_start[:k]
    assert isi.min() >= 7 and isi.max() <= 13 and len(set(isi)) > 3
    gaps = np.diff(cs_start)  # = ISI + ITI
    assert gaps.min() >= 87 and gaps.max() <= 133
    for d in range(10):
      starts, lens = _runs(obs[:, b, 2 + d])
      assert (lens[:-1] == 4).all()
      if len(starts) > 1:
        assert (np.diff(starts) >= 5).all()  # off for >= 1 step between activations
  # onset rates ~ 1/10 and 1/100 per free step (free steps ~ T - 4 * onsets)
  n0 = sum(len(_runs(obs[:, b, 2])[0]) for b in range(B))
  n9 = sum(len(_runs(obs[:, b, 11])[0]) for b in range(B))
  assert 0.5 < n0 / (B * T * 0.1 / 1.4) < 1.5 and n9 < n0 / 4


def test_trace_conditioning_options_and_numpy_form():
  env = envs.make("jax/trace-conditioning", num_envs=2, seed=0, num_distractors=0, isi=(20, 20), iti=(30, 30))
  assert env.observation_space.shape == (2,)
  obs = np.stack([env.reset().obs] + [env.step(np.zeros(2)).obs for _ in range(120)])
  cs_start, _ = _runs(obs[:, 0, 1])
  us_start, _ = _runs(obs[:, 0, 0])
  np.testing.assert_array_equal(cs_start, [0, 50, 100])
  np.testing.assert_array_equal(us_start, [20, 70, 120])
  with pytest.raises(envs.BadOptionError, match="num_distractors=11"):
    envs.make("jax/trace-conditioning", 1, 0, num_distractors=11)


def test_msre_matches_reference_definition():
  rng = np.random.default_rng(0)
  c = rng.integers(0, 2, 50).astype(np.float32)
  gamma = 0.9
  g = np.zeros(50)
  g[-1] = c[-1]
  for t in range(48, -1, -1):
    g[t] = c[t] + gamma * g[t + 1]
  np.testing.assert_allclose(tc.discounted_returns(jnp.asarray(c), gamma), g, rtol=1e-5)
  pred = rng.normal(size=50).astype(np.float32)
  np.testing.assert_allclose(
    tc.msre(jnp.asarray(pred), jnp.asarray(c), gamma), np.mean((pred - g) ** 2), rtol=1e-5
  )
  assert float(tc.msre(jnp.asarray(g, jnp.float32), jnp.asarray(c), gamma)) < 1e-10
  # batched [T, B]
  cb = np.stack([c, c[::-1]], 1)
  gb = tc.discounted_returns(jnp.asarray(cb), gamma)
  np.testing.assert_allclose(gb[:, 0], g, rtol=1e-5)
