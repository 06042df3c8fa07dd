#!/usr/bin/env bash
# slurm-down.sh - stop the daemons that slurm-up.sh started, and only those.
#
# Reads $SLURM_LAB_DIR/run/started-by-slurm-up and stops each listed service through its pid file, after
# checking that the pid still belongs to a process of that name. A service slurm-up.sh found already
# running (e.g. someone else's munged) is not listed and is left alone. The /etc/slurm/slurm.conf symlink
# slurm-up.sh made is removed (a file it backed up is put back). Config, state and logs are kept,
# so slurm-up.sh brings the same cluster back in seconds. Jobs still in the queue are cancelled first,
# otherwise their slurmstepd processes would be orphaned.
set -Eeuo pipefail

L=${SLURM_LAB_DIR:-/var/tmp/clipmerge-slurm}
RUN=$L/run
MANIFEST=$RUN/started-by-slurm-up
export SLURM_CONF=$L/etc/slurm.conf

log() { printf '[slurm-down +%3ss] %s\n' "$SECONDS" "$*"; }
die() { printf '[slurm-down] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; printf "[slurm-down] ERROR: command failed (rc=%s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2; exit $rc' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root"
if [[ ! -s $MANIFEST ]]; then
  log "nothing to stop (no services recorded in $MANIFEST)"
  exit 0
fi

pid_of() {  # pid_of PIDFILE COMM: print the pid if it is alive (not a zombie) and named COMM
  local pf=$1 comm=$2 pid st
  [[ -s $pf ]] || return 1
  pid=$(tr -dc '0-9' 2>/dev/null <"$pf") && [[ -n $pid && -r /proc/$pid/stat ]] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $st != Z && $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]] || return 1
  echo "$pid"
}

if grep -qx slurmctld "$MANIFEST" && pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ' || true)
  if [[ -n ${jobs// /} ]]; then
    log "cancelling jobs still in the queue: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs || true
    for _ in $(seq 30); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 1; done
  fi
fi

failed=0
# reverse dependency order
for entry in slurmd:slurmd.pid slurmctld:slurmctld.pid slurmdbd:slurmdbd.pid \
             mariadbd:mysqld/mysqld.pid munged:munge/munged.pid; do
  name=${entry%%:*} pf=$RUN/${entry#*:}
  grep -qx "$name" "$MANIFEST" || continue
  if pid=$(pid_of "$pf" "$name"); then
    log "$name: stopping pid $pid"
    kill -TERM "$pid"
    for _ in $(seq 60); do pid_of "$pf" "$name" >/dev/null || break; sleep 0.5; done
    if pid_of "$pf" "$name" >/dev/null; then
      log "$name: pid $pid still alive after 30 s - sending SIGKILL"
      kill -KILL "$pid" || true
      sleep 1
      if pid_of "$pf" "$name" >/dev/null; then log "$name: pid $pid could not be stopped"; failed=1; continue; fi
    fi
  else
    log "$name: not running (stale or missing pid file $pf)"
  fi
  sed -i "/^$name\$/d" "$MANIFEST"
  rm -f "$pf"   # mariadbd removes its own; slurm daemons and munged may leave theirs
done

((failed == 0)) || die "some daemons could not be stopped (see above)"

# Undo slurm-up.sh's /etc/slurm/slurm.conf symlink: left in place, every later SLURM client (Snakemake's
# slurm plugin at each start included) waits for the stopped controller to time out.
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$SLURM_CONF" ]]; then
  rm /etc/slurm/slurm.conf
  if [[ -s $RUN/slurm-conf-backup && -e $(cat "$RUN/slurm-conf-backup") ]]; then
    mv "$(cat "$RUN/slurm-conf-backup")" /etc/slurm/slurm.conf
    log "restored the /etc/slurm/slurm.conf that slurm-up.sh had backed up"
  else
    log "removed the /etc/slurm/slurm.conf symlink"
  fi
  rm -f "$RUN/slurm-conf-backup"
fi
log "done. Config, state and logs kept under $L"
