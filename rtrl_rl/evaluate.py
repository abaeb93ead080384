"""Evaluate a trained run: `python -m rtrl_rl.evaluate --run_dir=DIR --episodes=N [--greedy]`.

Loads `<run_dir>/config.json` and the latest checkpoint's parameters, builds the environment and
the agent, and plays N complete episodes per repeat, the recurrent core's carry threaded through
every step (reset at episode starts, as in training). Prints mean / std per repeat and overall and
writes `<run_dir>/eval.json` (`eval_<split>.json` with `--split`, or `--out`: a run directory this
user cannot write is refused before evaluating, naming `--out`).

The papers' protocols:
  Irie et al.:  --greedy --episodes=100 --repeats=3
  ProcGen:      --split=train (the training levels: the run's num_levels / start_level)
                --split=test  (the unbounded level distribution, num_levels=0)
Atari with `episodic_life` (a life loss ends the training episode) counts whole games: an
evaluation episode ends at `game_over` (or truncation), its return summing every life.

Unbiased episode counts: with B parallel envs, env i plays exactly its share of the N episodes
(episodes beyond its share are ignored), so short episodes are not over-represented.
Runs with algo="ppo" act with the PPO agent and its observation normalisation statistics from
the checkpoint (frozen); IMPALA runs with the IMPALA agent. Evaluation runs on the CPU by default
(`JAX_PLATFORMS` is respected if set).
"""

from __future__ import annotations

import ast
import json
import math
import os
import time

import ml_collections
import numpy as np
from absl import flags
from absl import logging as absl_logging

from rtrl_rl import cli, envs, experiment
from rtrl_rl.agents import registry
from rtrl_rl.envs import EnvError, MissingDependencyError

_RUN_DIR = flags.DEFINE_string("run_dir", None, "run directory (holds config.json and checkpoints/)")
_EPISODES = flags.DEFINE_integer("episodes", 100, "complete episodes per repeat")
_REPEATS = flags.DEFINE_integer("repeats", 1, "independent repeats (different env/action seeds)")
_GREEDY = flags.DEFINE_bool("greedy", False, "take the policy's mode instead of sampling")
_SEED = flags.DEFINE_integer("seed", 10_000, "seed of repeat 0 (repeat r uses seed + r)")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 0, "parallel envs (0: min(episodes, 16))")
_SPLIT = flags.DEFINE_enum("split", None, ["train", "test"], "ProcGen levels: train | test")
_ENV_OPTIONS = flags.DEFINE_string(
  "env_options",
  "",
  "env option overrides key=value,key=value (values parsed as Python literals where possible)",
)
_MAX_STEPS = flags.DEFINE_integer(
  "max_steps", 0, "give up after this many env steps per repeat (0: no limit)"
)
_OUT = flags.DEFINE_string("out", None, "output file (default <run_dir>/eval.json or eval_<split>.json)")


class EvaluationError(RuntimeError):
  """The run directory or the options cannot be evaluated as asked; the message says why."""


class IncompleteEvaluation(EvaluationError):
  """The episodes did not finish within --max_steps."""


# -- loading -----------------------------------------------------------------------------------------
def load_config(run_dir: str):
  path = os.path.join(run_dir, "config.json")
  if not os.path.exists(path):
    raise EvaluationError(
      f"{path} not found: {run_dir} is not a run directory. Pass the --run_dir of "
      "a trained run (it holds config.json and checkpoints/)"
    )
  with open(path) as f:
    return ml_collections.ConfigDict(experiment.upgrade_saved_config(json.load(f)))


def load_checkpoint(run_dir: str) -> tuple[int, dict, dict]:
  """`(step, {tree path: leaf}, metadata)` of the newest intact checkpoint."""
  from rtrl_rl.io.checkpoint import Checkpointer  # noqa: PLC0415 - after main sets JAX_PLATFORMS

  ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), is_primary=False)
  try:
    restored = ckpt.restore_latest()
  finally:
    ckpt.close()
  if restored is None:
    raise EvaluationError(
      f"no checkpoint in {run_dir}/checkpoints: the run has not saved one yet "
      "(train it longer, or pass another --run_dir)"
    )
  return restored


def _parse_options(text: str) -> dict:
  out = {}
  for item in filter(None, (text or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise EvaluationError(f"--env_options: expected key=value, got {item!r}")
    try:
      out[key.strip()] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key.strip()] = value
  return out


def env_options(config, split: str | None = None, overrides: dict | None = None) -> dict:
  opts = config.env.options.to_dict() if hasattr(config.env.options, "to_dict") else dict(config.env.options)
  if split is not None:
    if not str(config.env.id).startswith("procgen/"):
      raise EvaluationError(f"--split applies to procgen/ ids; this run's env is {config.env.id}")
    opts["split"] = split
  opts.update(overrides or {})
  return opts


# -- policies ----------------------------------------------------------------------------------------
class Policy:
  """`step(obs, reward, first, prev_action, key) -> action` with the carry kept inside: the training
  runs' acting step (`actor_loop.policy_step`) with a trained run's `registry.TrainedPolicy`."""

  def __init__(self, trained, num_envs: int, greedy: bool):
    import jax  # noqa: PLC0415 - after main sets JAX_PLATFORMS
    import jax.numpy as jnp  # noqa: PLC0415 - after main sets JAX_PLATFORMS

    from rtrl_rl.agents import actor_loop  # noqa: PLC0415 - after main sets JAX_PLATFORMS

    agent, observe = trained.agent, trained.observe or (lambda o: o)
    self.params = jax.device_put(trained.params)
    self.carry = agent.initial_carry(num_envs)

    @jax.jit
    def step(params, carry, obs, reward, first, prev_action, key):
      first = jnp.asarray(first, bool)
      prev_action = actor_loop.zero_where_first(prev_action, first)
      reward = jnp.asarray(reward, jnp.float32)
      out = actor_loop.policy_step(
        agent, params, carry, observe(obs), reward, prev_action, first, key, greedy
      )
      return out.action, out.carry

    self._step = step

  def __call__(self, obs, reward, first, prev_action, key):
    action, self.carry = self._step(self.params, self.carry, obs, reward, first, prev_action, key)
    return action


# -- the episode loop --------------------------------------------------------------------------------
def play(env, policy: Policy, episodes: int, seed: int, max_steps: int = 0) -> dict:
  """Plays until every env has finished its share of `episodes`; returns returns and lengths."""
  import jax  # noqa: PLC0415 - after main sets JAX_PLATFORMS

  b = env.num_envs
  quota = np.array([episodes // b + (i < episodes % b) for i in range(b)])
  done = np.zeros(b, np.int64)
  ret = np.zeros(b, np.float64)
  length = np.zeros(b, np.int64)
  returns: list[list[float]] = [[] for _ in range(b)]
  lengths: list[list[int]] = [[] for _ in range(b)]
  space = env.action_space
  prev_action = np.zeros((b, *space.shape), space.dtype)
  key = jax.random.PRNGKey(seed)
  ts = env.reset()
  steps = 0
  while np.any(done < quota):
    key, k = jax.random.split(key)
    action = np.asarray(policy(ts.obs, ts.reward, ts.first, prev_action, k)).astype(space.dtype)
    ts = env.step(action)
    prev_action = action
    steps += 1
    first = np.asarray(ts.first, bool)
    ret = np.where(first, ret, ret + np.asarray(ts.reward, np.float64))
    length = np.where(first, length, length + 1)
    ended = np.asarray(ts.terminated, bool) | np.asarray(ts.truncated, bool)
    info = ts.info or {}
    if "game_over" in info:  # Atari with episodic_life: a game ends at game over
      ended = ended & (np.asarray(info["game_over"], bool) | np.asarray(ts.truncated, bool))
    for i in np.flatnonzero(ended & ~first):
      if done[i] < quota[i]:
        returns[i].append(float(ret[i]))
        lengths[i].append(int(length[i]))
        done[i] += 1
      ret[i], length[i] = 0.0, 0
    if max_steps and steps * b >= max_steps:
      raise IncompleteEvaluation(
        f"{int(done.sum())}/{episodes} episodes after {steps * b} env steps (--max_steps={max_steps})"
      )
  flat_r = [r for rs in returns for r in rs]
  flat_l = [n for ls in lengths for n in ls]
  return {
    "returns": flat_r,
    "lengths": flat_l,
    "mean": float(np.mean(flat_r)),
    "std": float(np.std(flat_r)),
    "env_steps": int(steps * b),
  }


def evaluate(
  run_dir: str,
  episodes: int = 100,
  repeats: int = 1,
  greedy: bool = False,
  seed: int = 10_000,
  num_envs: int = 0,
  split: str | None = None,
  options: dict | None = None,
  max_steps: int = 0,
  log=print,
) -> dict:
  """Evaluates the latest checkpoint of `run_dir`; returns the eval record (see module doc)."""

  if episodes < 1 or repeats < 1:
    raise EvaluationError("--episodes and --repeats must be >= 1")
  config = load_config(run_dir)
  step, flat, meta = load_checkpoint(run_dir)
  opts = env_options(config, split, options)
  obs_space, act_space = envs.describe(config.env.id, **opts)
  try:
    trained = registry.get(config.algo).policy(config, (obs_space, act_space), flat)
  except ValueError as e:  # the checkpoint does not hold what config.json's agent needs
    raise EvaluationError(f"{run_dir}: {e}") from None
  b = num_envs or min(episodes, 16)
  per_repeat = []
  for r in range(repeats):
    t0 = time.monotonic()
    env = envs.make(config.env.id, num_envs=b, seed=seed + r, **opts)
    try:
      policy = Policy(trained, b, greedy)
      res = play(env, policy, episodes, seed + r, max_steps)
    finally:
      env.close()
    res.update(repeat=r, seed=seed + r, seconds=time.monotonic() - t0)
    per_repeat.append(res)
    log(
      f"repeat {r}: mean return {res['mean']:.3f} +- {res['std']:.3f} over {episodes} episodes "
      f"({res['env_steps']} env steps, {res['seconds']:.1f} s)"
    )
  all_returns = [x for res in per_repeat for x in res["returns"]]
  means = [res["mean"] for res in per_repeat]
  record = {
    "run_dir": os.path.abspath(run_dir),
    "checkpoint_step": int(step),
    "frames": meta.get("frames"),
    "algo": config.algo,
    "env_id": config.env.id,
    "env_options": opts,
    "split": split,
    "greedy": bool(greedy),
    "episodes": int(episodes),
    "repeats": int(repeats),
    "num_envs": int(b),
    "seed": int(seed),
    "mean": float(np.mean(all_returns)),
    "std": float(np.std(all_returns)),
    "mean_of_repeats": float(np.mean(means)),
    "std_of_repeats": float(np.std(means)),
    "per_repeat": per_repeat,
    "time": time.time(),
  }
  log(
    f"overall: mean return {record['mean']:.3f} +- {record['std']:.3f} over "
    f"{len(all_returns)} episodes; repeat means {record['mean_of_repeats']:.3f} +- "
    f"{record['std_of_repeats']:.3f}"
  )
  return record


def default_out(run_dir: str, split: str | None) -> str:
  return os.path.join(run_dir, f"eval_{split}.json" if split else "eval.json")


def main(argv) -> int:
  del argv
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is imported (it reads it then)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every restore step at INFO
  if not _RUN_DIR.value:
    raise cli.UsageError(
      "--run_dir is required: the directory of a trained run (it holds config.json and checkpoints/)"
    )
  out = _OUT.value or default_out(_RUN_DIR.value, _SPLIT.value)
  cli.check_writable(out, "--out")
  try:
    record = evaluate(
      _RUN_DIR.value,
      _EPISODES.value,
      _REPEATS.value,
      _GREEDY.value,
      _SEED.value,
      _NUM_ENVS.value,
      _SPLIT.value,
      _parse_options(_ENV_OPTIONS.value),
      _MAX_STEPS.value,
    )
  except IncompleteEvaluation as e:
    return cli.report(e, 1)
  except (EvaluationError, EnvError, MissingDependencyError) as e:
    return cli.report(e, 2)
  tmp = out + ".tmp"
  try:
    with open(tmp, "w") as f:
      json.dump(record, f, indent=2, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x))
    os.replace(tmp, out)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    return cli.report(
      e,
      1,
      f"the scores above were not saved: writing {out} failed ({e.strerror}). "
      "Rerun with --out=<a writable path>",
    )
  print(f"wrote {out}")
  return 0 if all(math.isfinite(x) for x in (record["mean"], record["std"])) else 1


if __name__ == "__main__":
  cli.run_absl(main)
