"""Cell benchmark: per env-step cost of the RTRL cells, against the memory-bound floor.

    python -m bench.bench_cells            # B in {32, 256}, N in {256, 512}, D = 257, M = 50
    python -m bench.bench_cells --quick    # B = 32, N = 256 only

For each cell (elstm, rtu linear, rtu non-linear, lru) and size it times, side by side and interleaved
(bench/_timing.py; medians over rounds):

  floor    one in-place `t * a + b` pass over real arrays of the traces' total size (per-row `a`,
           per-column `b`, broadcast like the eLSTM trace update; jitted, donated; a complex trace
           [.., N] counts as a real [.., 2N]): the memory-bound lower bound of a trace update, which
           reads and writes every trace float once.
  forward  `cells.step(mode="tbptt")` on a carry without traces (the plain recurrent step).
  actor    `cells.step(mode="rtrl")`, jitted with the carry donated: the fused state + trace update.
  rtrl     learner: `jax.grad` of a loss on `ys` w.r.t. params through
           `cells.unroll(mode="rtrl", outgoing_traces=False)` over M steps, from an actor's carry.
  tbptt    the same with `mode="tbptt"` (carry without traces).

Times are per env-step (per call / B, learner per call / (M B)), in microseconds. Ratios printed:
actor / floor (target <= 1.5), actor / forward, rtrl / tbptt (target <= 1.2).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import jax
import jax.numpy as jnp

from bench._timing import stateful, time_interleaved
from rtrl_rl import cells

D = 257
M = 50
CELLS = {  # label -> cells.make arguments
  "elstm": ("elstm", {}),
  "rtu-linear": ("rtu", {"nonlinear": False}),
  "rtu-nonlinear": ("rtu", {"nonlinear": True}),
  "lru": ("lru", {}),
}
TARGET_FLOOR = 1.5
TARGET_LEARNER = 1.2


def _floor_fn(traces):
  """(floor data, fn): donated in-place `t * a + b` over real arrays of the bytes of `traces`."""

  def leaf(t, a, b):
    if t.ndim == 3:  # [B, D, N]: a per (env, unit), b per (env, input): like j * T + x (x) zh
      return t * a[:, None, :] + b[:, :, None]
    return t * a + b

  def fn(t, a, b):
    return jax.tree.map(leaf, t, a, b)

  fn = jax.jit(fn, donate_argnums=0)
  traces = jax.tree.map(_as_real, traces)
  a = jax.tree.map(lambda t: jnp.full((t.shape[0], t.shape[-1]), 0.999, t.dtype), traces)
  b = jax.tree.map(lambda t: jnp.full(t.shape[:2], 1e-3, t.dtype), traces)
  return traces, lambda t: fn(t, a, b)


def _as_real(t):
  """A real array of the same bytes: complex [..., N] -> real [..., 2N] (ones; the floor's data)."""
  if jnp.iscomplexobj(t):
    return jnp.ones((*t.shape[:-1], 2 * t.shape[-1]), jnp.real(t).dtype)
  return jnp.ones_like(t)


def bench_config(label: str, batch: int, hidden: int, repeats: int, seed: int = 0) -> dict:
  name, options = CELLS[label]
  cell = cells.make(name, hidden_size=hidden, **options)
  k_p, k_x, k_xs, k_r = jax.random.split(jax.random.key(seed), 4)
  params = cell.init(k_p, D)
  x = jax.random.normal(k_x, (batch, D))
  reset = jnp.zeros((batch,), bool)
  xs = jax.random.normal(k_xs, (M, batch, D))
  resets = jax.random.bernoulli(k_r, 0.01, (M, batch))

  # Everything is an argument (a closed-over array would be a compile-time constant, and XLA would
  # fold the input projection away).
  def actor(mode):
    def fn(carry, p, x, reset):
      return cells.step(cell, p, carry, x, reset, mode=mode)

    fn = jax.jit(fn, donate_argnums=0)
    return lambda carry: fn(carry, params, x, reset)

  def learner(mode):
    def loss(p, carry, xs, resets):
      ys, _ = cells.unroll(cell, p, carry, xs, resets, mode=mode, outgoing_traces=False)
      return jnp.mean(ys**2)

    return jax.jit(jax.grad(loss))

  fwd, act = actor("tbptt"), actor("rtrl")
  # A realistic carry for the learner: an actor's, after a few steps (non-zero state and traces).
  carry = cell.initial_carry(batch)
  for _ in range(3):
    _, carry = act(carry)
  learner_carry = jax.tree.map(jnp.copy, carry)
  trace_bytes = sum(t.size * t.dtype.itemsize for t in jax.tree.leaves(carry.traces))
  floor_traces, floor_fn = _floor_fn(carry.traces)
  rtrl, tbptt = learner("rtrl"), learner("tbptt")
  tbptt_carry = cell.initial_carry(batch, traces=False)

  thunks = {
    "floor": stateful(floor_fn, floor_traces),
    "forward": stateful(fwd, cell.initial_carry(batch, traces=False), lambda out: out[1]),
    "actor": stateful(act, carry, lambda out: out[1]),
    "rtrl": lambda: rtrl(params, learner_carry, xs, resets),
    "tbptt": lambda: tbptt(params, tbptt_carry, xs, resets),
  }
  t = time_interleaved(thunks, repeats=repeats, warmup=2, min_sample_s=0.05)
  per_env = {k: v / batch for k, v in t.items()}
  per_env["rtrl"] /= M
  per_env["tbptt"] /= M
  return {
    "cell": label,
    "B": batch,
    "N": hidden,
    "trace_MB": trace_bytes / 1e6,
    "floor_GBps": 2 * trace_bytes / t["floor"] / 1e9,
    **{k: v * 1e6 for k, v in per_env.items()},
  }


def table(rows) -> str:
  head = (
    "| cell | B | N | traces MB | floor | forward | actor | learner RTRL | learner TBPTT "
    "| actor/floor | actor/forward | RTRL/TBPTT |"
  )
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    lines.append(
      f"| {r['cell']} | {r['B']} | {r['N']} | {r['trace_MB']:.0f} | {r['floor']:.3g} | "
      f"{r['forward']:.3g} | {r['actor']:.3g} | {r['rtrl']:.3g} | {r['tbptt']:.3g} | "
      f"{r['actor'] / r['floor']:.2f} | {r['actor'] / r['forward']:.1f} | {r['rtrl'] / r['tbptt']:.2f} |"
    )
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="B = 32, N = 256 only, fewer rounds")
  parser.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated subset of {tuple(CELLS)}")
  parser.add_argument("--batch", default=None, help="comma-separated batch sizes (default 32,256)")
  parser.add_argument("--hidden", default=None, help="comma-separated hidden sizes (default 256,512)")
  parser.add_argument("--repeats", type=int, default=None, help="timed rounds per measurement")
  parser.add_argument(
    "--stream",
    action="store_true",
    help="also print each table row as soon as it is measured (for runs under a time limit)",
  )
  args = parser.parse_args(argv)
  labels = [c for c in args.cells.split(",") if c]
  unknown = [c for c in labels if c not in CELLS]
  if unknown:
    parser.error(f"unknown cells {unknown}; expected some of {tuple(CELLS)}")
  batches = [int(b) for b in (args.batch or ("32" if args.quick else "32,256")).split(",")]
  hiddens = [int(n) for n in (args.hidden or ("256" if args.quick else "256,512")).split(",")]
  repeats = args.repeats or (5 if args.quick else 7)

  dev = jax.devices()[0]
  print(
    f"# cells benchmark: D={D}, M={M}, float32, jax {jax.__version__}, {dev.platform} "
    f"({dev.device_kind}), {platform.machine()}, {jax.local_device_count()} device(s); "
    f"median of {repeats} interleaved rounds"
  )
  print("# times: microseconds per env-step (learner: per env-step of the M-step unroll, fwd + bwd)\n")
  rows = []
  start = time.perf_counter()
  for label in labels:
    for n in hiddens:
      for b in batches:
        t0 = time.perf_counter()
        rows.append(bench_config(label, b, n, repeats))
        r = rows[-1]
        if args.stream:  # header with the first row, then one row each
          lines = table(rows).splitlines()
          print("\n".join(lines if len(rows) == 1 else lines[-1:]), flush=True)
        print(
          f"  {label} B={b} N={n}: actor/floor {r['actor'] / r['floor']:.2f}, "
          f"RTRL/TBPTT {r['rtrl'] / r['tbptt']:.2f}, floor {r['floor_GBps']:.1f} GB/s "
          f"({time.perf_counter() - t0:.0f} s)",
          file=sys.stderr,
          flush=True,
        )
  print(table(rows))
  worst_floor = max(r["actor"] / r["floor"] for r in rows)
  worst_learner = max(r["rtrl"] / r["tbptt"] for r in rows)
  print(
    f"\nworst actor/floor {worst_floor:.2f} (target <= {TARGET_FLOOR}); "
    f"worst RTRL/TBPTT {worst_learner:.2f} (target <= {TARGET_LEARNER}); "
    f"total {time.perf_counter() - start:.0f} s"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
