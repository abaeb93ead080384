"""Elelimy et al. 2024, claim 3 of issue 16: RTRL's cost is flat in the truncation length T while
T-BPTT's grows with it. A benchmark, not a learning run (bench/bench_truncation.py): seconds per
online-prediction learning step and per PPO update against T. Figure: `cost_vs_T.png`.
"""

from __future__ import annotations

from launch.claims.common import Claim


def measure(folder: str) -> list[str]:
  from bench import bench_truncation  # noqa: PLC0415 - start-up time: it imports jax

  return bench_truncation.run(out=folder)[1]


CLAIM = Claim(
  name="rtu_cost",
  about="RTU paper: RTRL's cost does not grow with the truncation T, T-BPTT's does (claim 3, a benchmark)",
  measure=measure,
)
