"""The cell protocol, the carry, and the two entry points `step` and `unroll`.

A cell is a recurrence `s_t = recur(s_{t-1}, a_t)` driven by an input projection `a_t = drive(x_t)`
and read out by `y_t = readout(s_t, x_t)`. Cells that support exact RTRL have an element-wise
(block-diagonal) recurrence, so the sensitivity of the state to each recurrent parameter,
`traces[p] = ds_t/dp`, has the parameter's own shape per environment and is updated in O(#params):

    T_t = J_t T_{t-1} + ds_t/dp|_immediate                    (RTRL, Williams & Zipser 1989)

Two exact ways to obtain gradients from the traces:

* `step` (one step at a time: actors, fully online learning). The gradient of a same-step loss
  `l_t(y_t)` is `e_t . T_t` with `e_t = dl_t/ds_t` (the forward RTRL gradient).
* `unroll(mode="rtrl")` (a whole unroll at hand: the learner). Because the recurrence is diagonal,
  the influence of the whole history before the unroll is `(dL/ds_0) . T_0`, so exact RTRL is
  backprop within the unroll plus that one carried-in term: the cost of truncated BPTT, with no
  truncation. The outgoing traces (for the next unroll) are computed only when asked for.

Both give the gradient of full BPTT over the whole history since the last reset
(tests/test_cells_exactness.py). Memory never grows with the history: the carry has a fixed size.

Complex traces: where a cell's state is a complex number split into two real components (the RTU's
(c1, c2), the LRU's (re, im)), the trace of a parameter p is ONE complex array `T_p = ds_1/dp + i ds_2/dp`
with p's shape (complex64 for float32 carries, complex128 for float64; `carry_shapes` marks such leaves
`ComplexShape`). The rotation of the two components is then an element-wise complex multiply-add
`T' = lambda T + immediate`, which reads and writes each trace element at the same index, so XLA can
update a donated carry in place in one pass. A complex element counts as 2 floats in `carry_size`.
Parameters and states stay real (optax and checkpoints never see complex numbers).

Shapes: B batch, T time, D input size, N hidden size. Carries are batched `[B, ...]`; per-cell math
is written for one environment and vmapped over the batch.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Params = dict[str, jax.Array]
State = dict[str, jax.Array]
Traces = dict[str, Any]

MODES = ("rtrl", "tbptt", "bptt")
INPUT_GRADS = ("unroll", "immediate")


class Carry(NamedTuple):
  """What a cell carries from one step to the next, per environment.

  state:  `{name: [B, ...]}` the recurrent state.
  traces: `{param_name: [B, *param.shape]}` (or a dict of such arrays) holding d state / d param
          since the last reset (complex, `ds_1/dp + i ds_2/dp`, for a state of two real components); `None` for cells without RTRL, and in
          the carry returned by `unroll(..., outgoing_traces=False)`.
  """

  state: State
  traces: Traces | None


class Cell:
  """Base class. Subclasses define the per-environment math below.

  Per-environment methods (no batch dimension; `step`/`unroll` vmap them):
    drive(params, x [D]) -> a            input projection (a pytree of [N]-shaped arrays)
    recur(params, s, a) -> s             the recurrence
    readout(params, s, x [D]) -> y [H]   the output
  RTRL cells also define:
    trace_step(params, s_prev, traces, x, a) -> (s, traces)   state and traces, fused
    contract(params, g, traces) -> grads   g = dL/ds; grads for `traced_params` (d L/d p = g . T_p)
  """

  name: str = "cell"
  supports_rtrl: bool = False
  traced_params: tuple[str, ...] = ()

  def __init__(self, hidden_size: int, input_size: int | None = None):
    if not isinstance(hidden_size, int) or hidden_size <= 0:
      raise ValueError(f"{self.name}: hidden_size must be a positive int, got {hidden_size!r}")
    self.hidden_size = hidden_size
    self.input_size = None
    if input_size is not None:
      self._bind_input_size(input_size)

  # -- configuration -----------------------------------------------------------------------------
  def _bind_input_size(self, input_size: int) -> None:
    if not isinstance(input_size, int) or input_size <= 0:
      raise ValueError(f"{self.name}: input_size must be a positive int, got {input_size!r}")
    if self.input_size is not None and self.input_size != input_size:
      raise ValueError(
        f"{self.name}: this cell was built for input_size={self.input_size}, got {input_size}; "
        "make a new cell with cells.make(...) for another input size"
      )
    self.input_size = input_size

  def _require_input_size(self) -> int:
    if self.input_size is None:
      raise ValueError(
        f"{self.name}: input size unknown; call cell.init(key, input_size) first or pass "
        "input_size= to cells.make"
      )
    return self.input_size

  @property
  def output_size(self) -> int:
    return self.hidden_size

  def __repr__(self) -> str:
    return f"{type(self).__name__}(hidden_size={self.hidden_size}, input_size={self.input_size})"

  # -- parameters and carry ----------------------------------------------------------------------
  def init(self, key: jax.Array, input_size: int, dtype=jnp.float32) -> Params:
    """Parameters, initialised as in the cell's paper; binds the cell to `input_size`."""
    self._bind_input_size(input_size)
    return self._init(key, input_size, jnp.dtype(dtype))

  def initial_carry(self, batch_size: int, dtype=jnp.float32, traces: bool | None = None) -> Carry:
    """Zero state and zero traces for `batch_size` environments.

    traces: whether to allocate RTRL traces (default: if the cell supports RTRL). A carry without
    traces serves mode="tbptt"/"bptt" only; those modes pass traces through unchanged.
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
      raise ValueError(f"{self.name}: batch_size must be a positive int, got {batch_size!r}")
    d = self._require_input_size()
    shapes = self.carry_shapes(d)
    if traces is False:
      shapes = shapes._replace(traces=None)
    elif traces and shapes.traces is None:
      raise ValueError(f"{self.name} has no RTRL traces (exact RTRL is supported by other cells)")
    zeros = lambda shape: jnp.zeros((batch_size, *shape), _leaf_dtype(shape, dtype))
    traces = None if shapes.traces is None else jax.tree.map(zeros, shapes.traces, is_leaf=_is_shape)
    return Carry(jax.tree.map(zeros, shapes.state, is_leaf=_is_shape), traces)

  def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the parameters for `input_size` inputs."""
    shapes = jax.eval_shape(lambda k: self._init(k, input_size, jnp.dtype(jnp.float32)), jax.random.key(0))
    return {k: tuple(v.shape) for k, v in shapes.items()}

  def carry_shapes(self, input_size: int) -> Carry:
    """Per-environment shapes of the carry's leaves (a Carry of shape tuples; `ComplexShape` for the
    leaves holding complex values)."""
    raise NotImplementedError

  def carry_size(self, input_size: int) -> int:
    """Floats carried per environment (state + traces; a complex element counts 2); see each cell's
    docstring for the formula."""
    shapes = self.carry_shapes(input_size)
    leaves = jax.tree.leaves(shapes, is_leaf=_is_shape)
    return sum(math.prod(s) * (2 if isinstance(s, ComplexShape) else 1) for s in leaves)

  # -- per-environment math (subclasses) ----------------------------------------------------------
  def _init(self, key, input_size, dtype) -> Params:
    raise NotImplementedError

  def drive(self, params: Params, x: jax.Array):
    raise NotImplementedError

  def recur(self, params: Params, s: State, a) -> State:
    raise NotImplementedError

  def readout(self, params: Params, s: State, x: jax.Array) -> jax.Array:
    raise NotImplementedError

  def trace_step(self, params: Params, s_prev: State, traces: Traces, x: jax.Array, a):
    raise NotImplementedError

  def contract(self, params: Params, g: State, traces: Traces) -> Params:
    raise NotImplementedError


class ComplexShape(tuple):
  """The shape of a carry leaf that holds complex values (in `Cell.carry_shapes`)."""

  __slots__ = ()


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(i, int) for i in x)


def complex_dtype(dtype) -> jnp.dtype:
  """The complex counterpart of a real float dtype: complex64 for float32, complex128 for float64."""
  return jnp.dtype(jnp.complex128 if jnp.dtype(dtype).itemsize >= 8 else jnp.complex64)


def _leaf_dtype(shape, dtype) -> jnp.dtype:
  return complex_dtype(dtype) if isinstance(shape, ComplexShape) else jnp.dtype(dtype)


def materialize(tree):
  """`tree` (arrays), computed once into buffers before its uses: an exact identity on values.

  For the per-unit coefficients of a trace update (`j`, `zh`, `r cos(theta)`, ...). XLA fuses cheap
  producers into each consumer's loop, so a coefficient broadcast into a `[D, N]` trace update is
  recomputed for every element, D times over (transcendentals included): a memory-bound pass
  becomes compute-bound (50x slower for the RTU on CPU). `jax.lax.optimization_barrier` does not
  prevent this (XLA:CPU removes barriers before fusion); a reduction does, as XLA does not fuse a
  reduction into an elementwise consumer. So the value goes through `max(v, -inf)` written as a
  reduction, which is `v` exactly (signed zeros and NaNs included).
  """

  def real(v):
    return jnp.max(jnp.stack([v, jnp.full_like(v, -jnp.inf)]), axis=0)

  def leaf(v):  # a complex value: its parts (rebuilding it in the consumer costs no arithmetic)
    return jax.lax.complex(real(v.real), real(v.imag)) if jnp.iscomplexobj(v) else real(v)

  return jax.tree.map(leaf, tree)


# -- the carried-in RTRL term -----------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attach_traces(cell: Cell, params: Params, state: State, traces: Traces) -> State:
  """Identity on `state [B, ...]`, whose derivative w.r.t. `params` is the traces `d state/d params`.

  The VJP maps a cotangent `g = dL/ds` to `sum_b g_b . T_b` for each traced parameter (zero for the
  others); the state itself is treated as a constant (its history is summarised by the traces).
  """
  del cell, params, traces
  return state


def _attach_fwd(cell, params, state, traces):
  return state, (params, traces)


def _attach_bwd(cell, residuals, g):
  params, traces = residuals
  per_env = jax.vmap(cell.contract, in_axes=(None, 0, 0))(params, g, traces)
  grads = {k: jnp.zeros_like(v) for k, v in params.items()}
  grads.update({k: _sum_batch(v) for k, v in per_env.items()})
  zeros = lambda t: jax.tree.map(jnp.zeros_like, t)
  return grads, zeros(g), zeros(traces)


_attach_traces.defvjp(_attach_fwd, _attach_bwd)


def _sum_batch(x: jax.Array) -> jax.Array:
  """`x.sum(0)` as a balanced tree of elementwise adds over slices of the batch axis.

  XLA fuses the tree (and the `g_b . T_b` products feeding it) into one pass that reads each trace
  once. A reduction over the major (batch) axis, or the equivalent einsum, materialises the
  `[B, D, N]` products or takes a slow strided path on XLA:CPU (10-40x slower at B=32, N=256).
  """
  rest = []
  while x.shape[0] > 1:
    half = x.shape[0] // 2
    if x.shape[0] % 2:
      rest.append(x[2 * half])
    x = x[:half] + x[half : 2 * half]
  out = x[0]
  for r in rest:
    out = out + r
  return out


# -- validation -------------------------------------------------------------------------------------
def _check_common(cell: Cell, carry: Carry, mode: str, input_grad: str) -> None:
  if not isinstance(cell, Cell):
    raise TypeError(f"expected a cell from cells.make(...), got {type(cell).__name__}")
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
  if input_grad not in INPUT_GRADS:
    raise ValueError(f"unknown input_grad {input_grad!r}; expected one of {INPUT_GRADS}")
  if mode == "rtrl" and not cell.supports_rtrl:
    from rtrl_rl.cells import RTRL_CELLS  # noqa: PLC0415 - circular: rtrl_rl.cells imports this module

    raise ValueError(
      f"mode='rtrl' is not supported by cell {cell.name!r}: exact RTRL for a dense recurrence "
      f"costs O(N^4) per step. Cells with exact RTRL: {RTRL_CELLS}; use mode='tbptt' for "
      f"{cell.name!r}"
    )
  if not isinstance(carry, Carry):
    raise TypeError(f"carry must be a cells.Carry (from cell.initial_carry), got {type(carry).__name__}")
  if mode == "rtrl" and carry.traces is None:
    raise ValueError(
      "mode='rtrl' needs a carry with traces, but carry.traces is None (a carry returned by "
      "unroll(..., outgoing_traces=False) cannot start another RTRL unroll)"
    )


def _check_carry(cell: Cell, carry: Carry, batch: int, dtype) -> None:
  d = cell._require_input_size()  # pylint: disable=protected-access
  want = cell.carry_shapes(d)
  if carry.traces is None:
    want = want._replace(traces=None)
  got = jax.tree.map(lambda a: tuple(a.shape), carry)
  expected = jax.tree.map(lambda s: (batch, *s), want, is_leaf=_is_shape)
  if (
    jax.tree.structure(got, is_leaf=_is_shape) != jax.tree.structure(expected, is_leaf=_is_shape)
    or got != expected
  ):
    raise ValueError(
      f"{cell.name}: carry does not match the cell and batch size {batch}: expected leaf shapes "
      f"{expected}, got {got}; make it with cell.initial_carry({batch})"
    )
  for leaf, shape in zip(jax.tree.leaves(carry), jax.tree.leaves(want, is_leaf=_is_shape)):
    if leaf.dtype != _leaf_dtype(shape, dtype):
      what = f"the complex counterpart {complex_dtype(dtype)} of " if isinstance(shape, ComplexShape) else ""
      raise ValueError(f"{cell.name}: carry dtype {leaf.dtype} differs from {what}the input dtype {dtype}")


def _check_params(cell: Cell, params: Params) -> None:
  if not isinstance(params, dict):
    raise TypeError(
      f"{cell.name}: params must be the dict returned by cell.init, got {type(params).__name__}"
    )
  d = cell._require_input_size()  # pylint: disable=protected-access
  want = cell.param_shapes(d)
  got = {k: tuple(v.shape) for k, v in params.items()}
  if got != want:
    raise ValueError(f"{cell.name}: params do not match the cell: expected shapes {want}, got {got}")


# -- one step ---------------------------------------------------------------------------------------
def _reset(tree, reset):
  """Zero every leaf `[B, ...]` of `tree` where `reset [B]` is true."""
  return jax.tree.map(
    lambda v: jnp.where(reset.reshape(reset.shape + (1,) * (v.ndim - 1)), jnp.zeros_like(v), v), tree
  )


@functools.partial(jax.jit, static_argnames=("cell", "mode"))
def step(
  cell: Cell, params: Params, carry: Carry, x: jax.Array, reset: jax.Array, *, mode: str = "rtrl"
) -> tuple[jax.Array, Carry]:
  """One step for `B` environments: `x [B, D]`, `reset [B] bool` -> `y [B, H]`, new carry.

  `reset[b]` zeroes env b's state and traces before the step. mode="rtrl": the traces are
  updated, and `jax.grad` of a function of `y` w.r.t. `params` is the forward-RTRL gradient
  `e_t . T_t` (exact for a same-step loss); the gradient w.r.t. `x` is the immediate one.
  mode="tbptt": carry is a constant; mode="bptt": gradients also flow into `carry.state`.
  """
  _check_common(cell, carry, mode, "immediate")
  if x.ndim != 2 or reset.shape != x.shape[:1]:
    raise ValueError(f"{cell.name}.step expects x [B, D] and reset [B]; got x {x.shape}, reset {reset.shape}")
  _check_input(cell, x)
  _check_params(cell, params)
  _check_carry(cell, carry, x.shape[0], x.dtype)
  reset = reset.astype(bool)

  if mode != "rtrl":
    s_prev = carry.state if mode == "bptt" else jax.lax.stop_gradient(carry.state)
    s_prev = _reset(s_prev, reset)
    vstep = jax.vmap(lambda s, x: cell.recur(params, s, cell.drive(params, x)))
    s = vstep(s_prev, x)
    y = jax.vmap(functools.partial(cell.readout, params))(s, x)
    return y, Carry(s, None if carry.traces is None else jax.lax.stop_gradient(carry.traces))

  sg = jax.lax.stop_gradient
  s_prev = _reset(sg(carry.state), reset)
  traces = _reset(sg(carry.traces), reset)
  p = sg(params)
  s, traces = jax.vmap(lambda s, t, x: cell.trace_step(p, s, t, x, cell.drive(p, x)))(s_prev, traces, x)
  s_out = _attach_traces(cell, params, s, traces)
  # Immediate gradient w.r.t. x: a zero-valued term whose x-derivative is ds_t/dx_t.
  s_x = jax.vmap(lambda s, x: cell.recur(p, s, cell.drive(p, x)))(s_prev, x)
  s_out = jax.tree.map(lambda a, b: a + (b - sg(b)), s_out, s_x)
  y = jax.vmap(functools.partial(cell.readout, params))(s_out, x)
  return y, Carry(s, traces)


def _check_input(cell: Cell, x: jax.Array) -> None:
  d = cell._require_input_size()  # pylint: disable=protected-access
  if x.shape[-1] != d:
    raise ValueError(f"{cell.name}: input feature size {x.shape[-1]} differs from the cell's input_size {d}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{cell.name}: inputs must be floating point, got {x.dtype}")


# -- a whole unroll ---------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("cell", "mode", "input_grad", "outgoing_traces"))
def unroll(
  cell: Cell,
  params: Params,
  carry: Carry,
  xs: jax.Array,
  resets: jax.Array,
  *,
  mode: str = "rtrl",
  input_grad: str = "unroll",
  outgoing_traces: bool = True,
) -> tuple[jax.Array, Carry]:
  """Run `T` steps: `xs [T, B, D]`, `resets [T, B] bool` -> `ys [T, B, H]`, final carry.

  Modes (gradients w.r.t. `params`):
    "rtrl"  exact: backprop within the unroll + `(dL/ds_0) . T_0` for the history before it.
    "tbptt" backprop within the unroll; the incoming carry is a constant.
    "bptt"  backprop within the unroll and into `carry.state` (the test reference: chain unrolls).
  input_grad: "unroll" backpropagates dL/dx through the recurrence within the unroll (Irie et
    al.); "immediate" keeps only the same-step term `e_t . ds_t/dx_t` (Elelimy et al.).
  outgoing_traces (rtrl only): also run the forward trace recursion (fused with the state) so the
    returned carry can start the next unroll; the learner, which discards its traces, passes False
    and gets `carry.traces = None`. Gradients are the same either way.
  """
  _check_common(cell, carry, mode, input_grad)
  if xs.ndim != 3 or resets.shape != xs.shape[:2]:
    raise ValueError(
      f"{cell.name}.unroll expects xs [T, B, D] and resets [T, B]; got xs {xs.shape}, resets {resets.shape}"
    )
  _check_input(cell, xs)
  _check_params(cell, params)
  _check_carry(cell, carry, xs.shape[1], xs.dtype)
  resets = resets.astype(bool)
  sg = jax.lax.stop_gradient
  with_traces = mode == "rtrl" and outgoing_traces

  s0 = carry.state if mode == "bptt" else sg(carry.state)
  if mode == "rtrl":
    s0 = _attach_traces(cell, params, s0, carry.traces)
  if input_grad == "immediate":
    # x enters the recurrence without gradient; a zero-valued same-step term carries ds_t/dx_t.
    a_rec = jax.vmap(jax.vmap(functools.partial(cell.drive, params)))(sg(xs))
    a_x = jax.vmap(jax.vmap(functools.partial(cell.drive, sg(params))))(xs)
  else:
    a_rec = a_x = jax.vmap(jax.vmap(functools.partial(cell.drive, params)))(xs)

  vrecur = jax.vmap(cell.recur, in_axes=(None, 0, 0))
  vtrace = jax.vmap(cell.trace_step, in_axes=(None, 0, 0, 0, 0)) if with_traces else None
  p_sg = sg(params)

  def body(c, inp):
    s, tr = c
    x, reset, a, ax = inp
    s_prev = _reset(s, reset)
    s_new = vrecur(params, s_prev, a)
    s_out = s_new
    if input_grad == "immediate":
      s_x = vrecur(p_sg, sg(s_prev), ax)
      s_out = jax.tree.map(lambda u, v: u + (v - sg(v)), s_new, s_x)
    y = jax.vmap(functools.partial(cell.readout, params))(s_out, x)
    if with_traces:
      _, tr = vtrace(p_sg, sg(s_prev), _reset(tr, reset), sg(x), sg(a))
    return (s_new, tr), y

  tr0 = sg(carry.traces) if with_traces else None
  (s_T, tr_T), ys = jax.lax.scan(body, (s0, tr0), (xs, resets, a_rec, a_x))
  if mode != "rtrl":
    tr_T = carry.traces  # traces are maintained in mode="rtrl" only; other modes pass them through
  return ys, Carry(s_T, tr_T)
