"""Elelimy et al. 2024, claim 5 of issue 16, inside PPO at the paper's settings (16 environments
sharing its 2048-step buffer, a reduced budget): the non-linear RTU is clearly best on the Reacher
POMDP, and stale gradients are at least as good as fresh ones (claim `rtu_reacher`, Brax, the sweep
launch/sweeps/rtu_mujoco_pomdp.py); RTUs match or beat GRU and LRU on POPGym (claim `rtu_popgym`,
the JAX POPGym, launch/sweeps/rtu_popgym.py). The T-BPTT LRU of the paper's five cores is left out
of both for time; the feed-forward agent is the floor. Figure: `finals.png`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from typing import Sequence

from launch.claims import rtu_trace
from launch.claims.common import Claim, Final, final_returns

RTUS = ("rtu_nonlinear", "rtu_linear")
BASELINES = ("gru", "lru", "lru_tbptt")  # the cores the RTUs are compared with on POPGym
LABELS = {**rtu_trace.LABELS, "ff": "feed-forward"}


@dataclasses.dataclass(frozen=True)
class Setting:
  """One claim's runs: the config-name pattern of its groups, its title and its sweep (whose
  arguments set the budget)."""

  pattern: str  # a regex over config names with the groups core, fresh and (optional) env
  title: str
  sweep: str
  env: str = ""  # the environment of the groups whose names do not carry one


SETTINGS = {
  "reacher": Setting(
    r"rtu_reacher_pomdp_(?P<core>\w+?)(?P<fresh>_fresh)?$",
    "Reacher-POMDP (Brax), PPO, 16 envs x 128 steps, 300k agent steps, 3 seeds",
    "launch/sweeps/rtu_mujoco_pomdp.py:envs=Reacher-POMDP,cores=rtu_nonlinear+rtu_linear+lru+gru+ff,"
    "fresh=rtu_linear,seeds=3,steps=300000,num_envs=16",
    env="Reacher-POMDP",
  ),
  "popgym": Setting(
    r"rtu_popgym_(?P<env>[A-Za-z]+-(?:easy|medium|hard))_(?P<core>\w+?)(?P<fresh>_fresh)?$",
    "POPGym (JAX) RepeatFirst-easy, PPO, 16 envs x 128 steps, 1M agent steps, 3 seeds",
    "launch/sweeps/rtu_popgym.py:tasks=RepeatFirst,levels=easy,cores=rtu_nonlinear+rtu_linear+lru+gru+ff,"
    "seeds=3,steps=1000000,num_envs=16",
  ),
}


def finals_by_core(by_group: dict[str, Final], setting: Setting) -> dict[tuple[str, str, str], Final]:
  """{(env, core, "stale" | "fresh"): Final} of the groups the setting's pattern names."""
  pat = re.compile(setting.pattern)
  out = {}
  for name, f in by_group.items():
    m = pat.match(name)
    if m is not None:
      env = m.groupdict().get("env") or setting.env
      out[env, m.group("core"), "fresh" if m.group("fresh") else "stale"] = f
  return out


def _figure(table: dict[tuple[str, str, str], Final], title: str, path: str) -> None:
  """Final return per core (mean and 95% interval), one panel per environment."""
  import matplotlib  # noqa: PLC0415 - optional dependency

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415 - optional dependency, after use("Agg")

  envs = sorted({e for e, _, _ in table})
  fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 3.8), squeeze=False)
  for ax, env in zip(axes[0], envs):
    keys = [k for k in table if k[0] == env]
    labels = [LABELS.get(c, c) + (" (fresh)" if g == "fresh" else "") for _, c, g in keys]
    for i, ((_, c, _), f) in enumerate((k, table[k]) for k in keys):
      half = (f.hi - f.lo) / 2 if math.isfinite(f.hi - f.lo) else 0.0
      color = "C3" if c == "rtu_nonlinear" else "C0" if c in RTUS else "gray" if c == "ff" else "C2"
      ax.errorbar([i], [f.mean], yerr=[half], fmt="o", color=color, capsize=5, markersize=7)
    ax.set_xticks(range(len(keys)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_title(env)
    ax.set_ylabel("final return (mean, 95% CI)")
    ax.grid(alpha=0.3, axis="y")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _table(table: dict[tuple[str, str, str], Final], title: str) -> str:
  lines = ["| environment | core | gradient | final return | seeds |", "| --- | --- | --- | --- | --- |"]
  for (env, core, grad), f in table.items():
    lines.append(f"| {env} | {LABELS.get(core, core)} | {grad} | {f} | {f.seeds} |")
  return (
    "\n".join(lines) + f"\n\nFinal return (mean of the last 10% of each curve; mean ± 95% t-interval "
    f"over seeds) on {title}.\n"
  )


def _sorted(table: dict) -> dict:
  order = {c: i for i, c in enumerate(RTUS + BASELINES + ("ff",))}
  return dict(sorted(table.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][2] != "stale")))


def _stale_vs_fresh(table: dict) -> list[str]:
  """Claim 5c: stale gradients (the paper's default, found better on Ant) at least as good as fresh."""
  verdicts = []
  for (env, core, grad), fresh in table.items():
    stale = table.get((env, core, "stale"))
    if grad != "fresh" or stale is None:
      continue
    overlap = stale.lo <= fresh.hi and fresh.lo <= stale.hi
    verdicts.append(
      f"claim 5c ({env}, {LABELS.get(core, core)}): "
      f"{'REPRODUCES' if stale.mean >= fresh.mean else 'DOES NOT REPRODUCE'}: stale gradients "
      f"{stale}, fresh {fresh} (criterion: stale's mean >= fresh's; the 95% intervals "
      f"{'overlap: a tie within the seeds' if overlap else 'do not overlap'})"
    )
  return verdicts


def summarize_reacher(by_group: dict[str, Final], folder: str) -> tuple[str, list[str]]:
  setting = SETTINGS["reacher"]
  table = _sorted(finals_by_core(by_group, setting))
  _figure(table, setting.title, os.path.join(folder, "finals.png"))
  verdicts = []
  for env in sorted({e for e, _, _ in table}):
    stale = {c: f for (e, c, g), f in table.items() if e == env and g == "stale"}
    best = stale.get("rtu_nonlinear")
    others = {c: f for c, f in stale.items() if c != "rtu_nonlinear"}
    if best is None or not others:
      continue
    ok = all(best.lo > f.mean for f in others.values())
    verdicts.append(
      f"claim 5a ({env}): {'REPRODUCES' if ok else 'DOES NOT REPRODUCE'}: the non-linear RTU "
      f"{best}; "
      + ", ".join(f"{LABELS.get(c, c)} {f}" for c, f in others.items())
      + " (criterion, 'clearly best': its 95% interval lies above every other core's mean)"
    )
  return _table(table, setting.title), verdicts + _stale_vs_fresh(table)


def summarize_popgym(by_group: dict[str, Final], folder: str) -> tuple[str, list[str]]:
  setting = SETTINGS["popgym"]
  table = _sorted(finals_by_core(by_group, setting))
  _figure(table, setting.title, os.path.join(folder, "finals.png"))
  verdicts = []
  for env in sorted({e for e, _, _ in table}):
    stale = {c: f for (e, c, g), f in table.items() if e == env and g == "stale"}
    base = {c: f for c, f in stale.items() if c in BASELINES}
    if not base:
      continue
    top = max(base, key=lambda c: base[c].mean)
    floor = f"; feed-forward {stale['ff']}" if "ff" in stale else ""
    for rtu in (r for r in RTUS if r in stale):
      f = stale[rtu]
      verdicts.append(
        f"claim 5b ({env}, {LABELS[rtu]}): {'REPRODUCES' if f.mean >= base[top].lo else 'DOES NOT REPRODUCE'}"
        f": {LABELS[rtu]} {f}; best baseline {LABELS.get(top, top)} {base[top]} ("
        + ", ".join(f"{LABELS.get(c, c)} {b}" for c, b in base.items())
        + f"){floor} (criterion, 'match or beat': its mean >= the lower end of the best baseline's "
        "95% interval)"
      )
  return _table(table, setting.title), verdicts + _stale_vs_fresh(table)


def _summarize(run_dirs: Sequence[str], folder: str, which: str) -> tuple[str, list[str]]:
  by_group = final_returns(run_dirs)
  return (summarize_reacher if which == "reacher" else summarize_popgym)(by_group, folder)


CLAIM_REACHER = Claim(
  name="rtu_reacher",
  about="RTU paper: the non-linear RTU is clearly best on the Reacher POMDP; stale gradients at least "
  "as good as fresh (claim 5, PPO, Brax)",
  sweep=SETTINGS["reacher"].sweep,
  summarize=functools.partial(_summarize, which="reacher"),
)
CLAIM_POPGYM = Claim(
  name="rtu_popgym",
  about="RTU paper: RTUs match or beat GRU and LRU on POPGym (claim 5, PPO, RepeatFirst-easy)",
  sweep=SETTINGS["popgym"].sweep,
  summarize=functools.partial(_summarize, which="popgym"),
)
