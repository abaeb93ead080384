"""The RTU paper's cost claim: RTRL's cost does not grow with the truncation length T, T-BPTT's does.

    python -m bench.bench_truncation                              # both parts, T in 1,4,16,64,256
    python -m bench.bench_truncation --parts=prediction --Ts=1,16 --quick
    python -m bench.bench_truncation --out=results/rtu_cost       # + results.json, table.md, cost_vs_T.png

Every core at the RTU paper's matched parameter budget; every figure of one part timed side by side
(bench/_timing.py: interleaved rounds, median).

  prediction  The online TD(lambda) learner of configs/rtu_trace_conditioning.py (budget 832 core
              parameters): seconds per learning step (one prediction, its gradient and one update per
              stream step) over a stored trace-conditioning stream. T-BPTT re-unrolls its last T inputs
              every step (the paper's baseline), so its gradient reaches T steps back.
  ppo         PPO at the paper's settings on popgym/CountRecall-easy (configs/rtu_popgym.py, ~24k
              recurrent parameters): seconds per PPO update (4 epochs over the 2048-step buffer, from
              the stored carries) and per agent step (the acting scan alone: policy, RTRL traces, env).
              T-BPTT learns from sequences of T consecutive steps replayed from the stored carry
              (`sequence_length=T`, minibatches of max(64, T) steps, so that T=256 fits).

RTRL has no truncation (its gradient reaches back to the start of the episode at every step), so each
RTRL core is measured once and drawn across every T. The T-BPTT cores: GRU and LRU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform

import jax

from bench import bench_ppo
from bench._timing import stateful, time_interleaved
from rtrl_rl import envs, experiment
from rtrl_rl.agents import actor_loop
from rtrl_rl.agents.prediction import learning as prediction_learning
from rtrl_rl.system import anakin

TS = (1, 4, 16, 64, 256)
PARTS = ("prediction", "ppo")
PREDICTION_CONFIG = "configs/rtu_trace_conditioning.py"
PPO_CONFIG = "configs/rtu_popgym.py:task=CountRecall,level=easy"
# (label, core variant of both configs, learns by T-BPTT)
CORES = (
  ("RTU non-linear", "rtu_nonlinear", False),
  ("RTU linear", "rtu_linear", False),
  ("online LRU", "lru", False),
  ("GRU", "gru", True),
  ("LRU", "lru_tbptt", True),
)


NOTES = {
  "prediction": "Online: T-BPTT re-unrolls its last T inputs at every step, so each step costs O(T); "
  "RTRL's step carries its traces forward and costs the same whatever reach its gradient has.",
  "ppo": "PPO's T-BPTT learns from the same 2048 x 4 epochs of steps at every T (sequences of T steps "
  "replace single steps), so T changes only how sequential the update is; RTRL's update costs more "
  "at every T because each single step brings its stored traces (O(D N) floats per step).",
}


@dataclasses.dataclass
class Row:
  part: str  # "prediction" | "ppo"
  core: str  # the label, e.g. "GRU"
  mode: str  # "rtrl" | "tbptt"
  T: int | None  # the truncation (None: RTRL)
  step_s: float  # prediction: seconds per learning step; ppo: seconds per agent step (acting alone)
  update_s: float | None = None  # ppo: seconds per PPO update on the 2048-step buffer


def _variants(cores, Ts):
  for label, variant, tbptt in cores:
    for T in Ts if tbptt else (None,):
      yield label, variant, T


# -- prediction ------------------------------------------------------------------------------------
def prediction_rows(Ts, stream_steps: int, repeats: int) -> list[Row]:
  fns, rows = {}, {}
  stream = None
  for label, variant, T in _variants(CORES, Ts):
    config = experiment.load_config(f"{PREDICTION_CONFIG}:cell={variant}" + (f",T={T}" if T else ""))
    fenv = envs.make_functional(config.env.id, **config.env.options.to_dict())
    if stream is None:  # one stream for every learner
      stream = prediction_learning.make_stream(fenv, jax.random.PRNGKey(0), stream_steps)
    learner = prediction_learning.make_learner(config.agent, fenv.observation_space.shape[0])
    state = learner.init(jax.random.PRNGKey(1))
    name = f"{label} T={T}" if T else label
    fns[name] = stateful(lambda s, run=learner.run: run(s, stream), state, extract=lambda out: out[0])
    rows[name] = Row("prediction", label, "tbptt" if T else "rtrl", T, math.nan)
    print(f"  prediction {name}: hidden {config.agent.network.hidden_size}", flush=True)
  t = time_interleaved(fns, repeats=repeats, warmup=1, min_sample_s=0.0, number={k: 1 for k in fns})
  for name, row in rows.items():
    row.step_s = t[name] / stream_steps
  return list(rows.values())


# -- PPO -------------------------------------------------------------------------------------------
def _ppo_config(variant: str, T: int | None, quick: bool):
  config = experiment.load_config(f"{PPO_CONFIG},core={variant}" + (f",T={T}" if T else ""))
  a = config.agent
  if quick:
    a.rollout_length = 256
  # minibatches of whole sequences: max(64, T) steps each, on the paper's buffer
  a.minibatch_size = max(a.minibatch_size, a.sequence_length)
  a.num_minibatches = a.rollout_length * a.num_envs // a.minibatch_size
  experiment.validate(config)
  return config


def ppo_rows(Ts, repeats: int, quick: bool) -> list[Row]:
  fns, rows, steps = {}, {}, {}
  for label, variant, T in _variants(CORES, Ts):
    config = _ppo_config(variant, T, quick)
    a = config.agent
    fenv = envs.make_functional(config.env.id, **config.env.options.to_dict())
    loop = anakin.make("ppo", fenv, a)
    state = loop.init(jax.random.PRNGKey(0))
    act, actor, batch, update = bench_ppo.acting_and_update(fenv, loop, a, state)
    name = f"{label} T={T}" if T else label
    buffer = actor_loop.carry_buffer(loop.agent, a.rollout_length, a.num_envs)
    fns[f"act {name}"] = stateful(
      lambda s, act=act, params=state.learner.params: act(params, *s),
      (actor, buffer),
      extract=lambda out: (out[0], out[1].get("carry")),
    )
    fns[f"update {name}"] = lambda update=update, learner=state.learner, batch=batch: (
      update(learner, batch)[0].params
    )
    rows[name] = Row("ppo", label, "tbptt" if T else "rtrl", T, math.nan, math.nan)
    steps[name] = a.rollout_length * a.num_envs
    print(
      f"  ppo {name}: hidden {a.network.hidden_size}, {a.num_minibatches} minibatches of {a.minibatch_size} "
      f"steps (sequences of {a.sequence_length})",
      flush=True,
    )
  t = time_interleaved(fns, repeats=repeats, warmup=1, min_sample_s=0.0, number={k: 1 for k in fns})
  for name, row in rows.items():
    row.step_s = t[f"act {name}"] / steps[name]
    row.update_s = t[f"update {name}"]
  return list(rows.values())


# -- report ----------------------------------------------------------------------------------------
def _fmt_us(s: float) -> str:
  return f"{s * 1e6:,.1f}"


def table(rows: list[Row]) -> str:
  """A markdown table per part: one line per core, one column per T (RTRL: one figure)."""
  out = []
  for part in PARTS:
    sel = [r for r in rows if r.part == part]
    if not sel:
      continue
    Ts = sorted({r.T for r in sel if r.T})
    cores = list(dict.fromkeys((r.core, r.mode) for r in sel))
    unit = (
      "microseconds per learning step"
      if part == "prediction"
      else "seconds per PPO update (and microseconds per acting step)"
    )
    out.append(f"**{part}** ({unit})\n")
    out.append("| core | gradient | " + " | ".join(f"T={T}" for T in Ts) + " |")
    out.append("|---|---|" + "---|" * len(Ts))
    for core, mode in cores:
      mine = {r.T: r for r in sel if (r.core, r.mode) == (core, mode)}

      def cell(r):
        if part == "prediction":
          return _fmt_us(r.step_s)
        return f"{r.update_s:.3f} ({_fmt_us(r.step_s)})"

      if mode == "rtrl":
        cells = [cell(mine[None])] + ["same"] * (len(Ts) - 1)
        grad = "RTRL (no truncation)"
      else:
        cells = [cell(mine[T]) if T in mine else "-" for T in Ts]
        grad = "T-BPTT"
      out.append(f"| {core} | {grad} | " + " | ".join(cells) + " |")
    out.append("")
    out.append(NOTES[part])
    out.append("")
  return "\n".join(out)


def _cost(r: Row) -> float:
  return r.step_s if r.part == "prediction" else r.update_s


def verdicts(rows: list[Row]) -> list[str]:
  """One line per part: how T-BPTT's cost grows with T, and where it passes RTRL's."""
  lines = []
  for part in PARTS:
    sel = [r for r in rows if r.part == part]
    tb = [r for r in sel if r.mode == "tbptt"]
    rt = [r for r in sel if r.mode == "rtrl"]
    Ts = sorted({r.T for r in tb})
    if len(Ts) < 2 or not rt:
      continue
    lo, hi = Ts[0], Ts[-1]
    growth = {}
    for core in dict.fromkeys(r.core for r in tb):
      by_t = {r.T: _cost(r) for r in tb if r.core == core}
      if lo in by_t and hi in by_t:
        growth[core] = (by_t[hi] / by_t[lo], by_t)
    what = "seconds per learning step" if part == "prediction" else "seconds per PPO update"
    grows = all(g >= (hi / lo) ** 0.5 for g, _ in growth.values())
    parts = []
    for core, (g, by_t) in growth.items():
      slope = math.log(g) / math.log(hi / lo)
      parts.append(f"{core} x{g:.1f} from T={lo} to T={hi} (log-log slope {slope:.2f})")
    rtrl = ", ".join(f"{r.core} {_cost(r):.3g} s" for r in rt)
    cheapest = min(_cost(r) for r in rt)
    priciest = max(_cost(r) for r in rt)
    cross = []
    for core, (_, by_t) in growth.items():
      above = [T for T in Ts if by_t[T] > priciest]
      cross.append(f"{core} costs more than every RTRL core from T={above[0]}" if above else f"{core} never")
    lines.append(
      f"claim 3 ({part}, {what}): {'REPRODUCES' if grows else 'DOES NOT REPRODUCE'}: T-BPTT's cost "
      f"against T: {'; '.join(parts)} (criterion: at least x sqrt({hi}/{lo}) = "
      f"x{(hi / lo) ** 0.5:.0f}); RTRL, whose gradient is not truncated, costs one figure: {rtrl} "
      f"(from {cheapest:.3g} to {priciest:.3g} s); {'; '.join(cross)}"
    )
  return lines


def figure(rows: list[Row], path: str) -> None:
  """Cost against T, one panel per part: T-BPTT curves, RTRL as horizontal lines."""
  import matplotlib  # noqa: PLC0415 - optional dependency

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415 - optional dependency, after use("Agg")

  parts = [p for p in PARTS if any(r.part == p for r in rows)]
  fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 3.8), squeeze=False)
  for ax, part in zip(axes[0], parts):
    sel = [r for r in rows if r.part == part]
    Ts = sorted({r.T for r in sel if r.T})
    for core in dict.fromkeys(r.core for r in sel if r.mode == "tbptt"):
      pts = sorted((r.T, _cost(r)) for r in sel if r.mode == "tbptt" and r.core == core)
      ax.plot([t for t, _ in pts], [c for _, c in pts], marker="o", label=f"{core} (T-BPTT)")
    for i, r in enumerate(r for r in sel if r.mode == "rtrl"):
      ax.axhline(_cost(r), color=f"C{5 + i}", ls="--", label=f"{r.core} (RTRL)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(Ts, [str(t) for t in Ts])
    ax.set_xlabel("truncation T")
    ax.set_ylabel("s per learning step" if part == "prediction" else "s per PPO update (2048 steps)")
    ax.set_title(
      "online prediction (trace conditioning)" if part == "prediction" else "PPO (CountRecall-easy)"
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(rows: list[Row], folder: str, header: str) -> list[str]:
  """results.json, table.md, cost_vs_T.png and verdict.txt in `folder`; returns the verdicts."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "results.json"), "w") as f:
    json.dump({"header": header, "rows": [dataclasses.asdict(r) for r in rows]}, f, indent=1)
  with open(os.path.join(folder, "table.md"), "w") as f:
    f.write(header + "\n\n" + table(rows))
  figure(rows, os.path.join(folder, "cost_vs_T.png"))
  lines = verdicts(rows)
  with open(os.path.join(folder, "verdict.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return lines


def run(
  Ts=TS, parts=PARTS, repeats: int = 3, quick: bool = False, out: str = ""
) -> tuple[list[Row], list[str]]:
  """Measures, prints the table and the verdicts (and writes them into `out`); returns both."""
  header = (
    f"bench_truncation: T in {list(Ts)}, {os.cpu_count()} cpus, {platform.processor() or platform.machine()}, "
    f"jax {jax.__version__} on {jax.devices()[0].platform}, {repeats} interleaved rounds"
    + (", --quick" if quick else "")
  )
  print("# " + header, flush=True)
  rows = []
  if "prediction" in parts:
    rows += prediction_rows(Ts, 500 if quick else 2000, repeats)
  if "ppo" in parts:
    rows += ppo_rows(Ts, repeats, quick)
  print()
  print(table(rows))
  lines = write(rows, out, header) if out else verdicts(rows)
  for line in lines:
    print(line)
  return rows, lines


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--Ts", default=",".join(map(str, TS)), help="truncation lengths of the T-BPTT cores")
  ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {PARTS}")
  ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
  ap.add_argument("--quick", action="store_true", help="short stream and rollout: a plumbing check")
  ap.add_argument(
    "--out", default="", help="also write results.json, table.md, cost_vs_T.png, verdict.txt here"
  )
  args = ap.parse_args(argv)
  parts = [p for p in args.parts.split(",") if p]
  bad = [p for p in parts if p not in PARTS]
  if bad:
    raise SystemExit(f"--parts: unknown {bad}; expected some of {PARTS}")
  run(tuple(int(t) for t in args.Ts.split(",")), parts, args.repeats, args.quick, args.out)


if __name__ == "__main__":
  main()
