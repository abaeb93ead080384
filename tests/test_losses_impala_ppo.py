"""Golden-value and gradient tests of the IMPALA and PPO losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from rtrl_rl.losses import Categorical, DiagGaussian, impala_loss, ppo_loss

RTOL = 1e-5


def np_vtrace_recursive(v_tm1, v_t, r, disc, log_rho, rho_bar=1.0, c_bar=1.0):
  """Plain numpy loop (Espeholt et al. Remark 1), lambda = 1, one stream."""
  T = len(r)
  ratio = np.exp(log_rho)
  rho, c = np.minimum(rho_bar, ratio), np.minimum(c_bar, ratio)
  vs = np.zeros(T)
  nxt = 0.0  # v_{s+1} - V(x_{s+1})
  for s in reversed(range(T)):
    nxt = rho[s] * (r[s] + disc[s] * v_t[s] - v_tm1[s]) + disc[s] * c[s] * nxt
    vs[s] = v_tm1[s] + nxt
  vs_next = np.concatenate([vs[1:], v_t[-1:]])
  adv = rho * (r + disc * vs_next - v_tm1)
  return vs, adv


def _batch(rng, T=5, B=3, A=4):
  logits = rng.normal(size=(T, B, A)).astype(np.float32)
  beh_logits = rng.normal(size=(T, B, A)).astype(np.float32)
  actions = rng.integers(0, A, size=(T, B)).astype(np.int32)
  rewards = rng.normal(scale=2.0, size=(T, B)).astype(np.float32)
  disc = (0.99 * (rng.uniform(size=(T, B)) > 0.2)).astype(np.float32)
  values = rng.normal(size=(T + 1, B)).astype(np.float32)
  return logits, beh_logits, actions, rewards, disc, values


def np_impala(
  logits,
  beh_logits,
  actions,
  rewards,
  disc,
  values,
  baseline_cost=0.5,
  entropy_cost=0.01,
  reward_clip=None,
  mean=False,
):
  logp = scipy.special.log_softmax(logits.astype(np.float64), -1)
  logmu = scipy.special.log_softmax(beh_logits.astype(np.float64), -1)
  lp = np.take_along_axis(logp, actions[..., None], -1)[..., 0]
  lm = np.take_along_axis(logmu, actions[..., None], -1)[..., 0]
  if reward_clip is not None:
    rewards = np.clip(rewards, -reward_clip, reward_clip)
  T, B = rewards.shape
  vs = np.zeros((T, B))
  adv = np.zeros((T, B))
  for b in range(B):
    vs[:, b], adv[:, b] = np_vtrace_recursive(
      values[:-1, b], values[1:, b], rewards[:, b], disc[:, b], lp[:, b] - lm[:, b]
    )
  ent = -(np.exp(logp) * logp).sum(-1)
  red = np.mean if mean else np.sum
  pg = red(-adv * lp)
  bl = red(0.5 * (vs - values[:-1]) ** 2)
  el = red(-ent)
  return pg + baseline_cost * bl + entropy_cost * el, pg, bl, el, adv


# ----------------------------------------------------------------------------------------------
# IMPALA
# ----------------------------------------------------------------------------------------------
def test_impala_hand_worked_example():
  # T = B = 1, two actions with equal logits: pi(a) = 0.5, H = ln 2; behaviour log-prob ln 0.5 -> rho = 1.
  #   r = 1, gamma = 0.9, V(x_0) = 0.5, bootstrap V(x_1) = 1.0
  #   delta = 1 + 0.9 * 1.0 - 0.5 = 1.4  ->  v_0 = 1.9, A_0 = 1.4
  #   pg_loss       = -A_0 ln 0.5      = 1.4 ln 2   = 0.9704061
  #   baseline_loss = 0.5 * 1.4^2                   = 0.98
  #   entropy_loss  = -ln 2                          = -0.6931472
  #   total = 0.9704061 + 0.5 * 0.98 + 0.01 * (-0.6931472) = 1.4534746
  loss, m = impala_loss(
    Categorical(jnp.zeros((1, 1, 2))),
    jnp.log(jnp.full((1, 1), 0.5)),
    jnp.zeros((1, 1), jnp.int32),
    jnp.ones((1, 1)),
    jnp.full((1, 1), 0.9),
    jnp.array([[0.5], [1.0]]),
  )
  np.testing.assert_allclose(m['pg_loss'], 1.4 * np.log(2), rtol=RTOL)
  np.testing.assert_allclose(m['baseline_loss'], 0.98, rtol=RTOL)
  np.testing.assert_allclose(m['entropy_loss'], -np.log(2), rtol=RTOL)
  np.testing.assert_allclose(loss, 1.4534746, rtol=RTOL)


@pytest.mark.parametrize('reduction,reward_clip', [('sum', None), ('mean', None), ('sum', 1.0)])
def test_impala_loss_golden(reduction, reward_clip):
  rng = np.random.default_rng(0)
  logits, beh_logits, actions, rewards, disc, values = _batch(rng)
  loss, m = impala_loss(
    Categorical(jnp.asarray(logits)),
    Categorical(jnp.asarray(beh_logits)),
    jnp.asarray(actions),
    jnp.asarray(rewards),
    jnp.asarray(disc),
    jnp.asarray(values),
    reward_clip=reward_clip,
    reduction=reduction,
  )
  total, pg, bl, el, _ = np_impala(
    logits, beh_logits, actions, rewards, disc, values, reward_clip=reward_clip, mean=reduction == 'mean'
  )
  np.testing.assert_allclose(m['pg_loss'], pg, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m['baseline_loss'], bl, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m['entropy_loss'], el, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(loss, total, rtol=1e-4, atol=1e-5)
  if reward_clip is not None:  # clipping changes the answer
    unclipped, *_ = np_impala(logits, beh_logits, actions, rewards, disc, values)
    assert abs(unclipped - total) > 1e-2


def test_impala_behaviour_log_probs_equal_behaviour_distribution():
  rng = np.random.default_rng(1)
  logits, beh_logits, actions, rewards, disc, values = _batch(rng)
  args = tuple(map(jnp.asarray, (actions, rewards, disc, values)))
  beh = Categorical(jnp.asarray(beh_logits))
  l1, _ = impala_loss(Categorical(jnp.asarray(logits)), beh, *args)
  l2, _ = impala_loss(Categorical(jnp.asarray(logits)), beh.log_prob(args[0]), *args)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)


def test_impala_mask():
  rng = np.random.default_rng(2)
  logits, beh_logits, actions, rewards, disc, values = _batch(rng)
  mask = np.ones(rewards.shape, np.float32)
  mask[-2:, 1] = 0.0
  _, m = impala_loss(
    Categorical(jnp.asarray(logits)),
    Categorical(jnp.asarray(beh_logits)),
    *map(jnp.asarray, (actions, rewards, disc, values)),
    mask=jnp.asarray(mask),
  )
  *_, adv = np_impala(logits, beh_logits, actions, rewards, disc, values)
  lp = np.take_along_axis(scipy.special.log_softmax(logits, -1), actions[..., None], -1)[..., 0]
  np.testing.assert_allclose(m['pg_loss'], np.sum(-adv * lp * mask), rtol=1e-4)


def test_impala_gradients_do_not_flow_into_targets():
  rng = np.random.default_rng(3)
  logits, beh_logits, actions, rewards, disc, values = _batch(rng)
  beh = Categorical(jnp.asarray(beh_logits))
  a, r, d = map(jnp.asarray, (actions, rewards, disc))

  def loss_fn(logits, values, part='loss'):
    _, m = impala_loss(Categorical(logits), beh, a, r, d, values)
    return m[part]

  lg, vg = jnp.asarray(logits), jnp.asarray(values)
  # The pg term does not move the values (its advantage is a constant) ...
  np.testing.assert_array_equal(jax.grad(loss_fn, 1)(lg, vg, 'pg_loss'), 0.0)
  # ... and the value gradient is baseline_cost * -(v_s - V(x_s)), with nothing into the bootstrap row.
  total, _, _, _, adv = np_impala(logits, beh_logits, actions, rewards, disc, values)
  T = rewards.shape[0]
  vs = np.zeros_like(rewards, dtype=np.float64)
  lp = np.take_along_axis(scipy.special.log_softmax(logits.astype(np.float64), -1), actions[..., None], -1)[
    ..., 0
  ]
  lm = np.take_along_axis(
    scipy.special.log_softmax(beh_logits.astype(np.float64), -1), actions[..., None], -1
  )[..., 0]
  for b in range(rewards.shape[1]):
    vs[:, b], _ = np_vtrace_recursive(
      values[:-1, b], values[1:, b], rewards[:, b], disc[:, b], lp[:, b] - lm[:, b]
    )
  g_v = jax.grad(loss_fn, 1)(lg, vg)
  np.testing.assert_allclose(g_v[:T], -0.5 * (vs - values[:-1]), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(g_v[T], 0.0)
  # The logits gradient equals that of a surrogate with the advantages as fixed numbers (no
  # gradient through the importance weights inside V-trace).
  adv_c = jnp.asarray(adv, jnp.float32)

  def surrogate(logits):
    dist = Categorical(logits)
    return jnp.sum(-adv_c * dist.log_prob(a)) - 0.01 * jnp.sum(dist.entropy())

  np.testing.assert_allclose(jax.grad(loss_fn, 0)(lg, vg), jax.grad(surrogate)(lg), rtol=1e-4, atol=1e-5)


def test_impala_gaussian_policy():
  rng = np.random.default_rng(4)
  T, B, D = 4, 2, 3
  mean = rng.normal(size=(T, B, D)).astype(np.float32)
  log_std = np.array([-0.5, 0.0, 0.3], np.float32)
  actions = rng.normal(size=(T, B, D)).astype(np.float32)
  beh_lp = rng.normal(loc=-3.0, size=(T, B)).astype(np.float32)
  rewards = rng.normal(size=(T, B)).astype(np.float32)
  disc = np.full((T, B), 0.99, np.float32)
  values = rng.normal(size=(T + 1, B)).astype(np.float32)
  loss, m = impala_loss(
    DiagGaussian(jnp.asarray(mean), jnp.asarray(log_std)),
    jnp.asarray(beh_lp),
    *map(jnp.asarray, (actions, rewards, disc, values)),
  )
  std = np.exp(log_std.astype(np.float64))
  lp = scipy.stats.norm.logpdf(actions, mean, std).sum(-1)
  ent = scipy.stats.norm.entropy(scale=std).sum()
  vs = np.zeros((T, B))
  adv = np.zeros((T, B))
  for b in range(B):
    vs[:, b], adv[:, b] = np_vtrace_recursive(
      values[:-1, b], values[1:, b], rewards[:, b], disc[:, b], lp[:, b] - beh_lp[:, b]
    )
  expected = np.sum(-adv * lp) + 0.5 * np.sum(0.5 * (vs - values[:-1]) ** 2) - 0.01 * T * B * ent
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  np.testing.assert_allclose(m['entropy'], ent, rtol=1e-5)


def test_impala_shape_checks():
  with pytest.raises(AssertionError):  # values must be [T+1, B]
    impala_loss(
      Categorical(jnp.zeros((3, 2, 4))),
      jnp.zeros((3, 2)),
      jnp.zeros((3, 2), jnp.int32),
      jnp.zeros((3, 2)),
      jnp.zeros((3, 2)),
      jnp.zeros((3, 2)),
    )


# ----------------------------------------------------------------------------------------------
# PPO
# ----------------------------------------------------------------------------------------------
def _two_sample_policy():
  # Action 0 taken in both samples; pi_new(0) = [0.6, 0.2], pi_old(0) = [0.4, 0.4] -> ratio [1.5, 0.5].
  p_new = jnp.array([0.6, 0.2])
  logits = jnp.log(jnp.stack([p_new, 1 - p_new], -1))
  return logits, jnp.zeros(2, jnp.int32), jnp.log(jnp.array([0.4, 0.4]))


def test_ppo_hand_worked_example():
  # eps = 0.2, A = [1, -1] (not normalised)
  #   sample 0: ratio 1.5 -> clipped 1.2;  max(-1.5, -1.2) = -1.2
  #   sample 1: ratio 0.5 -> clipped 0.8;  max( 0.5,  0.8) =  0.8      pg_loss = mean = -0.2
  #   V = [1, 0], V_old = [0.5, 0], R = [2, 1]: V_clipped = [0.7, 0]
  #   squared errors: unclipped [1, 1], clipped [1.69, 1] -> max [1.69, 1]
  #   value_loss = 0.5 * mean = 0.6725;  total = -0.2 + 0.5 * 0.6725 = 0.13625
  logits, actions, old_lp = _two_sample_policy()
  loss, m = ppo_loss(
    Categorical(logits),
    actions,
    old_lp,
    jnp.array([1.0, -1.0]),
    jnp.array([1.0, 0.0]),
    jnp.array([0.5, 0.0]),
    jnp.array([2.0, 1.0]),
    normalize_advantage=False,
  )
  np.testing.assert_allclose(m['pg_loss'], -0.2, rtol=RTOL)
  np.testing.assert_allclose(m['value_loss'], 0.6725, rtol=RTOL)
  np.testing.assert_allclose(loss, 0.13625, rtol=RTOL)
  np.testing.assert_allclose(m['clip_frac'], 1.0)
  # Without value clipping: 0.5 * mean([1, 1]) = 0.5.
  _, m2 = ppo_loss(
    Categorical(logits),
    actions,
    old_lp,
    jnp.array([1.0, -1.0]),
    jnp.array([1.0, 0.0]),
    jnp.array([0.5, 0.0]),
    jnp.array([2.0, 1.0]),
    normalize_advantage=False,
    value_clip_eps=None,
  )
  np.testing.assert_allclose(m2['value_loss'], 0.5, rtol=RTOL)


def test_ppo_clipping_zeroes_gradients():
  logits, actions, old_lp = _two_sample_policy()

  def f(logits, values):
    return ppo_loss(
      Categorical(logits),
      actions,
      old_lp,
      jnp.array([1.0, 1.0]),
      values,
      jnp.array([0.5, 0.0]),
      jnp.array([2.0, 1.0]),
      normalize_advantage=False,
    )[0]

  g_logits, g_values = jax.grad(f, (0, 1))(logits, jnp.array([1.0, 0.0]))
  # Sample 0: ratio 1.5 > 1.2 with A > 0 -> clipped, no policy gradient. Sample 1: ratio 0.5, A > 0
  # -> unclipped branch is the max, gradient flows.
  np.testing.assert_array_equal(g_logits[0], 0.0)
  assert np.all(np.abs(g_logits[1]) > 0)
  # Value 0: clipped branch (1.69) is the max -> no gradient; value 1: d/dV 0.5*0.5*0.5*(V-R)^2... =
  # vf 0.5 * 0.5 * mean over 2 * 2 (V - R) = 0.25 * (0 - 1) = -0.25
  np.testing.assert_allclose(g_values, [0.0, -0.25], rtol=RTOL)


def test_ppo_golden_random_with_normalisation():
  rng = np.random.default_rng(5)
  N, A = 16, 3
  logits = rng.normal(size=(N, A)).astype(np.float32)
  actions = rng.integers(0, A, N).astype(np.int32)
  old_lp = (
    np.take_along_axis(scipy.special.log_softmax(logits, -1), actions[:, None], -1)[:, 0]
    + rng.normal(scale=0.3, size=N)
  ).astype(np.float32)
  adv = rng.normal(loc=1.0, scale=2.0, size=N).astype(np.float32)
  values, old_values, targets = (rng.normal(size=N).astype(np.float32) for _ in range(3))
  loss, m = ppo_loss(
    Categorical(jnp.asarray(logits)),
    jnp.asarray(actions),
    jnp.asarray(old_lp),
    jnp.asarray(adv),
    jnp.asarray(values),
    jnp.asarray(old_values),
    jnp.asarray(targets),
    ent_coef=0.01,
  )
  logp = scipy.special.log_softmax(logits.astype(np.float64), -1)
  lp = np.take_along_axis(logp, actions[:, None], -1)[:, 0]
  ratio = np.exp(lp - old_lp)
  a = (adv - adv.mean()) / (adv.std() + 1e-8)
  pg = np.mean(np.maximum(-a * ratio, -a * np.clip(ratio, 0.8, 1.2)))
  vc = old_values + np.clip(values - old_values, -0.2, 0.2)
  vl = 0.5 * np.mean(np.maximum((values - targets) ** 2, (vc - targets) ** 2))
  ent = np.mean(-(np.exp(logp) * logp).sum(-1))
  np.testing.assert_allclose(m['pg_loss'], pg, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(m['value_loss'], vl, rtol=1e-5)
  np.testing.assert_allclose(loss, pg + 0.5 * vl - 0.01 * ent, rtol=1e-4, atol=1e-6)


def test_ppo_loss_split_over_an_axis_sums_to_the_whole_minibatch_loss_and_gradient():
  """Data-parallel PPO (`axis_name`): 4 shards of a masked minibatch, as a named vmap; the shards'
  losses, metrics and gradients sum to those of the whole minibatch (the means are global)."""
  rng = np.random.default_rng(7)
  S, N, A = 4, 6, 3
  logits = jnp.asarray(rng.normal(size=(S, N, A)), jnp.float32)
  actions = jnp.asarray(rng.integers(0, A, (S, N)), jnp.int32)
  old_lp, values, old_values, targets = (jnp.asarray(rng.normal(size=(S, N)), jnp.float32) for _ in range(4))
  adv = jnp.asarray(rng.normal(loc=1.0, scale=2.0, size=(S, N)), jnp.float32)
  mask = jnp.asarray(rng.random((S, N)) < 0.7, jnp.float32).at[0].set(0.0)  # a shard with nothing

  def loss(logits, values, axis_name=None, **data):
    return ppo_loss(Categorical(logits), values=values, ent_coef=0.01, axis_name=axis_name, **data)

  data = dict(
    actions=actions, old_log_probs=old_lp, advantages=adv, old_values=old_values, value_targets=targets
  )
  whole = lambda lg, v: loss(
    lg.reshape(S * N, A), v.reshape(-1), mask=mask.reshape(-1), **{k: x.reshape(-1) for k, x in data.items()}
  )
  shards = jax.vmap(lambda lg, v, m, d: loss(lg, v, "shards", mask=m, **d), axis_name="shards")
  (l_whole, m_whole), (l_shards, m_shards) = whole(logits, values), shards(logits, values, mask, data)
  np.testing.assert_allclose(jnp.sum(l_shards), l_whole, rtol=1e-5)
  for k in m_whole:
    np.testing.assert_allclose(jnp.sum(m_shards[k]), m_whole[k], rtol=1e-5, atol=1e-7, err_msg=k)
  g_whole = jax.grad(lambda lg, v: whole(lg, v)[0], (0, 1))(logits, values)
  g_shards = jax.grad(lambda lg, v: jnp.sum(shards(lg, v, mask, data)[0]), (0, 1))(logits, values)
  for a, b in zip(g_shards, g_whole):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(g_shards[0][0]).max()) == 0.0  # the empty shard's samples do not count


def test_ppo_gaussian_policy_runs_under_jit():
  rng = np.random.default_rng(6)
  N, D = 8, 2
  mean = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
  dist = DiagGaussian(mean, jnp.zeros(D))
  actions = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
  old_lp = dist.log_prob(actions)
  z = jnp.zeros(N)
  loss, m = jax.jit(lambda d: ppo_loss(d, actions, old_lp, jnp.ones(N), z, z, z, normalize_advantage=False))(
    dist
  )
  # ratio == 1 everywhere: pg_loss = -mean(A) = -1, value loss 0.
  np.testing.assert_allclose(loss, -1.0, rtol=RTOL)
  np.testing.assert_allclose(m['approx_kl'], 0.0, atol=1e-7)


def test_impala_loss_jits_and_matches_eager():
  rng = np.random.default_rng(7)
  logits, beh_logits, actions, rewards, disc, values = _batch(rng)
  args = (
    Categorical(jnp.asarray(logits)),
    Categorical(jnp.asarray(beh_logits)),
    *map(jnp.asarray, (actions, rewards, disc, values)),
  )
  eager, _ = impala_loss(*args)
  jitted, metrics = jax.jit(impala_loss)(*args)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5)
  assert set(metrics) >= {'loss', 'pg_loss', 'baseline_loss', 'entropy_loss', 'entropy', 'rho_mean'}
