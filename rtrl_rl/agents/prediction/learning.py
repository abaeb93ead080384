"""Online TD(lambda) prediction with a recurrent core, fully jitted over the stream.

The stream is `(obs_i, c_i)`, i = 0, 1, ...: `c_i` is the cumulant (the US bit) that arrived with
`obs_i`. At every step i the learner
  1. reads obs_i through the core (its carry holds the history) and predicts v_i = w . h_i + b, with
     g_i = grad_theta v_i: exact forward RTRL (`cells.step(mode="rtrl")`, g = e_i . T_i for the core)
     or T-BPTT (`cells.unroll(mode="tbptt")` over the last T inputs, re-run every step from the state
     T steps back, as the RTU paper's T-BPTT baselines do);
  2. forms the TD error of the previous prediction, delta_{i-1} = c_i + gamma v_i - v_{i-1};
  3. updates all parameters with the eligibility trace z_{i-1}: the TD(lambda) direction
     delta_{i-1} z_{i-1} goes to the optimiser as the gradient -delta z (SGD: theta += alpha delta z);
  4. decays the trace, z_i = gamma lambda z_{i-1} + g_i (semi-gradient TD(lambda) over all params).
So the prediction for obs_i is made before anything after c_i is seen, with the parameters learned
from the stream up to c_i: the predictions are genuinely online. v_i and g_i are computed once, with
the parameters held before step 3 (one forward per step; in the TD error, v_{i-1} is the value
computed at step i-1, not re-evaluated with the updated parameters).

The target of prediction i is G_i = sum_k gamma^k c_{i+1+k}; MSRE (rtrl_rl/envs/trace_conditioning.py)
is `tc.msre(pred[:-1], c[1:], gamma)`, see `msre`.

    learner = make_learner(agent_config, input_size)
    state = learner.init(key)
    state, metrics = learner.run(state, stream)   # jitted; vmap it over seeds; chunks chain exactly
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rtrl_rl import cells, envs
from rtrl_rl.agents import registry
from rtrl_rl.agents.prediction import config as config_lib
from rtrl_rl.envs import trace_conditioning as tc


class Stream(NamedTuple):
  """obs [S, D]; cumulant [S]: the cumulant that arrived with obs[i] (the env's reward of that step)."""

  obs: jax.Array
  cumulant: jax.Array


class StreamState(NamedTuple):
  """Where a stream continues: the env's state and key, and the next (obs, cumulant) to emit."""

  env_state: Any
  key: jax.Array
  obs: jax.Array
  cumulant: jax.Array


class Window(NamedTuple):
  """T-BPTT: the last T inputs (oldest first), their reset flags, and the core state preceding each."""

  xs: jax.Array  # [T, D]
  resets: jax.Array  # [T] bool
  states: Any  # pytree of [T, 1, ...]


class LearnerState(NamedTuple):
  params: dict  # {"core": core params, "head": {"w": [H], "b": []}}
  opt_state: Any
  carry: Any  # cells.Carry with batch 1 (rtrl: state + traces; tbptt: the newest state) | None
  window: Window | None  # tbptt only
  eligibility: dict  # z, shaped like params
  value: jax.Array  # v of the last processed observation
  t: jax.Array  # observations processed so far (int32)


class Learner(NamedTuple):
  init: Callable[[jax.Array], LearnerState]
  run: Callable[[LearnerState, Stream], tuple[LearnerState, dict]]
  predict_and_grad: Callable  # (state, x, first) -> (v, grads, new carry/window): one step, no update
  config: ml_collections.ConfigDict
  input_size: int
  cell: Any


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  if config.optimizer == "sgd":
    return optax.sgd(config.learning_rate)
  return optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)


def make_learner(config: ml_collections.ConfigDict, input_size: int) -> Learner:
  """The learner of `config` (rtrl_rl/agents/prediction/config.py) for observations of `input_size`."""
  config_lib.validate(config)
  dtype = jnp.dtype(config.dtype)
  net = config.network
  gamma, lam, mode = float(config.discount), float(config.td_lambda), net.core_mode
  d = int(input_size)
  opt = make_optimizer(config)
  cell = None
  if net.cell is not None:
    cell = cells.make(net.cell, net.hidden_size, input_size=d, **net.cell_options.to_dict())
    features = cell.output_size
  else:
    features = net.hidden_size or d
  big_t = int(config.truncation) if mode == "tbptt" else 0

  def head(p, h):
    return h @ p["w"] + p["b"]

  # -- one forward step per mode: (params, carry, window, x, first) -> (v, (carry, window)) ----------
  def fwd_ff(params, carry, window, x, first):
    del first
    p = params["core"]
    h = jax.nn.relu(x @ p["W"] + p["b"]) if net.hidden_size else x
    return head(params["head"], h), (carry, window)

  def fwd_rtrl(params, carry, window, x, first):
    y, carry = cells.step(cell, params["core"], carry, x[None], first[None], mode="rtrl")
    return head(params["head"], y[0]), (carry, window)

  def fwd_tbptt(params, carry, window, x, first):
    shift = lambda buf, new: jnp.concatenate([buf[1:], new[None]], axis=0)
    xs = shift(window.xs, x)
    resets = shift(window.resets, first)
    states = jax.tree.map(shift, window.states, carry.state)  # carry.state precedes x
    start = jax.tree.map(lambda s: s[0], states)
    ys, out = cells.unroll(
      cell, params["core"], cells.Carry(start, None), xs[:, None], resets[:, None], mode="tbptt"
    )
    return head(params["head"], ys[-1, 0]), (cells.Carry(out.state, None), Window(xs, resets, states))

  fwd = fwd_ff if cell is None else (fwd_rtrl if mode == "rtrl" else fwd_tbptt)
  value_and_grad = jax.value_and_grad(fwd, has_aux=True)

  def predict_and_grad(state: LearnerState, x, first):
    (v, (carry, window)), g = value_and_grad(
      state.params, state.carry, state.window, x.astype(dtype), jnp.asarray(first, bool)
    )
    return v, g, carry, window

  @jax.jit
  def init(key) -> LearnerState:
    k_core, k_head = jax.random.split(key)
    if cell is None:
      h = net.hidden_size
      core = (
        {"W": jax.random.normal(k_core, (d, h), dtype) / np.sqrt(d), "b": jnp.zeros((h,), dtype)} if h else {}
      )
    else:
      core = cell.init(k_core, d, dtype)
    if config.head_init == "zeros":
      w = jnp.zeros((features,), dtype)
    else:
      w = jax.random.normal(k_head, (features,), dtype) / np.sqrt(features)
    params = {"core": core, "head": {"w": w, "b": jnp.zeros((), dtype)}}
    carry = window = None
    if cell is not None:
      carry = cell.initial_carry(1, dtype, traces=(mode == "rtrl"))
      if mode == "tbptt":
        window = Window(
          jnp.zeros((big_t, d), dtype),
          jnp.zeros((big_t,), bool),
          jax.tree.map(lambda s: jnp.zeros((big_t, *s.shape), s.dtype), carry.state),
        )
    return LearnerState(
      params,
      opt.init(params),
      carry,
      window,
      jax.tree.map(jnp.zeros_like, params),
      jnp.zeros((), dtype),
      jnp.zeros((), jnp.int32),
    )

  def step(st: LearnerState, inp):
    x, c = inp
    first = st.t == 0
    v, g, carry, window = predict_and_grad(st, x, first)
    delta = jnp.where(first, 0.0, c + gamma * v - st.value).astype(dtype)
    direction = jax.tree.map(lambda z: -delta * z, st.eligibility)  # the gradient handed to optax
    updates, opt_state = opt.update(direction, st.opt_state, st.params)
    params = optax.apply_updates(st.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(first, b, a), new, old)
    params, opt_state = keep(params, st.params), keep(opt_state, st.opt_state)
    z = jax.tree.map(lambda z, gi: (gamma * lam) * z + gi, st.eligibility, g)
    new = LearnerState(params, opt_state, carry, window, z, v, st.t + 1)
    return new, {"prediction": v, "td_error": delta}

  @jax.jit
  def run(state: LearnerState, stream: Stream):
    """Learn online from `stream` (obs [S, D], cumulant [S]); metrics: per-step prediction and
    td_error [S] (td_error[i] is delta_{i-1}, 0 at the very first step), and msre: the MSRE of this
    chunk's predictions with returns truncated at the chunk's end."""
    state, m = jax.lax.scan(step, state, (stream.obs.astype(dtype), stream.cumulant.astype(dtype)))
    if stream.obs.shape[0] >= 2:
      m["msre"] = tc.msre(m["prediction"][:-1], stream.cumulant[1:].astype(dtype), gamma)
    else:  # a one-step chunk scores nothing: its prediction's return is not observed yet
      m["msre"] = jnp.full((), jnp.nan, dtype)
    return state, m

  return Learner(init, run, predict_and_grad, config, d, cell)


# -- streams ---------------------------------------------------------------------------------------
def stream_start(fenv, key) -> StreamState:
  """A new stream of the functional env `fenv` (rtrl_rl.envs.make_functional)."""
  key, k = jax.random.split(key)
  env_state, obs = fenv.reset(k)
  return StreamState(env_state, key, obs, jnp.zeros((), jnp.float32))


def stream_next(fenv, ss: StreamState, steps: int) -> tuple[StreamState, Stream]:
  """The next `steps` (obs, cumulant) pairs of a stream and where it continues (jit with steps static)."""

  def body(ss, _):
    key, k = jax.random.split(ss.key)
    env_state, ts = fenv.step(k, ss.env_state, jnp.zeros((), jnp.int32))
    return StreamState(env_state, key, ts.obs, ts.reward), (ss.obs, ss.cumulant)

  ss, (obs, cum) = jax.lax.scan(body, ss, None, length=steps)
  return ss, Stream(obs, cum)


def make_stream(fenv, key, steps: int) -> Stream:
  """`steps` (obs, cumulant) pairs of a new stream of `fenv` (one jitted call)."""
  return jax.jit(lambda k: stream_next(fenv, stream_start(fenv, k), steps)[1])(key)


# -- the measure ------------------------------------------------------------------------------------
def msre(predictions, cumulants, gamma: float, last: int | None = None):
  """MSRE of predictions[i] (from obs i) against G_i = sum_k gamma^k cumulants[i+1+k], with the
  environment's measure `tc.msre`; the final prediction has no observed return and is dropped, and
  the returns are truncated at the end of the recorded stream. last: only the last `last` of the
  scored predictions (their returns are unchanged: they only look forward). Arrays [S] (one stream)."""
  p, c = predictions[:-1], cumulants[1:]
  if last is not None:
    p, c = p[-last:], c[-last:]
  return tc.msre(p, c, gamma)


def msre_report(predictions, cumulants, gamma: float, last: int) -> dict:
  """MSRE over the last `last` scored predictions, with the same window's MSRE of predicting 0
  (`msre_zero` = mean G^2) and of the best constant (`msre_const` = var G); `msre_normalized` =
  msre / msre_zero. Arrays [S] (one stream); returns floats."""
  p, c = np.asarray(predictions)[:-1][-last:], np.asarray(cumulants)[1:][-last:]
  g = np.asarray(tc.discounted_returns(jnp.asarray(c, jnp.float32), gamma))
  m = float(tc.msre(jnp.asarray(p), jnp.asarray(c), gamma))
  zero = float(np.mean(g * g))
  return {
    "msre": m,
    "msre_zero": zero,
    "msre_const": float(np.var(g)),
    "msre_normalized": m / zero if zero > 0 else float("nan"),
  }


# -- a whole experiment -----------------------------------------------------------------------------
def iterations(config: ml_collections.ConfigDict) -> registry.Iterations:
  """An experiment config (configs/rtu_trace_conditioning.py) as the loop driver's iterations
  (rtrl_rl/system/trainer.py): `config.agent.num_seeds` streams vmapped, one iteration per chunk of
  `chunk_steps` steps (the last one shorter) until `config.agent.total_env_steps`.

  The state is `(learner, stream, predictions, cumulants, steps done)`; a checkpoint holds the first
  four (the predictions and cumulants of the whole run `[seeds, steps]`, filled as chunks arrive:
  the final MSRE window is scored from them), so a resumed run continues the same streams and its
  predictions equal an uninterrupted run's. Metrics per chunk: chunk_msre, td_error_sq,
  steps_per_s. `final(state)`: the MSRE report (`msre_report`, averaged over seeds, and per seed)."""
  a = config.agent
  fenv = envs.make_functional(config.env.id, **config.env.options.to_dict())
  env_gamma = getattr(fenv.params, "gamma", None)
  if env_gamma is not None and abs(env_gamma - a.discount) > 1e-12:
    raise ValueError(
      f"agent.discount={a.discount} differs from the environment's gamma={env_gamma} "
      "(env.options.gamma): the learner would predict another target than MSRE scores"
    )
  learner = make_learner(a, int(np.prod(fenv.observation_space.shape)))
  n = a.num_seeds
  run = jax.jit(jax.vmap(learner.run))
  nexts = {}

  def next_chunk(ss, steps):
    if steps not in nexts:
      nexts[steps] = jax.jit(jax.vmap(lambda s: stream_next(fenv, s, steps)))
    return nexts[steps](ss)

  def init():
    keys = jax.vmap(jax.random.key)(jnp.arange(n) + config.seed)
    k_params, k_stream = jax.vmap(jax.random.split, out_axes=1)(keys)
    state = jax.jit(jax.vmap(learner.init))(k_params)
    ss = jax.jit(jax.vmap(lambda k: stream_start(fenv, k)))(k_stream)
    zeros = lambda: np.zeros((n, a.total_env_steps), np.dtype(a.dtype))
    return state, ss, zeros(), zeros(), 0

  def step(st):
    state, ss, preds, cums, done = st
    steps = min(a.chunk_steps, a.total_env_steps - done)
    ss, stream = next_chunk(ss, steps)
    t_chunk = time.time()
    state, m = run(state, stream)
    m = jax.device_get(m)
    dt = time.time() - t_chunk
    preds[:, done : done + steps] = np.asarray(m["prediction"])
    cums[:, done : done + steps] = np.asarray(jax.device_get(stream.cumulant))
    metrics = {
      "chunk_msre": float(np.mean(m["msre"])),
      "td_error_sq": float(np.mean(np.square(m["td_error"]))),
      "steps_per_s": steps * n / dt,
    }
    return (state, ss, preds, cums, done + steps), metrics

  def resume(st, tree, counters):
    state, ss, preds, cums = tree
    return state, ss, np.array(preds), np.array(cums), int(counters["frames"])

  def final(st) -> dict:
    _, _, preds, cums, done = st
    summary = {"steps": int(done), "num_seeds": int(n)}
    if done == 0:
      return summary
    reports = [msre_report(preds[s, :done], cums[s, :done], a.discount, a.msre_window) for s in range(n)]
    summary.update({k: float(np.mean([r[k] for r in reports])) for k in reports[0]})
    summary["msre_per_seed"] = [r["msre"] for r in reports]
    return summary

  return registry.Iterations(
    init,
    step,
    a.chunk_steps,
    saved=lambda st: st[:4],
    resume=resume,
    params=lambda st: st[0].params,
    total_updates=-(-a.total_env_steps // a.chunk_steps),
    total_frames=a.total_env_steps,
    final=final,
  )


def run_experiment(config: ml_collections.ConfigDict) -> dict:
  """The whole experiment in memory, without a run directory (`iterations`' final report): for
  notebooks and tests. `python -m rtrl_rl.train` runs it with metrics, checkpoints and resume."""
  it = iterations(config)
  state = it.init()
  for _ in range(it.total_updates):
    state, _ = it.step(state)
  return it.final(state)
