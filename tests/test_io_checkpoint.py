"""Checkpointer: bitwise round trip (dtypes, typed keys, scalars, optax state), retention, resume, primary-only
writing, and atomicity (a save killed with SIGKILL, a failing final rename, damaged or partial steps never
make `restore_latest` fail or return a broken state)."""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rtrl_rl.io.checkpoint import CheckpointCorruptError, Checkpointer, CheckpointStructureError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_key(x):
  return jax.dtypes.issubdtype(getattr(x, 'dtype', np.float32), jax.dtypes.prng_key)


def _bits(x):
  """Raw bytes of a leaf (key data for typed keys), for bitwise comparison."""
  if _is_key(x):
    return str(x.dtype), np.asarray(jax.random.key_data(x)).tobytes()
  if isinstance(x, (bool, int, float)):
    return type(x).__name__, repr(x)
  a = np.asarray(x)
  return a.dtype.name, a.shape, a.tobytes()


def _assert_bitwise_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert _bits(x) == _bits(y)
    assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))


def _state(seed=0):
  k = jax.random.key(seed)
  params = {
    'dense': {'w': jax.random.normal(k, (3, 4)), 'b': jnp.arange(4, dtype=jnp.float32)},
    'half': jnp.asarray([1.5, -2.25, np.nan], jnp.bfloat16),
    'f16': jnp.asarray([0.1, np.inf], jnp.float16),
    'empty': jnp.zeros((0, 5)),
  }
  return {
    'params': params,
    'opt': optax.adam(1e-3).init(params),
    'key': jax.random.fold_in(k, 7),
    'rbg_keys': jax.random.split(jax.random.key(seed, impl='rbg'), 3),
    'raw_key': jax.random.PRNGKey(seed + 1),
    'counters': {'frames': 123456789012, 'updates': seed, 'lr': 0.25, 'done': False},
    'np': {
      'i8': np.arange(-3, 3, dtype=np.int8),
      'u64': np.array(2**63 + 5, np.uint64),
      'b': np.array([True, False]),
    },
    'scalar': np.float32(3.5),
  }


def test_round_trip_bitwise_dtypes_keys_metadata(tmp_path):
  state = _state(1)
  meta = {'step': np.int64(10), 'frames': 4000, 'config_hash': 'abc123', 'nested': {'x': np.float32(0.5)}}
  with Checkpointer(tmp_path / 'ck') as ckpt:
    assert ckpt.restore_latest(state) is None and ckpt.latest_step() is None
    assert ckpt.save(10, state, meta, wait=True)
    step, restored, rmeta = ckpt.restore_latest(target_like=state)
  assert step == 10
  assert rmeta == {'step': 10, 'frames': 4000, 'config_hash': 'abc123', 'nested': {'x': 0.5}}
  _assert_bitwise_equal(state, restored)
  assert restored['params']['half'].dtype == jnp.bfloat16
  assert restored['key'].dtype == state['key'].dtype and restored['rbg_keys'].dtype == state['rbg_keys'].dtype
  # the restored key draws the same numbers
  np.testing.assert_array_equal(
    jax.random.uniform(restored['key'], (3,)), jax.random.uniform(state['key'], (3,))
  )

  # abstract target (ShapeDtypeStruct) works too and gives jax arrays
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array) else x, state
  )
  with Checkpointer(tmp_path / 'ck') as ckpt:
    _, restored2, _ = ckpt.restore_latest(abstract)
    flat, _ = ckpt.restore(10)  # no target: {tree path: leaf}
  _assert_bitwise_equal(state, restored2)
  assert flat["['counters']['frames']"] == 123456789012
  assert _bits(flat["['params']['half']"]) == _bits(state['params']['half'])


def test_structure_mismatch_is_an_error(tmp_path):
  state = _state(0)
  with Checkpointer(tmp_path / 'ck') as ckpt:
    ckpt.save(1, state, wait=True)
    bad = dict(state, extra=jnp.zeros(2))
    with pytest.raises(CheckpointStructureError):
      ckpt.restore_latest(bad)
    wrong_shape = jax.tree.map(lambda x: x, state)
    wrong_shape['params']['dense']['w'] = jnp.zeros((4, 3))
    with pytest.raises(CheckpointStructureError, match='shape'):
      ckpt.restore_latest(wrong_shape)


def test_max_to_keep_resume_latest_and_existing_step(tmp_path):
  d = tmp_path / 'ck'
  with Checkpointer(d, max_to_keep=3) as ckpt:
    for s in range(1, 6):
      assert ckpt.save(s * 10, {'x': jnp.full((4,), s, jnp.int32)}, {'frames': s * 100})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [30, 40, 50] and ckpt.latest_step() == 50
    assert not ckpt.save(50, {'x': jnp.zeros((4,), jnp.int32)}, wait=True)  # existing step: no-op
  # a new process on the same directory resumes from the latest
  with Checkpointer(d, max_to_keep=3) as ckpt:
    step, st, meta = ckpt.restore_latest({'x': jnp.zeros((4,), jnp.int32)})
    assert step == 50 and meta == {'frames': 500}
    np.testing.assert_array_equal(st['x'], np.full((4,), 5))
    ckpt.save(60, {'x': jnp.full((4,), 6, jnp.int32)}, wait=True)
    assert ckpt.all_steps() == [40, 50, 60]


def test_non_primary_writes_nothing_but_restores(tmp_path):
  d = tmp_path / 'ck'
  other = Checkpointer(d, is_primary=False)
  assert not other.save(1, {'x': jnp.ones(3)}, wait=True)
  assert not d.exists() and other.all_steps() == [] and other.restore_latest() is None
  with Checkpointer(d, is_primary=True) as primary:
    primary.save(2, {'x': jnp.arange(3.0)}, {'a': 1}, wait=True)
    assert other.latest_step() == 2  # sees the primary's new step
    step, st, meta = other.restore_latest({'x': jnp.zeros(3)})
    assert step == 2 and meta == {'a': 1}
    np.testing.assert_array_equal(st['x'], np.arange(3.0))
    assert not other.save(3, {'x': jnp.ones(3)}, wait=True)
    assert primary.all_steps() == [2]
  other.close()


def _step_files(d, step):
  return [
    p for p in glob.glob(os.path.join(d, str(step), 'state', '**', '*'), recursive=True) if os.path.isfile(p)
  ]


def test_damaged_missing_commit_and_partial_steps_are_skipped(tmp_path):
  d = str(tmp_path / 'ck')
  like = {'a': jnp.zeros(1000), 'k': jax.random.key(0)}
  with Checkpointer(d, max_to_keep=5) as ckpt:
    for s in (1, 2, 3, 4):
      ckpt.save(s, {'a': jnp.full(1000, float(s)), 'k': jax.random.key(s)}, {'s': s}, wait=True)
  # step 4: every data file damaged (bytes flipped); step 3: commit marker gone; step 2: its data no longer
  # matches the manifest's CRC-32 (silent damage that still decodes); plus a partial tmp dir of step 5
  for p in _step_files(d, 4):
    with open(p, 'r+b') as f:
      data = bytearray(f.read())
      for i in range(0, len(data), 7):
        data[i] ^= 0xFF
      f.seek(0)
      f.write(bytes(data))
  os.remove(os.path.join(d, '3', 'commit_success.txt'))
  manifest_file = os.path.join(d, '2', 'manifest', 'metadata')
  with open(manifest_file) as f:
    manifest = json.load(f)
  manifest['leaves'][0]['crc32'] ^= 1
  with open(manifest_file, 'w') as f:
    json.dump(manifest, f)
  os.makedirs(os.path.join(d, '5.orbax-checkpoint-tmp-1234567', 'state'))
  with open(os.path.join(d, '5.orbax-checkpoint-tmp-1234567', 'state', 'junk'), 'wb') as f:
    f.write(b'\0' * 100)
  reader = Checkpointer(d, is_primary=False)
  assert 5 not in reader.all_steps() and 3 not in reader.all_steps()
  with pytest.raises(CheckpointCorruptError, match='CRC'):
    reader.restore(2, like)
  step, st, meta = reader.restore_latest(like)  # 4 and 2 fail to validate, 3 is not committed -> 1
  assert step == 1 and meta == {'s': 1}
  np.testing.assert_array_equal(st['a'], np.full(1000, 1.0))
  assert _bits(st['k']) == _bits(jax.random.key(1))
  # the primary cleans up the partial tmp directory when it opens the directory
  Checkpointer(d).close()
  assert not glob.glob(os.path.join(d, '*orbax-checkpoint-tmp*'))


def test_failing_final_rename_leaves_previous_checkpoint(tmp_path, monkeypatch):
  d = str(tmp_path / 'ck')
  ckpt = Checkpointer(d, max_to_keep=2)
  ckpt.save(1, {'a': jnp.full(8, 1.0)}, wait=True)
  ckpt.save(2, {'a': jnp.full(8, 2.0)}, wait=True)
  real_rename = os.rename

  def failing_rename(src, dst, *a, **k):
    if os.path.basename(os.fspath(dst)) == '3':
      raise OSError('simulated crash at the final rename')
    return real_rename(src, dst, *a, **k)

  monkeypatch.setattr(os, 'rename', failing_rename)
  with pytest.raises(OSError, match='simulated crash'):
    ckpt.save(3, {'a': jnp.full(8, 3.0)}, wait=True)  # a blocking save reports the failure
  ckpt.save(3, {'a': jnp.full(8, 3.0)}, wait=False)  # a background one fails later...
  step, st, _ = ckpt.restore_latest({'a': jnp.zeros(8)})  # ...and restore_latest does not raise
  assert step == 2 and ckpt.all_steps() == [1, 2]
  np.testing.assert_array_equal(st['a'], np.full(8, 2.0))
  monkeypatch.setattr(os, 'rename', real_rename)
  assert glob.glob(os.path.join(d, '3.orbax-checkpoint-tmp*'))  # what the failed save left behind
  reader = Checkpointer(d, is_primary=False)
  assert reader.all_steps() == [1, 2]
  assert reader.restore_latest({'a': jnp.zeros(8)})[0] == 2
  ckpt.save(4, {'a': jnp.full(8, 4.0)}, wait=True)  # saving works again afterwards
  assert reader.latest_step() == 4
  ckpt.close()
  Checkpointer(d).close()  # a restarted primary removes the failed save's temporary directory
  assert not glob.glob(os.path.join(d, '*orbax-checkpoint-tmp*'))


_WORKER = textwrap.dedent('''
    import sys, jax, jax.numpy as jnp, numpy as np
    from rtrl_rl.io.checkpoint import Checkpointer
    d, n = sys.argv[1], int(sys.argv[2])
    def state(s):
      return {'big': [np.full((n,), s, np.float32) for _ in range(4)], 'key': jax.random.key(s),
              'step': s}
    ckpt = Checkpointer(d, max_to_keep=2)
    r = ckpt.restore_latest(state(0))
    start = 0 if r is None else r[0]
    if r is not None:
      assert all(float(b[0]) == start and float(b[-1]) == start for b in r[1]['big']), 'bad resume'
      assert r[1]['step'] == start and r[2]['frames'] == start * 10
    print('resumed', start, flush=True)
    s = start
    while True:
      s += 1
      ckpt.save(s, state(s), {'frames': s * 10})
      print('saving', s, flush=True)
''')


def _spawn(d, n):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''), JAX_PLATFORMS='cpu')
  return subprocess.Popen(
    [sys.executable, '-c', _WORKER, d, str(n)],
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
    env=env,
  )


def _read_until(proc, prefix, timeout=60):
  t0 = time.time()
  while time.time() - t0 < timeout:
    line = proc.stdout.readline()
    if not line:
      raise RuntimeError(f'worker exited (rc={proc.poll()}) before printing {prefix!r}')
    if line.startswith(prefix):
      return int(line.split()[1])
  raise TimeoutError(prefix)


def _check_restorable(d, n):
  """In this process: the latest restorable step has exactly that step's content."""
  reader = Checkpointer(d, is_primary=False)
  like = {'big': [np.zeros((n,), np.float32) for _ in range(4)], 'key': jax.random.key(0), 'step': 0}
  r = reader.restore_latest(like)
  reader.close()
  assert r is not None
  step, st, meta = r
  assert st['step'] == step and meta == {'frames': step * 10}
  for b in st['big']:
    np.testing.assert_array_equal(b, np.full((n,), step, np.float32))
  assert _bits(st['key']) == _bits(jax.random.key(step))
  return step


def test_sigkill_during_saves_never_leaves_a_broken_latest(tmp_path):
  """A worker saving 4 x 8 MB per step is SIGKILLed (1) while a temporary step directory is being written,
  (2) just after a step is committed (old-step deletion / next save starting), (3) at an arbitrary moment;
  each restart resumes from the latest committed step with its exact content, and counters continue."""
  d, n = str(tmp_path / 'ck'), 2_000_000
  last = 0
  for moment in ('mid_write', 'after_commit', 'arbitrary'):
    proc = _spawn(d, n)
    try:
      resumed = _read_until(proc, 'resumed')
      assert resumed == last  # counters continue from the last committed step
      _read_until(proc, 'saving')
      t0 = time.time()  # kill only once this process has committed a step of its own
      while not [x for x in os.listdir(d) if x.isdigit() and int(x) > last] and time.time() - t0 < 30:
        time.sleep(0.002)
      if moment == 'mid_write':
        caught = False
        t0 = time.time()
        while not caught and time.time() - t0 < 30:
          if glob.glob(os.path.join(d, '*.orbax-checkpoint-tmp*')):
            os.kill(proc.pid, signal.SIGKILL)
            caught = True
          else:
            time.sleep(0.002)
        assert caught, 'never saw a save in progress'
        proc.wait(timeout=30)
        assert glob.glob(os.path.join(d, '*.orbax-checkpoint-tmp*'))  # the kill left a partial save
      elif moment == 'after_commit':
        before = set(os.listdir(d))
        t0 = time.time()
        while time.time() - t0 < 30:
          new = {x for x in set(os.listdir(d)) - before if x.isdigit()}
          if new:
            os.kill(proc.pid, signal.SIGKILL)
            break
          time.sleep(0.002)
      else:
        _read_until(proc, 'saving')
        time.sleep(0.137)
        os.kill(proc.pid, signal.SIGKILL)
      proc.wait(timeout=30)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    previous, last = last, _check_restorable(d, n)
    assert last > previous
  # the final restart resumes from the last restorable step too
  proc = _spawn(d, n)
  try:
    assert _read_until(proc, 'resumed') == last
  finally:
    proc.kill()
    proc.wait()


def test_a_resume_reads_its_checkpoint_once(tmp_path, monkeypatch):
  """newest_intact reads and verifies the step; the restore of that step that follows reuses those
  arrays (a resume validates and restores its checkpoint with one read from disk)."""
  ckpt = Checkpointer(tmp_path / 'c', async_save=False)
  like = {'w': jnp.zeros(16), 'n': jnp.zeros((), jnp.int32)}
  for s in (1, 2):
    ckpt.save(s, {'w': jnp.full(16, float(s)), 'n': jnp.asarray(s, jnp.int32)}, {'updates': s}, wait=True)
  reads = []
  real = Checkpointer._read_stored
  monkeypatch.setattr(
    Checkpointer, '_read_stored', lambda self, step, records: reads.append(step) or real(self, step, records)
  )
  step, meta, damaged = ckpt.newest_intact()
  assert (step, meta['updates'], damaged, reads) == (2, 2, [], [2])
  state, _ = ckpt.restore(2, like)
  assert reads == [2] and float(state['w'][0]) == 2.0 and int(state['n']) == 2
  state, _ = ckpt.restore(2, like)  # once only: a second restore reads again
  assert reads == [2, 2] and float(state['w'][3]) == 2.0
