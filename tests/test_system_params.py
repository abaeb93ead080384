"""ParamStore: round trip and version rules; a publisher process and two readers (a spawned process
and the test process) racing for a while never observe a torn tree (every element of every leaf
equals the version it was read with) and each reader's versions never decrease."""

import multiprocessing as mp
import time

import numpy as np
import pytest

from rtrl_rl.system.param_store import ParamStore

CTX = mp.get_context("spawn")


def _spec():
  return {
    "torso": {"w": ((256, 1024), np.float32), "b": ((1024,), np.float32)},
    "core": {"nu": ((512, 512), np.float64), "theta": ((300_001,), np.float32)},
    "head": ((7,), np.float32),
  }


def _filled(spec, v):
  def fill(x):
    if isinstance(x, dict):
      return {k: fill(y) for k, y in x.items()}
    return np.full(x[0], v, x[1])

  return fill(spec)


def _leaves(tree):
  if isinstance(tree, dict):
    return [leaf for k in sorted(tree) for leaf in _leaves(tree[k])]
  return [tree]


def _publisher(store, n, started):
  tree = _filled(_spec(), 0)
  started.wait(20)
  for v in range(1, n + 1):
    for leaf in _leaves(tree):
      leaf.fill(v)
    store.publish(tree, v)


def _check_reads(store, last, deadline):
  """Read until version `last`; returns (reads, distinct versions, retries) or raises."""
  into = _filled(_spec(), -1)
  seen, reads, prev = set(), 0, -1
  while True:
    tree, v = store.read(into=into, timeout=20)
    assert tree is into
    reads += 1
    assert v >= prev, f"version went back from {prev} to {v}"
    for leaf in _leaves(tree):
      if not (leaf == v).all():
        raise AssertionError(f"torn read: version {v}, leaf values {np.unique(leaf)[:5]}")
    prev = v
    seen.add(v)
    if v == last:
      return reads, len(seen), store.retries
    if time.monotonic() > deadline:
      raise AssertionError(f"version {last} never seen (latest read {v})")


def _reader(store, last, results):
  try:
    results.put(_check_reads(store, last, time.monotonic() + 30))
  except BaseException as e:  # noqa: BLE001
    results.put(repr(e))


def test_round_trip_versions_and_errors():
  spec = {"a": ((3, 4), np.float32), "b": [((5,), np.float64), ((), np.int32)]}
  with ParamStore(spec, CTX) as store:
    assert store.version() == -1
    assert store.read_if_newer(-1) is None
    with pytest.raises(TimeoutError):
      store.read(timeout=0.05)
    rng = np.random.default_rng(0)
    tree = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": [rng.normal(size=5), 7]}
    store.publish(tree, 3)
    assert store.version() == 3
    got, v = store.read()
    assert v == 3 and got["a"].tobytes() == tree["a"].tobytes()
    assert got["b"][0].tobytes() == tree["b"][0].tobytes() and int(got["b"][1]) == 7
    assert store.read_if_newer(3) is None
    with pytest.raises(ValueError, match="increase"):
      store.publish(tree, 3)
    with pytest.raises(ValueError, match="shape"):
      store.publish({"a": np.zeros((4, 3), np.float32), "b": tree["b"]}, 4)
    tree["a"] += 1
    store.publish(tree, 5)
    into = {"a": np.zeros((3, 4), np.float32), "b": [np.zeros(5), np.zeros((), np.int32)]}
    got, v = store.read_if_newer(3, into=into)
    assert v == 5 and got is into and (into["a"] == tree["a"]).all()
    with pytest.raises(ValueError, match="into"):
      store.read(into={"a": np.zeros((3, 4)), "b": into["b"]})  # wrong dtype


def test_concurrent_publisher_and_readers_never_tear():
  last = 400
  store = ParamStore(_spec(), CTX)
  try:
    started, results = CTX.Event(), CTX.SimpleQueue()
    pub = CTX.Process(target=_publisher, args=(store, last, started))
    rdr = CTX.Process(target=_reader, args=(store, last, results))
    pub.start()
    rdr.start()
    started.set()
    reads, versions, retries = _check_reads(store, last, time.monotonic() + 30)
    pub.join(30)
    rdr.join(30)
    child = results.get()
    assert pub.exitcode == 0 and rdr.exitcode == 0
    assert isinstance(child, tuple), child
    print(
      f"\nparent: {reads} reads, {versions} versions, {retries} retries; "
      f"child: {child[0]} reads, {child[1]} versions, {child[2]} retries"
    )
    assert reads > 10 and child[0] > 10
  finally:
    store.unlink()
