"""Exact RTRL == full BPTT (float64, episode resets, across unroll boundaries) and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl import cells

RTRL_CASES = {
  "elstm": dict(name="elstm"),
  "rtu-linear-relu": dict(name="rtu", nonlinear=False, activation="relu"),
  "rtu-linear-tanh": dict(name="rtu", nonlinear=False, activation="tanh"),
  "rtu-nonlinear-tanh": dict(name="rtu", nonlinear=True, activation="tanh"),
  "lru": dict(name="lru"),
}
# (T1, T2, B): lengths of the first and second unroll, batch size
SHAPES = [(1, 1, 1), (3, 1, 2), (6, 5, 3)]


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _problem(case, t1, t2, b, d=4, n=3, seed=0):
  opts = dict(RTRL_CASES[case])
  cell = cells.make(opts.pop("name"), n, **opts)
  keys = jax.random.split(jax.random.key(seed), 4)
  params = cell.init(keys[0], d, dtype=jnp.float64)
  xs = jax.random.normal(keys[1], (t1 + t2, b, d), jnp.float64)
  resets = jax.random.bernoulli(keys[2], 0.25, (t1 + t2, b))
  resets = resets.at[0].set(True)  # every env starts an episode at step 0
  if b > 1:
    resets = resets.at[t1, 0].set(True).at[t1, 1].set(False)  # a reset at the boundary, and not
  w = jax.random.normal(keys[3], (t2, b, cell.output_size), jnp.float64)
  return cell, params, xs, resets, w


def _loss(ys, w):
  """A non-linear per-step loss: sum_t l_t(y_t)."""
  return jnp.sum(jnp.sin(ys) * w) + 0.5 * jnp.sum(ys**2)


def _bptt_loss(cell, params, xs, resets, w, t1):
  """Reference: the loss on the second unroll, by backprop through BOTH unrolls (full history)."""
  c0 = cell.initial_carry(xs.shape[1], jnp.float64)
  _, c1 = cells.unroll(cell, params, c0, xs[:t1], resets[:t1], mode="bptt")
  ys, c2 = cells.unroll(cell, params, c1, xs[t1:], resets[t1:], mode="bptt")
  return _loss(ys, w), c2


def _first_unroll(cell, params, xs, resets, t1):
  c0 = cell.initial_carry(xs.shape[1], jnp.float64)
  return cells.unroll(cell, params, c0, xs[:t1], resets[:t1], mode="rtrl")[1]


def _assert_tree_close(got, want, rtol=1e-7, atol=1e-12):
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=rtol, atol=atol), got, want)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"T{s[0]}+{s[1]}-B{s[2]}")
@pytest.mark.parametrize("case", RTRL_CASES)
def test_rtrl_gradient_equals_bptt_through_the_whole_history(case, shape):
  t1, t2, b = shape
  cell, params, xs, resets, w = _problem(case, t1, t2, b)

  @jax.jit  # one program per case (eagerly, every operation of the scans' gradients compiles alone)
  def gradients(params):
    want = jax.grad(lambda p: _bptt_loss(cell, p, xs, resets, w, t1)[0])(params)
    carry = _first_unroll(cell, params, xs, resets, t1)

    # Learner path: backprop within the unroll + (dL/ds_0) . T_0.
    def rtrl_loss(p, outgoing):
      ys, _ = cells.unroll(cell, p, carry, xs[t1:], resets[t1:], mode="rtrl", outgoing_traces=outgoing)
      return _loss(ys, w)

    learner = [jax.grad(lambda p, o=outgoing: rtrl_loss(p, o))(params) for outgoing in (False, True)]

    # Actor / online path: one step at a time, gradient e_t . T_t.
    def step_loss(p):
      def body(c, inp):
        x, r, wt = inp
        y, c = cells.step(cell, p, c, x, r, mode="rtrl")
        return c, _loss(y, wt)

      return jax.lax.scan(body, carry, (xs[t1:], resets[t1:], w))[1].sum()

    truncated = jax.grad(
      lambda p: _loss(cells.unroll(cell, p, carry, xs[t1:], resets[t1:], mode="tbptt")[0], w)
    )(params)
    return want, [*learner, jax.grad(step_loss)(params)], truncated

  want, got, truncated = gradients(params)
  for g in got:
    _assert_tree_close(g, want)

  # The first unroll matters: a test that would fail if the carried-in term were dropped.
  if not bool(resets[t1 : t1 + 1].all()):
    diff = max(float(jnp.max(jnp.abs(truncated[k] - want[k]))) for k in cell.traced_params)
    assert diff > 1e-6


@pytest.mark.parametrize("case", RTRL_CASES)
def test_outgoing_carry_is_the_full_history_jacobian(case):
  """The traces carried out of an unroll (and out of step-by-step acting) are d s_T / d params."""
  t1, t2, b = 4, 3, 2
  cell, params, xs, resets, w = _problem(case, t1, t2, b)
  # d s_T / d p by forward-mode differentiation of the BPTT reference, one parameter at a time.
  state_fn = lambda p: _bptt_loss(cell, p, xs, resets, w, t1)[1].state

  @jax.jit  # one program (eagerly, every operation compiles alone)
  def carries(params):
    carry = _first_unroll(cell, params, xs, resets, t1)
    _, unrolled = cells.unroll(cell, params, carry, xs[t1:], resets[t1:], mode="rtrl")

    def body(c, inp):
      return cells.step(cell, params, c, *inp, mode="rtrl")[1], None

    stepped = jax.lax.scan(body, carry, (xs[t1:], resets[t1:]))[0]
    return unrolled, stepped, state_fn(params), jax.jacfwd(state_fn)(params)

  unrolled, stepped, bptt_state, jac = carries(params)  # jac: {state_leaf: {param: [B, *state, *param]}}
  _assert_tree_close(unrolled, stepped, rtol=1e-10)
  _assert_tree_close(unrolled.state, bptt_state, rtol=1e-10)
  for s_name in unrolled.state:
    for p_name in cell.traced_params:
      full = jac[s_name][p_name]  # [B, N, *param.shape]: diagonal in the unit index
      diag = jnp.diagonal(full, axis1=1, axis2=full.ndim - 1)  # [B, *param.shape[:-1], N]
      np.testing.assert_allclose(jnp.sum(full, axis=1), diag, atol=1e-12)  # off-diagonals are zero
      np.testing.assert_allclose(
        _trace(cell, params, unrolled.traces, p_name, s_name), diag, rtol=1e-9, atol=1e-12
      )


def _trace(cell, params, traces, p_name, s_name):
  """d state[s_name] / d param[p_name] from the stored traces (resolving the shared ones)."""
  if cell.name == "elstm":
    return traces[p_name]
  if cell.name == "lru":
    stored = {"nu_log": "lambda", "theta_log": "lambda", "B_re": "B", "B_im": "B"}.get(p_name, p_name)
    t = traces[stored]
    l_re, l_im, nu, theta = cell._lambda(params)  # pylint: disable=protected-access
    t_re, t_im = jnp.real(t), jnp.imag(t)
    if p_name == "nu_log":  # e_l * (-nu lambda)
      t_re, t_im = -nu * (t_re * l_re - t_im * l_im), -nu * (t_re * l_im + t_im * l_re)
    elif p_name == "theta_log":  # e_l * (i theta lambda)
      t_re, t_im = -theta * (t_re * l_im + t_im * l_re), theta * (t_re * l_re - t_im * l_im)
    elif p_name == "gamma_log":
      gamma = jnp.exp(params["gamma_log"])
      t_re, t_im = gamma * t_re, gamma * t_im
    elif p_name == "B_im":  # i E
      t_re, t_im = -t_im, t_re
    return t_re if s_name == "re" else t_im
  first = s_name in ("c1", "h1")
  if p_name == "W2" and not cell.nonlinear:  # dc1/dW2 = -dc2/dW1, dc2/dW2 = dc1/dW1
    return -jnp.imag(traces["W1"]) if first else jnp.real(traces["W1"])
  return jnp.real(traces[p_name]) if first else jnp.imag(traces[p_name])  # T = ds1/dp + i ds2/dp


@pytest.mark.parametrize("shape", [(3, 1, 2), (4, 5, 3)], ids=lambda s: f"T{s[0]}+{s[1]}-B{s[2]}")
@pytest.mark.parametrize("case", RTRL_CASES)
def test_input_gradients(case, shape):
  t1, t2, b = shape
  cell, params, xs, resets, w = _problem(case, t1, t2, b)

  @jax.jit  # one program (eagerly, every operation compiles alone)
  def gradients(params, xs):
    carry = _first_unroll(cell, params, xs, resets, t1)
    x2, r2 = xs[t1:], resets[t1:]

    # "unroll": backprop through the recurrence within the unroll == BPTT's gradient w.r.t. x2.
    def bptt_x(x2):
      return _bptt_loss(cell, params, jnp.concatenate([xs[:t1], x2]), resets, w, t1)[0]

    def rtrl_x(x2, input_grad):
      return _loss(cells.unroll(cell, params, carry, x2, r2, mode="rtrl", input_grad=input_grad)[0], w)

    # "immediate": e_t . ds_t/dx_t with s_{t-1} held fixed; computed independently step by step.
    states = [carry.state]
    for t in range(t2):
      _, c = cells.unroll(
        cell, params, cells.Carry(states[-1], None), x2[t : t + 1], r2[t : t + 1], mode="tbptt"
      )
      states.append(c.state)

    def one_step(x, s_prev, reset, wt):
      return _loss(
        cells.unroll(cell, params, cells.Carry(s_prev, None), x[None], reset[None], mode="tbptt")[0], wt[None]
      )

    # The step path's input gradient, and the parameter gradient under either input-gradient choice.
    step_x = jax.grad(lambda x: _loss(cells.step(cell, params, carry, x, r2[0])[0], w[0]))(x2[0])
    g_u, g_i = (
      jax.grad(lambda p, g=g: _loss(cells.unroll(cell, p, carry, x2, r2, input_grad=g)[0], w))(params)
      for g in ("unroll", "immediate")
    )
    return dict(
      unroll=jax.grad(rtrl_x)(x2, "unroll"),
      bptt=jax.grad(bptt_x)(x2),
      immediate=jax.grad(rtrl_x)(x2, "immediate"),
      want=jnp.stack([jax.grad(one_step)(x2[t], states[t], r2[t], w[t]) for t in range(t2)]),
      step=step_x,
      params_unroll=g_u,
      params_immediate=g_i,
    )

  g = gradients(params, xs)
  np.testing.assert_allclose(g["unroll"], g["bptt"], rtol=1e-7, atol=1e-12)
  np.testing.assert_allclose(g["immediate"], g["want"], rtol=1e-7, atol=1e-12)
  # The step path's input gradient is the immediate one too.
  np.testing.assert_allclose(g["step"], g["want"][0], rtol=1e-7, atol=1e-12)
  # The parameter gradient does not depend on the input-gradient choice.
  _assert_tree_close(g["params_immediate"], g["params_unroll"])
  if t2 > 1:
    assert float(jnp.max(jnp.abs(g["immediate"] - g["bptt"]))) > 1e-6


# relu's kink makes central differences unreliable; rtu-linear-tanh runs the same trace code.
@pytest.mark.parametrize("case", [c for c in RTRL_CASES if c != "rtu-linear-relu"])
def test_finite_differences(case):
  """Each parameter's RTRL gradient (the custom derivatives) against central differences."""
  t1, t2, b = 4, 3, 2
  cell, params, xs, resets, w = _problem(case, t1, t2, b, seed=1)

  def full_loss(p):  # the whole history recomputed from scratch: what RTRL must differentiate
    carry = _first_unroll(cell, p, xs, resets, t1)
    ys, _ = cells.unroll(cell, p, carry, xs[t1:], resets[t1:], mode="rtrl", outgoing_traces=False)
    return _loss(ys, w)

  # One program each (eagerly, every operation compiles alone), evaluated at every shift.
  grads = jax.jit(jax.grad(full_loss))(params)
  full_loss = jax.jit(full_loss)
  rng = np.random.default_rng(0)
  eps = 1e-6
  for name, value in params.items():
    v = jnp.asarray(rng.normal(size=value.shape))
    shift = lambda s, name=name, v=v: {**params, name: params[name] + s * v}
    fd = (full_loss(shift(eps)) - full_loss(shift(-eps))) / (2 * eps)
    analytic = jnp.sum(grads[name] * v)
    np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-8, err_msg=f"{case}: {name}")
