"""What the claims share: a claim's interface, finals over seeds with their 95% intervals."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from rtrl_rl import plot


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim of issue 16.

  name: its results folder and `--claim=` name. about: one line for `--help`.
  sweep: the sweep file of a claim made of training runs (None: `measure` makes the numbers).
  summarize: (finished run dirs, the claim's folder) -> (the markdown table, verdict lines); it may
    draw its own figure into the folder. curve: the metric its learning curves show (curves.png).
  measure: (the claim's folder) -> verdict lines, for a claim that is a benchmark; it writes its own
    table and figure (launch/reproduce.py writes the verdicts).
  """

  name: str
  about: str
  sweep: str | None = None
  summarize: Callable[[Sequence[str], str], tuple[str, list[str]]] | None = None
  curve: str = "episode_return"
  measure: Callable[[str], list[str]] | None = None


@dataclasses.dataclass(frozen=True)
class Final:
  """A final figure over seeds: mean and 95% t-interval [lo, hi]."""

  mean: float
  lo: float
  hi: float
  seeds: int

  @classmethod
  def of(cls, values: Sequence[float]) -> "Final":
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    if v.size == 0:
      return cls(math.nan, math.nan, math.nan, 0)
    mean, lo, hi = plot.confidence_interval(v[:, None])
    return cls(float(mean[0]), float(lo[0]), float(hi[0]), int(v.size))

  def fmt(self, digits: int = 2) -> str:
    if not math.isfinite(self.mean):
      return "-"
    half = (self.hi - self.lo) / 2
    return f"{self.mean:.{digits}f} ± {half:.{digits}f}" if math.isfinite(half) else f"{self.mean:.{digits}f}"

  def __str__(self) -> str:
    return self.fmt()


def final_returns(run_dirs: Sequence[str]) -> dict[str, Final]:
  """{group name (the runs' config name): Final} of the final return (the mean of the last 10% of
  each seed's learning curve) of the finished runs."""
  out = {}
  for group in plot.group_runs(run_dirs):
    curves = plot.group_curves(group, "frames", "episode_return")
    if curves is not None:
      out[group.name] = Final(
        curves.final_mean,
        curves.final_lo,
        curves.final_hi,
        int(sum(math.isfinite(v) for v in curves.final_per_seed)),
      )
  return out
