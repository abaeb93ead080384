"""The papers' claims at reduced scale, on this machine: `make reproduce-small [CLAIM=<name>]`.

    python -m launch.reproduce --claim=irie_m [--results=results] [--max_parallel=2] [--seeds=3]
    python -m launch.reproduce --claim=irie_m --summarize_only     # tables from the runs on disk

Each claim runs its sweep (launch/sweeps/claims_<claim>.py) with the local backend (runs that
finished already are skipped, so an interrupted reproduction continues), then writes into
`<results>/<claim>/`: the runs, `curves.png` and `curves.md` (every group's learning curve, mean and
95% interval over seeds), `table.md` (the claim's table), the claim's own figure (irie_m:
`final_vs_M.png`) and `verdict.txt` (one line per statement of the claim, with the measured
numbers, also when it does not reproduce).

Claims:
  irie_m  Irie et al. 2024: RTRL learns when the unroll M is shorter than the memory span, T-BPTT
          does not (claim 1), and RTRL's advantage is largest at small M (claim 2). Cue memory,
          span 8, IMPALA, eLSTM and RTU, M in {2, 4, 8, 16}, feed-forward floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from typing import Callable, Sequence

from launch import sweep as sweeps
from rtrl_rl import cli, plot


@dataclasses.dataclass(frozen=True)
class Claim:
  sweep: str  # the sweep file
  summarize: Callable[[dict[str, "Final"], str], tuple[str, list[str]]]
  # (finals, the claim's results folder) -> (table, verdicts); it may draw its own figure there


@dataclasses.dataclass(frozen=True)
class Final:
  """A group's final return (the mean of the last 10% of each seed's curve) over its seeds."""

  mean: float
  lo: float
  hi: float
  seeds: int

  def __str__(self) -> str:
    if not math.isfinite(self.mean):
      return "-"
    half = (self.hi - self.lo) / 2
    return f"{self.mean:.2f} ± {half:.2f}" if math.isfinite(half) else f"{self.mean:.2f}"


def finals(run_dirs: Sequence[str]) -> dict[str, Final]:
  """{group name (the run's config name): Final} of the finished runs."""
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


# -- irie_m -----------------------------------------------------------------------------------------
SPAN = 8  # launch/sweeps/claims_irie_m.py: DELAY
CHANCE = 0.5  # 2 cues: a feed-forward agent's return is at most 1/K (rtrl_rl/envs/cue_memory.py)


def _irie_m_figure(table: dict, floor: "Final | None", path: str) -> None:
  """Final return against M, one panel per core: RTRL, T-BPTT, the feed-forward floor, the span."""
  import matplotlib  # noqa: PLC0415 - optional dependency

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415 - optional dependency, after use("Agg")

  cores = sorted({c for c, _, _ in table})
  fig, axes = plt.subplots(1, len(cores), figsize=(4.5 * len(cores), 3.6), sharey=True, squeeze=False)
  for ax, c in zip(axes[0], cores):
    for mode, label in (("rtrl", "RTRL"), ("tbptt", "T-BPTT")):
      pts = sorted((M, f) for (cc, mm, M), f in table.items() if cc == c and mm == mode)
      ms = [M for M, _ in pts]
      ax.errorbar(
        ms,
        [f.mean for _, f in pts],
        yerr=[(f.hi - f.lo) / 2 for _, f in pts],
        marker="o",
        capsize=3,
        label=label,
      )
    if floor is not None:
      ax.axhline(floor.mean, color="gray", ls="--", label="feed-forward")
    ax.axvline(SPAN, color="k", ls=":", lw=1, label=f"span ({SPAN})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("unroll M")
    ax.set_title(c)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("final return (mean, 95% CI)")
  axes[0][-1].legend(loc="lower right", fontsize=8)
  fig.suptitle("cue memory, 2 cues, span 8: IMPALA, 600k agent steps, 3 seeds", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _irie_m(by_group: dict[str, Final], folder: str) -> tuple[str, list[str]]:
  pat = re.compile(r"claims_irie_m_(\w+?)_(rtrl|tbptt)_M(\d+)_L\d+$")
  table: dict[tuple[str, str, int], Final] = {}
  floor = None
  for name, f in by_group.items():
    m = pat.match(name)
    if m is None:
      continue
    core, mode, M = m.group(1), m.group(2), int(m.group(3))
    if core == "ff":
      floor = f
    else:
      table[core, mode, M] = f
  _irie_m_figure(table, floor, os.path.join(folder, "final_vs_M.png"))
  cores = sorted({c for c, _, _ in table})
  ms = sorted({M for _, _, M in table})
  head = "| M | " + " | ".join(f"{c} RTRL | {c} T-BPTT | {c} gap" for c in cores) + " |"
  lines = [head, "|" + " --- |" * (1 + 3 * len(cores))]
  for M in ms:
    cells = []
    for c in cores:
      r, t = table.get((c, "rtrl", M)), table.get((c, "tbptt", M))
      gap = r.mean - t.mean if r is not None and t is not None else float("nan")
      cells += [str(r) if r else "-", str(t) if t else "-", f"{gap:+.2f}" if math.isfinite(gap) else "-"]
    lines.append(f"| {M}{' (<= span)' if M <= SPAN else ''} | " + " | ".join(cells) + " |")
  if floor is not None:
    lines.append(f"| feed-forward (any M) | {floor} |" + " |" * (3 * len(cores) - 1))
  note = (
    f"\nFinal return (mean of the last 10% of each curve; mean ± 95% t-interval over seeds) on "
    f"cue memory with 2 cues and a span of {SPAN} steps; a feed-forward agent's expected return "
    f"is at most {CHANCE}. 'gap' = RTRL - T-BPTT.\n"
  )
  verdicts = []
  for c in cores:
    short = [M for M in ms if M <= SPAN and (c, "rtrl", M) in table and (c, "tbptt", M) in table]
    if not short:
      continue
    rtrl = {M: table[c, "rtrl", M].mean for M in short}
    tbptt = {M: table[c, "tbptt", M].mean for M in short}
    ok = all(v >= CHANCE + 0.2 for v in rtrl.values()) and all(v <= CHANCE + 0.1 for v in tbptt.values())
    fmt = lambda d: ", ".join(f"M={M}: {v:.2f}" for M, v in d.items())
    verdicts.append(
      f"claim 1 ({c}): {'REPRODUCES' if ok else 'DOES NOT REPRODUCE'}: with M <= the span ({SPAN}), "
      f"RTRL {fmt(rtrl)}; T-BPTT {fmt(tbptt)} (criterion: RTRL >= {CHANCE + 0.2} and T-BPTT <= "
      f"{CHANCE + 0.1} at every such M; chance {CHANCE})"
    )
    gaps = {
      M: table[c, "rtrl", M].mean - table[c, "tbptt", M].mean
      for M in ms
      if (c, "rtrl", M) in table and (c, "tbptt", M) in table
    }
    below = {M: g for M, g in gaps.items() if M <= SPAN}
    above = {M: g for M, g in gaps.items() if M > SPAN}
    if below and above:
      widest = max(gaps, key=gaps.get)
      verdicts.append(
        f"claim 2 ({c}): {'REPRODUCES' if min(below.values()) > max(above.values()) else 'DOES NOT REPRODUCE'}"
        f": the gap RTRL - T-BPTT at every M <= the span exceeds that at every larger M "
        f"({', '.join(f'M={M}: {g:+.2f}' for M, g in gaps.items())}); the widest is at M={widest}, "
        f"{'the smallest M' if widest == min(gaps) else 'not at the smallest M'}"
      )
  return "\n".join(lines) + "\n" + note, verdicts


CLAIMS = {"irie_m": Claim(sweep="launch/sweeps/claims_irie_m.py", summarize=_irie_m)}


def reproduce(
  claim: str, results: str, max_parallel: int, seeds: int | None, summarize_only: bool
) -> list[str]:
  """Runs (unless `summarize_only`) and summarises one claim; returns its verdict lines."""
  spec = CLAIMS[claim]
  root = os.path.join(results, claim)
  sweep_arg = spec.sweep + (f":seeds={seeds}" if seeds else "")
  if not summarize_only:
    code = sweeps.main(
      [f"--sweep={sweep_arg}", "--backend=local", f"--root={root}", f"--max_parallel={max_parallel}"]
    )
    if code:
      raise RuntimeError(f"the sweep of claim {claim} failed (exit {code}): see {root}")
  _, all_runs = sweeps.load_sweep(sweep_arg, root)
  runs = [r.run_dir for r in all_runs if os.path.isfile(os.path.join(r.run_dir, "summary.json"))]
  if not runs:
    raise cli.UsageError(f"no finished run of claim {claim} under {root}: run it without --summarize_only")
  plot.plot_runs(runs, os.path.join(root, "curves.png"), title=f"claim {claim}")
  table, verdicts = spec.summarize(finals(runs), root)
  with open(os.path.join(root, "table.md"), "w") as f:
    f.write(table)
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
