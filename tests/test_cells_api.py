"""The cells' public API: carry sizes, modes, compilation, float32 accuracy, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl import cells

ALL = {
  "elstm": dict(name="elstm"),
  "rtu-linear": dict(name="rtu", nonlinear=False),
  "rtu-nonlinear": dict(name="rtu", nonlinear=True),
  "lru": dict(name="lru"),
  "gru": dict(name="gru"),
  "lstm": dict(name="lstm"),
}


def _make(case, n=5, d=3):
  opts = dict(ALL[case])
  cell = cells.make(opts.pop("name"), n, **opts)
  params = cell.init(jax.random.key(0), d)
  return cell, params


def _inputs(t, b, d=3, seed=0):
  xs = jax.random.normal(jax.random.key(seed), (t, b, d))
  resets = jnp.zeros((t, b), bool).at[0].set(True)
  return xs, resets


def _expected_carry_floats(case, n, d):
  """The documented per-env carry sizes (state + traces) of each cell's docstring."""
  return {
    "elstm": n + 2 * d * n + 4 * n,
    "rtu-linear": 2 * n + 2 * d * n + 4 * n,
    "rtu-nonlinear": 2 * n + 4 * d * n + 4 * n,
    "lru": 2 * n + 2 * d * n + 4 * n,
    "gru": n,
    "lstm": 2 * n,
  }[case]


@pytest.mark.parametrize("case", ALL)
def test_carry_size_is_the_documented_formula_and_independent_of_t(case):
  n, d, b = 5, 3, 2
  cell, params = _make(case, n, d)
  floats = lambda carry: (
    sum(
      leaf.size * (2 if jnp.iscomplexobj(leaf) else 1)  # complex: 2 floats
      for leaf in jax.tree.leaves(carry)
    )
    // b
  )
  carry = cell.initial_carry(b)
  assert floats(carry) == cell.carry_size(d) == _expected_carry_floats(case, n, d)
  mode = "rtrl" if cell.supports_rtrl else "tbptt"
  shapes = set()
  for t in (1, 4, 9):
    _, out = cells.unroll(cell, params, carry, *_inputs(t, b), mode=mode)
    shapes.add(str(jax.tree.map(jnp.shape, out)))
    assert floats(out) == _expected_carry_floats(case, n, d)
  assert len(shapes) == 1


def test_rtrl_carry_equals_number_of_recurrent_parameters_for_elstm():
  """Irie et al.: one trace per recurrent-layer parameter."""
  cell, params = _make("elstm", n=7, d=4)
  n_rec = sum(params[k].size for k in cell.traced_params)
  assert cell.carry_size(4) - 7 == n_rec


@pytest.mark.parametrize("case", ["elstm", "rtu-nonlinear", "gru"])
def test_no_recompilation_for_equal_shapes(case):
  cell, params = _make(case)
  mode = "rtrl" if cell.supports_rtrl else "tbptt"
  carry = cell.initial_carry(4)
  before_u, before_s = cells.unroll._cache_size(), cells.step._cache_size()  # pylint: disable=protected-access
  for seed in range(3):
    xs, resets = _inputs(6, 4, seed=seed)
    _, carry = cells.unroll(cell, params, carry, xs, resets, mode=mode)
    _, carry = cells.step(cell, params, carry, xs[0], resets[0], mode=mode)
  assert cells.unroll._cache_size() - before_u == 1  # pylint: disable=protected-access
  assert cells.step._cache_size() - before_s == 1  # pylint: disable=protected-access

  grad_fn = jax.jit(jax.grad(lambda p, xs, r: cells.unroll(cell, p, carry, xs, r, mode=mode)[0].sum()))
  for seed in range(3):
    grad_fn(params, *_inputs(6, 4, seed=seed))
  assert grad_fn._cache_size() == 1  # pylint: disable=protected-access


def test_resets_zero_state_and_traces():
  cell, params = _make("elstm")
  xs, _ = _inputs(5, 2)
  _, carry = cells.unroll(cell, params, cell.initial_carry(2), xs, jnp.zeros((5, 2), bool))
  x = xs[0]
  fresh_y, fresh = cells.step(cell, params, cell.initial_carry(2), x, jnp.zeros(2, bool))
  y, out = cells.step(cell, params, carry, x, jnp.array([True, False]))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b[0], rtol=1e-6), out, fresh)
  np.testing.assert_allclose(y[0], fresh_y[0], rtol=1e-6)
  assert not np.allclose(y[1], fresh_y[1])


def test_tbptt_truncates_and_bptt_does_not():
  cell, params = _make("gru")
  xs, resets = _inputs(6, 2)
  loss = lambda mode: (
    lambda p: cells.unroll(
      cell,
      p,
      cells.unroll(cell, p, cell.initial_carry(2), xs[:3], resets[:3], mode=mode)[1],
      xs[3:],
      resets[3:],
      mode=mode,
    )[0].sum()
  )
  g_b, g_t = jax.grad(loss("bptt"))(params), jax.grad(loss("tbptt"))(params)
  g_second_only = jax.grad(
    lambda p: cells.unroll(
      cell,
      p,
      cells.unroll(cell, params, cell.initial_carry(2), xs[:3], resets[:3], mode="tbptt")[1],
      xs[3:],
      resets[3:],
      mode="tbptt",
    )[0].sum()
  )(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g_t, g_second_only)
  assert not np.allclose(g_b["U"], g_t["U"])


def test_float32_at_realistic_size_agrees_with_float64():
  """N=256, D=257, T=50: float32 RTRL gradients within 1e-4 (relative to each leaf's max) of float64."""
  n, d, t, b = 256, 257, 50, 2
  results = {}
  for dtype in (jnp.float32, jnp.float64):
    with jax.enable_x64(True):  # draw the same numbers for both precisions, then cast
      draws = {
        name: (cells.make(name, n, **opts), opts)
        for name, opts in (("elstm", {}), ("rtu", dict(nonlinear=True, activation="tanh")))
      }
      draws = {
        name: (
          cell.init(jax.random.key(0), d, dtype=jnp.float64),
          jax.random.normal(jax.random.key(1), (2 * t, b, d), jnp.float64),
          opts,
        )
        for name, (cell, opts) in draws.items()
      }
    with jax.enable_x64(dtype == jnp.float64):
      for name, (params64, xs64, opts) in draws.items():
        cell = cells.make(name, n, **opts)
        cell.init(jax.random.key(0), d)
        params = jax.tree.map(lambda v: jnp.asarray(np.asarray(v), dtype), params64)
        xs = jnp.asarray(np.asarray(xs64), dtype)
        resets = jnp.zeros((2 * t, b), bool).at[0].set(True)
        _, carry = cells.unroll(cell, params, cell.initial_carry(b, dtype), xs[:t], resets[:t])
        grads = jax.grad(
          lambda p: jnp.sum(
            jnp.tanh(cells.unroll(cell, p, carry, xs[t:], resets[t:], outgoing_traces=False)[0])
          )
        )(params)
        results[(name, dtype)] = jax.tree.map(np.asarray, grads)
  for name in ("elstm", "rtu"):
    for k, g64 in results[(name, jnp.float64)].items():
      g32 = results[(name, jnp.float32)][k]
      err = np.max(np.abs(g32 - g64)) / np.max(np.abs(g64))
      assert err < 1e-4, (name, k, err)  # measured: <= 1e-6


# -- bad input --------------------------------------------------------------------------------------
def test_unknown_cell_name():
  with pytest.raises(ValueError, match=r"unknown cell 'elsmt'.*'elstm'.*'rtu'"):
    cells.make("elsmt", 8)


def test_unknown_option():
  with pytest.raises(TypeError, match="cells.make\\('elstm'\\).*nonlinear"):
    cells.make("elstm", 8, nonlinear=True)
  with pytest.raises(ValueError, match="unknown activation 'sigmoid'.*relu"):
    cells.make("rtu", 8, activation="sigmoid")


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_rtrl_mode_on_dense_cells_names_the_supported_cells(name):
  cell = cells.make(name, 4)
  params = cell.init(jax.random.key(0), 3)
  with pytest.raises(
    ValueError, match=r"mode='rtrl' is not supported by cell .*O\(N\^4\).*'elstm', 'rtu', 'lru'"
  ):
    cells.unroll(cell, params, cell.initial_carry(2), *_inputs(3, 2), mode="rtrl")


def test_wrong_ranks_and_shapes():
  cell, params = _make("elstm")
  carry = cell.initial_carry(2)
  xs, resets = _inputs(4, 2)
  with pytest.raises(ValueError, match=r"expects xs \[T, B, D\] and resets \[T, B\]"):
    cells.unroll(cell, params, carry, xs[0], resets)
  with pytest.raises(ValueError, match=r"expects xs \[T, B, D\] and resets \[T, B\]"):
    cells.unroll(cell, params, carry, xs, resets[:, :1])
  with pytest.raises(ValueError, match="input feature size 2 differs from the cell's input_size 3"):
    cells.unroll(cell, params, carry, xs[..., :2], resets)
  with pytest.raises(ValueError, match=r"expects x \[B, D\] and reset \[B\]"):
    cells.step(cell, params, carry, xs, resets[0])
  with pytest.raises(ValueError, match="mode"):
    cells.unroll(cell, params, carry, xs, resets, mode="rtlr")
  with pytest.raises(ValueError, match="inputs must be floating point"):
    cells.unroll(cell, params, carry, xs.astype(jnp.int32), resets)


def test_mismatched_carry_and_params():
  cell, params = _make("elstm")
  xs, resets = _inputs(4, 2)
  with pytest.raises(ValueError, match=r"carry does not match the cell and batch size 2.*initial_carry\(2\)"):
    cells.unroll(cell, params, cell.initial_carry(3), xs, resets)
  other = cells.make("rtu", 5)
  other.init(jax.random.key(0), 3)
  with pytest.raises(ValueError, match="carry does not match"):
    cells.unroll(cell, params, other.initial_carry(2), xs, resets)
  with pytest.raises(ValueError, match="params do not match the cell"):
    cells.unroll(cell, {**params, "W_z": params["W_z"][:, :2]}, cell.initial_carry(2), xs, resets)
  with pytest.raises(ValueError, match="carry.traces is None"):
    cells.unroll(cell, params, cell.initial_carry(2, traces=False), xs, resets, mode="rtrl")
  with pytest.raises(ValueError, match="built for input_size=3, got 4"):
    cell.init(jax.random.key(0), 4)
  unbound = cells.make("lru", 4)
  with pytest.raises(ValueError, match="input size unknown; call cell.init"):
    unbound.initial_carry(2)
