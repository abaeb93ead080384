"""PPO at the RTU paper's settings on the fully-jitted loop, next to its floor.

    python -m bench.bench_ppo                                   # popgym/CountRecall-easy, linear RTU
    python -m bench.bench_ppo --config=configs/rtu_popgym.py:core=rtu_nonlinear --num_envs=1,8,64
    python -m bench.bench_ppo --quick                           # short rollouts (plumbing check)
    python -m bench.bench_ppo --host --config=configs/rtu_popgym.py:core=rtu_linear,env_family=numpy

The experiment is the user's: `--config` (default `configs/rtu_popgym.py:core=rtu_linear`, i.e.
single env, rollout 2048, 4 epochs x 32 minibatches of 64 single steps from stored carries, the
`anakin` backend) built into `rtrl_rl.system.anakin.make("ppo", ...)`, one jitted call per iteration.

With `--num_envs=1,8,64` the envs share the paper's 2048-step buffer (rollout_length = 2048 / B).
Timed side by side (bench/_timing.py: interleaved, median over rounds), per iteration of
T = rollout_length steps on B = num_envs envs:

  ours     one iteration of the loop: acting (policy + env, RTRL traces) and the PPO update
  env      the env alone: T vmapped steps in a jitted scan with random actions
  update   the PPO update alone on a stored rollout (the buffer of one real iteration)

floor = env + update (acting can at best be free). `--host`: the host loop of `system.backend="sync"`
(a numpy env stepped in Python, one jitted call per step), and floor = the env's T steps + T policy
steps alone (one jitted call each, the action fetched) + the update. Reported: agent steps/s = T * B / seconds, and
ours / floor (in steps/s: floor time / our time; target >= 0.9). Start-up: seconds from building the
loop to the first iteration's result (tracing + compilation + one iteration), measured first.
Iteration memory (the jitted loop): the bytes its compiled program holds (`anakin.iteration_bytes`:
arguments + outputs + temporaries - outputs written into the donated buffer), next to the stored
carries of one rollout (issue 14's bound: at most 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench._timing import stateful, time_interleaved
from rtrl_rl import envs, experiment
from rtrl_rl.agents import actor_loop, registry
from rtrl_rl.agents.ppo import acting as ppo_acting
from rtrl_rl.agents.ppo import config as ppo_config
from rtrl_rl.agents.ppo import learning
from rtrl_rl.envs._jax import batched
from rtrl_rl.system import anakin

DEFAULT_CONFIG = "configs/rtu_popgym.py:core=rtu_linear"


def _load(config_arg: str, num_envs: int, quick: bool):
  config = experiment.load_config(config_arg)
  a = config.agent
  if quick:
    a.rollout_length = 128
  # More envs share the paper's buffer of 2048 steps (rollout_length = 2048 / num_envs): the same
  # update (minibatches of 64 steps) on the same amount of data, acting batched over the envs. (A
  # 2048-step rollout of each of 64 envs would store 64 x 2048 carries: 13 GB of linear-RTU traces.)
  a.num_envs = num_envs
  a.rollout_length = max(1, a.rollout_length // num_envs)
  a.num_minibatches = a.rollout_length * num_envs // a.minibatch_size
  experiment.validate(config)
  return config


def acting_and_update(fenv, loop, agent_config, state):
  """The two halves of the loop `loop` (`anakin.make("ppo", fenv, agent_config)`) alone, from its
  `state`: `act(params, actor, carry_buffer)` (the acting scan, jitted, the buffer donated), the actor
  state after one rollout, the PPO batch of that rollout, and `update(learner, batch)` (jitted)."""
  a = agent_config
  normalizer = ppo_acting.normalizer(a)
  act = jax.jit(
    lambda p, s, b: actor_loop.act(fenv, loop.agent, normalizer, p, s, a.rollout_length, carry_buffer=b),
    donate_argnums=(2,),
  )
  params = state.learner.params
  actor, traj, _ = act(params, state.actor, actor_loop.carry_buffer(loop.agent, a.rollout_length, a.num_envs))
  batch = learning.ppo_batch(traj, actor_loop.bootstrap_value(loop.agent, normalizer, params, actor))
  return act, actor, batch, jax.jit(learning.make_update(loop.agent, a))


def measure(config, repeats: int):
  """{"startup_s", "ours_s", "env_s", "update_s"} for one config (seconds per iteration)."""
  a = config.agent
  fenv = envs.make_functional(config.env.id, **config.env.options.to_dict())
  t0 = time.perf_counter()
  loop = anakin.make("ppo", fenv, a)
  state = loop.init(jax.random.PRNGKey(0))
  state, _ = loop.step(state)
  jax.block_until_ready(state)
  startup = time.perf_counter() - t0
  memory = anakin.iteration_bytes(loop, state)

  # The update alone, on the buffer of one real iteration.
  _, _, batch, update = acting_and_update(fenv, loop, a, state)
  learner0 = state.learner

  # The env alone.
  n, space = a.num_envs, fenv.action_space

  def env_run(key):
    es, _ = batched(fenv.reset, n)(jax.random.split(key, n))

    def body(carry, _):
      es, k = carry
      k, ka, ks = jax.random.split(k, 3)
      if space.kind == "discrete":
        act = jax.random.randint(ka, (n,), 0, space.num_values)
      else:
        act = jax.random.uniform(ka, (n,) + space.shape, minval=-1.0, maxval=1.0)
      es, ts = batched(fenv.step, n)(jax.random.split(ks, n), es, act)
      return (es, k), ts.reward.sum()

    (_, k), r = jax.lax.scan(body, (es, key), None, length=a.rollout_length)
    return k, r.sum()

  env_run = jax.jit(env_run)
  fns = {
    "ours": stateful(lambda s: loop.step(s)[0], state),
    "env": stateful(lambda k: env_run(k)[0], jax.random.PRNGKey(1)),
    "update": lambda: update(learner0, batch)[0].params,
  }
  t = time_interleaved(
    fns, repeats=repeats, warmup=1, min_sample_s=0.0, number={"ours": 1, "env": 1, "update": 1}
  )
  return {
    "startup_s": startup,
    "ours_s": t["ours"],
    "env_s": t["env"],
    "update_s": t["update"],
    "iteration_bytes": memory,
  }


def measure_host(config, repeats: int):
  """The host loop (`system.backend="sync"`: a numpy env, one jitted call per step, then the
  update), as the trainer runs it: {"startup_s", "ours_s", "env_s", "policy_s", "update_s"}."""
  a = config.agent
  t0 = time.perf_counter()
  it = registry.get("ppo").host_loop(config)
  state = it.init()
  state, _ = it.step(state)
  jax.block_until_ready(state)
  startup = time.perf_counter() - t0
  learner, actor = state
  env = envs.make(config.env.id, a.num_envs, config.seed, **config.env.options.to_dict())
  agent = ppo_acting.make_agent(a, env.observation_space, env.action_space)
  normalizer = ppo_acting.normalizer(a)
  acting = actor_loop.host_acting(env, agent, normalizer)
  actor0 = acting.init(jax.random.PRNGKey(0))
  _, traj, _ = acting.act(learner.params, actor0, a.rollout_length)
  batch = learning.ppo_batch(jax.tree.map(jnp.copy, dict(traj)), jnp.zeros((a.num_envs,), jnp.float32))
  update = jax.jit(learning.make_update(agent, a))
  decide = jax.jit(lambda p, s: actor_loop.decide(agent, normalizer, p, s))
  rng = np.random.default_rng(0)
  space = env.action_space
  if space.kind == "discrete":
    actions = rng.integers(0, space.num_values, (64, a.num_envs)).astype(space.dtype)
  else:
    actions = rng.uniform(-1, 1, (64, a.num_envs) + space.shape).astype(np.float32)
  env.reset()

  def env_run():
    for t in range(a.rollout_length):
      env.step(actions[t % len(actions)])

  def policy_run():
    for _ in range(a.rollout_length):
      d = decide(learner.params, actor0)
      np.asarray(d.out.action)
    return d

  fns = {
    "ours": stateful(lambda s: it.step(s)[0], state),
    "env": env_run,
    "policy": policy_run,
    "update": lambda: update(learner, batch)[0].params,
  }
  t = time_interleaved(fns, repeats=repeats, warmup=1, min_sample_s=0.0, number={k: 1 for k in fns})
  return {
    "startup_s": startup,
    "ours_s": t["ours"],
    "env_s": t["env"] + t["policy"],
    "update_s": t["update"],
    "policy_s": t["policy"],
  }


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--config", default=DEFAULT_CONFIG, help="configs/<x>.py[:args] (a PPO config)")
  ap.add_argument("--num_envs", default="1", help="comma-separated env counts, e.g. 1,8,64")
  ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median)")
  ap.add_argument("--quick", action="store_true", help="rollout 128: a plumbing check")
  ap.add_argument(
    "--host",
    action="store_true",
    help="the host loop (system.backend='sync'): the config's env made with envs.make; "
    "floor = env steps + policy steps (one jitted call each) + update",
  )
  ap.add_argument("--json", default="", help="also write the rows to this JSON file")
  args = ap.parse_args(argv)
  counts = [int(x) for x in args.num_envs.split(",")]
  print(
    f"# bench_ppo: {args.config}, {os.cpu_count()} cpus, {platform.processor() or platform.machine()}, "
    f"jax {jax.__version__} on {jax.devices()[0].platform}, {args.repeats} interleaved rounds",
    flush=True,
  )
  rows, records = [], []
  for b in counts:
    config = _load(args.config, b, args.quick)
    if args.host:
      config.system.backend = "sync"
    m = measure_host(config, args.repeats) if args.host else measure(config, args.repeats)
    steps = config.agent.rollout_length * b
    floor = m["env_s"] + m["update_s"]
    rows.append(
      (
        b,
        steps / m["ours_s"],
        steps / floor,
        floor / m["ours_s"],
        steps / m["env_s"],
        steps / m["update_s"],
        m["startup_s"],
      )
    )
    buffer_mb = (
      ppo_config.stored_carry_bytes(
        config.agent, *envs.describe(config.env.id, **config.env.options.to_dict())
      )
      / 2**20
    )
    records.append(
      dict(
        config=args.config,
        env=config.env.id,
        num_envs=b,
        host=args.host,
        steps_per_s=rows[-1][1],
        floor_steps_per_s=rows[-1][2],
        ratio=rows[-1][3],
        startup_s=m["startup_s"],
        stored_carries_mb=buffer_mb,
        iteration_mb=m["iteration_bytes"] / 2**20 if "iteration_bytes" in m else None,
      )
    )
    print(
      f"  num_envs={b}: ours {rows[-1][1]:,.0f} steps/s, floor {rows[-1][2]:,.0f}, "
      f"ours/floor {rows[-1][3]:.2f}, start-up {m['startup_s']:.1f} s"
      + (f", iteration {records[-1]['iteration_mb']:,.0f} MB" if records[-1]["iteration_mb"] else ""),
      flush=True,
    )
  print()
  print(
    f"env {config.env.id}, cell {config.agent.network.cell} {dict(config.agent.network.cell_options)}, "
    f"hidden {config.agent.network.hidden_size}, {config.agent.rollout_length * config.agent.num_envs} "
    f"steps per update (rollout_length x "
    f"num_envs), {config.agent.num_epochs} epochs of minibatches of {config.agent.minibatch_size}"
  )
  print()
  env_label = "env + policy alone" if args.host else "env alone"
  print(
    f"| num_envs | ours steps/s | floor steps/s | ours/floor | {env_label} steps/s | "
    "update alone steps/s | start-up (s) |"
  )
  print("|---|---|---|---|---|---|---|")
  for b, ours, fl, ratio, env_r, upd_r, start in rows:
    print(f"| {b} | {ours:,.0f} | {fl:,.0f} | {ratio:.2f} | {env_r:,.0f} | {upd_r:,.0f} | {start:.1f} |")

  if args.json:
    with open(args.json, "w") as f:
      json.dump(records, f, indent=1)


if __name__ == "__main__":
  main()
