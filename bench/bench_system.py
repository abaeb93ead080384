"""System benchmark: end-to-end trainer throughput next to its two ceilings, and memory over a long run.

    python -m bench.bench_system               # CartPole (MLP, RTRL RTU) and Pong (ResNet, RTRL eLSTM)
    python -m bench.bench_system --quick       # shorter runs (a smoke test)
    python -m bench.bench_system --memory --minutes=10     # RSS of the default job over 10 minutes
    python -m bench.bench_system --gpu --actor-devices=cpu,gpu   # Pong, RTRL eLSTM and feed-forward,
                                               # sized for a GPU host (bench/gpu/run.sh runs this)

Throughput (one run, the same cores, one system after the other). Per system:
  raw env       raw envpool steps/s, random actions, sync `step` of ONE pool holding all the run's
                envs (num_actors x pools x envs per pool, rtrl_rl.system.actors.actor_layout) with
                num_threads = CPU count
  learner-only  samples/s (M * B per update) of the jitted IMPALA update (state donated) on
                synthetic rollouts (rtrl_rl.agents.rollout.synthetic_rollout), same network and batch
  end-to-end    agent steps/s of the real trainer: `python -m rtrl_rl.train` in a subprocess with a
                run dir under /tmp, metrics every 2 s; steady state = frames / elapsed between the
                first metrics row after the warm-up and the last row; then SIGTERM (graceful)
The raw env and learner-only figures are measured right before AND right after the end-to-end run
and averaged (the machine is shared: both ceilings see the load the end-to-end run saw). Printed:
end-to-end / min(raw env, learner-only), target >= 0.7. Note that on a 2-core machine the ceilings
each use the whole machine, while end-to-end runs actors, env threads and learner on the same cores.

Systems:
  cartpole  configs/default.py:rtu (memory/cartpole-masked, MLP(64), RTRL RTU N=64, M=20, B=32,
            2 actors x 2 pools x 64 envs, 4 records of 16 per pool)
  pong      configs/irie_atari.py:M=20 on atari/Pong (IMPALA ResNet, RTRL eLSTM N=256), shrunk for
            this CPU: B=8, 1 actor x 2 pools x 8 envs (an update takes seconds here; the learner
            is the bottleneck)
  pong-ff   the same with the feed-forward agent (configs/irie_atari.py:M=20,mode=ff)

GPU host (`--gpu`): the Pong systems sized for one GPU and ~16 cores (defaults: systems pong and
pong-ff, M=50, B=32, max(2, cpus - 4) actors x 2 pools x 8 envs; learner-only timed for >= 3 s
like CartPole). `--actors`, `--envs-per-actor`, `--batch-size` and `--unroll-length` override the
Pong sizes (with or without `--gpu`). `--actor-devices=cpu,gpu` runs the end-to-end trainer once per
`system.actor_device` (the ceilings are shared); without it the config's default placement is used.
`--no-ceilings` skips the raw-env and learner-only measurements (end-to-end runs only).
This process allocates GPU memory on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false, set before JAX is
imported) so that the trainer it starts, which inherits the caller's environment unchanged, can
take its usual share; SIGTERM stops the trainer it started before exiting.

Memory (`--memory`): runs configs/default.py (total_env_steps raised so it does not finish early)
for `--minutes`, samples the resident memory of the trainer and all its descendants (psutil) every
`--interval` seconds, and prints start / peak / end RSS (and USS, the memory unique to each process,
which does not count the shared-memory queue in every process) and the slope (MB/min, least squares)
after the warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil

from rtrl_rl import envs, experiment
from rtrl_rl.system import actors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 0.7

SYSTEMS = {
  "cartpole": dict(
    label="CartPole-masked, MLP + RTRL RTU", config="configs/default.py:rtu", overrides={}, quick_overrides={}
  ),
  "pong": dict(
    label="Pong, ResNet + RTRL eLSTM N=256",
    config="configs/irie_atari.py:M=20",
    overrides={
      "env.id": "atari/Pong",
      "agent.batch_size": 8,
      "system.num_actors": 1,
      "system.envs_per_actor": 8,
    },
    quick_overrides={},
  ),
  "pong-ff": dict(
    label="Pong, ResNet feed-forward",
    config="configs/irie_atari.py:M=20,mode=ff",
    overrides={
      "env.id": "atari/Pong",
      "agent.batch_size": 8,
      "system.num_actors": 1,
      "system.envs_per_actor": 8,
    },
    quick_overrides={},
  ),
}
_CHILD_ENV = dict(os.environ)  # the trainer subprocess's environment (see the module docstring)


def gpu_overrides(cpus: int | None = None) -> dict:
  """Pong sizes for a GPU host with `cpus` cores (`--gpu`)."""
  cpus = cpus or os.cpu_count() or 1
  return {
    "agent.unroll_length": 50,
    "agent.batch_size": 32,
    "system.num_actors": max(2, cpus - 4),
    "system.envs_per_actor": 8,
  }


def size_overrides(name: str, args) -> dict:
  """The Pong systems' sizes from --gpu / --actors / --envs-per-actor / --batch-size / --unroll-length."""
  if not name.startswith("pong"):
    return {}
  out = gpu_overrides() if args.gpu else {}
  for flag, key in (
    ("actors", "system.num_actors"),
    ("envs_per_actor", "system.envs_per_actor"),
    ("batch_size", "agent.batch_size"),
    ("unroll_length", "agent.unroll_length"),
  ):
    if getattr(args, flag) is not None:
      out[key] = getattr(args, flag)
  return out


# ----------------------------------------------------------------------------------------------
# config helpers (one source for the subprocess flags and the in-process ceilings)
# ----------------------------------------------------------------------------------------------


def _flag(k, v) -> str:
  return f"--config.{k}={v}"


def _describe(config) -> str:
  a, s = config.agent, config.system
  cell = a.network.cell or "ff"
  return (
    f"{config.env.id}, torso={a.network.torso}, core={cell}/{a.network.core_mode} "
    f"N={a.network.hidden_size}, M={a.unroll_length}, B={a.batch_size}, "
    f"{s.num_actors} actors x {actor_envs(config)[0]} pools x {actor_envs(config)[1]} envs"
  )


def actor_envs(config) -> tuple[int, int]:
  """(pools per actor, envs per pool) of the actors (rtrl_rl/system/actors.py)."""
  pools, records = actors.actor_layout(config)
  return pools, records * config.system.envs_per_actor


# ----------------------------------------------------------------------------------------------
# ceilings
# ----------------------------------------------------------------------------------------------


def raw_env_rate(config, seconds: float, rounds: int = 3) -> float:
  """Raw envpool agent steps/s (random actions, sync step) for all the run's envs in one pool."""
  s = config.system
  pools, per_pool = actor_envs(config)
  n = s.num_actors * pools * per_pool
  options = config.env.options.to_dict()
  options.update(num_threads=os.cpu_count() or 1)
  options.pop("batch_size", None)
  env = envs.make(config.env.id, n, 0, **options)
  raw = env.raw
  rng = np.random.default_rng(0)
  acts = [rng.integers(0, env.action_space.num_values, n).astype(np.int32) for _ in range(64)]
  raw.reset()
  rates = []
  for r in range(rounds + 1):
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < (seconds if r else 0.2):  # round 0: warm-up
      raw.step(acts[k % 64])
      k += 1
    if r:
      rates.append(k * n / (time.perf_counter() - t0))
  env.close()
  return float(np.median(rates))


class Learner:
  """The jitted update on a synthetic rollout of the run's network and batch (state donated)."""

  def __init__(self, config):
    import jax  # noqa: PLC0415 - after XLA_PYTHON_CLIENT_PREALLOCATE is set

    from rtrl_rl.agents import impala  # noqa: PLC0415 - imports jax: after XLA_PYTHON_CLIENT_PREALLOCATE
    from rtrl_rl.agents.rollout import synthetic_rollout  # noqa: PLC0415 - imports jax: as above

    a = config.agent
    obs, act = envs.describe(config.env.id, **config.env.options.to_dict())
    agent = impala.make_agent(a, obs, act)
    self.m, self.b = a.unroll_length, a.batch_size
    self.state = impala.init_learner(agent, a, obs)  # also gives the agent its input sizes
    rng = np.random.default_rng(0)
    carry = jax.tree.map(
      lambda x: (rng.normal(size=x.shape) * 0.1).astype(x.dtype), agent.initial_carry(self.b)
    )
    rollout = synthetic_rollout(
      0,
      unroll_length=self.m,
      batch_size=self.b,
      obs_shape=obs.shape,
      obs_dtype=obs.dtype,
      num_actions=act.num_values,
      carry=carry,
    )
    self.rollout = jax.device_put(rollout)
    t0 = time.perf_counter()
    self.step = impala.make_learner_step(agent, a, donate=True).lower(self.state, self.rollout).compile()
    self.compile_s = time.perf_counter() - t0
    self._jax = jax
    self.run(1)  # warm-up

  def run(self, n: int) -> float:
    """Seconds per update over `n` back-to-back updates."""
    t0 = time.perf_counter()
    for _ in range(n):
      self.state, metrics = self.step(self.state, self.rollout)
    self._jax.block_until_ready(metrics)
    return (time.perf_counter() - t0) / n

  def rate(self, min_seconds: float) -> float:
    """Samples/s: median of 3 samples, each of enough updates to last ~min_seconds / 3."""
    per = self.run(1)
    n = max(1, int(min_seconds / 3 / per + 0.5))
    return self.m * self.b / float(np.median([self.run(n) for _ in range(3)]))


# ----------------------------------------------------------------------------------------------
# end-to-end
# ----------------------------------------------------------------------------------------------


def _rows(path):
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        pass  # a partly written last line
  return [r for r in out if "frames" in r and "elapsed_s" in r]


def end_to_end(spec: str, overrides: dict, run_seconds: float, warmup_s: float, timeout_s: float):
  """Steady-state agent steps/s of `python -m rtrl_rl.train` (see the module docstring)."""
  run_dir = tempfile.mkdtemp(prefix="bench_system_", dir="/tmp")
  flags = {
    "system.log_every_s": 2.0,
    "system.plot": False,
    "system.checkpoint_every_s": 1e9,
    "agent.total_env_steps": 10**10,
    **overrides,
  }
  cmd = [
    sys.executable,
    "-m",
    "rtrl_rl.train",
    f"--config={os.path.join(REPO, spec)}",
    f"--run_dir={run_dir}",
  ] + [_flag(k, v) for k, v in flags.items()]
  log_path = os.path.join(run_dir, "stdout.log")
  t_start = time.monotonic()
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=_CHILD_ENV)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    first_row_at = None
    try:
      while proc.poll() is None:
        time.sleep(0.5)
        rows = _rows(metrics)
        if rows and first_row_at is None:
          first_row_at = time.monotonic()
        if first_row_at is not None and time.monotonic() - first_row_at >= warmup_s + run_seconds:
          break
        if time.monotonic() - t_start > timeout_s:
          break
    finally:
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
      try:
        proc.wait(timeout=120)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
  rows = _rows(metrics)
  result = {
    "returncode": proc.returncode,
    "rows": len(rows),
    "run_dir": run_dir,
    "startup_s": None,
    "fps": float("nan"),
    "window_s": 0.0,
    "updates": 0,
  }
  if rows:
    result["startup_s"] = rows[0]["elapsed_s"]
    steady = [r for r in rows if r["elapsed_s"] >= rows[0]["elapsed_s"] + warmup_s]
    if len(steady) >= 2:
      a, b = steady[0], steady[-1]
      result.update(
        fps=(b["frames"] - a["frames"]) / (b["elapsed_s"] - a["elapsed_s"]),
        window_s=b["elapsed_s"] - a["elapsed_s"],
        updates=b["updates"] - a["updates"],
        policy_lag=float(np.mean([r.get("policy_lag", np.nan) for r in steady])),
        queue_depth=float(np.mean([r.get("queue_depth", np.nan) for r in steady])),
      )
    elif len(rows) >= 2:  # too short for a warm-up cut: say so
      a, b = rows[0], rows[-1]
      result.update(
        fps=(b["frames"] - a["frames"]) / max(b["elapsed_s"] - a["elapsed_s"], 1e-9),
        window_s=b["elapsed_s"] - a["elapsed_s"],
        updates=b["updates"] - a["updates"],
        note="no warm-up cut",
      )
  if result["rows"] == 0 or not np.isfinite(result["fps"]):
    with open(log_path) as f:
      result["log_tail"] = f.read()[-3000:]
  else:
    shutil.rmtree(run_dir, ignore_errors=True)
  return result


def _secs(x) -> str:
  return "-" if x is None else f"{x:.1f}s"


def bench_throughput(args) -> list[dict]:
  names = [n for n in args.systems.split(",") if n]
  for n in names:
    if n not in SYSTEMS:
      raise SystemExit(f"unknown system {n!r}; expected some of {list(SYSTEMS)}")
  devices = [d for d in (args.actor_devices or "").split(",") if d]
  results = []
  for name in names:
    sysd = SYSTEMS[name]
    overrides = dict(
      sysd["overrides"], **(sysd["quick_overrides"] if args.quick else {}), **size_overrides(name, args)
    )
    config = experiment.load_config(sysd["config"], overrides)
    if devices and "actor_device" not in config.system:
      raise SystemExit("--actor-devices: this trainer has no system.actor_device option")
    pong = name.startswith("pong")
    run_s = (args.pong_seconds if pong else args.cartpole_seconds) * (0.5 if args.quick else 1.0)
    warm_s = (args.pong_warmup if pong else args.cartpole_warmup) * (0.5 if args.quick else 1.0)
    print(f"## {name}: {_describe(config)}", flush=True)
    t0 = time.perf_counter()
    nan = float("nan")
    if args.no_ceilings:
      learner, env_before, learn_before = None, nan, nan
    else:
      learner = Learner(config)
      print(f"   learner compile {learner.compile_s:.1f}s, one update {learner.run(1):.3f}s", flush=True)
    lmin = 0.0 if pong and not args.gpu else 1.5 if args.quick else 3.0  # a CPU Atari update: seconds
    if learner is not None:
      env_before = raw_env_rate(config, 1.0)
      learn_before = learner.rate(lmin)
      print(
        f"   before: raw env {env_before:,.0f}/s, learner-only {learn_before:,.0f} samples/s "
        f"(load {os.getloadavg()[0]:.1f})",
        flush=True,
      )
    runs = []
    for device in devices or [None]:
      run_overrides = dict(overrides, **({"system.actor_device": device} if device else {}))
      e2e = end_to_end(
        sysd["config"], run_overrides, run_s, warm_s, timeout_s=run_s + warm_s + args.startup_timeout
      )
      where = f" [{device} actors]" if device else ""
      print(
        f"   end-to-end{where} {e2e['fps']:,.0f} steps/s over {e2e['window_s']:.0f}s "
        f"({e2e['updates']} updates; start-up {_secs(e2e['startup_s'])}; exit {e2e['returncode']}) "
        f"(load {os.getloadavg()[0]:.1f})",
        flush=True,
      )
      if "log_tail" in e2e:
        print("   --- trainer output (tail) ---\n" + e2e["log_tail"], flush=True)
      runs.append((f"{name}[{device}]" if device else name, e2e))
    env_after = learn_after = nan
    if learner is not None:
      env_after = raw_env_rate(config, 1.0)
      learn_after = learner.rate(lmin)
      print(
        f"   after:  raw env {env_after:,.0f}/s, learner-only {learn_after:,.0f} samples/s "
        f"({time.perf_counter() - t0:.0f}s for this system)",
        flush=True,
      )
    env_rate, learn_rate = (env_before + env_after) / 2, (learn_before + learn_after) / 2
    bound = min(env_rate, learn_rate)
    for label, e2e in runs:
      results.append(
        dict(
          name=label,
          e2e=e2e["fps"],
          env=env_rate,
          learner=learn_rate,
          ratio=e2e["fps"] / bound,
          limit="-" if not np.isfinite(bound) else "env" if env_rate < learn_rate else "learner",
          lag=e2e.get("policy_lag", float("nan")),
          queue=e2e.get("queue_depth", float("nan")),
        )
      )
    del learner
  width = max([9] + [len(r["name"]) for r in results])
  print()
  print(
    f"{'system':<{width}} {'end-to-end':>11} {'raw env':>10} {'learner-only':>13} {'bound':>8} "
    f"{'e2e/min':>8} {'lag':>5} {'queue':>6}  verdict"
  )
  for r in results:
    verdict = (
      "NO END-TO-END RATE (see the trainer output above)"
      if not np.isfinite(r["e2e"])
      else "no ceilings measured (--no-ceilings)"
      if not np.isfinite(r["ratio"])
      else "OK"
      if r["ratio"] >= TARGET
      else f"BELOW TARGET {TARGET}"
    )
    print(
      f"{r['name']:<{width}} {r['e2e']:11,.0f} {r['env']:10,.0f} {r['learner']:13,.0f} "
      f"{r['limit']:>8} {r['ratio']:8.2f} {r['lag']:5.1f} {r['queue']:6.1f}  {verdict}"
    )
  print(
    "(agent steps/s; Pong: x4 frames. 'bound' names the smaller ceiling; lag = mean policy lag "
    "in updates, queue = mean records waiting)"
  )
  return results


# ----------------------------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------------------------


def _tree_memory(proc):
  procs = [proc]
  try:
    procs += proc.children(recursive=True)
  except psutil.Error:
    pass
  rss = uss = 0
  count = 0
  for p in procs:
    try:
      info = p.memory_full_info()
      rss, uss, count = rss + info.rss, uss + info.uss, count + 1
    except psutil.Error:
      pass
  return rss / 2**20, uss / 2**20, count


def bench_memory(args) -> dict:
  run_dir = tempfile.mkdtemp(prefix="bench_system_memory_", dir="/tmp")
  cmd = [
    sys.executable,
    "-m",
    "rtrl_rl.train",
    f"--config={os.path.join(REPO, 'configs/default.py')}",
    f"--run_dir={run_dir}",
    _flag("agent.total_env_steps", 10**10),
    _flag("system.plot", False),
  ]
  duration = args.minutes * 60.0
  warmup = min(args.warmup, duration / 3)
  print(
    f"# bench_system --memory: configs/default.py (total_env_steps=1e10 so it runs the whole "
    f"time) for {args.minutes} min, RSS/USS of the trainer and its descendants every "
    f"{args.interval}s, slope after {warmup:.0f}s; run dir {run_dir}",
    flush=True,
  )
  log = open(os.path.join(run_dir, "stdout.log"), "w")
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  ps = psutil.Process(proc.pid)
  samples = []  # (t_s, rss_mb, uss_mb, nproc)
  t0 = time.monotonic()
  last_print = -1e9
  try:
    while proc.poll() is None and time.monotonic() - t0 < duration:
      t = time.monotonic() - t0
      rss, uss, n = _tree_memory(ps)
      samples.append((t, rss, uss, n))
      if t - last_print >= 60:
        last_print = t
        rows = _rows(os.path.join(run_dir, "metrics.jsonl"))
        frames = rows[-1]["frames"] if rows else 0
        print(
          f"  t={t:5.0f}s  processes={n}  RSS={rss:8.1f} MB  USS={uss:8.1f} MB  frames={frames:,}", flush=True
        )
      time.sleep(args.interval)
  finally:
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    log.close()
  rows = _rows(os.path.join(run_dir, "metrics.jsonl"))
  s = np.array([x[:3] for x in samples], np.float64)
  steady = s[s[:, 0] >= warmup]
  out = {"samples": len(s), "exit": proc.returncode, "frames": rows[-1]["frames"] if rows else 0}
  if len(steady) >= 3:
    for col, name in ((1, "rss"), (2, "uss")):
      slope = np.polyfit(steady[:, 0] / 60.0, steady[:, col], 1)[0]
      out[name] = dict(
        start=s[0, col], after_warmup=steady[0, col], peak=s[:, col].max(), end=s[-1, col], slope=slope
      )
  print(
    f"\n{'memory':<6} {'first':>9} {'after warm-up':>14} {'peak':>9} {'end':>9} {'slope after warm-up':>21}"
  )
  for name in ("rss", "uss"):
    if name in out:
      m = out[name]
      print(
        f"{name.upper():<6} {m['start']:7.1f}MB {m['after_warmup']:12.1f}MB {m['peak']:7.1f}MB "
        f"{m['end']:7.1f}MB {m['slope']:+15.2f} MB/min"
      )
  print(
    f"({len(s)} samples over {s[-1, 0] if len(s) else 0:.0f}s, {out['frames']:,} agent steps, "
    f"trainer exit code {proc.returncode}; processes: trainer, 2 actors and multiprocessing's "
    "resource tracker)"
  )
  shutil.rmtree(run_dir, ignore_errors=True)
  return out


def _exit_on_sigterm(signum, frame):
  del frame
  raise SystemExit(128 + signum)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="half-length runs")
  p.add_argument(
    "--systems",
    default=None,
    help="comma-separated subset of " + ",".join(SYSTEMS) + " (default cartpole,pong; --gpu: pong,pong-ff)",
  )
  p.add_argument("--gpu", action="store_true", help="size the Pong systems for a GPU host (see above)")
  p.add_argument("--actors", type=int, default=None, help="Pong systems: system.num_actors")
  p.add_argument("--envs-per-actor", type=int, default=None, help="Pong systems: system.envs_per_actor")
  p.add_argument("--batch-size", type=int, default=None, help="Pong systems: agent.batch_size")
  p.add_argument("--unroll-length", type=int, default=None, help="Pong systems: agent.unroll_length")
  p.add_argument(
    "--actor-devices",
    default=None,
    help="comma-separated system.actor_device values, one end-to-end run each (cpu,gpu)",
  )
  p.add_argument(
    "--no-ceilings", action="store_true", help="end-to-end runs only (no raw-env and learner-only ceilings)"
  )
  p.add_argument(
    "--startup-timeout",
    type=float,
    default=240.0,
    help="seconds an end-to-end run may take beyond its warm-up + window",
  )
  p.add_argument("--cartpole-seconds", type=float, default=60.0, help="end-to-end window after warm-up")
  p.add_argument("--cartpole-warmup", type=float, default=10.0, help="seconds after the first metrics row")
  p.add_argument("--pong-seconds", type=float, default=90.0)
  p.add_argument("--pong-warmup", type=float, default=20.0)
  p.add_argument("--memory", action="store_true", help="measure memory of the default job instead")
  p.add_argument("--minutes", type=float, default=10.0, help="--memory: run length")
  p.add_argument("--interval", type=float, default=5.0, help="--memory: sampling period (s)")
  p.add_argument("--warmup", type=float, default=120.0, help="--memory: seconds left out of the slope")
  args = p.parse_args(argv)
  if args.systems is None:
    args.systems = "pong,pong-ff" if args.gpu else "cartpole,pong"
  os.chdir(REPO)
  signal.signal(signal.SIGTERM, _exit_on_sigterm)  # run the `finally:` that stops a child trainer
  if args.memory:
    return bench_memory(args)
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # see the module docstring
  import jax  # noqa: PLC0415 - after XLA_PYTHON_CLIENT_PREALLOCATE is set (above)

  print(
    f"# bench_system: {os.cpu_count()} cpus, jax {jax.__version__} ({jax.default_backend()}), "
    f"python {sys.version.split()[0]}, {platform.machine()}, load {os.getloadavg()[0]:.1f}",
    flush=True,
  )
  return bench_throughput(args)


if __name__ == "__main__":
  main()
