"""Elelimy et al. 2024, claim 4 of issue 16: trace conditioning. Online prediction scored by MSRE
(configs/rtu_trace_conditioning.py, launch/sweeps/rtu_trace_conditioning.py): non-linear RTU, linear RTU
and online LRU by exact RTRL, GRU by T-BPTT at several truncations T, the memoryless baseline, at one
parameter budget. The paper: RTUs are best or tied, T-BPTT needs a long enough T, every recurrent
learner beats the memoryless one. Figure: `msre_vs_T.png`.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Sequence

from launch.claims.common import Claim, Final

# config name -> (variant, T): configs/rtu_trace_conditioning.py names runs
# "trace_conditioning_<variant>[_T<T>]"
_NAME = re.compile(r"trace_conditioning_(\w+?)(?:_T(\d+))?$")
LABELS = {
  "rtu_nonlinear": "RTU non-linear",
  "rtu_linear": "RTU linear",
  "lru": "online LRU",
  "gru": "GRU",
  "lru_tbptt": "LRU",
  "lstm": "LSTM",
  "ff": "memoryless",
}


def msre_by_variant(run_dirs: Sequence[str]) -> dict[tuple[str, int | None], Final]:
  """{(variant, T or None): the final MSRE over the run's seeds} of finished prediction runs."""
  out = {}
  for run in run_dirs:
    with open(os.path.join(run, "config.json")) as f:
      name = json.load(f)["name"]
    m = _NAME.match(name)
    if m is None:
      continue
    with open(os.path.join(run, "summary.json")) as f:
      summary = json.load(f)
    out[m.group(1), int(m.group(2)) if m.group(2) else None] = Final.of(summary["msre_per_seed"])
  return out


def _figure(by: dict[tuple[str, int | None], Final], path: str) -> None:
  """MSRE against T: the T-BPTT cores as curves, the RTRL cores and the memoryless one as bands."""
  import matplotlib  # noqa: PLC0415 - optional dependency

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415 - optional dependency, after use("Agg")

  fig, ax = plt.subplots(figsize=(6, 4))
  Ts = sorted({T for _, T in by if T is not None})
  for i, variant in enumerate(dict.fromkeys(v for v, T in by if T is not None)):
    pts = sorted((T, f) for (v, T), f in by.items() if v == variant and T is not None)
    ax.errorbar(
      [T for T, _ in pts],
      [f.mean for _, f in pts],
      yerr=[(f.hi - f.lo) / 2 for _, f in pts],
      marker="o",
      capsize=3,
      color=f"C{i}",
      label=f"{LABELS.get(variant, variant)} (T-BPTT)",
    )
  for i, (variant, f) in enumerate((v, f) for (v, T), f in by.items() if T is None):
    style = dict(color="gray", ls=":") if variant == "ff" else dict(color=f"C{3 + i}", ls="--")
    kind = "" if variant == "ff" else " (RTRL)"
    ax.axhline(f.mean, label=LABELS.get(variant, variant) + kind, **style)
    if math.isfinite(f.lo):
      ax.axhspan(f.lo, f.hi, alpha=0.15, color=style["color"])
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  if Ts:
    ax.set_xticks(Ts, [str(t) for t in Ts])
  ax.set_xlabel("truncation T (T-BPTT)")
  ax.set_ylabel("MSRE, last quarter of the stream")
  ax.set_title("trace conditioning (ISI 7-13): mean and 95% CI over seeds", fontsize=10)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _label(key: tuple[str, int | None]) -> str:
  v, T = key
  return LABELS.get(v, v) + (f" T={T}" if T is not None else "")


def summarize_msre(by: dict[tuple[str, int | None], Final], folder: str) -> tuple[str, list[str]]:
  _figure(by, os.path.join(folder, "msre_vs_T.png"))
  rank = {v: i for i, v in enumerate(LABELS)}
  order = sorted(
    by, key=lambda k: (k[0] == "ff", k[1] is not None, rank.get(k[0], len(rank)), k[0], k[1] or 0)
  )
  lines = ["| core | gradient | MSRE | seeds |", "|---|---|---|---|"]
  for key in order:
    v, T = key
    grad = "none (memoryless)" if v == "ff" else ("RTRL" if T is None else f"T-BPTT, T={T}")
    lines.append(f"| {LABELS.get(v, v)} | {grad} | {by[key].fmt(4)} | {by[key].seeds} |")
  table = "\n".join(lines) + (
    "\n\nMSRE over the last quarter of the stream, mean ± 95% t-interval over seeds (independent "
    "parameters and streams).\n"
  )
  verdicts = []
  ff = by.get(("ff", None))
  cores = [k for k in by if k[0] != "ff"]
  if ff is not None and cores:
    worse = [k for k in cores if not by[k].hi < ff.lo]
    verdicts.append(
      f"claim 4 (memory helps): {'REPRODUCES' if not worse else 'DOES NOT REPRODUCE'}: every "
      f"recurrent learner's MSRE is below the memoryless one's ({ff.fmt(4)}): "
      + ", ".join(f"{_label(k)} {by[k].mean:.4f}" for k in cores)
      + (f"; not below it: {', '.join(map(_label, worse))}" if worse else "")
    )
  for rtu in ("rtu_nonlinear", "rtu_linear"):
    r = by.get((rtu, None))
    if r is None:
      continue
    others = [k for k in cores if k != (rtu, None)]
    worse_than = [k for k in others if r.lo > by[k].hi]  # the RTU significantly worse
    better_than = [k for k in others if r.hi < by[k].lo]
    verdicts.append(
      f"claim 4 ({LABELS[rtu]} best or tied): {'REPRODUCES' if not worse_than else 'DOES NOT REPRODUCE'}: "
      f"MSRE {r.fmt(4)}; better (95% intervals apart) than "
      f"{', '.join(map(_label, better_than)) or 'none'}; worse than {', '.join(map(_label, worse_than)) or 'none'}"
      f"; tied with the rest"
    )
  gru = sorted((T, f) for (v, T), f in by.items() if v == "gru" and T is not None)
  best = by.get(("rtu_nonlinear", None))
  if len(gru) >= 2 and best is not None:
    (t0, f0), (t1, f1) = gru[0], gru[-1]
    tied = [str(T) for T, f in gru if f.lo <= best.hi]
    verdicts.append(
      f"claim 4 (T-BPTT needs a long T): {'REPRODUCES' if f0.lo > best.hi else 'DOES NOT REPRODUCE'}: "
      f"GRU at T={t0} {f0.mean:.4f}, at T={t1} {f1.mean:.4f} against the non-linear RTU's "
      f"{best.mean:.4f} (criterion: GRU at T={t0} worse, intervals apart); GRU is not worse than "
      f"the RTU (intervals overlap, or below) at T in {{{', '.join(tied)}}}"
    )
  return table, verdicts


def summarize(run_dirs: Sequence[str], folder: str) -> tuple[str, list[str]]:
  return summarize_msre(msre_by_variant(run_dirs), folder)


CLAIM = Claim(
  name="rtu_trace",
  about="RTU paper: trace conditioning MSRE of RTUs, online LRU, GRU T-BPTT at several T, memoryless (claim 4)",
  sweep="launch/sweeps/rtu_trace_conditioning.py:seeds=5,Ts=1+2+4+8+16,tbptt=gru",
  summarize=summarize,
  curve="chunk_msre",
)
