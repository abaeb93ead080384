"""Irie et al. 2024, ProcGen: IMPALA with an eLSTM (N=256) trained by RTRL / TBPTT, or feed-forward.

    --config=configs/irie_procgen.py:game=chaser,distribution=hard,mode=rtrl,M=5

The paper: Chaser (hard, 500 training levels, 200M frames) with M in {5, 50} (RTRL > TBPTT at
M=5, equal at M=50, both > feed-forward), and the memory-mode games dodgeball, heist, maze, miner,
caveflyer, jumper (distribution=memory).
"""

from rtrl_rl import experiment

MEMORY_GAMES = ("dodgeball", "heist", "maze", "miner", "caveflyer", "jumper")


def get_config(arg=None):
  args = experiment.parse_args(
    arg, game="chaser", distribution="hard", mode="rtrl", M=5, num_levels=500, seed=0
  )
  c = experiment.base_config("impala")
  c.name = f"irie_procgen_{args['game']}-{args['distribution']}_{args['mode']}_M{args['M']}"
  c.seed = args["seed"]
  c.env.id = f"procgen/{args['game']}-{args['distribution']}"
  c.env.options.num_levels = args["num_levels"]  # training levels (500 in the paper)
  c.env.options.start_level = 0  # first training level
  a = c.agent
  a.unroll_length = args["M"]  # M in {5, 50}
  a.batch_size = 32  # rollouts per update
  a.total_env_steps = 200_000_000  # frames (no action repeat in ProcGen)
  a.network.torso = "impala_resnet"  # 64x64 RGB frames
  a.network.hidden_size = 256  # N
  a.network.stem_grad = "unroll"
  experiment.irie_core(a, args["mode"], "elstm")
  c.system.num_actors = 6
  c.system.envs_per_actor = 8
  return c
