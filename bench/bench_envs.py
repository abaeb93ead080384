"""Env throughput per family with random actions: the rtrl_rl.envs wrapper vs raw envpool.

    python -m bench.bench_envs [--seconds 1.0] [--rounds 3] [--threads 2] [--skip_envpool]

For envpool families the wrapper and raw envpool drive the SAME pool (same
settings, same thread count), alternating in blocks of 16 steps; the best round
of each and the median ratio of adjacent blocks are reported, so background load
hurts both alike. The wrapper's own cost is timed on real steps too (see
wrapper_overhead_us). Rates are agent steps per second summed over the batch
(Atari: x4 frames). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from rtrl_rl import envs


def _actions(space, num_envs: int, n: int, rng) -> list[np.ndarray]:
  if space.kind == "discrete":
    return [rng.integers(0, space.num_values, num_envs) for _ in range(n)]
  return [rng.uniform(-1, 1, (num_envs,) + space.shape).astype(np.float32) for _ in range(n)]


def _rate(step, acts, num_envs: int, seconds: float) -> float:
  """Agent steps/s of ``step(a)`` looping over pre-drawn actions for ~seconds."""
  n, i, t0 = 0, 0, time.perf_counter()
  while True:
    for _ in range(16):
      step(acts[i])
      i = (i + 1) % len(acts)
    n += 16
    dt = time.perf_counter() - t0
    if dt >= seconds:
      return n * num_envs / dt


def _interleaved_rates(
  step_a, step_b, acts, num_envs: int, seconds: float
) -> tuple[float, float, list[float]]:
  """Agent steps/s of two step functions timed in alternating blocks of 16 steps for ~seconds in
  total (which goes first swaps every pair), so that drifts of the machine (other jobs, clock,
  envpool's threads) hit both alike; also the time ratio b/a of each pair of blocks."""
  steps = (step_a, step_b)
  t = [0.0, 0.0]
  pairs = []
  n, i, start = 0, 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    dt = [0.0, 0.0]
    for k in ((0, 1), (1, 0))[len(pairs) % 2]:
      t0 = time.perf_counter()
      for _ in range(16):
        steps[k](acts[i])
        i = (i + 1) % len(acts)
      dt[k] = time.perf_counter() - t0
      t[k] += dt[k]
    pairs.append(dt[1] / dt[0])
    n += 16
  return n * num_envs / t[0], n * num_envs / t[1], pairs


class _Replay:
  """Stands in for the pool: returns one cached raw step result (isolates wrapper cost)."""

  def __init__(self, out):
    self.out = out

  def step(self, actions):
    return self.out


class _Stamped:
  """Passes step() to the pool, noting the clock just before and just after it."""

  def __init__(self, pool):
    self.pool, self.before, self.after = pool, 0.0, 0.0

  def step(self, actions):
    self.before = time.perf_counter()
    out = self.pool.step(actions)
    self.after = time.perf_counter()
    return out


def wrapper_overhead_us(env, acts, n=5000) -> tuple[float, float]:
  """Microseconds the wrapper adds per step(): (hot, fresh). hot: mean over a tight loop on one
  cached pool result (code and data in cache); fresh: median over real steps of the time spent
  in step() outside the pool's step, i.e. on each new result right after the pool ran (caches
  cold: what real use pays, 2-4x hot)."""
  pool = env._pool
  env._pool = _Replay(pool.step(acts[0]))
  t0 = time.perf_counter()
  for i in range(n):
    env.step(acts[i % len(acts)])
  hot = (time.perf_counter() - t0) / n * 1e6
  env._pool = stamped = _Stamped(pool)
  fresh = []
  for i in range(n // 10):
    t0 = time.perf_counter()
    ts = env.step(acts[i % len(acts)])
    t1 = time.perf_counter()
    fresh.append((t1 - t0) - (stamped.after - stamped.before))
    del ts  # freeing the TimeStep is not step()'s cost
  env._pool = pool
  return hot, float(np.median(fresh)) * 1e6


def bench_envpool(env_id, num_envs, threads, seconds, rounds, **opts):
  env = envs.make(env_id, num_envs=num_envs, seed=0, num_threads=threads, **opts)
  acts = _actions(env.action_space, num_envs, 64, np.random.default_rng(0))
  raw = env.raw
  best_w = best_r = 0.0
  pairs = []
  env.reset()  # wrapper and raw drive the same pool, alternately
  _interleaved_rates(env.step, raw.step, acts, num_envs, 0.2)  # warm-up
  for _ in range(rounds):
    w, r, p = _interleaved_rates(env.step, raw.step, acts, num_envs, seconds)
    best_w, best_r = max(best_w, w), max(best_r, r)
    pairs += p
  over = wrapper_overhead_us(env, acts)
  env.close()
  return best_w, best_r, float(np.median(pairs)), over


def bench_envpool_async(env_id, num_envs, batch_size, threads, seconds, rounds):
  """send/recv loops of the wrapper and of raw envpool on one pool, alternating in runs of
  seconds/4 (4 x rounds each, order swapped every run): (best wrapper rate, best raw rate,
  median over adjacent run pairs of wrapper rate / raw rate)."""
  env = envs.make(env_id, num_envs=num_envs, seed=0, num_threads=threads, batch_size=batch_size)
  acts = _actions(env.action_space, batch_size, 64, np.random.default_rng(0))
  raw = env.raw
  sides = [
    (env.async_reset, env.recv, env.send, lambda o: o[1]),
    (raw.async_reset, raw.recv, raw.send, lambda o: o[4]["env_id"]),
  ]

  def loop(reset, recv, send, ids_of):
    reset()
    n, i, t0 = 0, 0, time.perf_counter()
    while True:
      out = recv()
      send(acts[i], ids_of(out))
      i = (i + 1) % len(acts)
      n += 1
      dt = time.perf_counter() - t0
      if dt >= seconds / 4:
        break
    for _ in range(num_envs // batch_size):  # drain: async_reset needs no env in flight
      recv()
    return n * batch_size / dt

  best, pairs = [0.0, 0.0], []
  for k in range(4 * rounds):
    order = (0, 1) if k % 2 == 0 else (1, 0)
    rate = [0.0, 0.0]
    for j in order:
      rate[j] = loop(*sides[j])
      best[j] = max(best[j], rate[j])
    pairs.append(rate[0] / rate[1])
  env.close()
  return best[0], best[1], float(np.median(pairs))


def bench_plain(env_id, num_envs, seconds, rounds, **opts):
  env = envs.make(env_id, num_envs=num_envs, seed=0, **opts)
  acts = _actions(env.action_space, num_envs, 64, np.random.default_rng(0))
  env.reset()
  _rate(env.step, acts, num_envs, 0.1)
  best = max(_rate(env.step, acts, num_envs, seconds) for _ in range(rounds))
  env.close()
  return best


def bench_jax_scan(env_id, num_envs, steps):
  """Fully jitted: vmap(step) inside lax.scan, random actions drawn in JAX."""
  fenv = envs.make_functional(env_id)
  space = fenv.action_space

  def actions(key):
    if space.kind == "discrete":
      return jax.random.randint(key, (num_envs,), 0, space.num_values)
    return jax.random.uniform(key, (num_envs,) + space.shape, minval=-1.0, maxval=1.0)

  @jax.jit
  def run(key):
    state, _ = jax.vmap(fenv.reset)(jax.random.split(key, num_envs))

    def body(carry, _):
      state, k = carry
      k, ka, ks = jax.random.split(k, 3)
      a = actions(ka)
      state, ts = jax.vmap(fenv.step)(jax.random.split(ks, num_envs), state, a)
      return (state, k), ts.reward.sum()

    _, r = jax.lax.scan(body, (state, key), None, length=steps)
    return r.sum()

  run(jax.random.PRNGKey(0)).block_until_ready()  # compile
  t0 = time.perf_counter()
  run(jax.random.PRNGKey(1)).block_until_ready()
  return steps * num_envs / (time.perf_counter() - t0)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--seconds", type=float, default=1.0, help="per timed round")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--threads", type=int, default=2, help="envpool num_threads")
  ap.add_argument(
    "--skip_envpool", action="store_true", help="only the non-envpool families (POPGym, gymnax, JAX tasks)"
  )
  a = ap.parse_args(argv)
  s, r, th = a.seconds, a.rounds, a.threads
  rows = []

  def ep(label, env_id, n, **opts):
    w, raw, paired, (hot, fresh) = bench_envpool(env_id, n, th, s, r, **opts)
    raw_us = n / raw * 1e6  # raw microseconds per batched step
    rows.append(
      (
        label,
        env_id,
        n,
        f"{w:,.0f}",
        f"{raw:,.0f}",
        f"{w / raw:.2f}",
        f"{paired:.3f}",
        f"{hot:.1f} / {fresh:.1f} / {raw_us:,.0f}",
        f"{raw_us / (raw_us + fresh):.3f}",
      )
    )
    print(f"  {label}: {w:,.0f} vs raw {raw:,.0f}", flush=True)

  print(f"# bench_envs: {os.cpu_count()} cpus, envpool threads={th}, {r} rounds x {s}s (best)", flush=True)
  if not a.skip_envpool:
    ep("Atari (sync)", "atari/Pong", 8)
    w, raw, paired = bench_envpool_async("atari/Pong", 16, 8, th, s, r)
    rows.append(
      (
        "Atari (async send/recv)",
        "atari/Pong",
        "16/8",
        f"{w:,.0f}",
        f"{raw:,.0f}",
        f"{w / raw:.2f}",
        f"{paired:.3f} (runs)",
        "-",
        "-",
      )
    )
    print(f"  Atari async: {w:,.0f} vs raw {raw:,.0f}", flush=True)
    ep("ProcGen", "procgen/maze-memory", 16)
    ep("MuJoCo POMDP", "mujoco/Ant-P", 16)
    ep("MuJoCo Reacher POMDP", "mujoco/Reacher-POMDP", 16)
    ep("MiniGrid Memory", "memory/minigrid-memory-s7", 32)
    ep("CartPole masked", "memory/cartpole-masked", 32)
  for label, env_id, n in [
    ("POPGym, the package (Python loop)", "popgym-numpy/CountRecall-easy", 32),
    ("POPGym in JAX, numpy form", "popgym/CountRecall-easy", 32),
    ("gymnax, numpy form", "gymnax/CartPole-v1", 32),
    ("trace cond., numpy form", "jax/trace-conditioning", 32),
  ]:
    w = bench_plain(env_id, n, s, r)
    rows.append((label, env_id, n, f"{w:,.0f}", "-", "-", "-", "-", "-"))
    print(f"  {label}: {w:,.0f}", flush=True)
  for label, env_id, n in [
    ("POPGym in JAX, jitted scan", "popgym/CountRecall-easy", 1),
    ("POPGym in JAX, jitted scan", "popgym/CountRecall-easy", 1024),
    ("POPGym in JAX, jitted scan", "popgym/Concentration-hard", 1024),
    ("POPGym in JAX, jitted scan", "popgym/LabyrinthEscape-easy", 1024),
    ("gymnax, jitted scan", "gymnax/CartPole-v1", 1024),
    ("trace cond., jitted scan", "jax/trace-conditioning", 1024),
  ]:
    w = bench_jax_scan(env_id, n, 1000)
    rows.append((label, env_id, n, f"{w:,.0f}", "-", "-", "-", "-", "-"))
    print(f"  {label}: {w:,.0f}", flush=True)
  print()
  print(
    "| family | id | num_envs | wrapper steps/s | raw envpool steps/s | wrapper/raw "
    "(best rounds) | wrapper/raw (median of paired blocks) | wrapper overhead hot / fresh / "
    "raw step (us) | ratio implied by fresh overhead |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for row in rows:
    print("| " + " | ".join(str(x) for x in row) + " |")
  print("\nMeasured ratios carry the noise of a shared machine: best rounds of each side, and")
  print("the median over adjacent 16-step block pairs of raw/wrapper time. Overhead: hot =")
  print("replayed result in a tight loop; fresh = time in step() outside the pool's step on real")
  print("steps (median), what real use pays; last column: raw_us / (raw_us + fresh overhead).")
  print("DMLab: not benchmarked (deepmind_lab is not installed on this machine).")


if __name__ == "__main__":
  main()
