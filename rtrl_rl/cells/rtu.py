"""Recurrent Trace Units with exact RTRL (Elelimy et al. 2024, sec. 4 and app. B).

Per unit (all products element-wise over N units):
    r = exp(-exp(nu_log)),  theta = exp(theta_log)
    g = r cos(theta),  phi = r sin(theta),  norm = sqrt(1 - r^2)        (norm tied to r)
    a1 = x W1,  a2 = x W2                                                (W1, W2: [D, N])
  linear:     c1 = g c1' - phi c2' + norm a1 ;  c2 = g c2' + phi c1' + norm a2 ;  y = f([c1 ; c2])
  non-linear: c1 = g h1' - phi h2' + norm a1 ;  h1 = f(c1)  (same for c2, h2) ;  y = [h1 ; h2]
(primes: previous step). Outputs have size 2N.

Traces, named after the parameters, hold d(state)/d(param) as ONE complex array per parameter,
T_p = d(s1 + i s2)/dp with p's shape (complex64 for float32 carries, complex128 for float64;
s = c for the linear RTU, h for the non-linear one):
  linear:     {"W1": [D, N], "nu_log": [N], "theta_log": [N]}, complex.  W2 needs no trace: c = c1 + i c2
              is linear in (a1 + i a2), so dc/dW2 = i dc/dW1 (dc1/dW2 = -dc2/dW1, dc2/dW2 = dc1/dW1).
              Carry per env (a complex element counts 2 floats): 2N + 2DN + 4N floats.
  non-linear: {"W1": [D, N], "W2": [D, N], "nu_log": [N], "theta_log": [N]}, complex.
              Carry per env: 2N + 4DN + 4N floats.
Recursions, with lambda = g + i phi (the rotation of (c1, c2) is a complex product, element-wise, so a
donated carry is updated in place in one pass):
  linear:     T = lambda T' + (dlambda c' + dnorm a + norm x [W1 only])
  non-linear: u = lambda T' + (dlambda h' + dnorm a + norm x [W1 only] + i norm x [W2 only]),
              T = f'(c1) Re(u) + i f'(c2) Im(u)
where c' = c1' + i c2', a = a1 + i a2, and dlambda/dnu_log = -nu lambda, dnorm/dnu_log = nu r^2 / norm
(nu = exp(nu_log)), dlambda/dtheta_log = i theta lambda (the factor theta is what the authors' code
drops), dnorm/dtheta_log = 0. For a cotangent (e1, e2) = dL/d(s1, s2), dL/dp = Re(conj(e1 + i e2) T_p)
= e1 Re(T_p) + e2 Im(T_p).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rtrl_rl.cells.base import Carry, Cell, ComplexShape, materialize

ACTIVATIONS = {
  "relu": (jax.nn.relu, lambda c: (c > 0).astype(c.dtype)),
  "tanh": (jnp.tanh, lambda c: 1 - jnp.tanh(c) ** 2),
  "identity": (lambda c: c, jnp.ones_like),
}


def unit_disc_init(key, n, dtype, r_min=0.0, r_max=1.0):
  """(nu_log, theta_log) with lambda uniform on the ring r_min <= |lambda| <= r_max (LRU init)."""
  kr, kt = jax.random.split(key)
  u = jax.random.uniform(kr, (n,), dtype)
  r = jnp.sqrt(u * (r_max**2 - r_min**2) + r_min**2)
  r = jnp.clip(r, 1e-4, 1 - 1e-4)
  theta = jnp.clip(jax.random.uniform(kt, (n,), dtype, 0.0, 2 * jnp.pi), 1e-4)
  return jnp.log(-jnp.log(r)), jnp.log(theta)


class RTU(Cell):
  """RTU; state `{"c1","c2"}` (linear) or `{"h1","h2"}` (non-linear), each `[N]`; output `[2N]`."""

  name = "rtu"
  supports_rtrl = True

  def __init__(self, hidden_size, input_size=None, nonlinear=True, activation="relu", r_min=0.0, r_max=1.0):
    super().__init__(hidden_size, input_size)
    if activation not in ACTIVATIONS:
      raise ValueError(f"rtu: unknown activation {activation!r}; expected one of {tuple(ACTIVATIONS)}")
    if not 0.0 <= r_min < r_max <= 1.0:
      raise ValueError(f"rtu: need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    self.nonlinear = bool(nonlinear)
    self.activation = activation
    self.r_min, self.r_max = r_min, r_max
    self._f, self._df = ACTIVATIONS[activation]
    self._s = ("h1", "h2") if self.nonlinear else ("c1", "c2")
    self.traced_params = ("W1", "W2", "nu_log", "theta_log")

  def __repr__(self):
    return (
      f"RTU(hidden_size={self.hidden_size}, input_size={self.input_size}, "
      f"nonlinear={self.nonlinear}, activation={self.activation!r})"
    )

  @property
  def output_size(self):
    return 2 * self.hidden_size

  def _init(self, key, d, dtype):
    n = self.hidden_size
    k_lam, k1, k2 = jax.random.split(key, 3)
    nu_log, theta_log = unit_disc_init(k_lam, n, dtype, self.r_min, self.r_max)
    lecun = lambda k: jax.random.normal(k, (d, n), dtype) / jnp.sqrt(d)
    return {"nu_log": nu_log, "theta_log": theta_log, "W1": lecun(k1), "W2": lecun(k2)}

  def carry_shapes(self, d):
    n = self.hidden_size
    s1, s2 = self._s
    traces = {"W1": ComplexShape((d, n)), "nu_log": ComplexShape((n,)), "theta_log": ComplexShape((n,))}
    if self.nonlinear:
      traces["W2"] = ComplexShape((d, n))
    return Carry({s1: (n,), s2: (n,)}, traces)

  # -- math --------------------------------------------------------------------------------------
  @staticmethod
  def _coefficients(params):
    """g, phi, norm and their derivatives w.r.t. nu_log and theta_log, each [N].

    Materialized (base.materialize, exact): computed once per step, not once per element of the
    [B, N] states and [D, N] traces they scale (cos, sin, exp, sqrt per element otherwise).
    """
    nu, theta = jnp.exp(params["nu_log"]), jnp.exp(params["theta_log"])
    r = jnp.exp(-nu)
    g, phi = r * jnp.cos(theta), r * jnp.sin(theta)
    norm = jnp.sqrt(1 - r * r)
    d_nu = (-nu * g, -nu * phi, nu * r * r / norm)
    d_theta = (-theta * phi, theta * g, jnp.zeros_like(norm))
    return materialize(((g, phi, norm), d_nu, d_theta))

  def drive(self, params, x):
    return (x @ params["W1"], x @ params["W2"])

  def _pre(self, params, s, a):
    (g, phi, norm), _, _ = self._coefficients(params)
    p1, p2 = s[self._s[0]], s[self._s[1]]
    return g * p1 - phi * p2 + norm * a[0], g * p2 + phi * p1 + norm * a[1]

  def recur(self, params, s, a):
    c1, c2 = self._pre(params, s, a)
    if self.nonlinear:
      c1, c2 = self._f(c1), self._f(c2)
    return dict(zip(self._s, (c1, c2)))

  def readout(self, params, s, x):
    out = jnp.concatenate([s[self._s[0]], s[self._s[1]]], axis=-1)
    return out if self.nonlinear else self._f(out)

  def trace_step(self, params, s_prev, traces, x, a):
    (g, phi, norm), d_nu, d_theta = self._coefficients(params)  # per unit, computed once
    k1, k2 = self._s
    p1, p2 = s_prev[k1], s_prev[k2]
    c1 = g * p1 - phi * p2 + norm * a[0]
    c2 = g * p2 + phi * p1 + norm * a[1]
    lam = jax.lax.complex(g, phi)

    def immediate(dg, dphi, dnorm):  # [N]: (dg + i dphi)(p1 + i p2) + dnorm (a1 + i a2)
      return jax.lax.complex(dg * p1 - dphi * p2 + dnorm * a[0], dg * p2 + dphi * p1 + dnorm * a[1])

    nx = x[:, None] * norm  # [D, N]: d(norm a)/dW
    new = {
      "nu_log": lam * traces["nu_log"] + immediate(*d_nu),
      "theta_log": lam * traces["theta_log"] + immediate(*d_theta),
      "W1": lam * traces["W1"] + jax.lax.complex(nx, jnp.zeros_like(nx)),
    }
    if not self.nonlinear:
      return {k1: c1, k2: c2}, new
    new["W2"] = lam * traces["W2"] + jax.lax.complex(jnp.zeros_like(nx), nx)
    f1, f2 = materialize((self._df(c1), self._df(c2)))
    new = {p: jax.lax.complex(f1 * jnp.real(u), f2 * jnp.imag(u)) for p, u in new.items()}
    return {k1: self._f(c1), k2: self._f(c2)}, new

  def contract(self, params, g, traces):
    e1, e2 = g[self._s[0]], g[self._s[1]]
    dot = lambda t: e1 * jnp.real(t) + e2 * jnp.imag(t)  # Re(conj(e1 + i e2) T)
    grads = {p: dot(traces[p]) for p in ("W1", "nu_log", "theta_log")}
    if self.nonlinear:
      grads["W2"] = dot(traces["W2"])
    else:  # dc/dW2 = i dc/dW1: Re(conj(e1 + i e2) i T) = e2 Re(T) - e1 Im(T)
      w1 = traces["W1"]
      grads["W2"] = e2 * jnp.real(w1) - e1 * jnp.imag(w1)
    return grads
