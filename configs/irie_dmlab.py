"""Irie et al. 2024, DMLab memory tasks: IMPALA with an eLSTM (N=512) on a frozen pre-trained stem.

    --config=configs/irie_dmlab.py:level=rooms_watermaze,mode=rtrl,M=10,stem=/path/stem.msgpack

Levels: rooms_select_nonmatching_object, rooms_watermaze, rooms_keys_doors_puzzle; M in
{10, 50, 100}. The conv stem comes from a TBPTT agent's checkpoint (`stem=`, a flax msgpack of
`{"torso": ...}`) and stays frozen. Needs the `deepmind_lab` module (see `python -m rtrl_rl.envs
--list`). Paper (TBPTT -> RTRL, < 1.2B frames): select_nonmatching M=10 54.5 -> 61.8, M=50 61.4 ->
62.0, M=100 61.7 -> 62.2; watermaze M=10 15.8 -> 40.2, M=50 44.5 -> 52.3, M=100 45.6 -> 54.8.
To pre-train a stem, run with `stem=` empty: the stem then learns by TBPTT within the unroll.
"""

from rtrl_rl import experiment

LEVELS = ("rooms_select_nonmatching_object", "rooms_watermaze", "rooms_keys_doors_puzzle")


def get_config(arg=None):
  args = experiment.parse_args(arg, level="rooms_watermaze", mode="rtrl", M=10, stem="", seed=0)
  c = experiment.base_config("impala")
  c.name = f"irie_dmlab_{args['level']}_{args['mode']}_M{args['M']}"
  c.seed = args["seed"]
  c.env.id = f"dmlab/{args['level']}"
  c.env.options.action_repeat = 4  # 4 engine frames per agent step
  a = c.agent
  a.unroll_length = args["M"]  # M in {10, 50, 100}
  a.batch_size = 32  # rollouts per update
  a.total_env_steps = 300_000_000  # agent steps (x4 frames = 1.2B frames)
  a.network.torso = "impala_resnet"  # 72x96 RGB frames
  a.network.hidden_size = 512  # N
  a.network.use_last_action = True  # IMPALA's core input [features ; reward ; last action]
  if args["stem"]:
    a.network.stem_grad = "frozen"  # DMLab protocol: a pre-trained stem, not updated
    a.network.stem_checkpoint = args["stem"]
  else:
    a.network.stem_grad = "unroll"  # stem pre-training run (TBPTT within the unroll)
  experiment.irie_core(a, args["mode"], "elstm")
  c.system.num_actors = 6
  c.system.envs_per_actor = 8
  return c
