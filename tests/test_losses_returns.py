"""Golden-value tests for V-trace and GAE (rtrl_rl.losses.vtrace / gae).

The numpy references below are written from the papers' closed forms (sums over future steps with
products of per-step coefficients), NOT from the backward recursion the library uses.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl.losses import gae, gae_batched, vtrace, vtrace_batched

RTOL = 1e-5
ATOL = 1e-5


# ----------------------------------------------------------------------------------------------
# Independent numpy references
# ----------------------------------------------------------------------------------------------
def np_vtrace(v_tm1, v_t, r_t, discount_t, log_rho, rho_bar=1.0, c_bar=1.0):
  """Espeholt et al. eq. (1) as an explicit double sum (lambda = 1), and the pg advantage (Sec. 4.2).

  v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i c_i) delta_t,
  delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)),
  A_s = rho_s (r_s + gamma_s v_{s+1} - V(x_s)),  with v_T := V(x_T) (bootstrap).
  """
  v_tm1, v_t, r_t, discount_t, log_rho = (
    np.asarray(a, np.float64) for a in (v_tm1, v_t, r_t, discount_t, log_rho)
  )
  T = len(r_t)
  ratio = np.exp(log_rho)
  rho = np.minimum(rho_bar, ratio)
  c = np.minimum(c_bar, ratio)
  delta = [rho[t] * (r_t[t] + discount_t[t] * v_t[t] - v_tm1[t]) for t in range(T)]
  vs = np.zeros(T)
  for s in range(T):
    total = v_tm1[s]
    for t in range(s, T):
      coef = 1.0
      for i in range(s, t):
        coef *= discount_t[i] * c[i]
      total += coef * delta[t]
    vs[s] = total
  adv = np.zeros(T)
  for s in range(T):
    v_next = vs[s + 1] if s + 1 < T else v_t[T - 1]
    adv[s] = rho[s] * (r_t[s] + discount_t[s] * v_next - v_tm1[s])
  return vs, adv


def np_gae(v_tm1, v_t, r_t, discount_t, lam):
  """Schulman et al. eq. (16): A_s = sum_{t>=s} (prod_{i=s}^{t-1} gamma_i lambda) delta_t."""
  T = len(r_t)
  delta = [r_t[t] + discount_t[t] * v_t[t] - v_tm1[t] for t in range(T)]
  adv = np.zeros(T)
  for s in range(T):
    coef = 1.0
    for t in range(s, T):
      adv[s] += coef * delta[t]
      coef *= discount_t[t] * lam
  return adv, adv + np.asarray(v_tm1)


def _random_stream(rng, T, B=None, terminal_prob=0.2):
  shape = (T,) if B is None else (T, B)
  vshape = (T + 1,) if B is None else (T + 1, B)
  values = rng.normal(size=vshape).astype(np.float32)
  r = rng.normal(size=shape).astype(np.float32)
  disc = (0.9 * (rng.uniform(size=shape) > terminal_prob)).astype(np.float32)
  log_rho = rng.normal(scale=0.8, size=shape).astype(np.float32)
  return values[:-1], values[1:], r, disc, log_rho


# ----------------------------------------------------------------------------------------------
# V-trace
# ----------------------------------------------------------------------------------------------
def test_vtrace_hand_worked_example():
  # T = 2, gamma = 0.9, rho_bar = c_bar = 1.
  #   V(x_0) = 1, V(x_1) = 2, bootstrap V(x_2) = 3;  r = [1, 0];  pi/mu = [2, 0.5]
  #   clipped rho = [1, 0.5], c = [1, 0.5]
  #   delta_0 = 1   * (1 + 0.9*2 - 1) = 1.8
  #   delta_1 = 0.5 * (0 + 0.9*3 - 2) = 0.35
  #   v_1 = 2 + 0.35 = 2.35
  #   v_0 = 1 + 1.8 + 0.9 * c_0 * 0.35 = 1 + 1.8 + 0.315 = 3.115
  #   A_0 = 1   * (1 + 0.9 * v_1 - 1) = 0.9 * 2.35 = 2.115
  #   A_1 = 0.5 * (0 + 0.9 * 3   - 2) = 0.35
  # Without clipping (rho_bar = c_bar = inf): delta_0 = 3.6, v_0 = 1 + 3.6 + 0.9*2*0.35 = 5.23.
  v_tm1 = jnp.array([1.0, 2.0])
  v_t = jnp.array([2.0, 3.0])
  r_t = jnp.array([1.0, 0.0])
  disc = jnp.array([0.9, 0.9])
  log_rho = jnp.log(jnp.array([2.0, 0.5]))
  out = vtrace(v_tm1, v_t, r_t, disc, log_rho)
  np.testing.assert_allclose(out.vs, [3.115, 2.35], rtol=RTOL)
  np.testing.assert_allclose(out.pg_advantages, [2.115, 0.35], rtol=RTOL)
  np.testing.assert_allclose(out.errors, [2.115, 0.35], rtol=RTOL)
  np.testing.assert_allclose(out.rhos, [2.0, 0.5], rtol=RTOL)
  unclipped = vtrace(v_tm1, v_t, r_t, disc, log_rho, clip_rho_threshold=np.inf, clip_c_threshold=np.inf)
  np.testing.assert_allclose(unclipped.vs, [5.23, 2.35], rtol=RTOL)


@pytest.mark.parametrize('rho_bar,c_bar', [(1.0, 1.0), (np.inf, 1.0), (1.0, np.inf), (2.0, 0.5)])
def test_vtrace_matches_closed_form(rho_bar, c_bar):
  rng = np.random.default_rng(0)
  stream = _random_stream(rng, T=7)
  out = vtrace(*map(jnp.asarray, stream), clip_rho_threshold=rho_bar, clip_c_threshold=c_bar)
  vs, adv = np_vtrace(*stream, rho_bar=rho_bar, c_bar=c_bar)
  np.testing.assert_allclose(out.vs, vs, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out.pg_advantages, adv, rtol=RTOL, atol=ATOL)


def test_vtrace_clipping_matters():
  """rho and c clipping each change the result (would fail if either clip were removed)."""
  rng = np.random.default_rng(1)
  v_tm1, v_t, r, disc, _ = _random_stream(rng, T=6, terminal_prob=0.0)
  log_rho = np.log(np.full(6, 3.0, np.float32))  # every ratio above 1
  args = tuple(map(jnp.asarray, (v_tm1, v_t, r, disc, log_rho)))
  both = vtrace(*args)
  no_rho = vtrace(*args, clip_rho_threshold=np.inf, clip_pg_rho_threshold=1.0)
  no_c = vtrace(*args, clip_c_threshold=np.inf)
  # rho clip: the TD errors are weighted by 1, not 3.
  assert np.max(np.abs(both.vs - no_rho.vs)) > 1e-2
  # c clip: only the trace coefficients change, the last step (no trace after it) does not.
  assert np.max(np.abs(both.vs - no_c.vs)) > 1e-2
  np.testing.assert_allclose(both.vs[-1], no_c.vs[-1], rtol=RTOL)
  # rho_bar = c_bar = 1 with all ratios >= 1 is the on-policy n-step return.
  g = 0.0
  expected = np.zeros(6)
  for s in reversed(range(6)):
    g = r[s] + disc[s] * (v_t[s] if s == 5 else g)
    expected[s] = g
  np.testing.assert_allclose(both.vs, expected, rtol=RTOL, atol=ATOL)
  # The pg ratio clip acts on the advantage.
  no_pg_clip = vtrace(*args, clip_pg_rho_threshold=np.inf)
  np.testing.assert_allclose(no_pg_clip.pg_advantages, 3.0 * both.pg_advantages, rtol=RTOL, atol=ATOL)


def test_vtrace_on_policy_lambda1_is_nstep_return():
  rng = np.random.default_rng(2)
  v_tm1, v_t, r, disc, _ = _random_stream(rng, T=5)
  out = vtrace(*map(jnp.asarray, (v_tm1, v_t, r, disc, np.zeros(5, np.float32))))
  g = v_t[-1]
  expected = np.zeros(5)
  for s in reversed(range(5)):
    g = r[s] + disc[s] * (v_t[s] if s == 4 else g)
    expected[s] = g
  np.testing.assert_allclose(out.vs, expected, rtol=RTOL, atol=ATOL)


def test_vtrace_termination_cuts_the_future():
  rng = np.random.default_rng(3)
  v_tm1, v_t, r, disc, log_rho = _random_stream(rng, T=8, terminal_prob=0.0)
  k = 3
  disc[k] = 0.0
  out = vtrace(*map(jnp.asarray, (v_tm1, v_t, r, disc, log_rho)))
  # Perturb everything after the terminal transition, including V(x_{k+1}) (next episode's start).
  v_tm1b, v_tb, rb = v_tm1.copy(), v_t.copy(), r.copy()
  v_tm1b[k + 1 :] += 5.0
  v_tb[k:] += 5.0
  rb[k + 1 :] -= 7.0
  out2 = vtrace(*map(jnp.asarray, (v_tm1b, v_tb, rb, disc, log_rho)))
  np.testing.assert_allclose(out.vs[: k + 1], out2.vs[: k + 1], rtol=RTOL)
  np.testing.assert_allclose(out.pg_advantages[: k + 1], out2.pg_advantages[: k + 1], rtol=RTOL)
  # At the terminal transition the target is just the clipped-rho weighted reward.
  rho_k = min(1.0, np.exp(log_rho[k]))
  np.testing.assert_allclose(out.vs[k], v_tm1[k] + rho_k * (r[k] - v_tm1[k]), rtol=RTOL)


def test_vtrace_truncation_via_bootstrap_and_lambda0():
  """A time-limit inside the stream: discount gamma, v_t = V(final obs), lambda 0 there == two streams."""
  rng = np.random.default_rng(4)
  v_tm1, v_t, r, disc, log_rho = _random_stream(rng, T=8, terminal_prob=0.0)
  k = 4
  v_t[k] = 11.0  # value of the true final observation of the truncated episode
  lam = np.ones(8, np.float32)
  lam[k] = 0.0
  out = vtrace(*map(jnp.asarray, (v_tm1, v_t, r, disc, log_rho)), lambda_=jnp.asarray(lam))
  first = vtrace(*(jnp.asarray(a[: k + 1]) for a in (v_tm1, v_t, r, disc, log_rho)))
  second = vtrace(*(jnp.asarray(a[k + 1 :]) for a in (v_tm1, v_t, r, disc, log_rho)))
  np.testing.assert_allclose(out.vs, np.concatenate([first.vs, second.vs]), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(
    out.pg_advantages, np.concatenate([first.pg_advantages, second.pg_advantages]), rtol=RTOL, atol=ATOL
  )


def test_vtrace_targets_stop_gradient():
  rng = np.random.default_rng(5)
  args = tuple(map(jnp.asarray, _random_stream(rng, T=5)))

  def f(stop, *a):
    out = vtrace(*a, stop_target_gradients=stop)
    return jnp.sum(out.vs) + jnp.sum(out.pg_advantages)

  grads = jax.grad(lambda *a: f(True, *a), argnums=(0, 1, 2, 3, 4))(*args)
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)
  grads = jax.grad(lambda *a: f(False, *a), argnums=(0, 1, 2))(*args)
  assert all(np.any(g != 0.0) for g in grads)
  # errors = vs - v_tm1 keeps d errors / d v_tm1 = -1 only.
  g_err = jax.grad(lambda v: jnp.sum(vtrace(v, *args[1:]).errors))(args[0])
  np.testing.assert_allclose(g_err, -np.ones(5), rtol=RTOL)


def test_vtrace_batched_equals_per_stream_and_jits():
  rng = np.random.default_rng(6)
  streams = _random_stream(rng, T=6, B=3)
  out = jax.jit(vtrace_batched)(*map(jnp.asarray, streams))
  assert out.vs.shape == (6, 3) and out.pg_advantages.shape == (6, 3)
  for b in range(3):
    vs, adv = np_vtrace(*(a[:, b] for a in streams))
    np.testing.assert_allclose(out.vs[:, b], vs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out.pg_advantages[:, b], adv, rtol=RTOL, atol=ATOL)


def test_vtrace_shape_checks():
  with pytest.raises(AssertionError):
    vtrace(jnp.zeros(3), jnp.zeros(4), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3))
  with pytest.raises(AssertionError):
    vtrace_batched(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3))


# ----------------------------------------------------------------------------------------------
# GAE
# ----------------------------------------------------------------------------------------------
def test_gae_hand_worked_example():
  # T = 2, lambda = 0.95, episode terminates at the 2nd transition (discount 0), bootstrap 2.0 unused.
  #   V = [0.5, 0.5], r = [1, 1], discount = [0.9, 0]
  #   delta_1 = 1 + 0 * 2.0 - 0.5 = 0.5                    A_1 = 0.5
  #   delta_0 = 1 + 0.9 * 0.5 - 0.5 = 0.95                 A_0 = 0.95 + 0.9 * 0.95 * 0.5 = 1.3775
  #   targets = A + V = [1.8775, 1.0]
  out = gae(
    jnp.array([0.5, 0.5]), jnp.array([0.5, 2.0]), jnp.array([1.0, 1.0]), jnp.array([0.9, 0.0]), lambda_=0.95
  )
  np.testing.assert_allclose(out.advantages, [1.3775, 0.5], rtol=RTOL)
  np.testing.assert_allclose(out.targets, [1.8775, 1.0], rtol=RTOL)


@pytest.mark.parametrize('lam', [0.0, 0.95, 1.0])
def test_gae_matches_closed_form(lam):
  rng = np.random.default_rng(7)
  v_tm1, v_t, r, disc, _ = _random_stream(rng, T=9)
  out = gae(*map(jnp.asarray, (v_tm1, v_t, r, disc)), lambda_=lam)
  adv, targets = np_gae(v_tm1, v_t, r, disc, lam)
  np.testing.assert_allclose(out.advantages, adv, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out.targets, targets, rtol=RTOL, atol=ATOL)


def test_gae_termination_and_truncation():
  rng = np.random.default_rng(8)
  v_tm1, v_t, r, disc, _ = _random_stream(rng, T=8, terminal_prob=0.0)
  k = 2
  disc[k] = 0.0
  out = gae(*map(jnp.asarray, (v_tm1, v_t, r, disc)))
  rb, v_tb = r.copy(), v_t.copy()
  rb[k + 1 :] += 3.0
  v_tb[k:] -= 4.0
  out2 = gae(*map(jnp.asarray, (v_tm1, v_tb, rb, disc)))
  np.testing.assert_allclose(out.advantages[: k + 1], out2.advantages[: k + 1], rtol=RTOL)
  # Truncation at k: bootstrap from v_t[k], lambda 0 there == two independent streams.
  disc[k] = 0.9
  lam = np.full(8, 0.95, np.float32)
  lam[k] = 0.0
  out3 = gae(*map(jnp.asarray, (v_tm1, v_t, r, disc)), lambda_=jnp.asarray(lam))
  a1, _ = np_gae(v_tm1[: k + 1], v_t[: k + 1], r[: k + 1], disc[: k + 1], 0.95)
  a2, _ = np_gae(v_tm1[k + 1 :], v_t[k + 1 :], r[k + 1 :], disc[k + 1 :], 0.95)
  np.testing.assert_allclose(out3.advantages, np.concatenate([a1, a2]), rtol=RTOL, atol=ATOL)


def test_gae_batched_and_stop_gradient():
  rng = np.random.default_rng(9)
  v_tm1, v_t, r, disc, _ = _random_stream(rng, T=5, B=4)
  out = jax.jit(gae_batched)(*map(jnp.asarray, (v_tm1, v_t, r, disc)))
  assert out.advantages.shape == (5, 4)
  for b in range(4):
    adv, targets = np_gae(v_tm1[:, b], v_t[:, b], r[:, b], disc[:, b], 0.95)
    np.testing.assert_allclose(out.advantages[:, b], adv, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out.targets[:, b], targets, rtol=RTOL, atol=ATOL)
  g = jax.grad(
    lambda v: jnp.sum(gae_batched(v, jnp.asarray(v_t), jnp.asarray(r), jnp.asarray(disc)).targets)
  )(jnp.asarray(v_tm1))
  np.testing.assert_array_equal(g, 0.0)
