"""Trace conditioning, the animal-learning prediction task of the RTU paper, in JAX.

Task (Rafiee et al. 2023, "From eye-blinks to state construction: diagnostic
benchmarks for online representation learning", Adaptive Behavior; public
reference code ``classical_conditioning_benchmarks.py`` of the authors):
a continuing stream of trials. A trial starts with the conditioned stimulus
(CS, on for ``cs_length`` steps); ``ISI ~ U{isi}`` steps after CS onset the
unconditioned stimulus (US, on for ``us_length`` steps) arrives; the next
trial starts ``ITI ~ U{iti}`` steps after US onset. Distractor ``d`` (d < 10)
switches on with probability ``1 / (10 (d + 1))`` on any step where it was
off after the previous step, and stays on ``distractor_length`` steps.
Observation ``[US, CS, distractor_0..]`` float32 in {0, 1}; the cumulant
(= ``reward``) is the US bit of the same observation. The agent predicts the
discounted sum of future US with ``gamma`` (0.9 by default); actions are
ignored; the stream never terminates or truncates.

Quality measure, MSRE (mean squared return error):
``mean_t (prediction_t - G_t)^2`` with ``G_t = sum_k gamma^k c_{t+k}``,
truncated at the end of the recorded stream (as in the reference code). For
a prediction made from observation t pass ``c_t = reward`` of the NEXT
TimeStep (the US at t+1), i.e. ``msre(pred[:-1], rewards[1:], gamma)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class TraceParams(NamedTuple):
  """Static task parameters (hashable, closed over by jit)."""

  isi: tuple[int, int] = (7, 13)
  iti: tuple[int, int] = (80, 120)
  num_distractors: int = 10
  cs_length: int = 4
  us_length: int = 2
  distractor_length: int = 4


class TraceState(NamedTuple):
  """Single-env state: scalars int32, distractor arrays [num_distractors]."""

  t: jax.Array
  cs_onset: jax.Array
  us_onset: jax.Array
  next_trial: jax.Array
  d_active: jax.Array
  d_age: jax.Array


def obs_dim(p: TraceParams) -> int:
  return 2 + p.num_distractors


def _trial(key: jax.Array, t: jax.Array, p: TraceParams):
  k1, k2 = jax.random.split(key)
  isi = jax.random.randint(k1, (), p.isi[0], p.isi[1] + 1)
  iti = jax.random.randint(k2, (), p.iti[0], p.iti[1] + 1)
  return t, t + isi, t + isi + iti


def _distractors(key: jax.Array, active: jax.Array, age: jax.Array, p: TraceParams):
  probs = 1.0 / (10.0 * jnp.arange(1, p.num_distractors + 1, dtype=jnp.float32))
  start = ~active & (jax.random.uniform(key, (p.num_distractors,)) < probs)
  still = active & (age < p.distractor_length)
  new_active = still | start
  new_age = jnp.where(still, age + 1, jnp.where(start, 1, 0)).astype(jnp.int32)
  return new_active, new_age


def _obs(s: TraceState, p: TraceParams) -> jax.Array:
  us = (s.t >= s.us_onset) & (s.t < s.us_onset + p.us_length)
  cs = (s.t >= s.cs_onset) & (s.t < s.cs_onset + p.cs_length)
  return jnp.concatenate([jnp.stack([us, cs]), s.d_active]).astype(jnp.float32)


def reset(key: jax.Array, p: TraceParams) -> tuple[jax.Array, TraceState]:
  """First observation [2 + D] and state; the first trial starts at t = 0."""
  k1, k2 = jax.random.split(key)
  t = jnp.zeros((), jnp.int32)
  cs, us, nxt = _trial(k1, t, p)
  d0 = jnp.zeros((p.num_distractors,), bool)
  act, age = _distractors(k2, d0, jnp.zeros((p.num_distractors,), jnp.int32), p)
  s = TraceState(t, cs, us, nxt, act, age)
  return _obs(s, p), s


def step(key: jax.Array, s: TraceState, action, p: TraceParams):
  """(obs [2 + D], state, reward = US bit, terminated = False, truncated = False)."""
  del action
  k1, k2 = jax.random.split(key)
  t = s.t + 1
  cs, us, nxt = _trial(k1, t, p)
  new = t == s.next_trial
  cs, us, nxt = (jnp.where(new, a, b) for a, b in ((cs, s.cs_onset), (us, s.us_onset), (nxt, s.next_trial)))
  act, age = _distractors(k2, s.d_active, s.d_age, p)
  s = TraceState(t, cs, us, nxt, act, age)
  obs = _obs(s, p)
  false = jnp.zeros((), bool)
  return obs, s, obs[0], false, false


def discounted_returns(cumulants: jax.Array, gamma: float) -> jax.Array:
  """``G[t] = c[t] + gamma G[t+1]``, ``G[T-1] = c[T-1]``; cumulants [T, ...]."""

  def body(g, c):
    g = c + gamma * g
    return g, g

  _, g = jax.lax.scan(body, jnp.zeros_like(cumulants[0]), cumulants, reverse=True)
  return g


def msre(predictions: jax.Array, cumulants: jax.Array, gamma: float) -> jax.Array:
  """Mean squared return error; predictions and cumulants [T, ...] aligned as
  in the module docstring (``cumulants[t]`` follows ``predictions[t]``)."""
  return jnp.mean((predictions - discounted_returns(cumulants, gamma)) ** 2)
