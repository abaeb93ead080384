"""The papers' claims at reduced scale, on this machine: `make reproduce-small [CLAIM=<name>]`.

    python -m launch.reproduce --claim=irie_m [--results=results] [--max_parallel=2] [--seeds=3]
    python -m launch.reproduce --claim=irie_m --summarize_only     # tables from the runs on disk

A claim made of training runs runs its sweep (launch/sweeps/claims_<claim>.py) with the local backend
(runs that finished already are skipped, so an interrupted reproduction continues), then writes into
`<results>/<claim>/`: the runs, `curves.png` and `curves.md` (every group's learning curve, mean and
95% interval over seeds), `table.md` (the claim's table), the claim's own figure and `verdict.txt`
(one line per statement of the claim, with the measured numbers, also when it does not reproduce).
A claim that is a benchmark measures and writes its table, figure and verdicts the same way.

Claims (launch/claims/<name>.py):
  irie_m      Irie et al. 2024: RTRL learns when the unroll M is shorter than the memory span, T-BPTT
              does not (claim 1); RTRL's advantage is largest at small M (claim 2). Cue memory, IMPALA.
  irie_m_rp   the same on a second task: POPGym RepeatPrevious-easy (span 3).
  rtu_cost    Elelimy et al. 2024: RTRL's cost is flat in the truncation T, T-BPTT's grows (claim 3).
  rtu_trace   Elelimy et al. 2024: trace conditioning MSRE: RTUs, online LRU, GRU T-BPTT, memoryless
              (claim 4).
  rtu_reacher Elelimy et al. 2024, PPO on Brax Reacher-POMDP: the non-linear RTU clearly best (claim
              5a); stale gradients at least as good as fresh (5c).
  rtu_popgym  Elelimy et al. 2024, PPO on POPGym RepeatFirst-easy: RTUs match or beat GRU and LRU (5b).
  full_scale_plan  every experiment of both papers at full scale: runs, frames, hours at our measured
              throughput, the SLURM sweep's dry run (part 6; results/full_scale_plan/plan.md).
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from launch import sweep as sweeps
from launch.claims import full_scale, irie_m, rtu_cost, rtu_ppo, rtu_trace
from launch.claims.common import Claim
from rtrl_rl import cli, plot

CLAIMS = {
  c.name: c
  for c in (
    irie_m.CLAIM,
    irie_m.CLAIM_RP,
    rtu_cost.CLAIM,
    rtu_trace.CLAIM,
    rtu_ppo.CLAIM_REACHER,
    rtu_ppo.CLAIM_POPGYM,
    full_scale.CLAIM,
  )
}


def _run_sweep(claim: Claim, root: str, max_parallel: int, seeds: int | None, summarize_only: bool):
  sweep_arg = claim.sweep
  if seeds:
    sweep_arg += ("," if ":" in sweep_arg else ":") + f"seeds={seeds}"
  if not summarize_only:
    code = sweeps.main(
      [f"--sweep={sweep_arg}", "--backend=local", f"--root={root}", f"--max_parallel={max_parallel}"]
    )
    if code:
      raise RuntimeError(f"the sweep of claim {claim.name} failed (exit {code}): see {root}")
  _, all_runs = sweeps.load_sweep(sweep_arg, root)
  runs = [r.run_dir for r in all_runs if os.path.isfile(os.path.join(r.run_dir, "summary.json"))]
  if not runs:
    raise cli.UsageError(
      f"no finished run of claim {claim.name} under {root}: run it without --summarize_only"
    )
  plot.plot_runs(runs, os.path.join(root, "curves.png"), y=claim.curve, title=f"claim {claim.name}")
  table, verdicts = claim.summarize(runs, root)
  with open(os.path.join(root, "table.md"), "w") as f:
    f.write(table)
  return verdicts


def reproduce(
  claim: str, results: str, max_parallel: int, seeds: int | None, summarize_only: bool
) -> list[str]:
  """Runs (unless `summarize_only`) and summarises one claim; returns its verdict lines."""
  spec = CLAIMS[claim]
  root = os.path.join(results, claim)
  if spec.sweep is None:
    if summarize_only:
      path = os.path.join(root, "verdict.txt")
      if not os.path.isfile(path):
        raise cli.UsageError(
          f"claim {claim} has not been measured under {root}: run it without --summarize_only"
        )
      with open(path) as f:
        return f.read().splitlines()
    verdicts = spec.measure(root)
  else:
    verdicts = _run_sweep(spec, root, max_parallel, seeds, summarize_only)
  with open(os.path.join(root, "verdict.txt"), "w") as f:
    f.write("\n".join(verdicts) + "\n")
  return verdicts


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m launch.reproduce", description=__doc__.split("\n")[0])
  p.add_argument("--claim", default="all", help=f"one of {sorted(CLAIMS)} or 'all'")
  p.add_argument("--results", default="results", help="where <claim>/ goes")
  p.add_argument("--max_parallel", type=int, default=2, help="runs at a time")
  p.add_argument("--seeds", type=int, default=None, help="seeds per group (default: the sweep's)")
  p.add_argument("--summarize_only", action="store_true", help="only the tables of the runs on disk")
  p.add_argument("--verbose", action="store_true", help=cli.VERBOSE_HELP)
  args = p.parse_args(argv)
  names = sorted(CLAIMS) if args.claim == "all" else [args.claim]
  unknown = [n for n in names if n not in CLAIMS]
  if unknown:
    raise cli.UsageError(f"--claim={args.claim}: expected one of {sorted(CLAIMS)} or 'all'")
  for name in names:
    for line in reproduce(name, args.results, args.max_parallel, args.seeds, args.summarize_only):
      print(line)
  return 0


if __name__ == "__main__":
  cli.run(main)
