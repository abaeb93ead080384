"""Shared by the POPGym-in-JAX tests: drive the package's env and a JAX task module side by side.

The package (numpy) is the reference. A test aligns the randomness of one episode by building the
JAX state from the reference env's internal state right after its reset (each test knows its task's
fields), then steps both with the same actions and compares every transition.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rtrl_rl.envs import _popgym, popgym_jax


def reference(task: str, level: str, seed: int):
  """A lone package env of ``task``-``level`` reset with ``seed``; returns (env, encoded obs)."""
  env = _popgym.env_class(task, level)()
  enc = _popgym.encoding(task, level)
  o, _ = env.reset(seed=seed)
  return env, encode(enc, o)


def encode(enc, o) -> np.ndarray:
  out = np.zeros(enc.observation_space.shape, np.float32)
  enc.obs(o, out)
  return out


def reference_episode(env, task: str, level: str, actions):
  """Step the reset reference ``env`` with our-encoded ``actions`` until its episode ends (or the
  actions run out). Returns lists obs [T, d] (encoded), reward [T], terminated [T], truncated [T]."""
  enc = _popgym.encoding(task, level)
  obs, rew, term, trunc = [], [], [], []
  for a in actions:
    o, r, te, tr, _ = env.step(enc.action(a))
    obs.append(encode(enc, o))
    rew.append(np.float32(r))
    term.append(bool(te))
    trunc.append(bool(tr))
    if te or tr:
      break
  return np.array(obs), np.array(rew, np.float32), np.array(term), np.array(trunc)


@functools.cache
def _scan_steps(task: str, level: str):
  mod, p = popgym_jax.task_module(task), popgym_jax.params(task, level)

  def run(key, state, actions):
    def body(s, xs):
      k, a = xs
      o, s, r, te, tr = mod.step(k, s, a, p)
      return s, (o, r, te, tr)

    keys = jax.random.split(key, actions.shape[0])
    return jax.lax.scan(body, state, (keys, actions))[1]

  return jax.jit(run)


def jax_episode(task: str, level: str, state, actions, key=None):
  """Step the task module from ``state`` with ``actions`` [T, ...] in one jitted scan (no
  autoreset). Returns numpy obs [T, d], reward [T], terminated [T], truncated [T]."""
  key = jax.random.PRNGKey(0) if key is None else key
  out = _scan_steps(task, level)(key, state, jnp.asarray(actions))
  return tuple(np.asarray(x) for x in out)


def assert_same_episode(ref, ours, atol: float = 0.0):
  """The reference episode (length T) equals the first T steps of ours; ours ends at T too."""
  r_obs, r_rew, r_term, r_trunc = ref
  o_obs, o_rew, o_term, o_trunc = ours
  t = len(r_rew)
  assert t > 0
  for name, a, b in (("obs", r_obs, o_obs[:t]), ("reward", r_rew, o_rew[:t])):
    if atol:
      np.testing.assert_allclose(b, a, atol=atol, rtol=0, err_msg=name)
    else:
      np.testing.assert_array_equal(b, a, err_msg=name)
  np.testing.assert_array_equal(o_term[:t], r_term, err_msg="terminated")
  np.testing.assert_array_equal(o_trunc[:t], r_trunc, err_msg="truncated")
