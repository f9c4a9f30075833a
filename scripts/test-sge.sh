#!/usr/bin/env bash
# =============================================================================
# scripts/test-sge.sh -- a REAL single-host Sun Grid Engine cell for corral's
# integration tests (Debian's Son of Grid Engine 8.1.9).
#
# Usage (as root, Debian 12, no systemd needed):
#
#   scripts/test-sge.sh start     # install (if needed) + configure + start; idempotent
#   scripts/test-sge.sh stop      # stop qmaster and execd (running jobs are killed)
#   scripts/test-sge.sh restart   # stop + start
#   scripts/test-sge.sh status    # qstat -f; rc 0 iff qmaster answers and the
#                                 #   queue instance all.q@HOST is usable
#   scripts/test-sge.sh logs      # tail the qmaster and execd message files
#
# What `start` does (each step is skipped when already done, so a second
# `start` takes a fraction of a second):
#   1. installs gridengine-master gridengine-exec gridengine-client with
#      apt-get if missing, preseeding debconf (configure automatically, cell
#      "default", master = this host) and keeping the maintainer scripts from
#      starting daemons (policy-rc.d);
#   2. writes host_aliases in the cell's common dir when this host's address
#      reverse-resolves to another name (here vm -> 127.0.0.1 -> localhost),
#      so that SGE sees one name; act_qmaster = this host;
#   3. starts sge_qmaster (ports 6444/6445 from /etc/services; SLURM uses
#      6817-6819 and 17001-17004, so both coexist) with a clean environment;
#   4. configures, only what differs from the wanted state:
#      global config: min_uid/min_gid 0 (root may run jobs), accounting on and
#        flushed at once (accounting_flush_time=0: qacct sees a job as soon as
#        it ends), load_report_time 10 s, login_shells none (job shells do not
#        read root's dotfiles: a job killed at its h_rt while pyenv's rehash ran
#        in ~/.bashrc left a lock that then held every job for 60 s);
#      scheduler: schedule_interval 0:0:1, flush_submit_sec/flush_finish_sec 1;
#      this host as submit and execution host; parallel environment "smp"
#        ($pe_slots: all slots on one host); queue all.q on this host with 4
#        slots, shell /bin/bash, pe_list smp, no load thresholds (the SLURM
#        tests load the 2 CPUs; SGE would otherwise put the queue in alarm);
#   5. starts sge_execd (clean environment: jobs inherit it, nothing of the
#      caller's) and waits until all.q@HOST is usable (clears an error state
#      left by an earlier run).
#
# Timings measured on this 2-CPU VM (gVisor, SGE 8.1.9):
#   start from nothing (apt-get install included) ~10 s; from stopped daemons
#   ~3 s; when already running ~0.6 s (a dozen qconf look-ups); status ~0.2 s;
#   stop ~8-10 s (qmaster takes that long to shut down after qconf -km).
#   qsub returns in 0.05-0.1 s; the job runs 0.1-1.2 s after qsub (the
#   scheduler runs every second); a finished job leaves qstat 0-1 s after it
#   ends, and qacct knows it at once (accounting_flush_time=0).  h_rt is
#   enforced to about a second: a job with h_rt=3 is killed after 3-4 s.
#
# Files: cell in /var/lib/gridengine/default (common/: bootstrap, act_qmaster,
#   host_aliases, accounting), spool in /var/spool/gridengine (qmaster/messages,
#   execd/<host>/messages, spooldb/ = BerkeleyDB).
#
# Safe to re-run after a reboot: stale pid files (dead or reused pids) are
# ignored and /run/gridengine is recreated.
# =============================================================================
set -euo pipefail
# shellcheck source=lib/daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/daemons.sh"

export SGE_ROOT=/var/lib/gridengine
export SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common
SPOOL=/var/spool/gridengine
QMASTER_PID=$SPOOL/qmaster/qmaster.pid
EXECD_SPOOL=$SPOOL/execd
ADMIN=sgeadmin
QUEUE=all.q
SLOTS=4
PACKAGES=(gridengine-master gridengine-exec gridengine-client)
HOST=$(hostname)
# daemons (and so the jobs they start) get this environment, not the caller's
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
    SGE_ROOT="$SGE_ROOT" SGE_CELL="$SGE_CELL")

# ----------------------------------------------------------------------------- helpers
log()  { printf '[test-sge] %s\n' "$*" >&2; }
die()  { printf '[test-sge] ERROR: %s\n' "$*" >&2; exit 1; }

# the execd's message files (its spool dir is named after the name it gave itself)
execd_logs() { compgen -G "$EXECD_SPOOL/*/messages" || true; }
all_logs() { echo "$SPOOL/qmaster/messages" $(execd_logs); }

# quiet CMD...: run CMD (qconf prints "added ..." on stderr); on failure die with its output
quiet() {
    local out
    out=$("$@" 2>&1) || die "$* failed: $out"
}

# wait_for SECONDS "description" CMD...: poll CMD every 0.1 s; on time-out die with the logs
wait_for() {
    local timeout=$1 desc=$2; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            # shellcheck disable=SC2046
            show_log $(all_logs)
            die "timed out after ${timeout}s waiting for: $desc"
        fi
        sleep 0.1
    done
}

# the pid file of the running execd, if any
execd_pidfile() {
    local f
    for f in "$EXECD_SPOOL"/*/execd.pid; do
        pid_alive "$f" sge_execd && { echo "$f"; return 0; }
    done
    return 1
}

# wait_exit PIDFILE SECONDS: wait until the process of PIDFILE has exited
wait_exit() {
    local pid i
    pid=$(pid_of "$1")
    [[ -n $pid ]] || return 0
    for ((i = 0; i < $2 * 10; i++)); do proc_running "$pid" || return 0; sleep 0.1; done
}

# ----------------------------------------------------------------------------- install
ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing missing packages: ${missing[*]}"
    local q name type value
    for q in gridengineconfig:boolean:true gridenginecell:string:$SGE_CELL gridenginemaster:string:$HOST; do
        IFS=: read -r name type value <<<"$q"
        echo "gridengine-common shared/$name $type $value"
    done | debconf-set-selections
    apt-get update -qq
    local prc=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $prc ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod 755 "$prc"; created=1
    fi
    local out=/tmp/test-sge-apt.log
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$out" 2>&1 ||
        { ((created)) && rm -f "$prc"; show_log "$out"; die "apt-get install ${PACKAGES[*]} failed"; }
    ((created)) && rm -f "$prc"
    return 0
}

# the cell: created by gridengine-master's postinst when debconf said "configure
# automatically"; created here otherwise (e.g. packages installed by hand)
ensure_cell() {
    mkdir -p "$COMMON" "$SPOOL/qmaster/job_scripts" "$SPOOL/spooldb" "$EXECD_SPOOL" /run/gridengine
    chown "$ADMIN:$ADMIN" "$SGE_ROOT" "$SGE_ROOT/$SGE_CELL" "$COMMON" "$SPOOL/qmaster" \
        "$SPOOL/qmaster/job_scripts" "$SPOOL/spooldb" "$EXECD_SPOOL" /run/gridengine
    [[ -s $COMMON/bootstrap ]] ||
        install -m0644 -o "$ADMIN" -g "$ADMIN" /usr/share/gridengine/default-bootstrap "$COMMON/bootstrap"
    if [[ ! -e $SPOOL/spooldb/sge ]]; then
        log "initialising the cell's spool database"
        runuser -u "$ADMIN" -- /usr/share/gridengine/scripts/init_cluster \
            "$SGE_ROOT" "$SGE_CELL" "$SPOOL/spooldb" "$ADMIN" >/dev/null || die "init_cluster failed"
    fi
    echo "$HOST" | write_if_changed "$COMMON/act_qmaster" 0644 "$ADMIN:$ADMIN" || true
    # SGE insists that a host's name, resolved forwards then backwards, is the same
    local addr rname
    addr=$(getent hosts "$HOST" | awk '{print $1; exit}')
    [[ -n $addr ]] || die "the host name $HOST does not resolve (add it to /etc/hosts)"
    rname=$(getent hosts "$addr" | awk '{print $2; exit}')
    if [[ -n $rname && $rname != "$HOST" ]]; then
        echo "$HOST $rname" | write_if_changed "$COMMON/host_aliases" 0644 "$ADMIN:$ADMIN" || true
    fi
}

# ----------------------------------------------------------------------------- daemons
qmaster_ok() { timeout 10 qconf -sconf global >/dev/null 2>&1; }

start_qmaster() {
    if pid_alive "$QMASTER_PID" sge_qmaster; then
        wait_for 30 "sge_qmaster to answer" qmaster_ok
        return 0
    fi
    log "starting sge_qmaster"
    "${CLEAN_ENV[@]}" /usr/sbin/sge_qmaster || { show_log "$SPOOL/qmaster/messages"; die "sge_qmaster failed to start"; }
    wait_for 60 "sge_qmaster to answer qconf" qmaster_ok
}

start_execd() {
    execd_pidfile >/dev/null && return 0
    log "starting sge_execd"
    "${CLEAN_ENV[@]}" /usr/sbin/sge_execd || { show_log $(execd_logs); die "sge_execd failed to start"; }
}

# the state letters of queue instance QUEUE@HOST ("" when fine, "-" when unknown)
queue_states() {
    qstat -f -q "$QUEUE@$HOST" 2>/dev/null |
        awk -v q="$QUEUE@$HOST" '$1 == q { print ($6 == "" ? "" : $6); found = 1 } END { if (!found) print "-" }'
}

queue_ok() { [[ -z $(queue_states) ]]; }

wait_queue() {
    local t0=$SECONDS cleared=0 st
    while ! queue_ok; do
        st=$(queue_states)
        # E (error) or d (disabled) left by an earlier run: clear them once
        if ((!cleared)) && [[ $st == *E* || $st == *d* ]]; then
            log "queue $QUEUE@$HOST is in state '$st': clearing it"
            qmod -c "$QUEUE@$HOST" >/dev/null 2>&1 || true
            qmod -e "$QUEUE@$HOST" >/dev/null 2>&1 || true
            cleared=1
        fi
        if ((SECONDS - t0 >= 60)); then
            qstat -f >&2 || true
            # shellcheck disable=SC2046
            show_log $(all_logs)
            die "queue $QUEUE@$HOST is not usable after 60 s (state '$st')"
        fi
        sleep 0.1
    done
}

# ----------------------------------------------------------------------------- configuration
# normalise: join "\"-continued lines, squeeze blanks, drop comments and empty lines
normalise() { sed -e ':a' -e '/\\$/N; s/\\\n[[:space:]]*/ /; ta' | sed -e 's/^#.*//' -e 's/[[:space:]]\+/ /g' -e 's/ $//' -e '/^$/d'; }

# set_keys KEY=VALUE...: rewrite the "KEY value" lines of normalised stdin
set_keys() {
    local script=() kv
    for kv in "$@"; do script+=(-e "s|^${kv%%=*} .*|${kv%%=*} ${kv#*=}|"); done
    sed "${script[@]}"
}

# apply WHAT SHOW_CMD APPLY_OPT [FILE_NAME] KEY=VALUE...: show the object, set the keys,
# and load it back only when something differs
apply() {
    local what=$1 show=$2 opt=$3 name=$4; shift 4
    local dir current wanted
    dir=$(mktemp -d)
    current=$(qconf $show | normalise)
    wanted=$(set_keys "$@" <<<"$current")
    if [[ $current != "$wanted" ]]; then
        log "configuring $what"
        printf '%s\n' "$wanted" >"$dir/$name"
        quiet qconf "$opt" "$dir/$name"
    fi
    rm -rf "$dir"
}

configure() {
    apply "the global configuration" "-sconf global" -Mconf global \
        min_uid=0 min_gid=0 load_report_time=00:00:10 login_shells=none \
        "reporting_params=accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00"
    apply "the scheduler" -ssconf -Msconf sched schedule_interval=0:0:1 flush_submit_sec=1 flush_finish_sec=1
    qconf -ss 2>/dev/null | grep -qx "$HOST" || quiet qconf -as "$HOST"
    local dir
    dir=$(mktemp -d)
    if ! qconf -se "$HOST" >/dev/null 2>&1; then
        log "adding execution host $HOST"
        printf '%s\n' "hostname $HOST" "load_scaling NONE" "complex_values NONE" "user_lists NONE" \
            "xuser_lists NONE" "projects NONE" "xprojects NONE" "usage_scaling NONE" "report_variables NONE" \
            >"$dir/host"
        quiet qconf -Ae "$dir/host"
    fi
    if ! qconf -sp smp >/dev/null 2>&1; then
        log "adding parallel environment smp"
        printf '%s\n' "pe_name smp" "slots 999" "user_lists NONE" "xuser_lists NONE" "start_proc_args NONE" \
            "stop_proc_args NONE" 'allocation_rule $pe_slots' "control_slaves FALSE" "job_is_first_task TRUE" \
            "urgency_slots min" "accounting_summary FALSE" "qsort_args NONE" >"$dir/smp"
        quiet qconf -Ap "$dir/smp"
    fi
    if ! qconf -sq "$QUEUE" >/dev/null 2>&1; then
        log "adding queue $QUEUE"
        # qconf -aq writes its template and calls $EDITOR on it: we copy it out
        printf '#!/bin/sh\ncp "$1" "%s/template"\n' "$dir" >"$dir/copy" && chmod +x "$dir/copy"
        EDITOR=$dir/copy qconf -aq "$QUEUE" >/dev/null 2>&1 || true  # fails on PEs we do not have
        [[ -s $dir/template ]] || die "could not get a queue template from qconf -aq"
        normalise <"$dir/template" | set_keys "hostlist=$HOST" pe_list=smp >"$dir/$QUEUE"
        quiet qconf -Aq "$dir/$QUEUE"
    fi
    rm -rf "$dir"
    apply "queue $QUEUE" "-sq $QUEUE" -Mq "$QUEUE" "hostlist=$HOST" "slots=$SLOTS" pe_list=smp \
        shell=/bin/bash load_thresholds=NONE suspend_thresholds=NONE
}

# ----------------------------------------------------------------------------- commands
cmd_start() {
    local t0=$SECONDS
    [[ $EUID -eq 0 ]] || die "must run as root"
    ensure_packages
    ensure_cell
    start_qmaster
    configure
    start_execd
    wait_queue
    log "cell up: queue $QUEUE@$HOST with $SLOTS slots ($((SECONDS - t0)) s)"
}

cmd_stop() {
    local f
    if pid_alive "$QMASTER_PID" sge_qmaster && qmaster_ok; then
        # -kej: the execd kills its jobs first, so nothing keeps running unseen
        if f=$(execd_pidfile); then
            qconf -kej "$HOST" >/dev/null 2>&1 || true
            wait_exit "$f" 10
        fi
        qconf -km >/dev/null 2>&1 || true
        wait_exit "$QMASTER_PID" 20
    fi
    if f=$(execd_pidfile); then stop_pidfile "$f" sge_execd sge_execd; fi
    stop_pidfile "$QMASTER_PID" sge_qmaster sge_qmaster
    log "stopped"
}

cmd_status() {
    if ! pid_alive "$QMASTER_PID" sge_qmaster || ! qmaster_ok; then
        echo "sge_qmaster: NOT running or not answering"
        return 1
    fi
    qstat -f
    if ! queue_ok; then
        echo "queue $QUEUE@$HOST is not usable (state '$(queue_states)')"
        return 1
    fi
}

usage() {
    sed -n '2,/^# ====/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^====/d' >&2
    exit "${1:-2}"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    logs) show_log $(all_logs) 2>&1 ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
esac
