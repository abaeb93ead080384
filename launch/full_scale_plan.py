"""The full-scale plan, on paper (issue 16, part 6): every experiment of both papers, its budget in agent
steps and frames, the hours it takes at our own measured throughput, and the SLURM sweep that launches it.

    python -m launch.full_scale_plan [--results=results]      # -> <results>/full_scale_plan/plan.md

No GPU has been lent to this project, so every throughput below is a CPU figure of this 2-core machine
(BUILD_NOTES.md, with the command that measured it) and every hour count is hours of that CPU, not
GPU-hours: those stay unknown until `bash bench/gpu/run.sh` runs on a lent GPU. A throughput is either
a "CPU measurement" (a benchmark ran this experiment's network or loop) or a "CPU extrapolation" (a
measured rate of a neighbouring setting, with the reason it applies), see THROUGHPUT.

Run counts, budgets and frames are read from the sweep files and the configs they name (nothing is
copied by hand); the dry-run output is launch.sweep's own (`main`, in-process, `--dry_run`: SLURM is
never asked).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import math
import os
import shlex
from typing import Callable, Mapping, Sequence

from launch import sweep as sweeps
from rtrl_rl import experiment
from rtrl_rl.envs import registry

REPO = experiment.REPO
DRY_RUN_LINES = 5  # the dry run's header and its first job
CPU = "this 2-core CPU"


@dataclasses.dataclass(frozen=True)
class Throughput:
  """Agent steps per second of one experiment setting on this machine, where the number comes from
  (`source`: the BUILD_NOTES section, the command, the date), and, for an extrapolation, how."""

  steps_per_s: float
  source: str
  extrapolation: str = ""  # empty: measured on this setting

  @property
  def kind(self) -> str:
    return f"CPU extrapolation: {self.extrapolation}" if self.extrapolation else "CPU measurement"


_LEARNER = (
  "BUILD_NOTES.md 'Learner': `python -m bench.bench_learner` (Atari network 84x84x4, IMPALA ResNet, "
  "eLSTM N=256, M=50, B=32), 2026-11-21, load 8-21 on the 2 cores: rtrl-elstm 83.546 s per update of "
  "50 x 32 agent steps. Learner only: on this CPU the end-to-end Atari system is learner-bound "
  "(BUILD_NOTES.md 'System', `python -m bench.bench_system`, Pong: end-to-end / learner-only 1.04)"
)
_BENCH_RTU = (
  "BUILD_NOTES.md 'PPO at the RTU paper's settings': `python -m bench.bench_rtu` (= make bench-rtu), "
  "row {row}, num_envs 1, 2026-12-07, load ~1 on the 2 cores"
)
_BENCH_PPO = (
  "`python -m bench.bench_ppo --config={config}core=lru_tbptt --num_envs=1 --repeats=3` (T=16), "
  "2026-12-07 12:27-12:31 UTC, load 2-5 on the 2 cores (issue 16 part 6; bench_rtu's grid has no "
  "lru_tbptt row)"
)
_PREDICTION = (
  "`python -m rtrl_rl.train --config=configs/rtu_trace_conditioning.py:cell={cell},"
  "steps=100000 --run_dir=<tmp>`: the lowest steps_per_s of metrics.jsonl's rows (chunks of 10,000 "
  "steps, compilation excluded), one seed, 2026-12-07 12:31-12:35 UTC, load 2-4 on the 2 cores "
  "(issue 16 part 6)"
)

# Every measured rate, with its source next to it. Agent steps per second (one agent step = one env
# step of one env; frames = agent steps x the action repeat).
MEASURED: dict[str, Throughput] = {
  "atari:rtrl": Throughput(50 * 32 / 83.546, _LEARNER),
  "brax/Ant-P:rtu_linear": Throughput(1223, _BENCH_RTU.format(row="brax/Ant-P, rtu_linear")),
  "brax/Ant-P:rtu_nonlinear": Throughput(821, _BENCH_RTU.format(row="brax/Ant-P, rtu_nonlinear")),
  "brax/Ant-P:lru": Throughput(1441, _BENCH_RTU.format(row="brax/Ant-P, lru")),
  "brax/Ant-P:gru": Throughput(1328, _BENCH_RTU.format(row="brax/Ant-P, gru")),
  "brax/Ant-P:lru_tbptt": Throughput(
    1167, _BENCH_PPO.format(config="configs/rtu_mujoco_pomdp.py:env=Ant-P,")
  ),
  "reacher:rtu_linear": Throughput(2537, _BENCH_RTU.format(row="brax/Reacher-POMDP, rtu_linear")),
  "reacher:rtu_nonlinear": Throughput(1959, _BENCH_RTU.format(row="brax/Reacher-POMDP, rtu_nonlinear")),
  "reacher:lru": Throughput(5847, _BENCH_RTU.format(row="brax/Reacher-POMDP, lru")),
  "reacher:gru": Throughput(4163, _BENCH_RTU.format(row="brax/Reacher-POMDP, gru")),
  "reacher:lru_tbptt": Throughput(3086, _BENCH_PPO.format(config="configs/rtu_reacher_pomdp.py:")),
  "popgym/CountRecall-easy:rtu_linear": Throughput(
    6163, _BENCH_RTU.format(row="popgym/CountRecall-easy, rtu_linear")
  ),
  "popgym/CountRecall-easy:rtu_nonlinear": Throughput(
    2635, _BENCH_RTU.format(row="popgym/CountRecall-easy, rtu_nonlinear")
  ),
  "popgym/CountRecall-easy:lru": Throughput(10448, _BENCH_RTU.format(row="popgym/CountRecall-easy, lru")),
  "popgym/CountRecall-easy:gru": Throughput(15037, _BENCH_RTU.format(row="popgym/CountRecall-easy, gru")),
  "popgym/CountRecall-easy:lru_tbptt": Throughput(
    9080, _BENCH_PPO.format(config="configs/rtu_popgym.py:task=CountRecall,level=easy,")
  ),
  "trace:rtu_nonlinear": Throughput(15022, _PREDICTION.format(cell="rtu_nonlinear")),
  "trace:rtu_linear": Throughput(18995, _PREDICTION.format(cell="rtu_linear")),
  "trace:lru": Throughput(12241, _PREDICTION.format(cell="lru")),
  "trace:gru": Throughput(16862, _PREDICTION.format(cell="gru,T=10")),
  "trace:lru_tbptt": Throughput(5746, _PREDICTION.format(cell="lru_tbptt,T=10")),
  "trace:ff": Throughput(24233, _PREDICTION.format(cell="ff")),
}

_PPO_CORES = ("rtu_nonlinear", "rtu_linear", "lru", "lru_tbptt", "gru")


def _like(measured: str, how: str) -> Throughput:
  m = MEASURED[measured]
  return Throughput(m.steps_per_s, m.source, f"{how} (the rate of {measured})")


# Settings without a measurement of their own: a measured neighbour's rate and the reason it applies.
EXTRAPOLATED: dict[str, Throughput] = {
  "atari:tbptt": _like(
    "atari:rtrl",
    "T-BPTT's learner costs the RTRL learner's CPU time per update within 5% (bench_learner: 30.9 vs "
    "32.2 CPU-s; its wall time under that load, 70 s, is noise)",
  ),
  "atari:ff": _like(
    "atari:rtrl",
    "the feed-forward learner costs the RTRL learner's CPU time per update within 7% (bench_learner: "
    "34.3 vs 32.2 CPU-s; its wall time under that load, 114 s, is noise)",
  ),
  "procgen": _like(
    "atari:rtrl",
    "the same IMPALA ResNet and eLSTM (N=256) on 64x64x3 frames, 0.58x the Atari frame's pixels, so "
    "the learner should be no slower (an upper bound on time); ProcGen itself steps 46k/s on 16 envs "
    "(BUILD_NOTES 'Environments'), far above the learner",
  ),
  "dmlab": _like(
    "atari:rtrl",
    "the same IMPALA ResNet on 72x96x3 frames (0.98x Atari's pixels) with an eLSTM of N=512: its "
    "RTRL learner step adds ~0.1 ms per agent step (BUILD_NOTES 'Cells', elstm B=32: 105 us at N=512 "
    "vs 23 us at N=256) to the ~52 ms of the Atari learner; DMLab's own step rate is unmeasured "
    "(deepmind_lab cannot be installed here)",
  ),
  **{
    f"mujoco:{core}": _like(
      f"brax/Ant-P:{core}",
      "Ant-P's rate for the HalfCheetah, Hopper and Walker2d runs (their Brax step is not benchmarked; "
      "Ant has the most bodies and joints of the four)",
    )
    for core in _PPO_CORES
  },
  **{
    f"popgym:{core}": _like(
      f"popgym/CountRecall-easy:{core}",
      "CountRecall-easy's rate for the other 14 task-levels (the update dominates: 5-15k agent steps/s "
      "alone next to the env's 78k on one env; Concentration-hard's JAX env is as fast as "
      "CountRecall-easy's, BUILD_NOTES 'Environments')",
    )
    for core in _PPO_CORES
  },
  **{
    f"trace:{cell}:T": _like(
      f"trace:{cell}",
      "T=10's rate at another truncation T: the hours are too few above T=10 and too many below, as "
      "T-BPTT's cost per step grows nearly linearly with T (results/rtu_cost: GRU 36 us at T=4, 96 us "
      "at T=16)",
    )
    for cell in ("gru", "lru_tbptt")
  },
}
THROUGHPUT: dict[str, Throughput] = {**MEASURED, **EXTRAPOLATED}


# -- the experiments ---------------------------------------------------------------------------------
def _mujoco(a: Mapping[str, str]) -> str:
  return f"brax/Ant-P:{a['core']}" if a["env"].startswith("Ant-") else f"mujoco:{a['core']}"


def _popgym(a: Mapping[str, str]) -> str:
  is_measured = (a["task"], a["level"]) == ("CountRecall", "easy")
  return f"popgym/CountRecall-easy:{a['core']}" if is_measured else f"popgym:{a['core']}"


def _trace(a: Mapping[str, str]) -> str:
  cell = a.get("cell", "rtu_nonlinear")
  return f"trace:{cell}:T" if cell in ("gru", "lru_tbptt") and a.get("T", "10") != "10" else f"trace:{cell}"


@dataclasses.dataclass(frozen=True)
class Experiment:
  name: str
  paper: str
  title: str
  config: str  # configs/<x>.py: the runs of `sweep` (selected by `only`) all use it
  sweep: str  # launch/sweeps/<x>.py
  rate: Callable[[Mapping[str, str]], str]  # the run's config arguments -> a THROUGHPUT key
  only: str = ""  # launch.sweep --only: this experiment's runs in a sweep shared with another
  env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # environment the sweep file reads
  gpu: str = ""  # what the GPU kit (bench/gpu/run.sh) measures to replace this CPU figure
  notes: str = ""


_KIT_ATARI = (
  "`bash bench/gpu/run.sh` measures it: learner.txt (bench_learner at M=50, B=32: feed-forward, "
  "T-BPTT and RTRL eLSTM samples/s on the GPU) and system.txt / system_ff.txt (Pong end to end, "
  "M=50, B=32, 12 actors x 2 pools x 8 envs, the policy on the CPUs and on the GPU): the end-to-end "
  "agent steps/s replaces this rate and gives GPU-hours = agent steps / rate"
)
_KIT_CPU = (
  "none: the sweep runs these as CPU jobs (gpus_per_node 0) and the GPU kit does not measure them; "
  "the rate was measured with 2 cores, the jobs ask for {cpus}"
)
EXPERIMENTS: tuple[Experiment, ...] = (
  Experiment(
    "irie_atari",
    "Irie et al. 2024",
    "Atari, 5 games, feed-forward / T-BPTT / RTRL eLSTM, M=50",
    "configs/irie_atari.py",
    "launch/sweeps/irie_atari.py",
    lambda a: f"atari:{a['mode']}",
    gpu=_KIT_ATARI,
    notes="The config counts the paper's 200M steps per game as agent steps, i.e. 800M frames at the "
    "action repeat of 4; issue 16 writes '200M frames': if that is the paper's count, the runs are 50M "
    "agent steps and these hours divide by 4.",
  ),
  Experiment(
    "irie_procgen",
    "Irie et al. 2024",
    "ProcGen: Chaser (hard, M 5 and 50) and the 6 memory-mode games (M=50), feed-forward / T-BPTT / RTRL",
    "configs/irie_procgen.py",
    "launch/sweeps/irie_procgen.py",
    lambda a: "procgen",
    gpu="not directly: the kit runs the Atari network (learner.txt, system.txt); its learner rate "
    "bounds ProcGen's (smaller frames); a ProcGen end-to-end run is not in the kit",
    notes="No action repeat in ProcGen: agent steps = frames. The feed-forward agent runs once per game "
    "(M=50 only).",
  ),
  Experiment(
    "irie_dmlab",
    "Irie et al. 2024",
    "DMLab memory levels, T-BPTT / RTRL eLSTM (N=512) on a frozen pre-trained stem, M in {10, 50, 100}",
    "configs/irie_dmlab.py",
    "launch/sweeps/irie_dmlab.py",
    lambda a: "dmlab",
    env={"DMLAB_STEM": "/data/stems/{level}.msgpack"},
    gpu="not measurable on the lent machine either (no deepmind_lab there); the kit's learner.txt "
    "(Atari network, N=256) bounds the learner; DMLab's own step rate stays unknown",
    notes="Not counted: the stem pre-training runs (a T-BPTT agent per level, 50M / 200M steps in the "
    "paper; the sweep without DMLAB_STEM trains them) and the paper reports 2 of the sweep's 3 levels.",
  ),
  Experiment(
    "rtu_mujoco_pomdp",
    "Elelimy et al. 2024",
    "MuJoCo POMDPs (Ant, HalfCheetah, Hopper, Walker2d x -P/-V), PPO, 5 cores",
    "configs/rtu_mujoco_pomdp.py",
    "launch/sweeps/rtu_mujoco_pomdp.py",
    _mujoco,
    only="mujoco-*",
    gpu=_KIT_CPU,
    notes="Brax (positional pipeline) on the fully-jitted loop, one env per run, as the paper.",
  ),
  Experiment(
    "rtu_reacher_pomdp",
    "Elelimy et al. 2024",
    "Reacher POMDP, PPO, 5 cores",
    "configs/rtu_reacher_pomdp.py",
    "launch/sweeps/rtu_mujoco_pomdp.py",
    lambda a: f"reacher:{a['core']}",
    only="reacher-pomdp_*",
    gpu=_KIT_CPU,
  ),
  Experiment(
    "rtu_popgym",
    "Elelimy et al. 2024",
    "POPGym, the paper's 5 tasks x 3 levels, PPO, 5 cores",
    "configs/rtu_popgym.py",
    "launch/sweeps/rtu_popgym.py",
    _popgym,
    gpu=_KIT_CPU,
    notes="Our JAX port of POPGym on the fully-jitted loop, one env per run.",
  ),
  Experiment(
    "rtu_trace_conditioning",
    "Elelimy et al. 2024",
    "trace conditioning (online TD prediction, MSRE): RTU non-linear / linear, online LRU, GRU and LRU "
    "by T-BPTT, memoryless",
    "configs/rtu_trace_conditioning.py",
    "launch/sweeps/rtu_trace_conditioning.py",
    _trace,
    gpu=_KIT_CPU,
    notes="One run computes agent.num_seeds vmapped streams: its agent steps are steps x seeds (the "
    "rates were measured with one seed; vmapped seeds share each step's dispatch, so the hours are an "
    "upper bound).",
  ),
)


# -- computing the plan ------------------------------------------------------------------------------
@contextlib.contextmanager
def _environ(values: Mapping[str, str]):
  old = {k: os.environ.get(k) for k in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def config_args(config: str) -> dict[str, str]:
  """`configs/x.py:a=1,b=2` -> {"a": "1", "b": "2"}."""
  _, _, arg = config.partition(":")
  items = [item for item in arg.split(",") if item]
  if any("=" not in item for item in items):
    raise ValueError(f"{config}: expected key=value arguments")
  return dict(item.split("=", 1) for item in items)


def budget(config) -> tuple[int, int]:
  """(agent steps, frames) of one run: frames = agent steps x the env's action repeat."""
  if config.algo == "prediction":
    steps = int(config.agent.total_env_steps) * int(config.agent.num_seeds)
  else:
    steps = int(config.agent.total_env_steps)
  given = config.env.get("options")
  options = registry.get_spec(config.env.id).resolve(given.to_dict() if given is not None else {})
  repeat = int(options.get("frame_skip", options.get("action_repeat", 1)))
  return steps, steps * repeat


@dataclasses.dataclass(frozen=True)
class Group:
  """The runs of one experiment that share a throughput."""

  rate_key: str
  runs: int
  steps: int  # agent steps per run
  frames: int  # frames per run

  @property
  def throughput(self) -> Throughput:
    return THROUGHPUT[self.rate_key]

  @property
  def hours_per_run(self) -> float:
    return self.steps / self.throughput.steps_per_s / 3600

  @property
  def hours(self) -> float:
    return self.runs * self.hours_per_run


@dataclasses.dataclass(frozen=True)
class Planned:
  experiment: Experiment
  runs: tuple  # launch.sweep.Run of this experiment; empty when the sweep file is missing
  groups: tuple[Group, ...]
  grid: str  # how the runs split over the config arguments
  command: str  # the dry-run command line
  dry_run: str  # its output ("" when the sweep file is missing)
  resources: Mapping  # SLURM resources of the first run

  @property
  def missing(self) -> bool:
    return not self.runs

  @property
  def hours(self) -> float:
    return sum(g.hours for g in self.groups) if self.groups else math.nan

  @property
  def steps(self) -> set[int]:
    return {g.steps for g in self.groups}

  @property
  def frames(self) -> set[int]:
    return {g.frames for g in self.groups}


def dry_run_argv(e: Experiment) -> list[str]:
  return [f"--sweep={e.sweep}", "--backend=slurm", "--dry_run"] + ([f"--only={e.only}"] if e.only else [])


def dry_run_command(e: Experiment) -> str:
  env = " ".join(f"{k}={shlex.quote(v)}" for k, v in e.env.items())
  return (env + " " if env else "") + shlex.join(["python", "-m", "launch.sweep", *dry_run_argv(e)])


def dry_run(e: Experiment) -> str:
  """launch.sweep's `--dry_run` output for the experiment (in-process; nothing is submitted)."""
  out = io.StringIO()
  argv = [f"--sweep={os.path.join(REPO, e.sweep)}", *dry_run_argv(e)[1:]]
  with _environ(e.env), contextlib.redirect_stdout(out):
    rc = sweeps.main(argv)
  if rc != 0:
    raise RuntimeError(f"{dry_run_command(e)} exited {rc}: {out.getvalue()}")
  return out.getvalue()


def experiment_runs(e: Experiment) -> list:
  """The experiment's runs, from its sweep file (launch.sweep.load_sweep, then --only)."""
  with _environ(e.env):
    _, runs = sweeps.load_sweep(os.path.join(REPO, e.sweep))
  runs = sweeps.select(runs, e.only)
  wrong = sorted({r.config.partition(":")[0] for r in runs} - {e.config})
  if wrong:
    raise ValueError(f"{e.name}: {e.sweep} (--only={e.only!r}) has runs of {wrong}, expected {e.config} only")
  return runs


def _grid(runs: Sequence) -> str:
  """How the runs split over their config arguments, e.g. `5 game x 3 mode x 3 seed = 45 (M=50)`."""
  args = [config_args(r.config) for r in runs]
  values = collections.defaultdict(set)
  for a in args:
    for k, v in a.items():
      values[k].add(v)

  axes: dict[str, int] = {}
  for k, v in values.items():  # an argument that is a function of an earlier axis (a stem per level) is none
    same = lambda j: len({(a.get(j), a.get(k)) for a in args}) == len(values[j]) == len(v)
    if len(v) > 1 and not any(same(j) for j in axes):
      axes[k] = len(v)
  fixed = ", ".join(f"{k}={next(iter(v))}" for k, v in values.items() if len(v) == 1 and v != {""})
  product = math.prod(axes.values())
  text = " x ".join(f"{n} {k}" for k, n in axes.items())
  text = f"{text} = {len(runs)}" if product == len(runs) else f"{len(runs)} of {text} (not a full grid)"
  return text + (f" ({fixed})" if fixed else "")


def plan(e: Experiment) -> Planned:
  """The experiment's runs, grouped by throughput, with the hours they take at that rate."""
  if not os.path.isfile(os.path.join(REPO, e.sweep)):
    return Planned(e, (), (), "", dry_run_command(e), "", {})
  runs = experiment_runs(e)
  by_key: dict[tuple, int] = collections.Counter()
  for r in runs:
    key = e.rate(config_args(r.config))
    if key not in THROUGHPUT:
      raise KeyError(f"{e.name}: run {r.name}: no throughput {key!r} (add a measurement to MEASURED)")
    with _environ(e.env):
      steps, frames = budget(experiment.load_config(r.config, r.overrides_dict))
    by_key[key, steps, frames] += 1
  groups = tuple(Group(k, n, s, f) for (k, s, f), n in sorted(by_key.items()))
  return Planned(e, tuple(runs), groups, _grid(runs), dry_run_command(e), dry_run(e), runs[0].resources_dict)


# -- the report --------------------------------------------------------------------------------------
def _count(n: float) -> str:
  if n >= 1e9 and n % 1e8 == 0:
    return f"{n / 1e9:g}B"
  if n >= 1e6 and n % 1e5 == 0:
    return f"{n / 1e6:g}M"
  return f"{n:,.0f}"


def _hours(h: float) -> str:
  if not math.isfinite(h):
    return "-"
  return f"{h:,.0f}" if h >= 100 else f"{h:.3g}"


def _span(values, fmt) -> str:
  lo, hi = min(values), max(values)
  return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"


def _rate(x: float) -> str:
  return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _kinds(p: Planned) -> str:
  measured = sum(g.runs for g in p.groups if not g.throughput.extrapolation)
  runs = sum(g.runs for g in p.groups)
  if measured == runs:
    return "CPU measurement"
  return f"CPU extrapolation ({runs - measured} of {runs} runs)" if measured else "CPU extrapolation"


def summary_line(p: Planned) -> str:
  e = p.experiment
  if p.missing:
    return f"{e.name}: no sweep file {e.sweep}: not planned"
  return (
    f"{e.name}: {len(p.runs)} runs x {_span(p.steps, _count)} agent steps ({_span(p.frames, _count)} "
    f"frames) = {_hours(p.hours)} hours on {CPU} ({_kinds(p)}; "
    + ("GPU-hours unknown)" if p.resources.get("gpus_per_node") else "CPU jobs)")
  )


def table(plans: Sequence[Planned]) -> str:
  lines = [
    "| experiment | config / sweep | runs | agent steps / run | frames / run | agent steps/s on "
    f"{CPU} | throughput | hours / run | hours, all runs | SLURM job (GPUs, CPUs, time limit) |",
    "|" + " --- |" * 10,
  ]
  for p in plans:
    e = p.experiment
    where = f"`{e.config}` / `{e.sweep}`" + (f" `--only={e.only}`" if e.only else "")
    if p.missing:
      lines.append(f"| {e.name} | {where}: **no sweep file** | - | - | - | - | - | - | - | - |")
      continue
    r = p.resources
    gpus = r.get("gpus_per_node", 0)
    job = f"{gpus or 'no'} GPU, {r.get('cpus', '?')} CPUs, {r.get('time_min', 0) / 60:g} h"
    rates = [g.throughput.steps_per_s for g in p.groups]
    lines.append(
      f"| {e.name} | {where} | {len(p.runs)} | {_span(p.steps, _count)} | {_span(p.frames, _count)} | "
      f"{_span(rates, _rate)} | {_kinds(p)} | "
      f"{_span([g.hours_per_run for g in p.groups], _hours)} | {_hours(p.hours)} | {job} |"
    )
  total = sum(p.hours for p in plans if not p.missing)
  lines.append(f"| all | | {sum(len(p.runs) for p in plans)} | | | | | | {_hours(total)} | |")
  return "\n".join(lines)


def _section(p: Planned) -> str:
  e = p.experiment
  out = [f"### {e.name}: {e.paper}, {e.title}", ""]
  if p.missing:
    out += [
      f"**No sweep file**: `{e.sweep}` does not exist, so this experiment has no run count and no "
      f"launch command yet (its config, `{e.config}`, runs with `python -m rtrl_rl.train`).",
      "",
    ]
    if e.notes:
      out += [e.notes, ""]
    return "\n".join(out)
  out += [f"Runs: {p.grid}. {e.notes}".rstrip(), ""]
  out += [
    "| runs | agent steps / run | frames / run | agent steps/s | hours / run | hours | throughput (key: kind) |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ]
  for g in p.groups:
    t = g.throughput
    out.append(
      f"| {g.runs} | {_count(g.steps)} | {_count(g.frames)} | {_rate(t.steps_per_s)} | "
      f"{_hours(g.hours_per_run)} | {_hours(g.hours)} | `{g.rate_key}`: "
      f"{'extrapolation' if t.extrapolation else 'measurement'} |"
    )
  out += [
    "",
    f"GPU: {e.gpu.format(cpus=p.resources.get('cpus', '?'))}.",
    "",
    "```",
    f"$ {p.command}",
    *p.dry_run.splitlines()[:DRY_RUN_LINES],
    f"... ({len(p.runs)} jobs)",
    "```",
    "",
  ]
  return "\n".join(out)


def markdown(plans: Sequence[Planned]) -> str:
  out = [
    "# The full-scale plan (issue 16, part 6)",
    "",
    f"Every experiment of both papers: its runs (from its sweep file), their budget in agent steps and "
    f"frames (from the configs; frames = agent steps x the action repeat), and the hours they take on "
    f"{CPU} at our own measured throughput. No GPU has been lent to this project: these are CPU hours, "
    f"not GPU-hours. The GPU-hours of the Irie et al. experiments are unknown until `bash "
    f"bench/gpu/run.sh` runs on a lent GPU (BUILD_NOTES.md, 'GPU kit'); the RTU paper's experiments "
    f"are CPU jobs in their sweeps. Rates are steady state (compilation, 10-40 s per run, excluded). "
    f"Written by `python -m launch.full_scale_plan`.",
    "",
    table(plans),
    "",
    "## Throughputs",
    "",
    "Measured (each with its command and date):",
    "",
    "| key | agent steps/s | source |",
    "| --- | --- | --- |",
    *(f"| `{k}` | {_rate(t.steps_per_s)} | {t.source} |" for k, t in MEASURED.items()),
    "",
    "Extrapolated (a measured rate applied to a setting without its own measurement):",
    "",
    "| key | agent steps/s | how |",
    "| --- | --- | --- |",
    *(f"| `{k}` | {_rate(t.steps_per_s)} | {t.extrapolation} |" for k, t in EXTRAPOLATED.items()),
    "",
    "## Experiments",
    "",
    *(_section(p) for p in plans),
  ]
  return "\n".join(out)


def write(results_dir: str, plans: Sequence[Planned] | None = None) -> list[str]:
  """Writes `<results_dir>/full_scale_plan/plan.md` (of `plans`, default: every experiment's); returns
  one summary line per experiment."""
  plans = [plan(e) for e in EXPERIMENTS] if plans is None else plans
  folder = os.path.join(results_dir, "full_scale_plan")
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "plan.md"), "w") as f:
    f.write(markdown(plans))
  return [summary_line(p) for p in plans]


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(prog="python -m launch.full_scale_plan", description=__doc__.split("\n\n")[0])
  ap.add_argument("--results", default="results", help="writes <results>/full_scale_plan/plan.md")
  args = ap.parse_args(argv)
  for line in write(args.results):
    print(line)
  print(f"-> {os.path.join(args.results, 'full_scale_plan', 'plan.md')}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
