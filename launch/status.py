"""The state of a sweep's runs.

    python -m launch.status --root=runs/sweeps/default          # every run dir under a sweep dir
    python -m launch.sweep --sweep=launch/sweeps/default.py --status   # the runs of a sweep file

States (first match wins):
  pending   no run directory (or an empty one: never launched)
  finished  summary.json without `stopped_early`
  running / queued  a SLURM launch whose job `squeue` still lists: RUNNING / any other state
            (PENDING after a requeue by SLURM or by submitit, ...): it resumes by itself
  failed    failed.json (the training process exited with an error) or submitit recorded an error
  running   metrics.jsonl modified within `stale_s` seconds
  stopped   summary.json with `stopped_early` (SIGTERM / preemption): relaunch to resume
  stale     metrics.jsonl older than `stale_s` (killed, or a lost job): relaunch to resume
  queued    launched (launch.json) but no metrics yet
with the frames and the latest episode return from metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

from rtrl_rl import cli
from rtrl_rl.io.metrics import METRICS_FILE, read_metrics

LAUNCH_FILE = "launch.json"
FAILED_FILE = "failed.json"
SUMMARY_FILE = "summary.json"
STATES = ("pending", "queued", "running", "stale", "stopped", "finished", "failed")


def _load(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _default_stale_s(run_dir: str) -> float:
  cfg = _load(os.path.join(run_dir, "config.json")) or {}
  period = float(((cfg.get("system") or {}).get("log_every_s")) or 10.0)
  return max(300.0, 10.0 * period)


def slurm_job_states(job_ids: Sequence[str]) -> dict[str, str] | None:
  """{job id: SLURM state} of those of `job_ids` that `squeue` still lists (pending, running,
  requeued, completing, ...; array tasks as `<array id>_<task>`), from one squeue call; None when
  squeue is missing or does not answer (then the run files alone decide)."""
  ids = sorted({str(j) for j in job_ids if j})
  if not ids:
    return {}
  try:
    out = subprocess.run(
      ["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i %T"], capture_output=True, text=True, timeout=30
    )
  except (OSError, subprocess.SubprocessError):
    return None
  if out.returncode != 0:  # every id already left the queue: "Invalid job id specified"
    return {} if "invalid job id" in out.stderr.lower() else None
  states = {}
  for line in out.stdout.splitlines():
    parts = line.split()
    if len(parts) == 2:
      states[parts[0]] = parts[1]
  return states


def _slurm_launch(launch: Mapping | None) -> str | None:
  if launch and launch.get("backend") == "slurm" and launch.get("job_id"):
    return str(launch["job_id"])
  return None


def _latest(rows: list[dict]) -> tuple[int | None, float | None]:
  frames = ret = None
  for row in rows:
    if "frames" in row:
      frames = row["frames"]
    r = row.get("episode_return")
    if isinstance(r, (int, float)) and math.isfinite(r):
      ret = float(r)
  return frames, ret


def run_state(
  run_dir: str,
  stale_s: float | None = None,
  now: float | None = None,
  slurm_states: Mapping[str, str] | None = None,
) -> dict[str, Any]:
  """{'run_dir', 'name', 'state', 'frames', 'episode_return', 'age_s', 'job_id', 'detail'}.

  `slurm_states`: `slurm_job_states` of the sweep's jobs (None: asks squeue about this run's job
  when it was launched on SLURM)."""
  now = time.time() if now is None else now
  out: dict[str, Any] = {
    "run_dir": run_dir,
    "name": os.path.basename(os.path.normpath(run_dir)),
    "state": "pending",
    "frames": None,
    "episode_return": None,
    "age_s": None,
    "job_id": None,
    "detail": "",
  }
  if not os.path.isdir(run_dir):
    return out
  launch = _load(os.path.join(run_dir, LAUNCH_FILE))
  if launch:
    out["job_id"] = launch.get("job_id")
  metrics = os.path.join(run_dir, METRICS_FILE)
  if os.path.exists(metrics):
    out["age_s"] = now - os.path.getmtime(metrics)
    out["frames"], out["episode_return"] = _latest(read_metrics(run_dir))
  summary = _load(os.path.join(run_dir, SUMMARY_FILE))
  if summary is not None and out["frames"] is None:
    out["frames"] = summary.get("frames")
  if summary is not None and not summary.get("stopped_early", False):
    if out["episode_return"] is None and isinstance(summary.get("episode_return"), (int, float)):
      out["episode_return"] = summary["episode_return"]
    out["state"] = "finished"
    return out
  job = _slurm_launch(launch)
  if job is not None:  # SLURM still holds the job, e.g. PENDING after a requeue: not stopped, alive
    if slurm_states is None:
      slurm_states = slurm_job_states([job])
    job_state = (slurm_states or {}).get(job)
    if job_state:
      out["state"] = "running" if job_state == "RUNNING" else "queued"
      out["detail"] = f"slurm {job_state}"
      return out
  failed = _load(os.path.join(run_dir, FAILED_FILE))
  if failed is not None:
    out["state"] = "failed"
    out["detail"] = f"exit code {failed.get('returncode')}; log {failed.get('log')}"
    return out
  if launch and launch.get("submitit_folder") and launch.get("job_id"):
    from launch import backends  # noqa: PLC0415 - optional dependency: it imports submitit

    if backends.job_outcome(launch["submitit_folder"], launch["job_id"]) == "error":
      out["state"] = "failed"
      out["detail"] = f"submitit error; log {backends.job_log(launch['submitit_folder'], launch['job_id'])}"
      return out
  stale_s = _default_stale_s(run_dir) if stale_s is None else stale_s
  if out["age_s"] is not None and out["age_s"] <= stale_s:
    out["state"] = "running"
  elif summary is not None:
    out["state"] = "stopped"
  elif out["age_s"] is not None:
    out["state"] = "stale"
  elif launch:
    out["state"] = "queued"
  return out


def collect(run_dirs: Sequence[str], stale_s: float | None = None) -> list[dict]:
  """`run_state` of each run directory, with one squeue call for all SLURM launches."""
  jobs = [_slurm_launch(_load(os.path.join(d, LAUNCH_FILE))) for d in run_dirs]
  queue = slurm_job_states(jobs) or {}  # None (no squeue): the run files decide, asked once
  return [run_state(d, stale_s, slurm_states=queue) for d in run_dirs]


def discover(root: str) -> list[str]:
  """Run directories directly under a sweep directory (or `root` itself if it is a run)."""
  if any(os.path.exists(os.path.join(root, f)) for f in (METRICS_FILE, LAUNCH_FILE, "config.json")):
    return [root]
  if not os.path.isdir(root):
    return []
  return sorted(
    os.path.join(root, d)
    for d in os.listdir(root)
    if not d.startswith(".") and os.path.isdir(os.path.join(root, d))
  )


def _fmt_age(age: float | None) -> str:
  if age is None:
    return "-"
  if age < 120:
    return f"{age:.0f}s"
  if age < 7200:
    return f"{age / 60:.0f}m"
  return f"{age / 3600:.1f}h"


def print_rows(rows: list[dict], as_json: bool = False, out=None) -> None:
  out = out or sys.stdout
  if as_json:
    for row in rows:
      print(json.dumps(row), file=out)
    return
  width = max([len(r["name"]) for r in rows] + [3])
  print(f"{'run':<{width}}  {'state':<8}  {'frames':>12}  {'return':>10}  {'updated':>8}  job", file=out)
  for r in rows:
    frames = "-" if r["frames"] is None else f"{int(r['frames']):,}"
    ret = "-" if r["episode_return"] is None else f"{r['episode_return']:.2f}"
    line = (
      f"{r['name']:<{width}}  {r['state']:<8}  {frames:>12}  {ret:>10}  {_fmt_age(r['age_s']):>8}  "
      f"{r['job_id'] or '-'}"
    )
    if r["detail"]:
      line += f"  ({r['detail']})"
    print(line, file=out)
  counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
  print("total " + str(len(rows)) + ": " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), file=out)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m launch.status", description=__doc__.split("\n\n")[0])
  p.add_argument("--root", required=True, help="a sweep directory (<sweep root>/<sweep name>) or run dir")
  p.add_argument("--stale_s", type=float, default=None)
  p.add_argument("--json", action="store_true")
  p.add_argument("--verbose", action="store_true", help=cli.VERBOSE_HELP)
  args = p.parse_args(argv)
  if not os.path.isdir(args.root):
    what = "not a directory" if os.path.exists(args.root) else "no such directory"
    raise cli.UsageError(
      f"--root={args.root}: {what}. Pass a sweep directory (<sweep root>/"
      "<sweep name>, e.g. runs/sweeps/default) or a run directory"
    )
  dirs = discover(args.root)
  if not dirs:
    raise cli.UsageError(
      f"--root={args.root}: no run directories in it. Pass a sweep directory (<sweep "
      "root>/<sweep name>, e.g. runs/sweeps/default) or a run directory"
    )
  print_rows(collect(dirs, args.stale_s), as_json=args.json)
  return 0


if __name__ == "__main__":
  cli.run(main)
