#!/usr/bin/env bash
# slurm-up.sh - seqpipe CI: start a throwaway single-node Slurm cluster (munged + slurmctld +
# slurmd) on localhost, without systemd, for tests.
#
# Needs (Debian 12):  apt-get install -y --no-install-recommends \
#                         slurmctld slurmd slurm-client munge
# Must run as root (slurmd has to be able to run jobs as the submitting user).
#
# Everything (config, munge key/socket, state, spool, logs, pid file) lives under
# $SLURM_CI_DIR; nothing under /etc, /run or /var is used. Clients need
#     export SLURM_CONF=$SLURM_CI_DIR/etc/slurm.conf      (or: . $SLURM_CI_DIR/env.sh)
#
# Idempotent: if the cluster under $SLURM_CI_DIR is already up and the node is idle
# it only prints the env line; if a previous run left stale state it is torn down
# (slurm-down.sh) and started fresh.
#
# Knobs (environment):
#   SLURM_CI_DIR          state dir            (default ${TMPDIR:-/tmp}/slurm-ci)
#   SLURM_CI_CTLD_PORT    slurmctld port       (default 6817)
#   SLURM_CI_SLURMD_PORT  slurmd port          (default 6818)
#   SLURM_CI_CPUS         advertise this many CPUs instead of the real count
#                         (oversubscribe a small CI box; uses config_overrides)
#   SLURM_CI_TIMEOUT      seconds to wait for the node to become idle (default 60)
set -euo pipefail
set +m   # no job control: then `setsid cmd &` execs in place and $! is the daemon's pid

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${SLURM_CI_DIR:-${TMPDIR:-/tmp}/slurm-ci}
CTLD_PORT=${SLURM_CI_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_CI_SLURMD_PORT:-6818}
TIMEOUT=${SLURM_CI_TIMEOUT:-60}
NODE=localhost            # fixed node name: independent of the machine's hostname
CONF=$DIR/etc/slurm.conf
SOCK=$DIR/munge/munge.socket
export SLURM_CONF=$CONF

log() { printf '[slurm-up %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# From the moment we start daemons, any failure tears down what we started.
started=0
cleanup_on_failure() {
  local rc=$?
  if ((rc != 0 && started)); then
    log "startup failed (rc=$rc); last log lines:"
    tail -n 5 "$DIR"/log/*.stdout >&2 2>/dev/null || true
    SLURM_CI_DIR=$DIR "$HERE/slurm-down.sh" >&2 || true
  fi
}
trap cleanup_on_failure EXIT

# port_busy PORT: something (e.g. another cluster) already listens on it
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

[[ $(id -u) == 0 ]] || die "must run as root"
for b in munged munge unmunge slurmctld slurmd sinfo scontrol squeue; do
  command -v "$b" >/dev/null ||
    die "missing $b: apt-get install --no-install-recommends slurmctld slurmd slurm-client munge"
done

# alive PID NAME ARG: PID is a live (non-zombie) process whose argv[0] ends in NAME
# and whose command line mentions ARG (so a recycled pid is never mistaken for ours).
alive() {
  local pid=${1:-} name=$2 arg=$3 state cmd
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z && $state != X ]] || return 1   # kill -0 succeeds on zombies
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ ${cmd%% *} == *"$name" && $cmd == *"$arg"* ]]
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

print_env() {
  echo "export SLURM_CONF=$CONF"
}

# ---- already up? ------------------------------------------------------------
if [[ -f $DIR/pids ]]; then
  # shellcheck disable=SC1091
  . "$DIR/pids"
  if alive "${MUNGED_PID:-}" munged "$SOCK" &&
     alive "${SLURMCTLD_PID:-}" slurmctld "$CONF" &&
     alive "${SLURMD_PID:-}" slurmd "$CONF" &&
     [[ $(node_state) == idle || $(node_state) == mixed || $(node_state) == allocated ]]; then
    log "cluster already up in $DIR (node $(node_state))"
    print_env
    exit 0
  fi
  log "stale or partial cluster in $DIR: tearing it down first"
  SLURM_CI_DIR=$DIR "$HERE/slurm-down.sh" >&2 || true
fi

# ---- fresh directory ----------------------------------------------------------
for p in "$CTLD_PORT" "$SLURMD_PORT"; do
  port_busy "$p" && die "port $p is in use (another slurmctld/slurmd?); set SLURM_CI_CTLD_PORT/SLURM_CI_SLURMD_PORT"
done
if [[ -e $DIR ]]; then
  # refuse to rm -rf something that is not ours
  if [[ -f $CONF ]] || [[ -z $(ls -A "$DIR") ]]; then
    rm -rf "$DIR"
  else
    die "$DIR exists and is not a slurm-ci dir; set SLURM_CI_DIR elsewhere"
  fi
fi
mkdir -p "$DIR"/{etc,munge,state,spool,log,run}
# munged insists the socket directory (and its parents) be executable by all and
# not writable by group/other without the sticky bit -> 0755, never 0777.
chmod 0755 "$DIR" "$DIR/munge"
: >"$DIR/etc/plugstack.conf"   # do not pick up /etc/slurm/plugstack.conf.d

t_start=$(date +%s.%N)
started=1

# ---- munge --------------------------------------------------------------------
if command -v mungekey >/dev/null; then
  mungekey -c -k "$DIR/munge/munge.key"
else
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
fi
chmod 0600 "$DIR/munge/munge.key"   # must be owned by munged's user (root), not group/other readable

# Daemons run in the foreground (-F / -D) in their own session: $! is their pid,
# they survive this script's exit, and a CI runner that kills our process group
# does not take them down. The pids go to $DIR/pids for slurm-down.sh.
setsid munged -F --key-file="$DIR/munge/munge.key" --socket="$SOCK" \
  --pid-file="$DIR/run/munged.pid" --seed-file="$DIR/munge/munged.seed" \
  --log-file="$DIR/log/munged.log" \
  >"$DIR/log/munged.stdout" 2>&1 </dev/null &
echo "MUNGED_PID=$!" >"$DIR/pids"
. "$DIR/pids"

for _ in $(seq 100); do
  munge -S "$SOCK" -n 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 && break
  alive "$MUNGED_PID" munged "$SOCK" || die "munged died"
  sleep 0.1
done
munge -S "$SOCK" -n | unmunge -S "$SOCK" >/dev/null || die "munge round trip failed"

# ---- slurm.conf -----------------------------------------------------------------
# Real topology and memory as slurmd sees it; node name forced to 'localhost'.
hw=$(slurmd -C | head -1)                  # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
hw=${hw#NodeName=* }                       # drop "NodeName=<host> "
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
overrides=
if [[ -n ${SLURM_CI_CPUS:-} ]]; then
  hw="CPUs=$SLURM_CI_CPUS RealMemory=$mem"
  overrides="SlurmdParameters=config_overrides"
fi

cat >"$CONF" <<EOF
# single-node test cluster, generated by slurm-up.sh
ClusterName=ci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
PlugStackConfig=$DIR/etc/plugstack.conf
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups at all: works in containers/VMs whatever their cgroup setup.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd, so no sacct. Finished jobs stay visible to squeue/scontrol for
# MinJobAge seconds; jobcomp/filetxt keeps a permanent one-line-per-job record.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MinJobAge=3600
# Fast turnaround for tests: start submitted jobs on the controller's next 1 s
# tick instead of the default batch_sched_delay of 3 s; SIGKILL 5 s after
# SIGTERM on cancel/timeout. sched/backfill is the default real clusters run.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
KillWait=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
$overrides
NodeName=$NODE NodeHostname=localhost NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# ---- slurmctld + slurmd ------------------------------------------------------------
# -c: do not recover old state. -N: node name (the hostname need not resolve).
setsid slurmctld -D -c -f "$CONF" >"$DIR/log/slurmctld.stdout" 2>&1 </dev/null &
echo "SLURMCTLD_PID=$!" >>"$DIR/pids"
. "$DIR/pids"

for _ in $(seq $((TIMEOUT * 10))); do
  scontrol ping >/dev/null 2>&1 && break
  alive "$SLURMCTLD_PID" slurmctld "$CONF" || die "slurmctld died"
  sleep 0.1
done

setsid slurmd -D -N "$NODE" -f "$CONF" >"$DIR/log/slurmd.stdout" 2>&1 </dev/null &
echo "SLURMD_PID=$!" >>"$DIR/pids"
. "$DIR/pids"

deadline=$(( $(date +%s) + TIMEOUT ))
until [[ $(node_state) == idle ]]; do
  if ! alive "$SLURMD_PID" slurmd "$CONF" || ! alive "$SLURMCTLD_PID" slurmctld "$CONF"; then
    die "a slurm daemon died during startup"
  fi
  if (( $(date +%s) >= deadline )); then
    sinfo -N -l >&2 || true
    die "node not idle after ${TIMEOUT}s"
  fi
  sleep 0.1
done

echo "export SLURM_CONF=$CONF" >"$DIR/env.sh"
t_end=$(date +%s.%N)
log "cluster up in $(awk -v a="$t_start" -v b="$t_end" 'BEGIN{printf "%.2f", b-a}')s: $(sinfo -h -o '%P %D %c cpus %T')"
print_env
