"""Irie et al. 2024, claims 1-2 of issue 16: RTRL learns when the unroll M is shorter than the memory
span and T-BPTT does not (claim 1); RTRL's advantage is largest at small M (claim 2). IMPALA, eLSTM
and RTU cores, M in {2, 4, 8, 16}, the feed-forward floor (launch/sweeps/claims_irie_m.py), on two
tasks of known span: cue memory (span 8, claim `irie_m`) and POPGym RepeatPrevious-easy (span 3,
claim `irie_m_rp`). Figure: `final_vs_M.png`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from typing import Sequence

from launch.claims.common import Claim, Final, final_returns


@dataclasses.dataclass(frozen=True)
class Task:
  """A memory task of the sweep: its runs' name prefix, span, feed-forward bound, return range."""

  prefix: str  # configs/claims_irie_m.py names its runs claims_irie_m_<prefix><core>_...
  label: str  # in the verdicts ("" for cue memory, whose verdicts came first)
  title: str  # the figure's
  span: int
  bound: float  # a feed-forward agent's expected return is at most this
  scale: float  # the range of the return: the criteria's margins are fractions of it


TASKS = {
  # launch/sweeps/claims_irie_m.py: DELAY; 2 cues: at most 1/K (rtrl_rl/envs/cue_memory.py)
  "cue": Task("", "", "cue memory, 2 cues, span 8: IMPALA, 600k agent steps, 3 seeds", 8, 0.5, 1.0),
  # returns in [-1, 1]; at most 2 * 13/51 - 1 (tests/test_learning.py)
  "repeat_previous": Task(
    "rp_",
    "RepeatPrevious, ",
    "POPGym RepeatPrevious-easy, span 3: IMPALA, 1.2M agent steps, 3 seeds",
    3,
    2 * 13 / 51 - 1,
    2.0,
  ),
}


def _figure(table: dict, floor: Final | None, task: Task, path: str) -> None:
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
    ax.axvline(task.span, color="k", ls=":", lw=1, label=f"span ({task.span})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("unroll M")
    ax.set_title(c)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("final return (mean, 95% CI)")
  axes[0][-1].legend(loc="lower right", fontsize=8)
  fig.suptitle(task.title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def summarize_finals(
  by_group: dict[str, Final], folder: str, task: Task = TASKS["cue"]
) -> tuple[str, list[str]]:
  span, bound = task.span, task.bound
  hi, lo = round(bound + 0.2 * task.scale, 2), round(bound + 0.1 * task.scale, 2)  # the criteria
  pat = re.compile(rf"claims_irie_m_{task.prefix}(\w+?)_(rtrl|tbptt)_M(\d+)_L\d+$")
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
  _figure(table, floor, task, os.path.join(folder, "final_vs_M.png"))
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
    lines.append(f"| {M}{' (<= span)' if M <= span else ''} | " + " | ".join(cells) + " |")
  if floor is not None:
    lines.append(f"| feed-forward (any M) | {floor} |" + " |" * (3 * len(cores) - 1))
  note = (
    f"\nFinal return (mean of the last 10% of each curve; mean ± 95% t-interval over seeds) on "
    f"{task.title.split(':')[0]}; a feed-forward agent's expected return is at most {bound:.2f}. "
    "'gap' = RTRL - T-BPTT.\n"
  )
  verdicts = []
  for c in cores:
    short = [M for M in ms if M <= span and (c, "rtrl", M) in table and (c, "tbptt", M) in table]
    if not short:
      continue
    rtrl = {M: table[c, "rtrl", M].mean for M in short}
    tbptt = {M: table[c, "tbptt", M].mean for M in short}
    ok = all(v >= hi for v in rtrl.values()) and all(v <= lo for v in tbptt.values())
    fmt = lambda d: ", ".join(f"M={M}: {v:.2f}" for M, v in d.items())
    verdicts.append(
      f"claim 1 ({task.label}{c}): {'REPRODUCES' if ok else 'DOES NOT REPRODUCE'}: with M <= the span "
      f"({span}), RTRL {fmt(rtrl)}; T-BPTT {fmt(tbptt)} (criterion: RTRL >= {hi} and T-BPTT <= "
      f"{lo} at every such M; feed-forward bound {bound:.2f})"
    )
    gaps = {
      M: table[c, "rtrl", M].mean - table[c, "tbptt", M].mean
      for M in ms
      if (c, "rtrl", M) in table and (c, "tbptt", M) in table
    }
    below = {M: g for M, g in gaps.items() if M <= span}
    above = {M: g for M, g in gaps.items() if M > span}
    if below and above:
      widest = max(gaps, key=gaps.get)
      verdicts.append(
        f"claim 2 ({task.label}{c}): {'REPRODUCES' if min(below.values()) > max(above.values()) else 'DOES NOT REPRODUCE'}"
        f": the gap RTRL - T-BPTT at every M <= the span exceeds that at every larger M "
        f"({', '.join(f'M={M}: {g:+.2f}' for M, g in gaps.items())}); the widest is at M={widest}, "
        f"{'the smallest M' if widest == min(gaps) else 'not at the smallest M'}"
      )
  return "\n".join(lines) + "\n" + note, verdicts


def summarize(run_dirs: Sequence[str], folder: str, task: str = "cue") -> tuple[str, list[str]]:
  return summarize_finals(final_returns(run_dirs), folder, TASKS[task])


CLAIM = Claim(
  name="irie_m",
  about="Irie et al.: RTRL learns with the unroll M below the memory span, T-BPTT does not (claims 1-2), "
  "cue memory",
  sweep="launch/sweeps/claims_irie_m.py",
  summarize=summarize,
)
CLAIM_RP = Claim(
  name="irie_m_rp",
  about="claims 1-2 of Irie et al. on a second task: POPGym RepeatPrevious-easy",
  sweep="launch/sweeps/claims_irie_m.py:task=repeat_previous",
  summarize=functools.partial(summarize, task="repeat_previous"),
)
