"""Run an online prediction experiment until rtrl_rl/train.py runs algo="prediction":

    python -m rtrl_rl.agents.prediction --config=configs/rtu_trace_conditioning.py:cell=rtu_nonlinear \
        [--run_dir=runs/...] [--config.agent.total_env_steps=...]

Writes <run_dir>/config.json, <run_dir>/metrics.jsonl (one record per chunk: chunk_msre,
td_error_sq, steps_per_s; a final record: final_msre, final_msre_normalized, ...), checkpoints and
summary.json, and prints the final MSRE; rerun on the same run_dir to resume (rtrl_rl/system/trainer.py).
"""

from __future__ import annotations

import json
import os

from absl import flags
from ml_collections import config_flags

from rtrl_rl import cli, experiment
from rtrl_rl.agents.prediction import config as config_lib
from rtrl_rl.io.run_dir import RunDirError

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "experiment config (configs/*.py[:arg])", lock_config=True
)
_RUN_DIR = flags.DEFINE_string("run_dir", None, "run directory (default runs/<name>_seed<seed>)")


def main(argv) -> int:
  del argv
  config = _CONFIG.value
  if config is None:
    raise cli.UsageError("--config is required, e.g. --config=configs/rtu_trace_conditioning.py")
  try:
    config_lib.validate_experiment(config)
  except experiment.ConfigError as e:
    return cli.report(e, 2)
  run_dir = _RUN_DIR.value or os.path.join("runs", f"{config.name}_seed{config.seed}")
  cli.check_writable(run_dir, "--run_dir", directory=True)
  from rtrl_rl.system import trainer  # noqa: PLC0415 - start-up time: usage errors before orbax is imported

  os.makedirs(run_dir, exist_ok=True)
  try:
    summary = trainer.run(config, run_dir)  # checkpoints, resume on the same run_dir, SIGTERM
  except (RunDirError, trainer.CheckpointMismatch) as e:
    return cli.report(e, 2)
  except trainer.RunFailed as e:
    return cli.report(e, 1)
  if summary["stopped_early"]:
    print(
      f"stopped at step {summary['steps']}/{config.agent.total_env_steps}; rerun the same command to resume "
      f"-> {run_dir}"
    )
    return 0
  print(
    f"final MSRE {summary['msre']:.5f} (normalized by predicting 0: {summary['msre_normalized']:.4f}; "
    f"last {config.agent.msre_window} steps, {summary['num_seeds']} seed(s), {summary['elapsed_s']:.1f}s) "
    f"-> {run_dir}"
  )
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  cli.run_absl(main, renamed=experiment.renamed_field_error)
