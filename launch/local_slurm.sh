#!/usr/bin/env bash
# A private SLURM cluster on this machine (localhost), without systemd: two nodes (two slurmd on
# localhost) by default, so that multi-node sweeps can be tried too, or one (LOCAL_SLURM_NODES=1).
#
#   bash launch/local_slurm.sh start     # install if missing (root + apt), configure, start, wait for the nodes
#   eval "$(bash launch/local_slurm.sh env)"   # export SLURM_CONF for sbatch/squeue/sinfo/scancel
#   python -m launch.sweep --sweep=launch/sweeps/default.py --backend=slurm --root=/tmp/sweeps
#   python -m launch.sweep --sweep=launch/sweeps/default.py --root=/tmp/sweeps --status
#   bash launch/local_slurm.sh status    # daemons, sinfo, squeue
#   bash launch/local_slurm.sh stop      # cancel this cluster's jobs, stop the daemons
#
# What it is for: trying a sweep with the real SLURM backend (sbatch job arrays, srun tasks, signals,
# requeue) before going to a real cluster; `make test-slurm` runs tests/test_launch_slurm.py on it.
#
# What `start` does:
#   * installs the Debian packages slurmctld, slurmd, slurm-client and munge when `slurmctld` is
#     missing (needs root and apt-get; otherwise it says what to install). The packages' own
#     services are not used (their init scripts do not run without an init system).
#   * writes everything under $LOCAL_SLURM_DIR (default /tmp/rtrl-local-slurm): a fresh MUNGE key and
#     munged on a private socket (munge/), slurm.conf, the controller state, the slurmd spools, pid
#     and log files (log/slurmctld.log, log/slurmd-<node>.log, log/munged.log).
#   * slurm.conf: nodes with the CPUs and memory `slurmd -C` reports, all at address 127.0.0.1, in
#     one default partition `local`. Node names must resolve (a multi-node job's first node name is
#     its jax.distributed coordinator): the first node is this host (`hostname -s`), the second
#     `localhost`; with two nodes the machine's CPUs are offered twice (SlurmdParameters=
#     config_overrides; fine for trying things, not for measuring). One slurmd per node (`slurmd -N`;
#     Debian's build allows several on one host), each on its own port. ProctrackType=
#     proctrack/linuxproc, TaskPlugin=task/none, JobAcctGatherType=jobacct_gather/none, no accounting
#     database, no cgroups (none of them needs systemd); SelectType=select/cons_tres with CR_CPU;
#     SlurmUser=root; ports $LOCAL_SLURM_PORT (slurmctld, default 16817) and the next ones (slurmd),
#     away from the defaults of a real installation. No GPUs (no gres). A requeued job starts again
#     ~11 s after the requeue (AuthInfo cred_expire=10; SLURM's default makes it wait ~2 min).
#     KillWait=30 (SLURM's default): SIGTERM -> SIGKILL delay of a requeue / preemption / time
#     limit, the time the trainer has for its final checkpoint (~1 s for the tests' small runs).
#   * starts munged, slurmctld and the slurmd as daemons and waits (up to 60 s) until `sinfo` shows
#     every node idle. `start` on a running cluster only waits for the nodes.
# The client commands find this cluster through SLURM_CONF=$LOCAL_SLURM_DIR/slurm.conf (`env`).
set -euo pipefail

DIR="${LOCAL_SLURM_DIR:-/tmp/rtrl-local-slurm}"
PORT="${LOCAL_SLURM_PORT:-16817}"
CONF="$DIR/slurm.conf"
SOCKET="$DIR/munge/munge.socket"
NODES="$(hostname -s)"
if [ "${LOCAL_SLURM_NODES:-2}" = 2 ] && [ "$NODES" != localhost ] && getent hosts localhost >/dev/null; then
  NODES="$NODES localhost"
fi
PACKAGES="slurmctld slurmd slurm-client munge"
export SLURM_CONF="$CONF"

log() { echo "local_slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_alive() {  # pid file -> true when its process runs
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return 0
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
    die "SLURM is not installed; as root on Debian/Ubuntu: apt-get install $PACKAGES"
  fi
  log "installing $PACKAGES"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
}

write_config() {
  local hw cpus mem
  hw="$(slurmd -C | head -1)"
  cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
  mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
  [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs / RealMemory from 'slurmd -C': $hw"
  local node port=$((PORT + 1)) nodelines="" names=""
  for node in $NODES; do
    nodelines+="NodeName=$node NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=$port CPUs=$cpus RealMemory=$mem State=UNKNOWN"$'\n'
    names+="${names:+,}$node"
    port=$((port + 1))
  done
  cat >"$CONF" <<EOF
# written by launch/local_slurm.sh: a private cluster on localhost
ClusterName=rtrllocal
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
PlugStackConfig=$DIR/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=30
MinJobAge=600
${nodelines}PartitionName=local Nodes=$names Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$DIR/plugstack.conf"
}

start_munge() {
  pid_alive "$DIR/run/munged.pid" && return 0
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 0600 "$DIR/munge/munge.key"
  munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
    || die "munged did not start; see $DIR/log/munged.log"
}

conf_nodes() {  # the node names of the written slurm.conf (a running cluster keeps its own)
  sed -n 's/^NodeName=\([^ ]*\) .*/\1/p' "$CONF"
}

wait_idle() {
  local deadline=$((SECONDS + 60)) node state="" ready
  while [ $SECONDS -lt $deadline ]; do
    ready=1
    for node in $(conf_nodes); do
      state="$(sinfo -h -n "$node" -o %T 2>/dev/null | head -1 || true)"
      case "$state" in
        idle|mixed|allocated|completing) ;;
        down*|drain*) ready=0; scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
        *) ready=0 ;;
      esac
    done
    if [ $ready = 1 ]; then
      log "nodes $(conf_nodes | tr '\n' ' ')up (SLURM_CONF=$CONF)"; return 0
    fi
    sleep 1
  done
  die "node $node is not idle after 60 s (state '${state:-no answer}'); see $DIR/log/slurmctld.log and $DIR/log/slurmd-$node.log"
}

cmd_start() {
  install_packages
  mkdir -p "$DIR"/{munge,state,spool,run,log}
  chmod 0700 "$DIR" "$DIR/munge"
  if ! pid_alive "$DIR/run/slurmctld.pid"; then
    write_config
  fi
  start_munge
  if ! pid_alive "$DIR/run/slurmctld.pid"; then
    slurmctld -f "$CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
  fi
  local node
  for node in $(conf_nodes); do
    if ! pid_alive "$DIR/run/slurmd-$node.pid"; then
      mkdir -p "$DIR/spool/$node"
      slurmd -f "$CONF" -N "$node" || die "slurmd -N $node did not start; see $DIR/log/slurmd-$node.log"
    fi
  done
  wait_idle
}

stop_pidfile() {  # pid file, name: SIGTERM, then SIGKILL after 15 s
  local f="$1" pid
  pid_alive "$f" || { rm -f "$f"; return 0; }
  pid="$(cat "$f")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$2 ($pid) ignored SIGTERM: SIGKILL"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$f"
}

cmd_stop() {
  [ -d "$DIR" ] || { log "not running ($DIR does not exist)"; return 0; }
  if pid_alive "$DIR/run/slurmctld.pid"; then
    local jobs
    jobs="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')"
    if [ -n "${jobs// }" ]; then
      log "cancelling jobs $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 30); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 1; done
    fi
  fi
  local f
  for f in "$DIR"/run/slurmd-*.pid; do
    [ -e "$f" ] && stop_pidfile "$f" "$(basename "$f" .pid)"
  done
  stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
  stop_pidfile "$DIR/run/munged.pid" munged
  if pgrep -x slurmstepd >/dev/null; then
    log "warning: slurmstepd processes remain (jobs that did not end): $(pgrep -x slurmstepd | tr '\n' ' ')"
  fi
  log "stopped (state kept in $DIR)"
}

cmd_status() {
  local name rc=0
  for name in munged slurmctld $( [ -f "$CONF" ] && conf_nodes | sed 's/^/slurmd-/'); do
    if pid_alive "$DIR/run/$name.pid"; then echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"
    else echo "$name: not running"; rc=1; fi
  done
  if [ $rc = 0 ]; then
    echo "SLURM_CONF=$CONF"
    sinfo
    squeue
  fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env   (state in \$LOCAL_SLURM_DIR, default /tmp/rtrl-local-slurm)" >&2; exit 2 ;;
esac
