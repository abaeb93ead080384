"""Sweeps (launch/): sweep files and --dry_run, status, the SLURM job construction without a
cluster, and a 2-job sweep end to end through submitit's LocalExecutor."""

import json
import os
import pickle
import shlex
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from launch import backends, status, sweep
from rtrl_rl import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS_DIR = os.path.join(ROOT, "launch", "sweeps")
# jobs each sweep file lists (the papers' grids; see the files' docstrings)
EXPECTED_JOBS = {
  "default": 2,
  "irie_atari": 45,
  "irie_procgen": 69,
  "irie_dmlab": 54,
  "rtu_popgym": 375,
  "rtu_mujoco_pomdp": 225,
  "claims_irie_m": 51,  # 2 cores x 2 modes x 4 M x 3 seeds + 3 feed-forward
  "rtu_trace_conditioning": 14,  # 3 RTRL cores + memoryless + GRU and LRU at 5 T each
}
PAPER_CONFIGS = {
  "configs/irie_atari.py",
  "configs/irie_procgen.py",
  "configs/irie_dmlab.py",
  "configs/rtu_popgym.py",
  "configs/rtu_mujoco_pomdp.py",
  "configs/rtu_reacher_pomdp.py",
  "configs/claims_irie_m.py",
  "configs/rtu_trace_conditioning.py",
}


def _sweep_files():
  return sorted(f for f in os.listdir(SWEEPS_DIR) if f.endswith(".py") and not f.startswith("_"))


def _parse_dry_run(text: str) -> list[dict]:
  jobs = []
  for line in text.splitlines():
    if line.startswith("job "):
      jobs.append({"name": line.split(": ", 1)[1]})
    elif line.startswith("  ") and ": " in line and jobs:
      key, value = line.strip().split(": ", 1)
      jobs[-1][key] = value
  return jobs


# -- sweep files and --dry_run -------------------------------------------------------------------------
def test_every_sweep_file_is_covered():
  assert {os.path.splitext(f)[0] for f in _sweep_files()} == set(EXPECTED_JOBS)


@pytest.mark.parametrize("filename", _sweep_files())
def test_dry_run_lists_expected_jobs(filename, capsys, tmp_path):
  path = os.path.join("launch", "sweeps", filename)
  name, runs = sweep.load_sweep(os.path.join(ROOT, path), str(tmp_path))
  assert sweep.main([f"--sweep={os.path.join(ROOT, path)}", "--dry_run", f"--root={tmp_path}"]) == 0
  jobs = _parse_dry_run(capsys.readouterr().out)
  assert len(jobs) == len(runs) == EXPECTED_JOBS[name]
  assert len({j["name"] for j in jobs}) == len(jobs)
  for job, run in zip(jobs, runs):
    argv = shlex.split(job["command"])
    assert argv[1:3] == ["-m", "rtrl_rl.train"]
    assert argv[3] == f"--config={run.config}"
    assert argv[-1] == f"--run_dir={tmp_path}/{name}/{run.name}" == f"--run_dir={job['run_dir']}"
    assert argv[4:-1] == [f"--config.{k}={sweep.format_value(v)}" for k, v in run.overrides]
    assert all(a.startswith("--config.") for a in argv[4:-1])
    # one run per seed, or the seeds vmapped inside the run (online prediction)
    assert "seed" in run.name or "seeds=" in run.config
  # every config a sweep references exists; the paper configs accept the sweep's arguments
  for config in sorted({r.config for r in runs}):
    path, _, arg = config.partition(":")
    assert os.path.exists(os.path.join(ROOT, path)), f"{filename}: {path} does not exist"
    assert path == "configs/default.py" or path in PAPER_CONFIGS
  if name != "default":
    _check_config_args(runs)


def test_popgym_sweep_can_be_pointed_at_any_tasks(tmp_path):
  """`--sweep=<file>:key=value`: the POPGym sweep over other tasks/levels/cores/seeds, or the package
  on the host loop; a bad name fails naming the valid ones."""
  path = os.path.join(SWEEPS_DIR, "rtu_popgym.py")
  name, runs = sweep.load_sweep(
    f"{path}:tasks=Battleship+MineSweeper,levels=hard,cores=rtu_linear,seeds=2", str(tmp_path)
  )
  assert name == "rtu_popgym" and len(runs) == 4
  assert {r.config for r in runs} == {
    f"configs/rtu_popgym.py:task={t},level=hard,core=rtu_linear,seed={s},steps=5000000,gradient=stale,"
    "num_envs=1,env_family=jax"
    for t in ("Battleship", "MineSweeper")
    for s in (0, 1)
  }
  _check_config_args(runs)
  _, runs = sweep.load_sweep(f"{path}:tasks=CountRecall,levels=easy,seeds=1,env_family=numpy", str(tmp_path))
  assert len(runs) == 5 and all(r.config.endswith("env_family=numpy") for r in runs)
  with pytest.raises(sweep.SweepError, match="tasks='Chess'.*VelocityOnlyCartPole"):
    sweep.load_sweep(f"{path}:tasks=Chess", str(tmp_path))
  with pytest.raises(sweep.SweepError, match="expected key=value with key one of"):
    sweep.load_sweep(f"{path}:games=Chess", str(tmp_path))


def test_rtu_sweeps_run_fresh_gradients_for_the_cores_named_and_take_a_budget(tmp_path):
  """The claims' settings (launch/claims/rtu_ppo.py): `fresh=` adds a fresh-gradient run per seed
  for the cores it names only, `steps=` and `num_envs=` reach every run's config."""
  path = os.path.join(SWEEPS_DIR, "rtu_mujoco_pomdp.py")
  arg = "envs=Reacher-POMDP,cores=rtu_linear+gru+ff,fresh=rtu_linear,seeds=2,steps=3000,num_envs=16"
  _, runs = sweep.load_sweep(f"{path}:{arg}", str(tmp_path))
  assert sorted(r.name for r in runs) == sorted(
    f"reacher-pomdp_{c}_seed{s}" for c in ("rtu_linear", "rtu_linear_fresh", "gru", "ff") for s in (0, 1)
  )
  configs = {r.name: experiment.load_config(r.config) for r in runs}
  fresh = configs["reacher-pomdp_rtu_linear_fresh_seed1"]
  assert (fresh.agent.gradient, fresh.seed, fresh.name) == ("fresh", 1, "rtu_reacher_pomdp_rtu_linear_fresh")
  assert {(c.agent.total_env_steps, c.agent.num_envs) for c in configs.values()} == {(3000, 16)}
  assert {c.agent.gradient for n, c in configs.items() if "fresh" not in n} == {"stale"}
  _, runs = sweep.load_sweep(
    os.path.join(SWEEPS_DIR, "rtu_popgym.py") + ":tasks=RepeatFirst,levels=easy,"
    "cores=rtu_nonlinear,fresh=rtu_nonlinear,seeds=1",
    str(tmp_path),
  )
  assert [r.name for r in runs] == [
    "popgym-RepeatFirst-easy_rtu_nonlinear_seed0",
    "popgym-RepeatFirst-easy_rtu_nonlinear_fresh_seed0",
  ]
  with pytest.raises(sweep.SweepError, match=r"fresh='gru'.*\('rtu_linear',\)"):
    sweep.load_sweep(f"{path}:cores=rtu_linear,fresh=gru", str(tmp_path))  # not one of the cores


def _check_config_args(runs):
  """Each distinct config argument builds a config (pure Python), with the right seed."""
  for run in runs:
    arg = run.config.partition(":")[2]
    config = experiment.load_config(run.config)
    for key in run.overrides_dict:
      node = config
      for part in key.split("."):
        assert part in node, f"{run.name}: override {key} is not a config field"
        node = node[part]
    args = dict(kv.split("=") for kv in arg.split(","))
    if "seeds" in args:  # vmapped seeds (configs/rtu_trace_conditioning.py)
      assert config.agent.num_seeds == int(args["seeds"]), run.name
    else:
      assert str(config.seed) == args.get("seed"), (run.name, config.seed)


def test_dry_run_cli_slurm_shows_resources(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.sweep",
      "--sweep=launch/sweeps/irie_atari.py",
      "--backend=slurm",
      "--dry_run",
      f"--root={tmp_path}",
      "--partition=gpu",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr
  jobs = _parse_dry_run(out.stdout)
  assert len(jobs) == 45 and not os.listdir(tmp_path)  # nothing created
  params = json.loads(jobs[0]["sbatch"])
  assert params["gpus_per_node"] == 1 and params["nodes"] == 1 and params["slurm_partition"] == "gpu"
  assert params["slurm_additional_parameters"]["requeue"] is True


def test_grid_helper_and_validation(tmp_path):
  runs = sweep.grid(
    {"env": ["a", "b"], "M": [5, 50]},
    seeds=(0, 1),
    name="{env}_M{M}_seed{seed}",
    config="configs/default.py",
    overrides=lambda p: {"agent.unroll_length": p["M"]},
    where=lambda p: not (p["env"] == "b" and p["M"] == 5),
  )
  assert [r["name"] for r in runs] == [
    "a_M5_seed0",
    "a_M5_seed1",
    "a_M50_seed0",
    "a_M50_seed1",
    "b_M50_seed0",
    "b_M50_seed1",
  ]
  assert runs[0]["overrides"] == {"agent.unroll_length": 5, "seed": 0}
  assert sweep.format_value((64, 64)) == "(64,64)" and sweep.format_value((8,)) == "(8,)"
  with pytest.raises(sweep.SweepError, match="duplicate"):
    sweep.runs_from_dicts([{"name": "x", "config": "c.py"}] * 2, "s", str(tmp_path))
  with pytest.raises(sweep.SweepError, match="unknown keys"):
    sweep.runs_from_dicts([{"name": "x", "config": "c.py", "seeds": 3}], "s", str(tmp_path))
  with pytest.raises(sweep.SweepError, match="set by the launcher"):
    sweep.runs_from_dicts(
      [{"name": "x", "config": "c.py", "overrides": {"system.process_id": 1}}], "s", str(tmp_path)
    )
  with pytest.raises(sweep.SweepError, match="plain directory name"):
    sweep.runs_from_dicts([{"name": "a/b", "config": "c.py"}], "s", str(tmp_path))


# -- status ---------------------------------------------------------------------------------------------
def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(obj if isinstance(obj, str) else json.dumps(obj))


def test_status_states(tmp_path):
  row = '{"frames": 640, "episode_return": 12.5}\n{"frames": 1280, "episode_return": NaN}\n'
  d = {
    s: str(tmp_path / s) for s in ("pending", "queued", "running", "stale", "stopped", "finished", "failed")
  }
  _write(os.path.join(d["queued"], "launch.json"), {"job_id": "7"})
  for s in ("running", "stale", "stopped", "finished", "failed"):
    _write(os.path.join(d[s], "metrics.jsonl"), row)
  old = time.time() - 3600
  for s in ("stale", "stopped", "finished", "failed"):
    os.utime(os.path.join(d[s], "metrics.jsonl"), (old, old))
  _write(os.path.join(d["stopped"], "summary.json"), {"frames": 1280, "stopped_early": True})
  _write(os.path.join(d["finished"], "summary.json"), {"frames": 1280, "stopped_early": False})
  _write(os.path.join(d["failed"], "failed.json"), {"returncode": 1, "log": "x.log"})
  rows = {r["name"]: r for r in status.collect(list(d.values()), stale_s=300)}
  assert {n: r["state"] for n, r in rows.items()} == {s: s for s in d}
  assert rows["running"]["frames"] == 1280 and rows["running"]["episode_return"] == 12.5
  assert rows["queued"]["job_id"] == "7"
  assert status.main([f"--root={tmp_path}"]) == 0


# -- local backend scheduling (fake executor: no processes) ---------------------------------------------
class _FakeJob:
  def __init__(self, running, i):
    self.job_id, self._running, self._polls = str(i), running, 0
    self.paths = type("P", (), {"stdout": f"{i}.out"})()

  def done(self):
    self._polls += 1
    if self._polls > 1 and self in self._running:
      self._running.remove(self)
    return self._polls > 1

  def result(self):
    if self.job_id == "1":
      raise RuntimeError("run exited with code 1")
    return {"frames": 1}


def test_run_local_parallelism_and_devices(tmp_path, monkeypatch):
  log, running = [], []

  class FakeExecutor:
    def __init__(self, group):
      self.group = group

    def submit(self, job):
      assert len(running) < 2  # two device groups: at most 2 at a time
      log.append((job.name, self.group))
      running.append(_FakeJob(running, len(log) - 1))
      return running[-1]

  monkeypatch.setattr(backends, "_local_executor", lambda folder, group, t: FakeExecutor(group))
  runs = sweep.runs_from_dicts(
    [{"name": f"r{i}", "config": "configs/default.py", "resources": {"gpus_per_node": 2}} for i in range(5)],
    "s",
    str(tmp_path),
  )
  results = backends.run_local(
    runs, str(tmp_path / ".submitit"), devices=[0, 1, 2, 3], poll_s=0.0, out=open(os.devnull, "w")
  )
  assert results == {"r0": True, "r1": False, "r2": True, "r3": True, "r4": True}
  assert {g for _, g in log} == {(0, 1), (2, 3)} and len(log) == 5
  assert backends.device_groups(None, 1) == [()] and backends.device_groups([0, 1, 2], 1) == [
    (0,),
    (1,),
    (2,),
  ]
  with pytest.raises(ValueError, match="needs 4 GPUs"):
    backends.device_groups([0, 1], 4)
  launch = json.load(open(os.path.join(runs[0].run_dir, "launch.json")))
  assert launch["backend"] == "local" and launch["devices"] in ([0, 1], [2, 3])


# -- slurm backend without a cluster --------------------------------------------------------------------
def _fake_slurm_bin(tmp_path):
  """`sbatch` that records its script and answers like SLURM; `srun` so submitit sees a cluster."""
  bindir = tmp_path / "bin"
  bindir.mkdir()
  record = tmp_path / "sbatch_calls"
  record.mkdir()
  (bindir / "sbatch").write_text(
    "#!/bin/bash\nn=$(ls " + str(record) + " | wc -l)\ncp \"$1\" " + str(record) + "/$n.sh\n"
    "echo \"Submitted batch job $((4200 + n))\"\n"
  )
  (bindir / "srun").write_text("#!/bin/bash\nexit 0\n")
  for f in ("sbatch", "srun"):
    (bindir / f).chmod((bindir / f).stat().st_mode | stat.S_IEXEC)
  return bindir, record


def test_slurm_parameters():
  p = backends.slurm_parameters(
    {
      "nodes": 2,
      "gpus_per_node": 4,
      "cpus": 32,
      "time_min": 600,
      "partition": "a100",
      "slurm": {"exclusive": True},
    },
    "sw",
    {"account": "rl", "additional": {"mail-type": "END"}},
  )
  assert p["nodes"] == 2 and p["tasks_per_node"] == 1 and p["gpus_per_node"] == 4
  assert p["cpus_per_task"] == 32 and p["timeout_min"] == 600 and p["slurm_partition"] == "a100"
  assert p["slurm_additional_parameters"] == {
    "requeue": True,
    "account": "rl",
    "mail-type": "END",
    "exclusive": True,
  }


def test_slurm_parameters_tasks_per_node_and_signal_delay(tmp_path):
  """`tasks_per_node` and `signal_delay_s` reach sbatch (the delay also bounds the child's stop)."""
  (run,) = sweep.runs_from_dicts(
    [
      {
        "name": "r",
        "config": "configs/default.py",
        "resources": {"tasks_per_node": 4, "gpus_per_node": 8, "signal_delay_s": 90},
      }
    ],
    "s",
    str(tmp_path),
  )
  p = backends.slurm_parameters(run.resources_dict, "s")
  assert p["tasks_per_node"] == 4 and p["gpus_per_node"] == 8 and p["slurm_signal_delay_s"] == 90
  default = backends.slurm_parameters({}, "s")
  assert default["tasks_per_node"] == 1 and default["slurm_signal_delay_s"] == backends.DEFAULT_SIGNAL_DELAY_S
  job = backends.make_job(run)
  assert (job.tasks_per_node, job.gpus_per_node, job.stop_timeout_s) == (4, 8, 60)
  with pytest.raises(sweep.SweepError, match="multiple of"):
    sweep.runs_from_dicts(
      [{"name": "r", "config": "c.py", "resources": {"tasks_per_node": 3, "gpus_per_node": 8}}],
      "s",
      str(tmp_path),
    )
  with pytest.raises(sweep.SweepError, match="tasks_per_node"):
    sweep.runs_from_dicts(
      [{"name": "r", "config": "c.py", "resources": {"tasks_per_node": 0}}], "s", str(tmp_path)
    )


def test_task_gpu_env():
  """Each task of a node keeps its share of the GPUs; a multi-process job names them to JAX
  (jax.distributed.initialize would otherwise keep only GPU #SLURM_LOCALID)."""
  env = backends.task_gpu_env
  assert env(1, 0, 1, 8, "0,1,2,3,4,5,6,7") == {}  # one process: as it is
  assert env(4, 0, 2, 0, None) == {}  # CPU job
  assert env(2, 0, 1, 8, "0,1,2,3,4,5,6,7") == {"JAX_LOCAL_DEVICE_IDS": "0,1,2,3,4,5,6,7"}
  assert env(4, 1, 2, 8, "0,1,2,3,4,5,6,7") == {
    "CUDA_VISIBLE_DEVICES": "4,5,6,7",
    "JAX_LOCAL_DEVICE_IDS": "0,1,2,3",
  }
  assert env(2, 1, 2, 4, None) == {"CUDA_VISIBLE_DEVICES": "2,3", "JAX_LOCAL_DEVICE_IDS": "0,1"}
  assert env(8, 3, 8, 8, "3") == {"JAX_LOCAL_DEVICE_IDS": "0"}  # SLURM bound the task already
  with pytest.raises(ValueError, match="do not split"):
    env(2, 0, 2, 4, "0,1,2")


def test_slurm_submission_arrays_with_fake_sbatch(tmp_path, monkeypatch):
  bindir, record = _fake_slurm_bin(tmp_path)
  monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
  dicts = [
    {
      "name": f"one_seed{s}",
      "config": "configs/default.py",
      "overrides": {"seed": s},
      "resources": {"gpus_per_node": 1, "time_min": 60},
    }
    for s in range(3)
  ]
  dicts.append(
    {
      "name": "multi_seed0",
      "config": "configs/default.py",
      "overrides": {"seed": 0},
      "resources": {"nodes": 2, "gpus_per_node": 8, "time_min": 120, "partition": "big"},
    }
  )
  runs = sweep.runs_from_dicts(dicts, "sw", str(tmp_path / "runs"))
  folder = str(tmp_path / "runs" / "sw" / ".submitit")
  submitted = backends.submit_slurm(runs, folder, sweep="sw", array_parallelism=2)
  scripts = [open(record / f"{i}.sh").read() for i in range(2)]
  array = next(s for s in scripts if "--array" in s)
  multi = next(s for s in scripts if "--nodes=2" in s)
  assert "#SBATCH --array=0-2%2" in array and "#SBATCH --gpus-per-node=1" in array
  assert "#SBATCH --time=60" in array and "#SBATCH --requeue" in array
  assert "#SBATCH --signal=USR2@180" in array and "#SBATCH --ntasks-per-node=1" in array
  assert "#SBATCH --gpus-per-node=8" in multi and "#SBATCH --partition=big" in multi
  assert "--array" not in multi
  ids = {run.name: job_id for run, job_id in submitted}
  assert sorted(ids.values()) == ["4200_0", "4200_1", "4200_2", "4201"] or sorted(ids.values()) == [
    "4200",
    "4201_0",
    "4201_1",
    "4201_2",
  ]
  for run in runs:
    launch = json.load(open(os.path.join(run.run_dir, "launch.json")))
    assert launch["job_id"] == ids[run.name] and launch["backend"] == "slurm"
  # the pickled job each array task will run is the run's TrainJob
  job_id = ids["one_seed1"]
  with open(os.path.join(folder, f"{job_id}_submitted.pkl"), "rb") as f:
    delayed = pickle.load(f)
  assert isinstance(delayed.function, backends.TrainJob)
  assert delayed.function.run_dir == os.path.abspath(runs[1].run_dir)
  assert status.run_state(runs[1].run_dir)["state"] == "queued"


def test_status_reports_a_slurm_job_squeue_still_holds_as_alive(tmp_path, monkeypatch):
  """After SLURM's own requeue the trainer has written summary.json with `stopped_early` while the
  job waits PENDING: not "stopped" (a relaunch would start a second job on the same run directory)."""
  bindir = tmp_path / "bin"
  bindir.mkdir()
  calls = tmp_path / "squeue_calls"
  (bindir / "squeue").write_text(
    "#!/bin/bash\necho \"$*\" >> " + str(calls) + "\n"
    "case \"$*\" in *broken*) echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2;"
    " exit 1;; esac\n"
    "found=0\nfor id in $(echo \"$4\" | tr , ' '); do\n"
    "  case $id in 4242) echo '4242 PENDING'; found=1;; 4300_1) echo '4300_1 RUNNING'; found=1;; esac\n"
    "done\n[ $found = 1 ] || { echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1; }\n"
  )
  (bindir / "squeue").chmod(0o755)
  monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
  old = time.time() - 3600
  dirs = {}
  for name, job in (("requeued", "4242"), ("array", "4300_1"), ("gone", "4243"), ("local", "4242")):
    d = dirs[name] = str(tmp_path / "runs" / name)
    _write(
      os.path.join(d, "launch.json"), {"backend": "local" if name == "local" else "slurm", "job_id": job}
    )
    _write(os.path.join(d, "metrics.jsonl"), '{"frames": 640}\n')
    _write(os.path.join(d, "summary.json"), {"frames": 640, "stopped_early": True})
    os.utime(os.path.join(d, "metrics.jsonl"), (old, old))
  rows = {r["name"]: r for r in status.collect(list(dirs.values()), stale_s=300)}
  assert {n: r["state"] for n, r in rows.items()} == {
    "requeued": "queued",
    "array": "running",
    "gone": "stopped",
    "local": "stopped",
  }
  assert rows["requeued"]["detail"] == "slurm PENDING"
  assert open(calls).read().split() == ["-h", "-r", "-j", "4242,4243,4300_1", "-o", "%i", "%T"]
  assert status.run_state(dirs["requeued"])["state"] == "queued"  # asks squeue by itself
  assert status.run_state(dirs["gone"])["state"] == "stopped"  # left the queue
  assert status.slurm_job_states(["broken"]) is None  # no answer: files decide
  monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
  assert status.slurm_job_states(["4242"]) is None  # no squeue
  assert status.run_state(dirs["requeued"])["state"] == "stopped"


def test_train_job_attempt_counts_slurm_restarts(monkeypatch, tmp_path):
  """SLURM's own requeue reruns the first submission's pickle (attempts=0): SLURM_RESTART_COUNT
  numbers the attempt; submitit's requeue (USR2 -> checkpoint) pickles attempts=1 and SLURM counts
  that restart too: attempt 2 either way."""
  job = backends.TrainJob("r", "configs/default.py:elstm", {}, str(tmp_path / "run"))
  monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
  assert job.next_attempt() == 1
  monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
  assert job.next_attempt() == 2
  job.attempts = 1
  assert job.next_attempt() == 2
  job = pickle.loads(pickle.dumps(job))
  assert job.attempts == 1 and job._stopping is False
  monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
  assert job.next_attempt() == 4


def test_multinode_task_gets_jax_distributed_overrides(monkeypatch, tmp_path):
  env = {
    "SUBMITIT_EXECUTOR": "slurm",
    "SLURM_JOB_ID": "123456",
    "SLURM_NTASKS": "2",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NODEID": "1",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
    "SUBMITIT_FOLDER": str(tmp_path),
  }
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  job = backends.TrainJob("m", "configs/default.py:elstm", {"seed": 3}, str(tmp_path / "run"))
  argv = job.command(job.job_environment())
  port = backends.coordinator_port("123456")
  assert argv[-4:] == [
    f"--config.system.coordinator_address=gpu07:{port}",
    "--config.system.num_processes=2",
    "--config.system.process_id=1",
    f"--run_dir={tmp_path / 'run'}",
  ]
  assert argv[:5] == [
    sys.executable,
    "-m",
    "rtrl_rl.train",
    "--config=configs/default.py:elstm",
    "--config.seed=3",
  ]
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
  assert not any("coordinator" in a for a in job.command(job.job_environment()))


def test_checkpoint_stops_child_and_requeues_same_run(tmp_path):
  """Preemption: checkpoint() SIGTERMs the training child (which saves and exits) and returns a
  submission of the same run (same command, same run dir: it resumes from its checkpoint)."""
  marker = tmp_path / "got_sigterm"
  child = (
    "import signal, sys, time\n"
    f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), sys.exit(0)))\n"
    "print('ready', flush=True)\ntime.sleep(60)\n"
  )
  job = backends.TrainJob("r", "configs/default.py", {"seed": 0}, str(tmp_path / "run"), stop_timeout_s=20)
  job._proc = subprocess.Popen(
    [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, preexec_fn=backends._ignore_usr2
  )
  assert job._proc.stdout.readline().strip() == "ready"
  job._proc.send_signal(signal.SIGUSR2)  # SLURM may signal every process: ignored
  time.sleep(0.2)
  assert job._proc.poll() is None
  delayed = job.checkpoint()
  assert marker.exists() and job._proc.returncode == 0
  assert delayed.function is job and delayed.args == ()
  clone = pickle.loads(pickle.dumps(delayed.function))
  assert clone.command() == job.command() and clone._proc is None


def test_preemption_signal_during_the_wait_stops_child_and_requeues(tmp_path):
  """submitit calls checkpoint() from its USR2 handler in the main thread while __call__ waits for
  the child; both waiting on the Popen deadlocked there (found on a real SLURM: no requeue)."""
  started, stopped = tmp_path / "started", tmp_path / "got_sigterm"
  child = (
    "import signal, sys, time\n"
    f"signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), open({str(stopped)!r}, 'w').close(), "
    "sys.exit(0)))\n"
    f"open({str(started)!r}, 'w').close()\ntime.sleep(60)\n"
  )
  script = tmp_path / "preempt.py"
  script.write_text(
    textwrap.dedent(f"""\
      import os, signal, sys, threading, time
      from launch import backends

      class Job(backends.TrainJob):
        def command(self, job_env=None):
          return [sys.executable, "-c", {child!r}]

      job = Job("r", "configs/default.py", {{}}, {str(tmp_path / "run")!r}, stop_timeout_s=5)

      def handler(signum, frame):                # what submitit's SignalHandler does on USR2
        delayed = job.checkpoint()
        print("requeue", delayed.function is job, job._proc.returncode, flush=True)
        sys.exit(3)

      def preempt():
        while not os.path.exists({str(started)!r}):
          time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)

      signal.signal(signal.SIGUSR2, handler)
      threading.Thread(target=preempt, daemon=True).start()
      job()
      """)
  )
  t0 = time.time()
  out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 3, out.stdout + out.stderr
  assert "requeue True 0" in out.stdout and stopped.exists()
  assert time.time() - t0 < 30  # the child stopped by itself, no kill after 5 s


# -- end to end: a 2-job sweep through submitit's LocalExecutor -----------------------------------------
def run_default_sweep(root: str) -> subprocess.CompletedProcess:
  """Launches launch/sweeps/default.py under `root` (idempotent: finished runs are skipped)."""
  return subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.sweep",
      "--sweep=launch/sweeps/default.py",
      "--backend=local",
      f"--root={root}",
      "--max_parallel=2",
      "--devices=cpu",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )


def default_sweep_root(tmp_path_factory) -> str:
  root = str(tmp_path_factory.getbasetemp() / "default_sweep")
  out = run_default_sweep(root)
  assert out.returncode == 0, out.stdout + out.stderr
  return root


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
  return default_sweep_root(tmp_path_factory)


def test_two_job_sweep_local_end_to_end(sweep_root):
  _, runs = sweep.load_sweep(os.path.join(SWEEPS_DIR, "default.py"), sweep_root)
  assert len(runs) == 2
  for run in runs:
    summary = json.load(open(os.path.join(run.run_dir, "summary.json")))
    assert summary["frames"] >= 3200 and not summary["stopped_early"]
    launch = json.load(open(os.path.join(run.run_dir, "launch.json")))
    assert launch["backend"] == "local"
    assert os.path.exists(backends.job_log(launch["submitit_folder"], launch["job_id"]))
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.sweep",
      "--sweep=launch/sweeps/default.py",
      f"--root={sweep_root}",
      "--status",
      "--json",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  rows = [json.loads(line) for line in out.stdout.splitlines()]
  assert [r["state"] for r in rows] == ["finished", "finished"], out.stdout + out.stderr
  assert all(r["frames"] >= 3200 for r in rows)
  again = run_default_sweep(sweep_root)  # relaunch: both finished, nothing to do
  assert again.returncode == 0 and again.stdout.count("skip ") == 2 and "launched" not in again.stdout
