"""The default job (`make train`): IMPALA with an RTRL eLSTM on CartPole with velocities hidden.

The observation holds the cart position and the pole angle only, so the policy must infer the
velocities from its history: a memory task a feed-forward agent cannot solve (BUILD_NOTES.md gives
both agents' returns over the last 100 episodes). About 2 minutes on 2 idle CPU cores.

    python -m rtrl_rl.train --config=configs/default.py            # RTRL eLSTM
    python -m rtrl_rl.train --config=configs/default.py:ff         # the feed-forward baseline
    python -m rtrl_rl.train --config=configs/default.py:rtu        # an RTRL RTU core
"""

from rtrl_rl import experiment


def get_config(variant: str = "elstm"):
  c = experiment.base_config("impala")
  c.name = f"default_{variant}"
  c.env.id = "memory/cartpole-masked"
  a = c.agent
  a.unroll_length = 20  # M
  a.batch_size = 32  # rollouts per update = num_actors x envs_per_actor
  a.total_env_steps = 8_000_000  # agent steps of the run (lr decays linearly to 0 over them)
  a.learning_rate = 1e-3
  a.reduction = "mean"  # loss averaged over time and batch
  a.entropy_cost = 0.01
  a.network.torso = "mlp"
  a.network.mlp_hidden_sizes = (64,)
  a.network.mlp_activation = "tanh"
  a.network.hidden_size = 64
  a.network.use_last_action = False  # no last-action input: it would be a 1-bit memory for "ff"
  if variant == "ff":
    a.network.cell = None
  elif variant in ("elstm", "rtu", "lru"):
    a.network.cell = variant
    a.network.core_mode = "rtrl"
  else:
    raise ValueError(f"configs/default.py: unknown variant {variant!r}; expected elstm, rtu, lru or ff")
  s = c.system
  s.num_actors = 2
  s.envs_per_actor = 16
  s.records_per_pool = 4  # the policy steps 4 x 16 envs per call: ~1.6x the throughput
  s.log_every_s = 10.0
  return c
