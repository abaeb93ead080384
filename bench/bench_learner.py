"""Learner benchmark: IMPALA update throughput for the Atari network, with and without RTRL.

    python -m bench.bench_learner             # M = 50, B = 32 (Irie et al.'s Atari setting)
    python -m bench.bench_learner --quick     # M = 20, B = 8

Network: 84x84x4 uint8 frames (envpool Atari layout [4, 84, 84]) -> IMPALA ResNet [16, 32, 32] ->
Dense 256 -> core (N = 256) -> linear policy (6 actions) and value heads. Variants:

  feed-forward   no core
  tbptt-elstm    eLSTM core, gradients truncated to the unroll (carry without traces)
  rtrl-elstm     eLSTM core, exact RTRL (carry with traces; backprop + carried-in trace term)
  rtrl-rtu       linear-recurrence RTU core (N = 256, output 2N), exact RTRL

Each variant's full learner step (forward over the M+1 frames, IMPALA loss, gradient, clip,
RMSProp; jitted, state donated) is timed interleaved with the others (bench/_timing.py: median over
rounds). Reported: samples/s = M * B / seconds per update, and the ratio to feed-forward (target for
rtrl-elstm: >= 0.9x). The torso runs on all [M+1, B] frames at once, outside any scan.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import jax
import numpy as np

from bench._timing import stateful
from rtrl_rl.agents import impala
from rtrl_rl.agents.rollout import synthetic_rollout
from rtrl_rl.envs import Space

VARIANTS = {  # label -> (cell, core_mode, cell options)
  "feed-forward": (None, "rtrl", {}),
  "tbptt-elstm": ("elstm", "tbptt", {}),
  "rtrl-elstm": ("elstm", "rtrl", {}),
  "rtrl-rtu": ("rtu", "rtrl", {"nonlinear": False}),
}
TARGET = 0.9


def _setup(label, m, b, hidden):
  cell, mode, options = VARIANTS[label]
  obs, act = Space.box((4, 84, 84), np.uint8, 0, 255), Space.discrete(6)
  c = impala.get_config()
  c.unroll_length, c.batch_size = m, b
  c.network.cell, c.network.core_mode, c.network.hidden_size = cell, mode, hidden
  c.network.cell_options = options
  agent = impala.make_agent(c, obs, act)
  state = impala.init_learner(agent, c, obs)
  rng = np.random.default_rng(0)
  carry = jax.tree.map(lambda x: (rng.normal(size=x.shape) * 0.1).astype(x.dtype), agent.initial_carry(b))
  rollout = synthetic_rollout(
    0, unroll_length=m, batch_size=b, obs_shape=obs.shape, obs_dtype=np.uint8, num_actions=6, carry=carry
  )
  rollout = jax.device_put(rollout)
  # Compile ahead of time (no warm-up update needed: an Atari-size update takes ~30 s on 2 CPUs).
  step = impala.make_learner_step(agent, c, donate=True).lower(state, rollout).compile()
  return stateful(lambda s: step(s, rollout), state, extract=lambda out: out[0])


def _time_interleaved(thunks, repeats):
  """Median wall and process-CPU seconds per call, one call of each thunk per round, rotating
  the order (as bench/_timing.time_interleaved, which reports wall time only). CPU time is
  reported too because on a shared machine other tenants' load inflates wall time."""
  names = list(thunks)
  wall = {n: [] for n in names}
  cpu = {n: [] for n in names}
  for r in range(repeats):
    for n in names[r % len(names) :] + names[: r % len(names)]:
      w0, c0 = time.perf_counter(), time.process_time()
      jax.block_until_ready(thunks[n]())
      wall[n].append(time.perf_counter() - w0)
      cpu[n].append(time.process_time() - c0)
  return {n: statistics.median(wall[n]) for n in names}, {n: statistics.median(cpu[n]) for n in names}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="M=20, B=8 (a smoke run)")
  p.add_argument("--unroll-length", type=int, default=None, help="M (default 50; quick 20)")
  p.add_argument("--batch-size", type=int, default=None, help="B (default 32; quick 8)")
  p.add_argument("--hidden-size", type=int, default=256, help="core units N")
  p.add_argument("--repeats", type=int, default=2, help="timed rounds (median reported)")
  p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
  args = p.parse_args(argv)
  m = args.unroll_length or (20 if args.quick else 50)
  b = args.batch_size or (8 if args.quick else 32)
  labels = [v for v in args.variants.split(",") if v]
  for v in labels:
    if v not in VARIANTS:
      p.error(f"unknown variant {v!r}; expected some of {list(VARIANTS)}")

  print(
    f"# bench_learner: IMPALA learner step, Atari network (84x84x4 uint8, IMPALA ResNet, "
    f"N={args.hidden_size}), M={m}, B={b}"
  )
  print(
    f"# jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}, "
    f"{platform.processor() or platform.machine()}, python {sys.version.split()[0]}"
  )
  t0 = time.perf_counter()
  thunks = {}
  for label in labels:
    t1 = time.perf_counter()
    thunks[label] = _setup(label, m, b, args.hidden_size)
    print(f"#   {label}: setup + compile {time.perf_counter() - t1:.1f}s", flush=True)
  print(
    f"# setup + AOT compile {time.perf_counter() - t0:.1f}s; timing interleaved: "
    f"{args.repeats} rounds of 1 update per variant (median)"
  )
  t0 = time.perf_counter()
  times, cpu = _time_interleaved(thunks, args.repeats)
  print(f"# timing {time.perf_counter() - t0:.1f}s")
  base, base_cpu = times.get("feed-forward"), cpu.get("feed-forward")
  print(
    f"{'variant':<14} {'s/update':>9} {'samples/s':>10} {'vs ff':>7} {'cpu-s/upd':>10} {'vs ff(cpu)':>10}"
  )
  for label in labels:
    t, tc = times[label], cpu[label]
    ratio = f"{base / t:.2f}x" if base else "n/a"
    ratio_cpu = f"{base_cpu / tc:.2f}x" if base_cpu else "n/a"
    print(f"{label:<14} {t:9.3f} {m * b / t:10.1f} {ratio:>7} {tc:10.3f} {ratio_cpu:>10}")
  if base and "rtrl-elstm" in times:
    r, rc = base / times["rtrl-elstm"], base_cpu / cpu["rtrl-elstm"]
    print(
      f"# rtrl-elstm / feed-forward throughput: {r:.2f}x wall, {rc:.2f}x cpu "
      f"(target >= {TARGET}x): {'OK' if min(r, rc) >= TARGET else 'BELOW TARGET'}"
    )
  return times


if __name__ == "__main__":
  main()
