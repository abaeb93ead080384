"""Issue 16, part 6: the full-scale plan on paper (launch/full_scale_plan.py): every experiment of both
papers, its runs, frames and hours at our own measured throughput, and its SLURM sweep's dry run.
Not a claim with a verdict: its lines summarise each experiment's budget."""

from __future__ import annotations

import os

from launch import full_scale_plan
from launch.claims.common import Claim


def measure(folder: str) -> list[str]:
  return full_scale_plan.write(os.path.dirname(folder))


CLAIM = Claim(
  name="full_scale_plan",
  about="the full-scale plan on paper: runs, frames and hours of every experiment (part 6)",
  measure=measure,
)
