"""POPGym: the vectorised env reproduces lone popgym envs transition by transition."""
import numpy as np
import popgym.envs as pe
import pytest

from rtrl_rl import envs
from rtrl_rl.envs._popgym import OneHot


def _single_reference(cls, seed, actions):
    """A lone popgym env driven with the package's next-step autoreset contract."""
    env = cls()
    enc = OneHot(env.observation_space)
    buf = np.zeros(enc.dim, np.float32)
    o, _ = env.reset(seed=seed)
    enc(o, buf)
    out = [(buf.copy(), 0.0, False, False, True)]
    done = False
    for a in actions:
        if done:
            o, _ = env.reset()
            r, te, tr, first = 0.0, False, False, True
        else:
            o, r, te, tr, _ = env.step(int(a))
            first = False
        enc(o, buf)
        out.append((buf.copy(), r, te, tr, first))
        done = te or tr
    return out


@pytest.mark.parametrize("task", ["CountRecall-easy", "RepeatFirst-easy", "Concentration-easy",
                                  "Autoencode-easy", "HigherLower-easy", "CountRecall-hard"])
def test_vectorised_equals_single_env(task):
    n, seed, steps = 3, 7, 130
    env = envs.make(f"popgym/{task}", num_envs=n, seed=seed)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.action_space.num_values, (steps, n))
    ts = [env.reset()] + [env.step(actions[t]) for t in range(steps)]
    assert ts[0].obs.shape == (n,) + env.observation_space.shape
    assert ts[0].obs.dtype == np.float32 and ts[1].reward.dtype == np.float32
    cls = getattr(pe, env._envs[0].__class__.__name__)
    n_first = 0
    for i in range(n):
        ref = _single_reference(cls, seed + i, actions[:, i])
        for t, (obs, r, te, tr, first) in enumerate(ref):
            np.testing.assert_array_equal(ts[t].obs[i], obs)
            assert ts[t].reward[i] == np.float32(r)
            assert (ts[t].terminated[i], ts[t].truncated[i], ts[t].first[i]) == (te, tr, first)
            n_first += first
    if task.startswith(("RepeatFirst", "CountRecall-easy", "HigherLower")):
        assert n_first > n  # the rollout crossed episode boundaries


def test_one_hot_encoding_and_seeds():
    env = envs.make("popgym/Autoencode-easy", num_envs=2, seed=0)
    obs = env.reset().obs
    assert env.observation_space.shape == (6,)  # Tuple(Discrete(2), Discrete(4))
    np.testing.assert_array_equal(obs.sum(1), [2.0, 2.0])
    a = envs.make("popgym/CountRecall-easy", 4, seed=3).reset().obs
    b = envs.make("popgym/CountRecall-easy", 4, seed=3).reset().obs
    np.testing.assert_array_equal(a, b)
