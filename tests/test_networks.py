"""Torsos and heads: shapes, input scaling, layouts, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl.losses import Categorical, DiagGaussian
from rtrl_rl.networks import (
  ActorCriticHeads,
  CategoricalPolicyHead,
  GaussianPolicyHead,
  ImpalaResNetTorso,
  MLPTorso,
  ValueHead,
)


def _n_params(params):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))


def _np_params(model, *inputs, seed=0, scale=0.3):
  """Parameters of the right structure filled with numpy normals: shapes from ``eval_shape`` (no compute),
  which avoids compiling flax's initialisers for every kernel shape (seconds each on a busy 2-core CPU).
  Initial values are irrelevant to what these tests check."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)
  return jax.tree_util.tree_map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


def _expected_impala_params(h, w, c_in, channels=(16, 32, 32), blocks=2, hidden=256):
  """Count by hand: conv3x3 (9 c_in c_out + c_out) per stage, 2 convs per residual block, SAME max-pool
  stride 2 halves the spatial size rounding up, then Dense(flat -> hidden) with bias."""
  conv = lambda ci, co: 9 * ci * co + co
  total = 0
  for ch in channels:
    total += conv(c_in, ch) + blocks * 2 * conv(ch, ch)
    h, w, c_in = -(-h // 2), -(-w // 2), ch
  return total + (h * w * c_in) * hidden + hidden


def test_impala_torso_param_count_and_shape_84x84x4():
  # 84 -> 42 -> 21 -> 11: flat = 11 * 11 * 32 = 3872.
  #   stage 0: 592 + 4 * 2320 = 9872; stage 1: 4640 + 4 * 9248 = 41632; stage 2: 9248 + 36992 = 46240
  #   fc: 3872 * 256 + 256 = 991488                              total = 1089232
  expected = _expected_impala_params(84, 84, 4)
  assert expected == 1089232
  model = ImpalaResNetTorso()
  frames = jax.ShapeDtypeStruct((5, 2, 84, 84, 4), jnp.uint8)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), frames)
  assert _n_params(params) == expected
  out = jax.eval_shape(model.apply, params, frames)
  assert out.shape == (5, 2, 256) and out.dtype == jnp.float32
  # Channel-first envpool layout [T, B, 4, 84, 84] gives the same parameters and output shape.
  cf = ImpalaResNetTorso(channels_first=True)
  frames_cf = jax.ShapeDtypeStruct((5, 2, 4, 84, 84), jnp.uint8)
  params_cf = jax.eval_shape(cf.init, jax.random.PRNGKey(0), frames_cf)
  assert _n_params(params_cf) == expected
  assert jax.eval_shape(cf.apply, params_cf, frames_cf).shape == (5, 2, 256)


@pytest.fixture(scope='module')
def small_torso():
  model = ImpalaResNetTorso(channels=(4, 8), hidden_size=16)
  frames = jnp.asarray(np.random.default_rng(1).integers(0, 256, (3, 2, 12, 10, 3)), jnp.uint8)
  params = _np_params(model, frames)
  return model, params, frames


def test_impala_torso_uint8_scaling(small_torso):
  model, params, frames = small_torso
  out_u8 = model.apply(params, frames)
  unscaled = ImpalaResNetTorso(channels=(4, 8), hidden_size=16, input_scale=1.0)
  out_f = unscaled.apply(params, frames.astype(jnp.float32) / 255.0)
  np.testing.assert_allclose(out_u8, out_f, rtol=1e-5, atol=1e-6)
  # And the scaling is really applied: raw 0..255 floats give a different output.
  out_raw = unscaled.apply(params, frames.astype(jnp.float32))
  assert np.max(np.abs(out_raw - out_u8)) > 1e-3
  assert np.all(np.asarray(out_u8) >= 0.0)  # final ReLU


def test_impala_torso_leading_dims_and_channels_first(small_torso):
  model, params, frames = small_torso
  out = model.apply(params, frames)
  assert out.shape == (3, 2, 16)
  flat = model.apply(params, frames.reshape((6,) + frames.shape[2:]))
  np.testing.assert_allclose(out.reshape(6, 16), flat, rtol=1e-5, atol=1e-6)
  single = model.apply(params, frames[1, 0])
  assert single.shape == (16,)
  np.testing.assert_allclose(single, out[1, 0], rtol=1e-5, atol=1e-6)
  cf = ImpalaResNetTorso(channels=(4, 8), hidden_size=16, channels_first=True)
  out_cf = cf.apply(params, jnp.moveaxis(frames, -1, -3))  # [..., C, H, W]
  np.testing.assert_allclose(out_cf, out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  'torso,shape',
  [
    (ImpalaResNetTorso(), (84, 84, 4)),
    (ImpalaResNetTorso(hidden_size=0), (84, 84, 4)),  # 84 -> 42 -> 21 -> 11: 11 * 11 * 32
    (ImpalaResNetTorso(channels=(4, 6), hidden_size=0, channels_first=True), (3, 13, 9)),  # 13->7->4, 9->5->3
    (ImpalaResNetTorso(channels=(), hidden_size=0), (5, 6, 2)),
    (MLPTorso((8, 5)), (7,)),
    (MLPTorso(()), (7,)),
  ],
)
def test_torso_output_size_is_what_it_computes(torso, shape):
  """`output_size(observation_shape)`, from the config alone, is the traced features' size."""
  frames = jax.ShapeDtypeStruct((2, *shape), jnp.uint8)
  params = jax.eval_shape(torso.init, jax.random.PRNGKey(0), frames)
  assert jax.eval_shape(torso.apply, params, frames).shape == (2, torso.output_size(shape))


def test_torso_output_size_rejects_bad_rank():
  with pytest.raises(ValueError, match='expected frames'):
    ImpalaResNetTorso().output_size((84, 84))
  with pytest.raises(ValueError, match='expected vector observations'):
    MLPTorso().output_size((3, 4))


def test_impala_torso_rejects_bad_rank():
  with pytest.raises(ValueError):
    jax.eval_shape(ImpalaResNetTorso().init, jax.random.PRNGKey(0), jnp.zeros((84, 84), jnp.uint8))


def test_mlp_torso():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 7)), jnp.float32)
  model = MLPTorso(hidden_sizes=(64,), activation='tanh')
  params = _np_params(model, x)
  assert _n_params(params) == 7 * 64 + 64
  y = model.apply(params, x)
  assert y.shape == (4, 3, 64)
  assert np.all(np.abs(np.asarray(y)) < 1.0)
  k, b = params['params']['dense_0']['kernel'], params['params']['dense_0']['bias']
  np.testing.assert_allclose(y, np.tanh(np.asarray(x) @ np.asarray(k) + np.asarray(b)), rtol=1e-5, atol=1e-6)
  relu = MLPTorso(hidden_sizes=(8, 5), activation='relu', activate_final=False)
  p2 = _np_params(relu, x, seed=2)
  y2 = relu.apply(p2, x)
  assert y2.shape == (4, 3, 5) and np.any(np.asarray(y2) < 0)  # no final activation
  with pytest.raises(ValueError):
    jax.eval_shape(MLPTorso(activation='nope').init, jax.random.PRNGKey(0), x)


def test_heads_shapes():
  feats = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2, 12)), jnp.float32)
  cat = CategoricalPolicyHead(num_actions=6)
  dist = cat.apply(_np_params(cat, feats), feats)
  assert isinstance(dist, Categorical) and dist.logits.shape == (5, 2, 6)
  val = ValueHead()
  p = _np_params(val, feats)
  assert _n_params(p) == 13
  assert val.apply(p, feats).shape == (5, 2)
  gauss = GaussianPolicyHead(action_dim=3, init_log_std=-0.5)
  gp = gauss.init(jax.random.PRNGKey(1), feats)  # real init: the log-std initial value is checked
  np.testing.assert_allclose(gp['params']['log_std'], np.full(3, -0.5))
  g = gauss.apply(gp, feats)
  assert isinstance(g, DiagGaussian)
  assert g.mean.shape == (5, 2, 3) and g.log_std.shape == (5, 2, 3)
  assert g.log_prob(g.mode()).shape == (5, 2) and g.entropy().shape == (5, 2)


def test_rtu_paper_actor_critic_heads():
  # RTU paper: separate actor / critic heads, each Dense(64) + tanh, then linear outputs.
  feats = jnp.asarray(np.random.default_rng(0).normal(size=(7, 24)), jnp.float32)
  heads = ActorCriticHeads(num_actions=4, policy='gaussian', hidden_sizes=(64,))
  params = _np_params(heads, feats)
  expected = (24 * 64 + 64) + (64 * 4 + 4) + 4 + (24 * 64 + 64) + (64 + 1)
  assert _n_params(params) == expected
  dist, value = heads.apply(params, feats)
  assert dist.mean.shape == (7, 4) and value.shape == (7,)
  cat_heads = ActorCriticHeads(num_actions=5)
  cp = _np_params(cat_heads, feats)
  assert _n_params(cp) == (24 * 5 + 5) + (24 + 1)
  dist, value = cat_heads.apply(cp, feats)
  assert dist.logits.shape == (7, 5) and value.shape == (7,)
