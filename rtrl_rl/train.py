"""Train an agent: `python -m rtrl_rl.train --config=configs/<experiment>.py[:variant] [--config.x=v]`.

The run directory (`--run_dir`, default `runs/<config.name>_seed<seed>`) holds the resolved
config, metrics (metrics.jsonl, TensorBoard under tb/), checkpoints and, at the end, a
learning-curve PNG. Restarting on the same directory resumes from its newest intact checkpoint (with the
same config: `--accept_config_changes` accepts others, `--start_over` starts again; see
rtrl_rl/io/run_dir.py). One trainer at a time owns a run directory. Multi-host:
start one process per host with `--config.system.num_processes=N --config.system.process_id=i
--config.system.coordinator_address=host:port` (the SLURM launcher in launch/ sets these).
A mistake in the command (a config that does not load, a --run_dir that cannot be written) ends
with one `error:` message and exit code 2, a failed run with exit code 1 (`--verbose`: tracebacks).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from rtrl_rl import cli, experiment
from rtrl_rl.envs import MissingDependencyError
from rtrl_rl.io.run_dir import RunDirError
from rtrl_rl.system.actors import NoAcceleratorError

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "experiment config file (configs/*.py[:arg])", lock_config=True
)
_RUN_DIR = flags.DEFINE_string("run_dir", None, "run directory (default runs/<name>_seed<seed>)")
_START_OVER = flags.DEFINE_bool(
  "start_over",
  False,
  "start the run over from update 0: its checkpoints, metrics and config are "
  "moved into <run_dir>/set_aside/ (nothing is deleted)",
)
_ACCEPT_CHANGES = flags.DEFINE_bool(
  "accept_config_changes",
  False,
  "resume although the config differs from the one the newest "
  "checkpoint was written with; the changes are recorded in <run_dir>/config_changes.jsonl",
)


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
  config = _CONFIG.value
  if config is None:
    raise cli.UsageError("--config is required, e.g. --config=configs/default.py")
  run_dir = _RUN_DIR.value or default_run_dir(config)
  cli.check_writable(run_dir, "--run_dir", directory=True)
  from rtrl_rl.system import trainer  # noqa: PLC0415 - start-up time: usage errors before jax is imported

  try:
    trainer.prepare(config)  # validates; joins jax.distributed for multi-host runs
  except ValueError as e:  # experiment.ConfigError (the experiment's or the agent's): names the fields
    return cli.report(e, 2)
  try:
    summary = trainer.run(
      config,
      run_dir,
      prepared=True,
      start_over=_START_OVER.value,
      accept_config_changes=_ACCEPT_CHANGES.value,
    )
  except (
    MissingDependencyError,
    NoAcceleratorError,
    RunDirError,
    trainer.CheckpointMismatch,
    experiment.ConfigError,
  ) as e:
    return cli.report(e, 2)
  except trainer.RunFailed as e:
    code = cli.report(e, 1)
    if config.system.num_processes > 1:
      _exit_now(code)
    return code
  if summary.get("already_finished"):
    print(
      f"the run in {run_dir} had finished already (update {summary.get('updates')}); nothing to "
      "do and nothing was changed. To train it further, raise its budget (e.g. "
      "--config.agent.total_env_steps) and pass --accept_config_changes"
    )
  print(f"run finished in {run_dir}: {json.dumps(summary)}")
  return 0


if __name__ == "__main__":
  cli.run_absl(main, renamed=experiment.renamed_field_error)
