"""The episode counter (`envs.core.episode_step`) shared by the jitted acting step (jax.numpy) and
the actor processes' `EpisodeTracker` (numpy)."""

import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl.envs.core import episode_step

# Two envs, six steps after reset(). Env 0: an episode of 3 actions ends by termination at step 3;
# step 4 is the autoreset (reward 0, first). Env 1: truncated at step 2, reset at step 3, truncated
# again at step 6.
REWARD = [[1.0, -1.0], [2.0, 0.25], [0.5, 0.0], [0.0, 2.0], [3.0, 0.5], [1.0, -0.5]]
TERMINATED = [[0, 0], [0, 0], [1, 0], [0, 0], [0, 0], [0, 0]]
TRUNCATED = [[0, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 1]]
FIRST = [[0, 0], [0, 0], [0, 1], [1, 0], [0, 0], [0, 0]]
# With each step counted: the episode so far (the finished episode's totals where it ended).
WANT_RET = [[1.0, -1.0], [3.0, -0.75], [3.5, 0.0], [0.0, 2.0], [3.0, 2.5], [4.0, 2.0]]
WANT_LEN = [[1, 1], [2, 2], [3, 0], [0, 1], [1, 2], [2, 3]]


def _run(xp, ret_dtype, len_dtype):
  ret, length = xp.zeros(2, ret_dtype), xp.zeros(2, len_dtype)
  prev_ended = xp.zeros(2, bool)  # reset() ends nothing
  rets, lens = [], []
  for t in range(6):
    ended = xp.asarray(TERMINATED[t], bool) | xp.asarray(TRUNCATED[t], bool)
    reward = xp.asarray(REWARD[t], xp.float32)
    (r, n), (ret, length) = episode_step(ret, length, reward, ended, ~prev_ended, xp=xp)
    rets.append(np.asarray(r))
    lens.append(np.asarray(n))
    prev_ended = ended
  return np.stack(rets), np.stack(lens), np.asarray(ret), np.asarray(length)


@pytest.mark.parametrize(
  "xp,ret_dtype,len_dtype",
  [(np, np.float64, np.int64), (jnp, jnp.float32, jnp.int32)],  # the actor processes', the jitted step's
)
def test_episode_step_golden_values(xp, ret_dtype, len_dtype):
  rets, lens, ret, length = _run(xp, ret_dtype, len_dtype)
  np.testing.assert_array_equal(rets, np.asarray(WANT_RET, rets.dtype))
  np.testing.assert_array_equal(lens, WANT_LEN)
  assert rets.dtype == ret_dtype and lens.dtype == len_dtype  # dtypes follow the state's
  np.testing.assert_array_equal(ret, [4.0, 0.0])  # env 1 ended at the last step: zeroed
  np.testing.assert_array_equal(length, [2, 0])
  # the finished episodes, in time order: env 1 (-0.75, 2 actions), env 0 (3.5, 3), env 1 (2.0, 3)
  ended = np.asarray(TERMINATED, bool) | np.asarray(TRUNCATED, bool)
  assert rets[ended].tolist() == [-0.75, 3.5, 2.0] and lens[ended].tolist() == [2, 3, 3]


def test_numpy_and_jax_give_the_same_numbers():
  np_rets, np_lens, _, _ = _run(np, np.float32, np.int32)
  j_rets, j_lens, _, _ = _run(jnp, jnp.float32, jnp.int32)
  np.testing.assert_array_equal(np_rets, j_rets)
  np.testing.assert_array_equal(np_lens, j_lens)


def test_equals_resetting_at_first_under_the_autoreset_contract():
  """Zeroing at an end and counting valid steps (episode_step) equals zeroing at `first` and
  counting every step (what EpisodeTracker did before) on any stream that obeys the next-step
  autoreset: first exactly after an end, with reward 0."""
  rng = np.random.default_rng(0)
  t_len, b = 200, 5
  ended = rng.random((t_len, b)) < 0.15
  first = np.zeros_like(ended)
  for t in range(1, t_len):
    first[t] = ended[t - 1]
    ended[t] &= ~first[t]  # a reset step ends nothing
  reward = np.where(first, 0.0, rng.normal(size=(t_len, b))).astype(np.float32)
  ret, length = np.zeros(b), np.zeros(b, np.int64)
  ret_f, length_f = np.zeros(b), np.zeros(b, np.int64)
  prev_ended = np.zeros(b, bool)
  for t in range(t_len):
    (r, n), (ret, length) = episode_step(ret, length, reward[t], ended[t], ~prev_ended, xp=np)
    ret_f = np.where(first[t], 0.0, ret_f + reward[t])
    length_f = np.where(first[t], 0, length_f + 1)
    np.testing.assert_array_equal(np.where(ended[t], r, 0), np.where(ended[t], ret_f, 0))
    np.testing.assert_array_equal(np.where(ended[t], n, 0), np.where(ended[t], length_f, 0))
    prev_ended = ended[t]
  assert ended.sum() > 50
