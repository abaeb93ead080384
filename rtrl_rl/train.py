"""Train an agent: `python -m rtrl_rl.train --config=configs/<experiment>.py[:variant] [--config.x=v]`.

The run directory (`--run_dir`, default `runs/<config.name>_seed<seed>`) holds the resolved
config, metrics (metrics.jsonl, TensorBoard under tb/), checkpoints and, at the end, a
learning-curve PNG. Restarting on the same directory resumes from its latest checkpoint. Multi-host:
start one process per host with `--config.system.num_processes=N --config.system.process_id=i
--config.system.coordinator_address=host:port` (the SLURM launcher in launch/ sets these).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:arg])",
                                          lock_config=True)
_RUN_DIR = flags.DEFINE_string("run_dir", None, "run directory (default runs/<name>_seed<seed>)")


def default_run_dir(config) -> str:
  return os.path.join("runs", f"{config.name}_seed{config.seed}")


def _exit_now(code: int) -> None:
  """Exit without jax.distributed's shutdown, which waits at a barrier for every process of the run:
  after a process was lost, that wait lasts until the heartbeat timeout and ends in an abort."""
  sys.stdout.flush()
  sys.stderr.flush()
  logging.shutdown()
  os._exit(code)  # pylint: disable=protected-access


def main(argv) -> int:
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every checkpoint step at INFO
  logging.getLogger("rtrl_rl.system.trainer").setLevel(logging.INFO)  # devices used, resumption
  from rtrl_rl import experiment  # pylint: disable=g-import-not-at-top
  from rtrl_rl.agents.impala.config import ConfigError  # pylint: disable=g-import-not-at-top
  from rtrl_rl.system import trainer  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if config is None:
    print("error: --config is required, e.g. --config=configs/default.py", file=sys.stderr)
    return 2
  run_dir = _RUN_DIR.value or default_run_dir(config)
  try:
    trainer.prepare(config)           # validates; joins jax.distributed for multi-host runs
  except (experiment.ExperimentConfigError, ConfigError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from rtrl_rl.envs import MissingDependencyError  # pylint: disable=g-import-not-at-top
  from rtrl_rl.system.actors import NoAcceleratorError  # pylint: disable=g-import-not-at-top
  try:
    summary = trainer.run(config, run_dir, prepared=True)
  except (MissingDependencyError, NoAcceleratorError, trainer.CheckpointMismatch,
          experiment.ExperimentConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except trainer.RunFailed as e:
    print(f"error: {e}", file=sys.stderr)
    if config.system.num_processes > 1:
      _exit_now(1)
    return 1
  print(f"run finished in {run_dir}: {json.dumps(summary)}")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
