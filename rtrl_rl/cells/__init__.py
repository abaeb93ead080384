"""Recurrent cells with exact real-time recurrent learning.

from rtrl_rl import cells
cell = cells.make("rtu", hidden_size=64, nonlinear=True)
params = cell.init(key, input_size)
carry = cell.initial_carry(batch_size)
ys, carry = cells.unroll(cell, params, carry, xs, resets, mode="rtrl")   # xs [T,B,D], resets [T,B]
y, carry = cells.step(cell, params, carry, x, reset, mode="rtrl")        # x [B,D], reset [B]
"""

from rtrl_rl.cells.base import INPUT_GRADS, MODES, Carry, Cell, step, unroll
from rtrl_rl.cells.baselines import GRU, LSTM
from rtrl_rl.cells.elstm import ELSTM
from rtrl_rl.cells.lru import LRU
from rtrl_rl.cells.rtu import RTU

REGISTRY = {"elstm": ELSTM, "rtu": RTU, "lru": LRU, "gru": GRU, "lstm": LSTM}
RTRL_CELLS = tuple(name for name, cls in REGISTRY.items() if cls.supports_rtrl)


def make(name: str, hidden_size: int, **options) -> Cell:
  """A cell by name: "elstm" | "rtu" | "lru" (exact RTRL) | "gru" | "lstm" (TBPTT baselines).

  options: `input_size` (else bound by `cell.init`); rtu: `nonlinear`, `activation`
  ("relu" | "tanh" | "identity"), `r_min`, `r_max`; lru: `r_min`, `r_max`.
  """
  if name not in REGISTRY:
    raise ValueError(f"unknown cell {name!r}; expected one of {tuple(REGISTRY)}")
  try:
    return REGISTRY[name](hidden_size, **options)
  except TypeError as e:
    raise TypeError(f"cells.make({name!r}): {e}") from None


__all__ = [
  "Carry",
  "Cell",
  "MODES",
  "INPUT_GRADS",
  "REGISTRY",
  "RTRL_CELLS",
  "make",
  "step",
  "unroll",
  "ELSTM",
  "RTU",
  "LRU",
  "GRU",
  "LSTM",
]
