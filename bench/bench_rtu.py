"""The RTU paper's PPO experiments, each timed next to its floor (`make bench-rtu`).

    python -m bench.bench_rtu                 # the default grid (below), ~30 min on 2 CPU cores
    python -m bench.bench_rtu --full          # every core x every num_envs
    python -m bench.bench_rtu --only=popgym   # rows whose env id contains the word

Each row is one `python -m bench.bench_ppo` run in its own process (so its peak memory is its own):
steady-state agent steps/s, ours / floor (bench/bench_ppo.py: the fully-jitted loop vs env alone +
update alone; `host` rows: the `sync` loop vs env + policy + update), start-up (seconds to the first
iteration's result), the stored carries of one rollout (MB), the memory one iteration of the jitted
loop holds (MB, `anakin.iteration_bytes`: state + donated buffer + temporaries; issue 14's bound: at
most 2x the stored carries) and the process's peak resident memory (MB, `ru_maxrss`: the benchmark's
process, which also holds the floor's own rollout, the JAX runtime and the compiled programs). With
num_envs B > 1 the envs share the paper's 2048-step buffer (rollout_length = 2048 / B).

Experiments: Ant-P on Brax (positional, the authors' setting) and on envpool MuJoCo (host loop),
Reacher-POMDP on Brax, POPGym CountRecall-easy in JAX; cores: linear RTU, non-linear RTU, online LRU
(RTRL), GRU (T-BPTT, T = 16). Default grid: every core at 1 env, and the linear RTU at 8 and 64 envs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

EXPERIMENTS = (  # (label, config file and argument, host loop)
  ("brax/Ant-P", "configs/rtu_mujoco_pomdp.py:env=Ant-P", False),
  ("mujoco/Ant-P (envpool, host)", "configs/rtu_mujoco_pomdp.py:env=Ant-P,env_family=envpool", True),
  ("brax/Reacher-POMDP", "configs/rtu_reacher_pomdp.py:", False),
  ("popgym/CountRecall-easy", "configs/rtu_popgym.py:task=CountRecall,level=easy", False),
)
CORES = ("rtu_linear", "rtu_nonlinear", "lru", "gru")
NUM_ENVS = (1, 8, 64)


def _grid(full: bool):
  for label, config, host in EXPERIMENTS:
    for core in CORES:
      for n in NUM_ENVS:
        if full or n == 1 or core == "rtu_linear":
          arg = config + ("," if not config.endswith(":") else "") + f"core={core}"
          yield label, arg, host, core, n


def run_one(config: str, num_envs: int, host: bool, repeats: int) -> dict:
  """One bench_ppo run in a child process; its rows plus the child's peak RSS (MB)."""
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    cmd = [
      sys.executable,
      "-m",
      "bench.bench_ppo",
      f"--config={config}",
      f"--num_envs={num_envs}",
      f"--repeats={repeats}",
      f"--json={out.name}",
    ] + (["--host"] if host else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
      return {"error": log.strip().splitlines()[-1] if log.strip() else f"exit {proc.returncode}"}
    row = json.load(open(out.name))[0]
  row["peak_rss_mb"] = usage.ru_maxrss / 1024
  return row


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--full", action="store_true", help="every core at every num_envs")
  ap.add_argument("--only", default="", help="only experiments whose label contains this")
  ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds per run (median)")
  args = ap.parse_args(argv)
  print(
    "| experiment | core | num_envs | steps/s | floor steps/s | ours/floor | start-up (s) | "
    "stored carries (MB) | iteration memory (MB) | peak RSS (MB) |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
  for label, config, host, core, n in _grid(args.full):
    if args.only and args.only not in label:
      continue
    r = run_one(config, n, host, args.repeats)
    if "error" in r:
      print(f"| {label} | {core} | {n} | failed: {r['error'][:120]} | | | | | | |", flush=True)
      continue
    print(
      f"| {label} | {core} | {n} | {r['steps_per_s']:,.0f} | {r['floor_steps_per_s']:,.0f} | "
      f"{r['ratio']:.2f} | {r['startup_s']:.1f} | {r['stored_carries_mb']:,.0f} | "
      f"{'-' if r['iteration_mb'] is None else format(r['iteration_mb'], ',.0f')} | {r['peak_rss_mb']:,.0f} |",
      flush=True,
    )


if __name__ == "__main__":
  main()
