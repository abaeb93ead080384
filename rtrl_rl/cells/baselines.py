"""GRU and LSTM: dense recurrences, trained by truncated BPTT (exact RTRL would cost O(N^4)).

    GRU  (Cho et al. 2014):  r, u = sigmoid(x W_{r,u} + h' U_{r,u} + b_{r,u})
                             n = tanh(x W_n + b_n + r * (h' U_n + b_hn));  h = (1 - u) n + u h'
    LSTM (Hochreiter & Schmidhuber 1997, forget bias 1):
                             i, f, o = sigmoid(.), g = tanh(.) of x W + h' U + b
                             c = f c' + i g;  h = o tanh(c)
Weights: input [D, kN], recurrent [N, kN] (orthogonal init), outputs h [N]. No RTRL traces.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rtrl_rl.cells.base import Carry, Cell


def _dense_init(key, d, n, k, dtype):
  kw, ku = jax.random.split(key)
  w = jax.random.normal(kw, (d, k * n), dtype) / jnp.sqrt(d)
  u = jnp.concatenate(
    [jax.nn.initializers.orthogonal()(kk, (n, n), dtype) for kk in jax.random.split(ku, k)], axis=1
  )
  return w, u


class GRU(Cell):
  """GRU; state `{"h": [N]}`, output `[N]`."""

  name = "gru"

  def _init(self, key, d, dtype):
    n = self.hidden_size
    w, u = _dense_init(key, d, n, 3, dtype)
    return {"W": w, "U": u, "b": jnp.zeros((3 * n,), dtype), "b_hn": jnp.zeros((n,), dtype)}

  def carry_shapes(self, d):
    return Carry({"h": (self.hidden_size,)}, None)

  def drive(self, params, x):
    return x @ params["W"] + params["b"]

  def recur(self, params, s, a):
    n, h = self.hidden_size, s["h"]
    hu = h @ params["U"]
    r = jax.nn.sigmoid(a[:n] + hu[:n])
    u = jax.nn.sigmoid(a[n : 2 * n] + hu[n : 2 * n])
    cand = jnp.tanh(a[2 * n :] + r * (hu[2 * n :] + params["b_hn"]))
    return {"h": (1 - u) * cand + u * h}

  def readout(self, params, s, x):
    return s["h"]


class LSTM(Cell):
  """LSTM; state `{"h": [N], "c": [N]}`, output `h [N]`."""

  name = "lstm"

  def _init(self, key, d, dtype):
    n = self.hidden_size
    w, u = _dense_init(key, d, n, 4, dtype)
    b = jnp.zeros((4 * n,), dtype).at[n : 2 * n].set(1.0)  # forget-gate bias 1
    return {"W": w, "U": u, "b": b}

  def carry_shapes(self, d):
    n = self.hidden_size
    return Carry({"h": (n,), "c": (n,)}, None)

  def drive(self, params, x):
    return x @ params["W"] + params["b"]

  def recur(self, params, s, a):
    n = self.hidden_size
    z = a + s["h"] @ params["U"]
    i, f, o = (jax.nn.sigmoid(z[k * n : (k + 1) * n]) for k in range(3))
    c = f * s["c"] + i * jnp.tanh(z[3 * n :])
    return {"h": o * jnp.tanh(c), "c": c}

  def readout(self, params, s, x):
    return s["h"]
