"""Irie et al. 2024, claims 1-2 of issue 16: RTRL learns when the unroll M is shorter than the memory
span and T-BPTT does not (claim 1); RTRL's advantage is largest at small M (claim 2). Cue memory, span
8, IMPALA, eLSTM and RTU cores, M in {2, 4, 8, 16}, the feed-forward floor
(launch/sweeps/claims_irie_m.py). Figure: `final_vs_M.png`.
"""

from __future__ import annotations

import math
import os
import re
from typing import Sequence

from launch.claims.common import Claim, Final, final_returns

SPAN = 8  # launch/sweeps/claims_irie_m.py: DELAY
CHANCE = 0.5  # 2 cues: a feed-forward agent's return is at most 1/K (rtrl_rl/envs/cue_memory.py)


def _figure(table: dict, floor: Final | None, path: str) -> None:
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


def summarize_finals(by_group: dict[str, Final], folder: str) -> tuple[str, list[str]]:
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
  _figure(table, floor, os.path.join(folder, "final_vs_M.png"))
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


def summarize(run_dirs: Sequence[str], folder: str) -> tuple[str, list[str]]:
  return summarize_finals(final_returns(run_dirs), folder)


CLAIM = Claim(
  name="irie_m",
  about="Irie et al.: RTRL learns with the unroll M below the memory span, T-BPTT does not (claims 1-2)",
  sweep="launch/sweeps/claims_irie_m.py",
  summarize=summarize,
)
