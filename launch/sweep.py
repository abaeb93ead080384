"""Sweeps: a grid of training runs launched locally or on SLURM.

    python -m launch.sweep --sweep=launch/sweeps/default.py --backend=local --dry_run
    python -m launch.sweep --sweep=launch/sweeps/default.py --backend=local --max_parallel=2
    python -m launch.sweep --sweep=launch/sweeps/irie_atari.py --backend=slurm --partition=gpu
    python -m launch.sweep --sweep=launch/sweeps/default.py --status

A sweep file is a Python file with `get_sweep() -> list[dict]`, one dict per run (a sweep that takes
arguments, `--sweep=<file>:key=value,...`, has `get_sweep(arg=None)`):

    {"name": "atari-Breakout_rtrl_M50_seed0",               # unique within the sweep
     "config": "configs/irie_atari.py:game=Breakout,mode=rtrl",
     "overrides": {"seed": 0, "agent.unroll_length": 50},    # -> --config.<key>=<value>
     "resources": {"nodes": 1, "gpus_per_node": 1, "cpus": 10, "time_min": 2880, "partition": "gpu"}}

(resources, SLURM: `nodes`, `tasks_per_node` (jax.distributed processes per node, default 1, each
with gpus_per_node / tasks_per_node GPUs), `gpus_per_node`, `cpus` (per task), `time_min`,
`signal_delay_s` (USR2 this long before the time limit: checkpoint and requeue), `mem_gb`,
`partition`, `account`, `qos`, `constraint`, `slurm` (extra sbatch flags)),

and optionally `NAME` (the sweep's name; default: the file's stem). `grid(...)` below builds such
lists (product over axes x seeds). Run `r` of sweep `s` lives in `<root>/<s>/<r.name>`; its command is

    python -m rtrl_rl.train --config=<config> --config.<k>=<v> ... --run_dir=<root>/<s>/<name>

A run restarted on the same run directory resumes from its latest checkpoint, so relaunching a
sweep (or a requeued SLURM job) continues each run; runs already finished (`summary.json` without
`stopped_early`) are skipped, as are runs that look alive, unless `--force`.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import importlib.util
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

from launch import status
from rtrl_rl import cli

DEFAULT_ROOT = os.path.join("runs", "sweeps")
TRAIN_MODULE = "rtrl_rl.train"
RESOURCE_KEYS = (
  "nodes",
  "tasks_per_node",
  "gpus_per_node",
  "cpus",
  "time_min",
  "signal_delay_s",
  "partition",
  "mem_gb",
  "account",
  "qos",
  "constraint",
)
RUN_KEYS = ("name", "config", "overrides", "resources")


class SweepError(ValueError):
  """A malformed sweep file or run description."""


# -- run descriptions -------------------------------------------------------------------------------
def format_value(value: Any) -> str:
  """A config value as `--config.<k>=` text that ml_collections parses back to the same value."""
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, (list, tuple)):
    inner = ",".join(format_value(v) for v in value)
    return f"({inner},)" if len(value) == 1 else f"({inner})"
  return str(value)


def override_flags(overrides: Mapping[str, Any]) -> list[str]:
  return [f"--config.{k}={format_value(v)}" for k, v in overrides.items()]


def train_command(
  config: str,
  overrides: Mapping[str, Any],
  run_dir: str,
  python: str = "python",
  extra: Mapping[str, Any] | None = None,
) -> list[str]:
  """The argv of one run (`extra`: further overrides, e.g. the multi-host fields, appended last)."""
  return [
    python,
    "-m",
    TRAIN_MODULE,
    f"--config={config}",
    *override_flags(overrides),
    *override_flags(extra or {}),
    f"--run_dir={run_dir}",
  ]


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep (`overrides`/`resources` as tuples of items so that Run is hashable)."""

  sweep: str
  name: str
  config: str
  overrides: tuple
  resources: tuple
  run_dir: str

  @property
  def overrides_dict(self) -> dict:
    return dict(self.overrides)

  @property
  def resources_dict(self) -> dict:
    return _thaw_resources(self.resources)

  def command(self, python: str = "python", extra: Mapping[str, Any] | None = None) -> list[str]:
    return train_command(self.config, self.overrides_dict, self.run_dir, python, extra)


def _check_run(d: Any, i: int) -> None:
  if not isinstance(d, Mapping):
    raise SweepError(f"run {i}: expected a dict with keys {RUN_KEYS}, got {type(d).__name__}")
  unknown = set(d) - set(RUN_KEYS)
  if unknown:
    raise SweepError(f"run {i} ({d.get('name')!r}): unknown keys {sorted(unknown)}; expected {RUN_KEYS}")
  for key in ("name", "config"):
    if not isinstance(d.get(key), str) or not d[key]:
      raise SweepError(f"run {i}: {key!r} must be a non-empty string, got {d.get(key)!r}")
  name = d["name"]
  if name in (".", "..") or "/" in name or name.startswith(".") or any(c.isspace() for c in name):
    raise SweepError(f"run {i}: name {name!r} must be a plain directory name (no '/', spaces, leading '.')")
  if not isinstance(d.get("overrides", {}), Mapping):
    raise SweepError(f"run {name!r}: 'overrides' must be a dict")
  for k in d.get("overrides", {}):
    if not isinstance(k, str) or not k or k.startswith("-") or "=" in k:
      raise SweepError(f"run {name!r}: bad override key {k!r} (use e.g. 'agent.unroll_length')")
    if k in ("system.coordinator_address", "system.num_processes", "system.process_id"):
      raise SweepError(f"run {name!r}: {k} is set by the launcher (use resources['nodes'])")
  res = d.get("resources", {}) or {}
  if not isinstance(res, Mapping):
    raise SweepError(f"run {name!r}: 'resources' must be a dict")
  bad = set(res) - set(RESOURCE_KEYS) - {"slurm"}
  if bad:
    raise SweepError(f"run {name!r}: unknown resources {sorted(bad)}; expected {RESOURCE_KEYS} or 'slurm'")
  for k in ("nodes", "tasks_per_node", "gpus_per_node", "cpus", "time_min", "signal_delay_s"):
    if k in res and not (isinstance(res[k], int) and not isinstance(res[k], bool) and res[k] >= 0):
      raise SweepError(f"run {name!r}: resources[{k!r}]={res[k]!r} must be an int >= 0")
  for k in ("nodes", "tasks_per_node"):
    if res.get(k, 1) < 1:
      raise SweepError(f"run {name!r}: resources[{k!r}] must be >= 1")
  tasks, gpus = res.get("tasks_per_node", 1), res.get("gpus_per_node", 0)
  if gpus and gpus % tasks:
    raise SweepError(
      f"run {name!r}: resources['gpus_per_node']={gpus} must be a multiple of "
      f"resources['tasks_per_node']={tasks} (each task gets its share of the GPUs)"
    )


def _freeze(x: Any) -> Any:
  if isinstance(x, Mapping):
    return tuple((k, _freeze(v)) for k, v in x.items())
  if isinstance(x, list):
    return tuple(_freeze(v) for v in x)
  return x


def _thaw_resources(items: tuple) -> dict:
  return {k: (dict(v) if k == "slurm" else v) for k, v in items}


def sweep_name(path: str, module=None) -> str:
  name = getattr(module, "NAME", None) if module is not None else None
  return name or os.path.splitext(os.path.basename(path))[0]


def load_module(path: str):
  if not os.path.isfile(path):
    raise SweepError(f"--sweep={path}: no such file (the sweep files are launch/sweeps/*.py)")
  mod_name = "_sweep_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(mod_name, path)
  if spec is None:
    raise SweepError(f"--sweep={path}: not a Python file (the sweep files are launch/sweeps/*.py)")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  # the user's file
    raise SweepError(
      f"--sweep={path}: the file raised {cli.describe(e)}; fix it (--verbose shows the traceback)"
    ) from e
  if not callable(getattr(module, "get_sweep", None)):
    raise SweepError(f"{path}: a sweep file must define get_sweep() -> list[dict]")
  return module


def runs_from_dicts(dicts: Sequence[Mapping], sweep: str, root: str) -> list[Run]:
  runs, seen = [], set()
  for i, d in enumerate(dicts):
    _check_run(d, i)
    if d["name"] in seen:
      raise SweepError(f"sweep {sweep!r}: duplicate run name {d['name']!r}")
    seen.add(d["name"])
    resources = dict(d.get("resources") or {})
    if "slurm" in resources:
      resources["slurm"] = _freeze(dict(resources["slurm"]))
    runs.append(
      Run(
        sweep=sweep,
        name=d["name"],
        config=d["config"],
        overrides=tuple(dict(d.get("overrides") or {}).items()),
        resources=tuple(resources.items()),
        run_dir=os.path.join(root, sweep, d["name"]),
      )
    )
  return runs


def load_sweep(path: str, root: str = DEFAULT_ROOT) -> tuple[str, list[Run]]:
  """`(sweep name, runs)` of a sweep file, `path[:key=value,...]` (the arguments go to
  `get_sweep(arg)`, as a config file's); raises SweepError on a malformed file or argument."""
  path, _, arg = path.partition(":")
  module = load_module(path)
  try:
    dicts = module.get_sweep(arg) if arg else module.get_sweep()
  except (TypeError, ValueError) as e:
    raise SweepError(f"{path}: sweep arguments {arg!r}: {e}") from e
  except Exception as e:  # pylint: disable=broad-except  # the user's file
    raise SweepError(
      f"{path}: get_sweep({repr(arg) if arg else ''}) raised {cli.describe(e)}; fix the "
      "file or its arguments (--verbose shows the traceback)"
    ) from e
  if not isinstance(dicts, (list, tuple)) or not dicts:
    raise SweepError(f"{path}: get_sweep() must return a non-empty list of dicts")
  name = sweep_name(path, module)
  return name, runs_from_dicts(dicts, name, root)


def sweep_dir(root: str, name: str) -> str:
  return os.path.join(root, name)


# -- helpers for sweep files --------------------------------------------------------------------------
def _fill(template: Any, point: Mapping[str, Any]) -> Any:
  if callable(template):
    return template(point)
  if isinstance(template, str):
    return template.format(**point)
  if isinstance(template, Mapping):
    return {k: _fill(v, point) for k, v in template.items()}
  return template


def product(**axes: Iterable) -> list[dict]:
  """Every combination of the axes, in order (the last axis varies fastest)."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*(list(axes[k]) for k in keys))]


def grid(
  axes: Mapping[str, Iterable],
  *,
  name: str | Callable,
  config: str | Callable,
  seeds: Iterable[int] = (0,),
  overrides: Mapping | Callable | None = None,
  resources: Mapping | Callable | None = None,
  seed_override: str | None = "seed",
  where: Callable[[dict], bool] | None = None,
) -> list[dict]:
  """Runs over the product of `axes` x `seeds`.

  `name`, `config` are format strings over the grid point (which also holds `seed`) or callables
  `point -> str`; `overrides` / `resources` are dicts (string values formatted too) or callables.
  The seed is added to the overrides as `--config.<seed_override>=<seed>` (None: not added, e.g.
  when the config takes `seed=` as an argument). `where(point)` drops grid points.
  """
  runs = []
  for point in product(**dict(axes), seed=list(seeds)):
    if where is not None and not where(point):
      continue
    over = dict(_fill(overrides, point) or {})
    if seed_override:
      over[seed_override] = point["seed"]
    run = {"name": _fill(name, point), "config": _fill(config, point), "overrides": over}
    res = _fill(resources, point)
    if res:
      run["resources"] = dict(res)
    runs.append(run)
  return runs


def list_arg(value: str, valid: Iterable[str], what: str, empty: bool = False) -> tuple[str, ...]:
  """A sweep argument's `+`-separated names (`tasks=CountRecall+RepeatFirst`), each one of `valid`;
  raises naming the valid ones. `empty`: "" is allowed (no names)."""
  valid = tuple(valid)
  names = tuple(filter(None, value.split("+")))
  bad = [n for n in names if n not in valid]
  if bad or not (names or empty):
    raise ValueError(f"{what}={value!r}: expected '+'-separated names from {valid}")
  return names


def config_arg(**kwargs: Any) -> str:
  """`key=value,key=value` (a config file's argument after `configs/x.py:`)."""
  return ",".join(f"{k}={v}" for k, v in kwargs.items())


# -- CLI ----------------------------------------------------------------------------------------------
def _parse_devices(text: str) -> list[int] | None:
  """`auto` -> the GPUs nvidia-smi lists (None: CPU only); `cpu` -> None; `0,1,3` -> those GPUs."""
  text = (text or "auto").strip().lower()
  if text in ("cpu", "none", ""):
    return None
  if text == "auto":
    if shutil.which("nvidia-smi") is None:
      return None
    try:
      out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
      return None
    gpus = [i for i, _ in enumerate(line for line in out.splitlines() if line.startswith("GPU "))]
    return gpus or None
  try:
    return [int(x) for x in text.split(",") if x.strip()]
  except ValueError as e:
    raise SweepError(f"--devices={text!r}: expected auto, cpu or a list of GPU indices like 0,1") from e


def _parse_kv(text: str) -> dict:
  out = {}
  for item in filter(None, (text or "").split(",")):
    k, sep, v = item.partition("=")
    if not sep:
      raise SweepError(f"expected key=value, got {item!r}")
    out[k.strip()] = True if v == "" else v
  return out


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m launch.sweep",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--sweep", required=True, help="sweep file (launch/sweeps/<name>.py)")
  p.add_argument("--backend", choices=("local", "slurm"), default="local")
  p.add_argument("--root", default=DEFAULT_ROOT, help="sweep root; runs go to <root>/<sweep>/<run>")
  p.add_argument("--dry_run", action="store_true", help="print every job and its command; run nothing")
  p.add_argument("--status", action="store_true", help="list the runs and their state; run nothing")
  p.add_argument("--json", action="store_true", help="with --status: one JSON object per run")
  p.add_argument(
    "--force",
    action="store_true",
    help="also launch runs that finished or look alive (a finished run resumes from its "
    "final checkpoint and ends at once: delete its run dir to start over)",
  )
  p.add_argument("--only", default="", help="comma-separated run names (or fnmatch patterns) to launch")
  p.add_argument(
    "--max_parallel",
    type=int,
    default=0,
    help="local: runs at a time (default: one per GPU group, or 1 on CPU); slurm: array "
    "parallelism (default: all)",
  )
  p.add_argument(
    "--devices",
    default="auto",
    help="local: GPUs to use ('auto' = all that nvidia-smi lists, 'cpu', or '0,1,2,3'); "
    "each run gets resources.gpus_per_node of them (default 1)",
  )
  p.add_argument("--partition", default=None, help="slurm: default partition for runs without one")
  p.add_argument("--account", default=None, help="slurm: account")
  p.add_argument(
    "--slurm_setup",
    action="append",
    default=[],
    help="slurm: a shell line run before the job (repeatable), e.g. 'module load cuda'",
  )
  p.add_argument(
    "--slurm_additional",
    default="",
    help="slurm: extra sbatch flags key=value,key=value (e.g. exclusive=,mail-type=END)",
  )
  p.add_argument(
    "--stale_s",
    type=float,
    default=None,
    help="status: metrics older than this are 'stale' (default: max(300, 10 x log period))",
  )
  p.add_argument("--no_wait", action="store_true", help="local: submit, do not wait for the runs")
  p.add_argument("--verbose", action="store_true", help=cli.VERBOSE_HELP)
  return p


def _check_slurm() -> None:
  missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
  if missing:
    raise SweepError(
      f"--backend=slurm: {' and '.join(missing)} not found on PATH (this is not a SLURM "
      "node): run the sweep on a SLURM login node, or with --backend=local; --dry_run "
      "lists the jobs anywhere"
    )


def select(runs: list[Run], only: str) -> list[Run]:
  if not only:
    return runs
  pats = [p for p in only.split(",") if p]
  chosen = [r for r in runs if any(fnmatch.fnmatchcase(r.name, p) for p in pats)]
  if not chosen:
    raise SweepError(f"--only={only!r} matches no run")
  return chosen


def print_dry_run(sweep: str, runs: list[Run], args, out=None) -> None:
  out = out or sys.stdout
  from launch import backends  # noqa: PLC0415 - optional dependency: it imports submitit

  print(f"sweep {sweep}: {len(runs)} jobs, backend {args.backend}, root {args.root}", file=out)
  devices = _parse_devices(args.devices) if args.backend == "local" else None
  for i, run in enumerate(runs):
    print(f"job {i}: {run.name}", file=out)
    print(f"  run_dir: {run.run_dir}", file=out)
    if args.backend == "slurm":
      params = backends.slurm_parameters(run.resources_dict, sweep, defaults=backends.slurm_defaults(args))
      print(f"  sbatch: {json.dumps(params, sort_keys=True, default=str)}", file=out)
      res = run.resources_dict
      procs = res.get("nodes", 1) * res.get("tasks_per_node", 1)
      if procs > 1:
        print(
          f"  multi-process: each of {procs} tasks ({res.get('nodes', 1)} node(s) x "
          f"{res.get('tasks_per_node', 1)}) adds "
          f"--config.system.coordinator_address=<first node>:<port> "
          f"--config.system.num_processes={procs} "
          f"--config.system.process_id=<task rank>",
          file=out,
        )
    else:
      print(f"  devices: {backends.local_device_note(run.resources_dict, devices)}", file=out)
    print(f"  command: {shlex.join(run.command())}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    name, runs = load_sweep(args.sweep, args.root)
    runs = select(runs, args.only)
    if args.status:
      rows = status.collect([r.run_dir for r in runs], stale_s=args.stale_s)
      status.print_rows(rows, as_json=args.json)
      return 0
    if args.dry_run:
      print_dry_run(name, runs, args)
      return 0
    from launch import backends  # noqa: PLC0415 - optional dependency: it imports submitit

    todo = []
    for run, st in zip(runs, status.collect([r.run_dir for r in runs], stale_s=args.stale_s)):
      if not args.force and st["state"] in ("finished", "running", "queued"):
        print(
          f"skip {run.name}: {st['state']}"
          + (" (use --force to relaunch)" if st["state"] != "finished" else "")
        )
        continue
      todo.append(run)
    if not todo:
      print(f"sweep {name}: nothing to launch ({len(runs)} runs finished or alive)")
      return 0
    cli.check_writable(sweep_dir(args.root, name), "--root", directory=True)
    if args.backend == "slurm":
      _check_slurm()
    folder = os.path.join(sweep_dir(args.root, name), ".submitit")
    if args.backend == "local":
      devices = _parse_devices(args.devices)
      results = backends.run_local(
        todo, folder, max_parallel=args.max_parallel, devices=devices, wait=not args.no_wait
      )
      failed = [n for n, ok in results.items() if ok is False]
      if failed:
        print(f"sweep {name}: {len(failed)} run(s) failed: {', '.join(failed)}")
        return 1
      return 0
    try:
      jobs = backends.submit_slurm(
        todo,
        folder,
        sweep=name,
        defaults=backends.slurm_defaults(args),
        array_parallelism=args.max_parallel or None,
      )
    except backends.SubmissionFailed as e:
      return cli.report(e, 2)
    for run, job_id in jobs:
      print(f"submitted {run.name}: slurm job {job_id}")
    print(
      f"sweep {name}: {len(jobs)} jobs submitted; `python -m launch.sweep --sweep={args.sweep} "
      f"--root={args.root} --status` shows their state"
    )
    return 0
  except SweepError as e:
    return cli.report(e, 2)


if __name__ == "__main__":
  cli.run(main)
