"""POPGym's control tasks in JAX (cartpole.py, pendulum.py) against the ``popgym`` package.

The JAX state is built from the package env's physics state right after its reset; the
observation noise of the Noisy tasks is recorded from the package's ``np_random`` and fed to the
pure ``_transition`` (noise-free tasks run through ``step`` itself where they can). Under
``jax.enable_x64`` the JAX dynamics run in float64 like the package and match it over whole
episodes (CartPole's physics resynced every ``RESYNC`` steps, see there); the float32 production
path stays close over a short horizon.

Package quirks checked: VelocityOnlyCartPole's reset observation is the positions; CartPole's
reward is ``1/L`` on the failing step too (the ``-1`` only comes when stepping on after
``terminated``); the Noisy tasks keep the default length (200) at every level; ``terminated``
and ``truncated`` can both be set on one step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl import envs
from rtrl_rl.envs import _popgym, popgym_jax
from tests._popgym_reference import assert_same_episode, encode, jax_episode, reference, reference_episode

CARTPOLE = ("PositionOnlyCartPole", "VelocityOnlyCartPole", "NoisyPositionOnlyCartPole")
PENDULUM = ("PositionOnlyPendulum", "NoisyPositionOnlyPendulum")
TASK_LEVELS = [(t, lv) for t in CARTPOLE + PENDULUM for lv in _popgym.LEVELS]


class _Recorder:
  """Wraps a numpy Generator and records what ``normal`` returns (the Noisy tasks' noise)."""

  def __init__(self, rng):
    self.rng, self.normals = rng, []

  def normal(self, *args, **kwargs):
    z = self.rng.normal(*args, **kwargs)
    self.normals.append(np.asarray(z, np.float64))
    return z

  def __getattr__(self, name):
    return getattr(self.rng, name)


def _reference(task, level, seed):
  """A seeded package env reset once more with its generator recorded: (env, obs, noises)."""
  env, _ = reference(task, level, seed)
  rec = _Recorder(env.unwrapped.np_random)
  env.unwrapped.np_random = rec
  o, _ = env.reset()
  return env, encode(_popgym.encoding(task, level), o), rec.normals


def _jax_state(task, level, env, noise, dtype):
  """(obs, state) of the JAX module built from the package env's state (in ``dtype``)."""
  mod, p = popgym_jax.task_module(task), popgym_jax.params(task, level)
  u = env.unwrapped
  noise = jnp.asarray(noise, dtype) if p.noise_sigma else None
  if task in CARTPOLE:
    obs, s = mod._init(jnp.asarray(u.state, dtype), noise, p)
    s = s._replace(fallen=jnp.asarray(u.steps_beyond_terminated is not None))
  else:
    th, thd = u.state
    obs, s = mod._init(jnp.asarray(th, dtype), jnp.asarray(thd, dtype), noise, p)
  return np.asarray(obs), s._replace(t=jnp.asarray(u.num_steps, jnp.int32))


def _horizon(task, level):
  return popgym_jax.params(task, level).max_episode_length + 5


@functools.cache
def _scan(task, level):
  """Jitted: our steps from ``state`` with ``actions`` and the recorded noise fed to
  ``_transition``; where ``resync``, the physics is first set to the package's (``physics``).
  Returns obs, reward, terminated, truncated."""
  mod, p = popgym_jax.task_module(task), popgym_jax.params(task, level)

  def run(state, actions, noises, physics, resync):
    def body(s, xs):
      a, noise, phys, sync = xs
      if task in CARTPOLE:
        s = s._replace(physics=jnp.where(sync, phys, s.physics))
      else:
        s = s._replace(
          theta=jnp.where(sync, phys[0], s.theta), theta_dot=jnp.where(sync, phys[1], s.theta_dot)
        )
      o, s, r, te, tr = mod._transition(s, a, noise if p.noise_sigma else None, p)
      return s, (o, r, te, tr)

    return jax.lax.scan(body, state, (actions, noises, physics, resync))[1]

  return jax.jit(run)


def _pad(x, n):
  x = np.asarray(x)
  return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)])


# CartPole's physics is unstable (rounding differences grow ~e^(0.08 t)) and XLA rounds
# differently from numpy (fused multiply-adds, division by a constant as a product with its
# reciprocal), so our physics is set to the package's every RESYNC steps: each stretch of RESYNC
# steps runs free and matches to 1e-6; the step counter and the ``fallen`` flag are never reset.
RESYNC = 100


def _jax_run(task, level, state, actions, noises, states=None):
  """Our episode from ``state`` with ``actions`` and the recorded noise (the package's
  ``states`` [T, ...] before each step for CartPole's resyncs). A noise-free task without
  resyncs runs through ``step`` (``jax_episode``)."""
  n, dtype = _horizon(task, level), state[0].dtype
  if not popgym_jax.params(task, level).noise_sigma and states is None:
    return jax_episode(task, level, state, _pad(actions, n))
  physics = np.zeros((n, 4 if task in CARTPOLE else 2))
  resync = np.zeros(n, bool)
  if states is not None and task in CARTPOLE:
    physics[: len(states)] = states
    resync[RESYNC : len(states) : RESYNC] = True
  out = _scan(task, level)(
    state,
    jnp.asarray(_pad(actions, n)),
    jnp.asarray(_pad(np.reshape(noises, (-1, 2)), n), dtype),
    jnp.asarray(physics, dtype),
    jnp.asarray(resync),
  )
  return tuple(np.asarray(x) for x in out)


# CartPole's scripted policies: action 1 iff gains[:4] . (x, x_dot, theta, theta_dot) + gains[4] > 0
CART_GAINS = {
  "balance": (0.05, 0.1, 1.0, 0.5, 0.0),  # reaches truncation
  "drift_right": (0.05, 0.1, 1.0, 0.5, -0.2),  # cart leaves the track: x > 2.4
  "drift_left": (0.05, 0.1, 1.0, 0.5, 0.2),  # x < -2.4
}


def _policies(task, seed):
  """Name -> policy on the package env's state."""
  rng = np.random.default_rng(seed)
  if task in CARTPOLE:
    pols = {name: (lambda s, g=np.array(g): int(s @ g[:4] + g[4] > 0)) for name, g in CART_GAINS.items()}
    pols.update(
      random=lambda s: int(rng.integers(2)),
      left=lambda s: 0,  # the pole falls: theta > 12 deg
      right=lambda s: 1,
    )  # theta < -12 deg
    return pols
  return {
    "random": lambda s: rng.uniform(-3, 3, (1,)).astype(np.float32),  # beyond the clip
    "pump": lambda s: np.array([2.0 if s[1] >= 0 else -2.0], np.float32),  # max speed
    "hold": lambda s: np.array([-5 * np.sin(s[0]) - s[1]], np.float32),
  }


def _closed_loop(env, policy, taken, states):
  """Actions of ``policy`` on the package env's state, recorded in ``taken`` (states seen in
  ``states``)."""
  while True:
    states.append(np.array(env.unwrapped.state))
    taken.append(policy(states[-1]))
    yield taken[-1]


def _aligned_episode(task, level, seed, policy, *, num_steps=0, dtype=jnp.float64, resync=True):
  """Run the package episode of ``policy`` and ours (its actions) from the same state: first
  observations (package, ours), episodes (package, ours) and the package's states [T + 1]."""
  env, obs0, noises = _reference(task, level, seed)
  env.unwrapped.num_steps = num_steps
  jobs0, state = _jax_state(task, level, env, noises[0] if noises else None, dtype)
  taken, states = [], []
  ref = reference_episode(env, task, level, _closed_loop(env, policy, taken, states))
  t = len(ref[1])
  ours = _jax_run(task, level, state, taken[:t], noises[1:], states[:t] if resync else None)
  return obs0, jobs0, ref, ours, np.array(states[:t] + [env.unwrapped.state])


@pytest.mark.parametrize("task,level", TASK_LEVELS)
def test_spaces_and_levels(task, level):
  mod, p = popgym_jax.task_module(task), popgym_jax.params(task, level)
  enc = _popgym.encoding(task, level)
  assert mod.spaces(p) == (enc.observation_space, enc.action_space)
  pkg = _popgym.env_class(task, level)()
  assert p.max_episode_length == pkg.max_episode_length
  assert p.noise_sigma == (pkg.noise_sigma[0] if hasattr(pkg, "noise_sigma") else 0.0)


@pytest.mark.parametrize("task,level", TASK_LEVELS)
def test_whole_episodes_match_package_float64(task, level):
  length = popgym_jax.params(task, level).max_episode_length
  with jax.enable_x64(True):
    for seed in range(3):
      for name, policy in _policies(task, seed).items():
        if name != "random" and seed:
          continue
        obs0, jobs0, ref, ours, states = _aligned_episode(task, level, seed, policy)
        np.testing.assert_allclose(jobs0, obs0, atol=1e-6, rtol=0)
        assert_same_episode(ref, ours, atol=1e-6)
        t, last = len(ref[1]), states[-1]
        if task in CARTPOLE[:2]:  # quirk: every variant observes the positions at reset
          np.testing.assert_array_equal(obs0, states[0][0::2].astype(np.float32))
        if task in CARTPOLE:  # quirk: the failing step is rewarded 1/L too
          np.testing.assert_array_equal(ref[1], np.float32(1 / length))
        if name == "balance" or task in PENDULUM:  # truncation only, after L steps
          assert t == length and ref[3][-1] and not ref[2].any()
        elif name != "random":  # the pole falls or the cart leaves the track
          assert t < length and ref[2][-1] and not ref[3].any()
        if task in CARTPOLE:  # each way out of bounds is reached
          out = {
            "drift_right": last[0] > 2.4,
            "drift_left": last[0] < -2.4,
            "left": last[2] > 0.2094,
            "right": last[2] < -0.2094,
          }
          assert out.get(name, True), name
        if name == "pump":  # the angular velocity reaches its clip
          assert np.abs(states[:, 1]).max() == 8.0
    if task in CARTPOLE:  # the failing step is also the last allowed step: both flags
      t = len(_aligned_episode(task, level, 5, lambda s: 1)[2][1])
      _, _, ref, ours, _ = _aligned_episode(task, level, 5, lambda s: 1, num_steps=length - t)
      assert_same_episode(ref, ours, atol=1e-6)
      assert len(ref[1]) == t and ref[2][-1] and ref[3][-1]
    else:  # an episode that already ran L - 3 steps ends 3 steps later
      _, _, ref, ours, _ = _aligned_episode(
        task, level, 5, lambda s: np.ones(1, np.float32), num_steps=length - 3
      )
      assert_same_episode(ref, ours, atol=1e-6)
      assert len(ref[1]) == 3 and ref[3][-1]


@pytest.mark.filterwarnings("ignore:.*already returned terminated = True")
@pytest.mark.parametrize("task", CARTPOLE)
def test_cartpole_stepping_on_after_termination(task):
  """The package's -1: steps after ``terminated`` (no reset) that end out of bounds again."""
  level = "easy"
  enc = _popgym.encoding(task, level)
  with jax.enable_x64(True):
    env, _, noises = _reference(task, level, 7)
    _, state = _jax_state(task, level, env, noises[0] if noises else None, jnp.float64)
    actions = [1] * 20
    rows = [env.step(a) for a in actions]
    ours = _jax_run(task, level, state, actions, noises[1:])
  ref = (
    np.array([encode(enc, r[0]) for r in rows]),
    np.array([r[1] for r in rows], np.float32),
    np.array([r[2] for r in rows]),
    np.array([r[3] for r in rows]),
  )
  assert_same_episode(ref, ours, atol=1e-6)
  first = int(np.argmax(ref[2]))
  assert ref[2][first:].all() and first < 15
  assert ref[1][first] == np.float32(1 / 200) and (ref[1][first + 1 :] == -1).all()


@pytest.mark.parametrize("task,level", TASK_LEVELS)
def test_float32_production_path_stays_close(task, level):
  """float32 state and noise (production dtypes), from the package's state: close for a while."""
  horizon = 15 if task in CARTPOLE else 40
  for seed in range(3):
    name = "random" if seed else "balance" if task in CARTPOLE else "pump"
    obs0, jobs0, ref, ours, _ = _aligned_episode(
      task, level, seed, _policies(task, seed)[name], dtype=jnp.float32, resync=False
    )
    np.testing.assert_allclose(jobs0, obs0, atol=1e-6, rtol=0)
    t = min(horizon, len(ref[1]))
    np.testing.assert_allclose(ours[0][:t], ref[0][:t], atol=2e-4, rtol=0)
    np.testing.assert_allclose(ours[1][:t], ref[1][:t], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(ours[2][:t], ref[2][:t])
    np.testing.assert_array_equal(ours[3][:t], ref[3][:t])


def _clean_obs(task, state, p, at_reset):
  """The noise-free float32 observation of (batched) JAX states."""
  if task in CARTPOLE:
    return np.asarray(state.physics)[:, (0 if at_reset else p.obs_offset) :: 2].astype(np.float32)
  theta = np.asarray(state.theta)
  return np.stack([np.cos(theta), np.sin(theta)], 1).astype(np.float32)


@pytest.mark.parametrize("task", CARTPOLE + PENDULUM)
def test_reset_and_noise_distributions(task):
  """Our draws at every level: the initial state is the package's uniform; the noise of the
  reset and step observations is distributed like the package's own ``add_noise_to_obs`` of
  the same clean observations (two-sample bounds), and absent in the noise-free tasks."""
  mod, n = popgym_jax.task_module(task), 4000
  levels = {lv: popgym_jax.params(task, lv) for lv in _popgym.LEVELS}
  action = jnp.zeros((), jnp.int32) if task in CARTPOLE else jnp.zeros((1,), jnp.float32)

  def draw(key):  # eager: the random functions compile once, for every level and task
    out = {}
    for (level, p), k in zip(levels.items(), jax.random.split(key, len(levels))):
      k_reset, k_step = jax.random.split(k)
      obs, state = jax.vmap(lambda k, p=p: mod.reset(k, p))(jax.random.split(k_reset, n))
      obs1, state1 = jax.vmap(lambda k, s, p=p: mod.step(k, s, action, p))(
        jax.random.split(k_step, n), state
      )[:2]
      out[level] = (obs, state, obs1, state1)
    return out

  for level, (obs, state, obs1, state1) in draw(jax.random.PRNGKey(1)).items():
    p = levels[level]
    if task in CARTPOLE:
      x, lo, hi = np.asarray(state.physics), -0.05, 0.05
    else:
      x = np.stack([np.asarray(state.theta), np.asarray(state.theta_dot)], 1)
      lo, hi = np.array([-np.pi, -1.0]), np.array([np.pi, 1.0])
    assert x.dtype == np.float32 and (x >= lo).all() and (x <= hi).all()
    width = hi - lo
    np.testing.assert_array_less(np.abs(x.mean(0) - (lo + hi) / 2), 5 * width / np.sqrt(12 * n))
    np.testing.assert_allclose(x.std(0), width / np.sqrt(12), rtol=0.05)
    pkg = _popgym.env_class(task, level)()
    pkg.reset(seed=0)
    for o, s, at_reset in ((obs, state, True), (obs1, state1, False)):
      o, clean = np.asarray(o), _clean_obs(task, s, p, at_reset)
      if not p.noise_sigma:
        np.testing.assert_allclose(o, clean, atol=1e-6, rtol=0)
        continue
      high = mod.spaces(p)[0].high
      assert (np.abs(o) <= high).all()
      ours = o - clean
      theirs = np.array([pkg.add_noise_to_obs(c) for c in clean]) - clean
      se = np.sqrt((ours.var(0) + theirs.var(0)) / n)
      np.testing.assert_array_less(np.abs(ours.mean(0) - theirs.mean(0)), 5 * se)
      np.testing.assert_allclose(ours.std(0), theirs.std(0), rtol=0.08)
      clipped = [(np.abs(o) == high).mean(0), (np.abs(clean + theirs) == high).mean(0)]
      pooled = (clipped[0] + clipped[1]) / 2
      np.testing.assert_array_less(
        np.abs(clipped[0] - clipped[1]), 5 * np.sqrt(pooled * (1 - pooled) * 2 / n) + 1e-9
      )
      if task in CARTPOLE:  # x is never clipped: plain normal noise, independent components
        np.testing.assert_allclose(ours[:, 0].std(), p.noise_sigma, rtol=0.05)
        assert abs(np.corrcoef(ours.T)[0, 1]) < 0.1


@pytest.mark.parametrize("task", ["VelocityOnlyCartPole", "NoisyPositionOnlyPendulum"])
def test_random_policy_return_matches_package(task):
  """Through the functional env (autoreset wrapper, ``popgym_jax.params``) of the easy level:
  the first episode's return under a uniformly random policy agrees with the package's."""
  level = "easy"
  f = envs.make_functional(f"popgym/{task}-{level}")
  length = popgym_jax.params(task, level).max_episode_length
  n, horizon = 512, length + 1

  def episode(key):
    k_reset, k_steps = jax.random.split(key)
    state, _ = f.reset(k_reset)

    def body(carry, k):
      state, ret, live = carry
      k_act, k_step = jax.random.split(k)
      if task in CARTPOLE:
        a = jax.random.randint(k_act, (), 0, 2, jnp.int32)
      else:
        a = jax.random.uniform(k_act, (1,), jnp.float32, -2.0, 2.0)
      state, ts = f.step(k_step, state, a)
      ret = ret + jnp.where(live, ts.reward, 0.0)
      return (state, ret, live & ~(ts.terminated | ts.truncated)), live

    (_, ret, live), lives = jax.lax.scan(body, (state, 0.0, True), jax.random.split(k_steps, horizon))
    return ret, lives.sum(), live

  ret, steps, live = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(3), n))
  assert not np.asarray(live).any()
  if task in PENDULUM:
    assert (np.asarray(steps) == length).all()
  m = 150 if task in CARTPOLE else 40
  rng = np.random.default_rng(0)
  pkg = []
  for seed in range(m):
    env, _ = reference(task, level, seed)
    if task in CARTPOLE:
      acts = rng.integers(0, 2, horizon)
    else:
      acts = rng.uniform(-2, 2, (horizon, 1)).astype(np.float32)
    pkg.append(reference_episode(env, task, level, acts)[1].sum())
  ours, pkg = np.asarray(ret), np.array(pkg)
  se = np.sqrt(ours.var() / n + pkg.var() / m)
  assert abs(ours.mean() - pkg.mean()) < 4 * se, (ours.mean(), pkg.mean(), se)
