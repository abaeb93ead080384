"""Categorical and diagonal-Gaussian distributions against scipy / numpy formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import scipy.stats

from rtrl_rl.losses import Categorical, DiagGaussian, Distribution


def test_categorical_log_prob_entropy_mode():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
  actions = rng.integers(0, 5, size=(3, 4)).astype(np.int32)
  dist = Categorical(jnp.asarray(logits))
  assert isinstance(dist, Distribution)
  log_p = scipy.special.log_softmax(logits.astype(np.float64), axis=-1)
  expected_lp = np.take_along_axis(log_p, actions[..., None], axis=-1)[..., 0]
  np.testing.assert_allclose(dist.log_prob(jnp.asarray(actions)), expected_lp, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    dist.entropy(), scipy.stats.entropy(np.exp(log_p), axis=-1), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_array_equal(dist.mode(), np.argmax(logits, axis=-1))
  assert dist.batch_shape == (3, 4)


def test_categorical_masked_logits_entropy_is_finite():
  dist = Categorical(jnp.array([[0.0, 0.0, -jnp.inf]]))
  np.testing.assert_allclose(dist.entropy(), [np.log(2.0)], rtol=1e-6)


def test_categorical_sample_frequencies():
  probs = np.array([0.1, 0.6, 0.3])
  dist = Categorical(jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (20000, 3)))
  samples = np.asarray(dist.sample(jax.random.PRNGKey(0)))
  assert samples.shape == (20000,) and samples.dtype == np.int32
  np.testing.assert_allclose(np.bincount(samples, minlength=3) / 20000, probs, atol=0.015)


def test_diag_gaussian_log_prob_entropy_against_scipy():
  rng = np.random.default_rng(1)
  mean = rng.normal(size=(2, 3, 4)).astype(np.float32)
  log_std = rng.normal(scale=0.5, size=(4,)).astype(np.float32)  # state-independent, broadcast
  actions = rng.normal(size=(2, 3, 4)).astype(np.float32)
  dist = DiagGaussian(jnp.asarray(mean), jnp.asarray(log_std))
  assert isinstance(dist, Distribution)
  std = np.exp(log_std.astype(np.float64))
  expected_lp = scipy.stats.norm.logpdf(actions, loc=mean, scale=std).sum(-1)
  np.testing.assert_allclose(dist.log_prob(jnp.asarray(actions)), expected_lp, rtol=1e-5, atol=1e-5)
  mvn = scipy.stats.multivariate_normal(mean=mean[0, 0], cov=np.diag(std**2))
  np.testing.assert_allclose(dist.log_prob(jnp.asarray(actions))[0, 0], mvn.logpdf(actions[0, 0]), rtol=1e-5)
  expected_h = np.broadcast_to(scipy.stats.norm.entropy(scale=std).sum(), (2, 3))
  np.testing.assert_allclose(dist.entropy(), expected_h, rtol=1e-5)
  assert dist.entropy().shape == (2, 3)
  np.testing.assert_array_equal(dist.mode(), mean)


def test_diag_gaussian_sample_moments():
  mean = jnp.array([1.0, -2.0])
  log_std = jnp.log(jnp.array([0.5, 2.0]))
  dist = DiagGaussian(jnp.broadcast_to(mean, (40000, 2)), log_std)
  x = np.asarray(dist.sample(jax.random.PRNGKey(1)))
  assert x.shape == (40000, 2)
  np.testing.assert_allclose(x.mean(0), [1.0, -2.0], atol=0.05)
  np.testing.assert_allclose(x.std(0), [0.5, 2.0], rtol=0.03)


def test_distributions_are_pytrees():
  dist = Categorical(jnp.zeros((4, 3)))
  out = jax.jit(lambda d: d.entropy())(dist)
  np.testing.assert_allclose(out, np.full(4, np.log(3.0)), rtol=1e-6)
  g = DiagGaussian(jnp.zeros((5, 2)), jnp.zeros((5, 2)))
  sliced = jax.tree_util.tree_map(lambda a: a[1:3], g)
  assert sliced.mean.shape == (2, 2)
