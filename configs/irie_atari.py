"""Irie et al. 2024, Atari: IMPALA with an eLSTM (N=256) trained by RTRL / TBPTT, or feed-forward.

    --config=configs/irie_atari.py:game=Breakout,mode=rtrl        (mode: rtrl | tbptt | ff)

Games of the paper: Breakout, Gravitar, MsPacman, Qbert, Seaquest; M = 50; 200M agent steps.
Paper's scores (feed-forward / TBPTT / RTRL): Breakout 234/305/275, Gravitar 1084/1269/1670,
MsPacman 3020/3953/3346, Qbert 7746/11298/12484, Seaquest 4640/12401/12862.
"""

from rtrl_rl import experiment

GAMES = ("Breakout", "Gravitar", "MsPacman", "Qbert", "Seaquest")


def get_config(arg=None):
  args = experiment.parse_args(arg, game="Breakout", mode="rtrl", M=50, seed=0)
  c = experiment.base_config("impala")
  c.name = f"irie_atari_{args['game']}_{args['mode']}_M{args['M']}"
  c.seed = args["seed"]
  c.env.id = f"atari/{args['game']}"
  c.env.options.episodic_life = True  # a life loss ends the episode (torchbeast's Atari wrappers)
  c.env.options.fire_reset = True  # press FIRE after reset where the game needs it
  c.env.options.noop_max = 30  # up to 30 no-ops at reset
  a = c.agent
  a.unroll_length = args["M"]  # M = 50 in the paper
  a.batch_size = 32  # rollouts per update
  a.total_env_steps = 200_000_000  # agent steps (x4 frames)
  a.network.torso = "impala_resnet"  # IMPALA deep ResNet [16, 32, 32] -> FC 256
  a.network.hidden_size = 256  # N
  a.network.stem_grad = "unroll"  # the stem learns by TBPTT within the unroll (hybrid)
  experiment.irie_core(a, args["mode"], "elstm")
  c.system.num_actors = 48 // 8  # the paper: 48 actors; here 6 processes x 8 envs
  c.system.envs_per_actor = 8
  return c
