#!/usr/bin/env bash
# slurm-up.sh - bring up the single-node SLURM test cluster on localhost (Debian 12, root, no systemd).
#
# Adapted from shared/reference/slurm-up.sh (tested there): munge, MariaDB + slurmdbd (sacct must work:
# the Snakemake plugin polls job states with it, and the tests read rule names from the job comment),
# slurmctld and slurmd, plus fake GPUs so the profile's --gpus requests can be scheduled.
# Two partitions over the same node, "cpu" (default) and "gpu", so the tests can check in sacct
# that the profile routes each rule to the partition it asks for. The node declares more memory and
# CPUs than the machine has (SlurmdParameters=config_overrides, nothing is enforced without cgroups), so
# the shipped profile's real-cluster requests (32 GB for a GPU job) are scheduled unchanged.
#
# Idempotent: daemons already running are kept; SLURM daemons this script started are restarted only if
# the generated config changed. Every service it starts is listed in $L/run/started-by-slurm-up, and
# slurm-down.sh stops exactly those. Outside $L it touches only Debian packages (apt-get), munge's default
# socket /run/munge/munge.socket.2 (slurmdbd ignores a custom one) and /etc/slurm/slurm.conf (a symlink
# to our config: the jobstep plugin strips SLURM_CONF from its nested srun, which then reads the default path;
# slurm-down.sh removes it and puts back a file FORCE=1 backed up).
#
# Settings (environment variables):
#   SLURM_LAB_DIR  base directory for config, state, logs      [/var/tmp/clipmerge-slurm]
#                  (not under /root: munged and mariadbd run as their own users and must reach it)
#   FAKE_GPUS      GPUs the node declares (gres gpu:fake:N)     [2]
#   CPUS           CPUs the node declares (two 8-thread GPU jobs) [16]
#   MEM_MB         RealMemory the node declares, in MB          [128000]
#   DB_PORT        MariaDB TCP port on 127.0.0.1               [3306]
#   FORCE          1 = replace a foreign /etc/slurm/slurm.conf (it is backed up)   [0]
set -Eeuo pipefail

L=${SLURM_LAB_DIR:-/var/tmp/clipmerge-slurm}
FAKE_GPUS=${FAKE_GPUS:-2}
DB_PORT=${DB_PORT:-3306}
FORCE=${FORCE:-0}
CTLD_PORT=6817 SLURMD_PORT=6818 DBD_PORT=6819

ETC=$L/etc RUN=$L/run LOG=$L/log STATE=$L/state
MANIFEST=$RUN/started-by-slurm-up
CONF=$ETC/slurm.conf
export SLURM_CONF=$CONF

log() { printf '[slurm-up +%3ss] %s\n' "$SECONDS" "$*"; }
die() { printf '[slurm-up] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; printf "[slurm-up] ERROR: command failed (rc=%s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2; exit $rc' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, munge/slurm/mysql users, /etc/slurm symlink)"
[[ $FAKE_GPUS =~ ^[1-9][0-9]*$ ]] || die "FAKE_GPUS must be a positive integer (the profile requests GPUs)"

# ---------------------------------------------------------------- packages
PKGS=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
mkdir -p "$ETC" "$RUN" "$LOG" "$STATE"/{slurmctld,slurmd} "$L/selftest"
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$LOG/apt-update.log" 2>&1 || die "apt-get update failed, see $LOG/apt-update.log"
  # Without systemd the packaged services do not start by themselves; we start our own below.
  apt-get install -y -q --no-install-recommends "${missing[@]}" >"$LOG/apt-install.log" 2>&1 \
    || die "apt-get install failed, see $LOG/apt-install.log"
  log "packages installed"
fi
touch "$MANIFEST"
H=$(hostname -s)
[[ -n $H ]] || die "hostname -s is empty"

# ---------------------------------------------------------------- helpers
alive() {  # alive PIDFILE COMM: the pid in PIDFILE runs COMM (a zombie or a reused pid counts as dead)
  local pf=$1 comm=$2 pid st
  [[ -s $pf ]] || return 1
  pid=$(tr -dc '0-9' 2>/dev/null <"$pf") && [[ -n $pid && -r /proc/$pid/stat ]] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $st != Z && $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]]
}
mark_started() { grep -qx "$1" "$MANIFEST" || echo "$1" >>"$MANIFEST"; }
port_busy() {  # something LISTENs on TCP port $1
  awk -v h=":$(printf '%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
wait_for() {   # wait_for SECONDS CMD...: retry CMD every 0.5 s
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.5
  done
}
spawn() {      # fully detached daemon: new session, stdio to /dev/null, no inherited fds (a caller's pipe would hang)
  (
    cd /
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null || true
    done
    exec setsid -f "$@" </dev/null >/dev/null 2>&1
  )
}
stop_pidfile() {  # only used to restart daemons this script started
  local pf=$1 comm=$2 pid
  alive "$pf" "$comm" || return 0
  pid=$(tr -dc '0-9' <"$pf"); kill "$pid"
  wait_for 30 eval "! alive $pf $comm" || die "$comm (pid $pid) did not stop within 30 s"
}

# ---------------------------------------------------------------- munge
MUNGE_SOCK=/run/munge/munge.socket.2
munge_ok() { munge -n -S "$MUNGE_SOCK" 2>/dev/null | unmunge -S "$MUNGE_SOCK" >/dev/null 2>&1; }
if munge_ok; then
  log "munged already answers on $MUNGE_SOCK - reusing it"
else
  if [[ -S $MUNGE_SOCK ]]; then
    # left behind by a munged that was killed (e.g. with the session that started it): no munged, stale socket
    pgrep -x munged >/dev/null && die "$MUNGE_SOCK exists but its munged does not answer"
    rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  fi
  install -d -o munge -g munge -m 0755 /run/munge "$RUN/munge"
  install -d -o munge -g munge -m 0700 "$STATE/munge"
  [[ -s $STATE/munge/munge.key ]] || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
  chown munge:munge "$STATE/munge/munge.key"; chmod 0400 "$STATE/munge/munge.key"
  touch "$LOG/munged.log"; chown munge:munge "$LOG/munged.log"; chmod 0640 "$LOG/munged.log"
  spawn runuser -u munge -- munged --socket="$MUNGE_SOCK" --key-file="$STATE/munge/munge.key" \
    --log-file="$LOG/munged.log" --pid-file="$RUN/munge/munged.pid" --seed-file="$STATE/munge/munged.seed"
  wait_for 10 munge_ok || die "munged does not answer, see $LOG/munged.log"
  mark_started munged
  log "munged started (pid $(cat "$RUN/munge/munged.pid"))"
fi

# ---------------------------------------------------------------- MariaDB + slurmdbd (sacct)
DB_SOCK=$RUN/mysqld/mysqld.sock
if alive "$RUN/mysqld/mysqld.pid" mariadbd; then
  log "mariadbd already running"
else
  port_busy "$DB_PORT" && die "TCP port $DB_PORT is in use by another process (set DB_PORT)"
  install -d -o mysql -g mysql -m 0750 "$STATE/mysql" "$RUN/mysqld"
  if [[ ! -d $STATE/mysql/mysql ]]; then
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
      --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed, see $LOG/mariadb-install.log"
  fi
  touch "$LOG/mariadb.err"; chown mysql:mysql "$LOG/mariadb.err"
  # a small buffer pool: the accounting DB of a test cluster is tiny and the machine is shared
  spawn mariadbd --user=mysql --datadir="$STATE/mysql" --socket="$DB_SOCK" --pid-file="$RUN/mysqld/mysqld.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$LOG/mariadb.err" --skip-name-resolve \
    --innodb-buffer-pool-size=128M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900
  wait_for 60 mariadb-admin --socket="$DB_SOCK" ping || die "mariadbd did not come up, see $LOG/mariadb.err"
  wait_for 10 test -s "$RUN/mysqld/mysqld.pid" || die "mariadbd wrote no pid file"
  mark_started mariadbd
  log "mariadbd started (pid $(cat "$RUN/mysqld/mysqld.pid"))"
fi
if [[ ! -s $ETC/slurmdbd.conf ]]; then
  (umask 077; cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
StorageLoc=slurm_acct_db
EOF
  )
fi
DBPASS=$(sed -n 's/^StoragePass=//p' "$ETC/slurmdbd.conf")
for host in 127.0.0.1 localhost; do
  mariadb --socket="$DB_SOCK" -e "CREATE USER IF NOT EXISTS 'slurm'@'$host' IDENTIFIED BY '$DBPASS';
    ALTER USER 'slurm'@'$host' IDENTIFIED BY '$DBPASS'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'$host';" \
    || die "could not create the slurm DB user"
done
if alive "$RUN/slurmdbd.pid" slurmdbd; then
  log "slurmdbd already running"
else
  port_busy $DBD_PORT && die "TCP port $DBD_PORT (slurmdbd) is in use by another process"
  spawn slurmdbd   # finds slurmdbd.conf next to $SLURM_CONF
  wait_for 15 alive "$RUN/slurmdbd.pid" slurmdbd || die "slurmdbd did not start, see $LOG/slurmdbd.log"
  wait_for 30 port_busy $DBD_PORT || die "slurmdbd does not listen on $DBD_PORT, see $LOG/slurmdbd.log"
  mark_started slurmdbd
  log "slurmdbd started (pid $(cat "$RUN/slurmdbd.pid"))"
fi

# ---------------------------------------------------------------- slurm.conf + gres.conf
CPUS=${CPUS:-16}
MEM_MB=${MEM_MB:-128000}
[[ $CPUS =~ ^[1-9][0-9]*$ && $MEM_MB =~ ^[1-9][0-9]*$ ]] || die "CPUS and MEM_MB must be positive integers"

# Fake GPUs: character devices equal to /dev/null, enough for slurmd to hand out gres/gpu.
mkdir -p "$L/fakegpu"
for ((i = 0; i < FAKE_GPUS; i++)); do
  [[ -c $L/fakegpu/gpu$i ]] || mknod -m 666 "$L/fakegpu/gpu$i" c 1 3
done
echo "NodeName=$H Name=gpu Type=fake File=$L/fakegpu/gpu[0-$((FAKE_GPUS - 1))]" >"$ETC/gres.conf.new"
cat >"$CONF.new" <<EOF
# generated by tests/slurm/slurm-up.sh - single node cluster on localhost
ClusterName=clipmerge-test
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups here: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# the plugin puts rule_<name>_wildcards_<...> into the job comment: keep it for sacct
AccountingStoreFlags=job_comment
AccountingStorageTRES=gres/gpu
GresTypes=gpu
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that requests no memory gets the whole node's memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# trust the node line below (more CPUs/memory than detected) instead of draining the node
SlurmdParameters=config_overrides
MinJobAge=300
KillWait=10
InactiveLimit=0
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:fake:$FAKE_GPUS State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
changed=0
for f in slurm.conf gres.conf; do
  if cmp -s "$ETC/$f.new" "$ETC/$f"; then rm -f "$ETC/$f.new"; else mv "$ETC/$f.new" "$ETC/$f"; changed=1; fi
done
chmod 644 "$CONF" "$ETC/gres.conf"

if [[ ! -L /etc/slurm/slurm.conf || $(readlink /etc/slurm/slurm.conf) != "$CONF" ]]; then
  if [[ -e /etc/slurm/slurm.conf || -L /etc/slurm/slurm.conf ]]; then
    [[ $FORCE == 1 ]] || die "/etc/slurm/slurm.conf exists and is not our symlink (FORCE=1 backs it up and replaces it)"
    backup="/etc/slurm/slurm.conf.bak.$(date +%s)"
    mv /etc/slurm/slurm.conf "$backup"
    echo "$backup" >"$RUN/slurm-conf-backup"   # slurm-down.sh puts it back
  fi
  mkdir -p /etc/slurm; ln -s "$CONF" /etc/slurm/slurm.conf
fi

# ---------------------------------------------------------------- slurmctld + slurmd
if ((changed)) && grep -qx -e slurmctld -e slurmd "$MANIFEST"; then
  log "config changed - restarting the SLURM daemons this script started"
  grep -qx slurmd "$MANIFEST" && stop_pidfile "$RUN/slurmd.pid" slurmd
  grep -qx slurmctld "$MANIFEST" && stop_pidfile "$RUN/slurmctld.pid" slurmctld
fi
for d in slurmctld slurmd; do
  if alive "$RUN/$d.pid" $d; then
    log "$d already running"
  else
    port=$CTLD_PORT; [[ $d == slurmd ]] && port=$SLURMD_PORT
    port_busy $port && die "TCP port $port ($d) is in use by another process"
    spawn $d
    wait_for 15 alive "$RUN/$d.pid" $d || die "$d did not start, see $LOG/$d.log"
    mark_started $d
    log "$d started (pid $(cat "$RUN/$d.pid"))"
  fi
  [[ $d == slurmctld ]] && { wait_for 30 scontrol ping || die "slurmctld does not answer, see $LOG/slurmctld.log"; }
done

node_state() { sinfo -h -n "$H" -o '%T' 2>/dev/null | head -1; }
node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }
if ! wait_for 30 node_ready; then
  [[ $(node_state) =~ drain|down ]] && scontrol update nodename="$H" state=resume >/dev/null 2>&1
  wait_for 15 node_ready \
    || die "node $H is '$(node_state)': $(scontrol show node "$H" | grep -o 'Reason=.*') (see $LOG/slurmd.log)"
fi
log "node $H is $(node_state): CPUs=$CPUS RealMemory=$MEM_MB gpu:fake:$FAKE_GPUS, partitions cpu (default) + gpu"

# ---------------------------------------------------------------- smoke test: a GPU batch job, seen by sacct
jid=$(sbatch --parsable -p gpu --gpus=1 -t 1 -J slurm-up-selftest -o "$L/selftest/%j.out" --wrap 'echo ok-$SLURM_JOB_ID')
jid=${jid%%;*}
acct_done() { [[ $(sacct -n -X -P -j "$jid" -o State 2>/dev/null) == COMPLETED ]]; }
wait_for 60 acct_done || die "selftest job $jid not COMPLETED in sacct: $(sacct -n -X -P -j "$jid" -o State,Reason 2>&1)"
grep -q "ok-$jid" "$L/selftest/$jid.out" || die "selftest job output missing ($L/selftest/$jid.out)"
log "smoke test ok: job $jid (--gpus=1) COMPLETED and visible in sacct"
log "cluster is up. Logs: $LOG  Config: $CONF (symlinked from /etc/slurm/slurm.conf)"
