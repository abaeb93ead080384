"""Checkpointer in a real 2-process JAX run (2 CPU devices each, gloo): every process calls `save`, only
process 0 writes and no cross-process barrier is involved; both processes restore the latest step into a
global replicated array with its sharding, bitwise equal."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = r'''
import os, sys, time
pid, port, d = int(sys.argv[1]), sys.argv[2], sys.argv[3]
import jax, numpy as np
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2, process_id=pid)
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.experimental import multihost_utils
from rtrl_rl.io.checkpoint import Checkpointer
mesh = jax.make_mesh((4,), ('data',), devices=jax.devices())
rep = NamedSharding(mesh, P())
w = jax.device_put(np.arange(12, dtype=np.float32).reshape(3, 4) * 1.5, rep)  # global replicated array
assert not w.is_fully_addressable
state = {'w': w, 'key': jax.random.key(7), 'n': 3}
ckpt = Checkpointer(d, max_to_keep=2)
t = time.time()
for s in (1, 2, 3):
  saved = ckpt.save(s, state, {'s': s}, wait=(s == 3))  # every process calls; only process 0 writes
  assert saved == (pid == 0)
multihost_utils.sync_global_devices('saved')
step, st, meta = ckpt.restore_latest(state)
assert step == 3 and meta == {'s': 3}, (step, meta)
assert st['w'].sharding == rep and not st['w'].is_fully_addressable
np.testing.assert_array_equal(np.asarray(st['w'].addressable_data(0)), np.asarray(w.addressable_data(0)))
assert (jax.random.key_data(st['key']) == jax.random.key_data(state['key'])).all() and st['n'] == 3
# a jitted global computation on the restored array works on both processes
tot = jax.jit(lambda x: x.sum(), out_shardings=rep)(st['w'])
print('proc', pid, 'ok', ckpt.all_steps(), float(tot.addressable_data(0)), round(time.time() - t, 2), flush=True)
ckpt.close()
multihost_utils.sync_global_devices('done')
jax.distributed.shutdown()
'''


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_primary_writes_all_restore(tmp_path):
  d, port = str(tmp_path / 'ck'), str(_free_port())
  env = dict(
    os.environ,
    XLA_FLAGS='--xla_force_host_platform_device_count=2',
    JAX_PLATFORMS='cpu',
    PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
  )
  procs = [
    subprocess.Popen(
      [sys.executable, '-c', _WORKER, str(pid), port, d],
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=env,
    )
    for pid in (0, 1)
  ]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=120)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for pid, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, out[-3000:]
    assert f'proc {pid} ok [2, 3] 99.0' in out
  assert sorted(os.listdir(d)) == ['2', '3']
