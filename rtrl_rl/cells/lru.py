"""Online LRU with exact RTRL (Zucchet et al. 2023, "Online learning of long-range dependencies").

Complex diagonal recurrence, all parameters real (complex quantities split into re/im):
    lambda = exp(-exp(nu_log) + i exp(theta_log)),  gamma = exp(gamma_log)      [N]
    h_t = lambda h_{t-1} + gamma (x_t B),  B = B_re + i B_im                     B_*: [D, N]
    y_t = Re(h_t C) + x_t D_skip,          C = C_re + i C_im: [N, N], D_skip: [D, N]
(the element-wise skip D * x of the LRU, generalised to D != N by a dense map). Output size N.

Traces (h is holomorphic in lambda, gamma and B, so one complex trace serves each), each ONE complex
array (complex64 for float32 carries, complex128 for float64):
    "lambda": e_l = lambda e_l' + h'          dh/dlambda   [N] (serves nu_log and theta_log)
    "gamma_log": e_g = lambda e_g' + x B       dh/dgamma    [N]
    "B":    E = lambda E' + gamma x (x) 1      dh/dB [D, N] (serves B_re and B_im)
(element-wise complex multiply-adds: a donated carry is updated in place in one pass). For a real
parameter p with dh/dp = T and cotangent G = dL/dh_re + i dL/dh_im, dL/dp = Re(conj(G) T):
dlambda/dnu_log = -nu lambda, dlambda/dtheta_log = i theta lambda, dh/dgamma_log = gamma e_g,
dh/dB_re = E, dh/dB_im = i E (so dL/dB_im = -Im(conj(G) E)). The state stays two real arrays.
Carry per env (a complex element counts 2 floats): 2N + 2DN + 4N floats. C, D_skip learn by
ordinary backprop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rtrl_rl.cells.base import Carry, Cell, ComplexShape, materialize
from rtrl_rl.cells.rtu import unit_disc_init


def _cmul(a_re, a_im, b_re, b_im):
  return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


class LRU(Cell):
  """Online LRU; state `{"re", "im"}` each `[N]`; output `[N]`."""

  name = "lru"
  supports_rtrl = True
  traced_params = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im")

  def __init__(self, hidden_size, input_size=None, r_min=0.0, r_max=1.0):
    super().__init__(hidden_size, input_size)
    if not 0.0 <= r_min < r_max <= 1.0:
      raise ValueError(f"lru: need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    self.r_min, self.r_max = r_min, r_max

  def _init(self, key, d, dtype):
    n = self.hidden_size
    k_lam, kbr, kbi, kcr, kci, kd = jax.random.split(key, 6)
    nu_log, theta_log = unit_disc_init(k_lam, n, dtype, self.r_min, self.r_max)
    r = jnp.exp(-jnp.exp(nu_log))
    normal = lambda k, shape, std: std * jax.random.normal(k, shape, dtype)
    return {  # LRU init (Orvieto et al. 2023): gamma = sqrt(1 - |lambda|^2), B ~ N(0, 1/(2D))
      "nu_log": nu_log,
      "theta_log": theta_log,
      "gamma_log": 0.5 * jnp.log(1 - r * r),
      "B_re": normal(kbr, (d, n), (2 * d) ** -0.5),
      "B_im": normal(kbi, (d, n), (2 * d) ** -0.5),
      "C_re": normal(kcr, (n, n), n**-0.5),
      "C_im": normal(kci, (n, n), n**-0.5),
      "D_skip": normal(kd, (d, n), d**-0.5),
    }

  def carry_shapes(self, d):
    n = self.hidden_size
    traces = {"lambda": ComplexShape((n,)), "gamma_log": ComplexShape((n,)), "B": ComplexShape((d, n))}
    return Carry({"re": (n,), "im": (n,)}, traces)

  @staticmethod
  def _lambda(params):
    """Re and Im of lambda (materialized: computed once per step, not once per element of the
    [B, N] states and [D, N] traces they scale; exact), nu, theta."""
    nu, theta = jnp.exp(params["nu_log"]), jnp.exp(params["theta_log"])
    r = jnp.exp(-nu)
    l_re, l_im = materialize((r * jnp.cos(theta), r * jnp.sin(theta)))
    return l_re, l_im, nu, theta

  @staticmethod
  def _gamma(params):
    return materialize(jnp.exp(params["gamma_log"]))

  def drive(self, params, x):
    return (x @ params["B_re"], x @ params["B_im"])

  def recur(self, params, s, a):
    l_re, l_im, _, _ = self._lambda(params)
    gamma = self._gamma(params)
    re, im = _cmul(l_re, l_im, s["re"], s["im"])
    return {"re": re + gamma * a[0], "im": im + gamma * a[1]}

  def readout(self, params, s, x):
    return s["re"] @ params["C_re"] - s["im"] @ params["C_im"] + x @ params["D_skip"]

  def trace_step(self, params, s_prev, traces, x, a):
    l_re, l_im, _, _ = self._lambda(params)  # per unit, computed once
    gamma = self._gamma(params)
    lam = jax.lax.complex(l_re, l_im)
    h_re, h_im = _cmul(l_re, l_im, s_prev["re"], s_prev["im"])
    gx = x[:, None] * gamma
    new = {
      "lambda": lam * traces["lambda"] + jax.lax.complex(s_prev["re"], s_prev["im"]),
      "gamma_log": lam * traces["gamma_log"] + jax.lax.complex(a[0], a[1]),
      "B": lam * traces["B"] + jax.lax.complex(gx, jnp.zeros_like(gx)),
    }
    return {"re": h_re + gamma * a[0], "im": h_im + gamma * a[1]}, new

  def contract(self, params, g, traces):
    l_re, l_im, nu, theta = self._lambda(params)
    gamma = self._gamma(params)
    g_re, g_im = g["re"], g["im"]
    re_conj_g = lambda t_re, t_im: g_re * t_re + g_im * t_im  # Re(conj(G) T)
    dl = traces["lambda"] * jax.lax.complex(l_re, l_im)  # e_l * lambda
    dl_re, dl_im = jnp.real(dl), jnp.imag(dl)
    b_re, b_im = jnp.real(traces["B"]), jnp.imag(traces["B"])
    e_g = traces["gamma_log"]
    return {
      "nu_log": -nu * re_conj_g(dl_re, dl_im),
      "theta_log": theta * re_conj_g(-dl_im, dl_re),  # times i
      "gamma_log": gamma * re_conj_g(jnp.real(e_g), jnp.imag(e_g)),
      "B_re": re_conj_g(b_re, b_im),
      "B_im": re_conj_g(-b_im, b_re),
    }
