"""Element-wise LSTM (eLSTM, "quasi-LSTM") with exact RTRL (Irie et al. 2024, sec. 3).

    z_t = tanh(x_t W_z + w_z * c_{t-1} + b_z)        W_z, W_f: [D, N];  w_z, w_f, b_z, b_f: [N]
    f_t = sigmoid(x_t W_f + w_f * c_{t-1} + b_f)
    c_t = f_t * c_{t-1} + (1 - f_t) * z_t
    y_t = sigmoid(x_t O_x + c_t O_c + b_o) * c_t      output gate on the NEW cell; O_x [D, N], O_c [N, N]

RTRL (one trace per recurrent parameter, same shape as the parameter):
    zh = (1 - f)(1 - z^2),  fh = (c_{t-1} - z) f (1 - f),  J = f + w_z zh + w_f fh   (dc_t/dc_{t-1})
    T_Wz = J T_Wz + x (x) zh,   T_wz = J T_wz + c_{t-1} zh,   T_bz = J T_bz + zh       (same for f)
The output gate (O_x, O_c, b_o) learns by ordinary backprop. Carry per env: N + 2DN + 4N floats.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rtrl_rl.cells.base import Carry, Cell, materialize

_RECURRENT = ("W_z", "W_f", "w_z", "w_f", "b_z", "b_f")


class ELSTM(Cell):
  """eLSTM; state `{"c": [N]}`, output `[N]`."""

  name = "elstm"
  supports_rtrl = True
  traced_params = _RECURRENT

  def _init(self, key, d, dtype):
    n = self.hidden_size
    kz, kf, kwz, kwf, kbz, kbf, kox, koc = jax.random.split(key, 8)
    normal = lambda k, shape, std: std * jax.random.normal(k, shape, dtype)
    lecun = lambda k, shape: normal(k, shape, 1.0 / jnp.sqrt(shape[0]))
    return {  # Irie et al.'s code: N(0, 0.1^2) for the recurrent layer; the output gate is a Linear
      "W_z": normal(kz, (d, n), 0.1),
      "W_f": normal(kf, (d, n), 0.1),
      "w_z": normal(kwz, (n,), 0.1),
      "w_f": normal(kwf, (n,), 0.1),
      "b_z": normal(kbz, (n,), 0.1),
      "b_f": normal(kbf, (n,), 0.1),
      "O_x": lecun(kox, (d, n)),
      "O_c": lecun(koc, (n, n)),
      "b_o": jnp.zeros((n,), dtype),
    }

  def carry_shapes(self, d):
    n = self.hidden_size
    traces = {"W_z": (d, n), "W_f": (d, n), "w_z": (n,), "w_f": (n,), "b_z": (n,), "b_f": (n,)}
    return Carry({"c": (n,)}, traces)

  def drive(self, params, x):
    return {"z": x @ params["W_z"] + params["b_z"], "f": x @ params["W_f"] + params["b_f"]}

  def _gates(self, params, c_prev, a):
    z = jnp.tanh(a["z"] + params["w_z"] * c_prev)
    f = jax.nn.sigmoid(a["f"] + params["w_f"] * c_prev)
    return z, f

  def recur(self, params, s, a):
    c_prev = s["c"]
    z, f = self._gates(params, c_prev, a)
    return {"c": f * c_prev + (1 - f) * z}

  def readout(self, params, s, x):
    c = s["c"]
    return jax.nn.sigmoid(x @ params["O_x"] + c @ params["O_c"] + params["b_o"]) * c

  def trace_step(self, params, s_prev, traces, x, a):
    c_prev = s_prev["c"]
    z, f = self._gates(params, c_prev, a)
    c = f * c_prev + (1 - f) * z
    zh = (1 - f) * (1 - z * z)
    fh = (c_prev - z) * f * (1 - f)
    j = f + params["w_z"] * zh + params["w_f"] * fh
    j, zh, fh = materialize((j, zh, fh))  # per unit, computed once, not once per trace element
    new = {
      "W_z": j * traces["W_z"] + x[:, None] * zh,
      "W_f": j * traces["W_f"] + x[:, None] * fh,
      "w_z": j * traces["w_z"] + c_prev * zh,
      "w_f": j * traces["w_f"] + c_prev * fh,
      "b_z": j * traces["b_z"] + zh,
      "b_f": j * traces["b_f"] + fh,
    }
    return {"c": c}, new

  def contract(self, params, g, traces):
    e = g["c"]
    return {k: e * traces[k] for k in _RECURRENT}
