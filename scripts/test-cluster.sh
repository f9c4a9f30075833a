#!/usr/bin/env bash
# =============================================================================
# scripts/test-cluster.sh -- a REAL single-machine SLURM cluster for corral's
# integration tests.
#
# Usage (as root, Debian 12, no systemd needed):
#
#   scripts/test-cluster.sh start          # install (if needed) + start all; idempotent
#   scripts/test-cluster.sh stop           # stop everything this script started
#   scripts/test-cluster.sh restart        # stop + start
#   scripts/test-cluster.sh status         # sinfo; rc 0 iff controller UP and all
#                                          #   4 nodes idle/mixed/allocated
#   scripts/test-cluster.sh stop-node N    # simulate the death of node nN (see below)
#   scripts/test-cluster.sh start-node N   # start slurmd of nN, wait until it is usable
#   scripts/test-cluster.sh restart-node N # stop-node N + start-node N
#   scripts/test-cluster.sh stop-ctld      # stop slurmctld only
#   scripts/test-cluster.sh start-ctld     # start slurmctld only, wait until it answers
#                                          #   and the running slurmds registered
#   scripts/test-cluster.sh logs [NAME]    # tail the logs (NAME: slurmctld, slurmd-n1, ...)
#
# What `start` does (each step is skipped when already done/running, so a
# second `start` takes well under a second):
#   1. installs the Debian packages if missing (slurmctld slurmd slurm-client
#      slurmdbd munge mariadb-server) with apt-get;
#   2. munge: creates /etc/munge/munge.key if missing, starts munged as the
#      munge user;
#   3. MariaDB: starts `mysqld_safe` in the background, creates the database
#      slurm_acct_db and the user 'slurm'@'localhost' (password below);
#   4. slurmdbd (accounting daemon, port 6819) with /etc/slurm/slurmdbd.conf;
#   5. /etc/slurm/slurm.conf: cluster "corral-test", controller on this host
#      (127.0.0.1), 4 nodes n1..n4 (2 CPUs, 4000 MB each), each served by its
#      own slurmd on this host (ports 17001-17004), partition "debug";
#      registers the cluster, account "corral" and user root in slurmdbd;
#   6. slurmctld, waits until `scontrol ping` says UP;
#   7. the 4 slurmds (`slurmd -N nX`), waits until all nodes are idle
#      (DOWN/DRAINED nodes left over from an earlier run are resumed).
#   If /etc/slurm/slurm.conf differs from what this script generates (e.g. a
#   test edited it), it is rewritten and slurmctld + slurmds are restarted.
#
# Timings measured on this 2-CPU VM (SLURM 22.05.8):
#   start, first ever (DB + cluster registration) ~4 s; from fully stopped ~2 s;
#   start when already running ~0.5 s; status ~0.03 s; stop ~5 s.
#   `sbatch --wrap true` -> COMPLETED in squeue: 0.2-0.7 s; an array of 8
#   trivial elements: 0.2-0.5 s.  sacct lags: a new job shows up in sacct
#   1-5 s after sbatch, final states of array elements up to ~5 s after squeue.
#
# Node death (stop-node N): SIGKILLs the slurmd of nN *and* every slurmstepd
# of nN together with the job processes below it, i.e. the jobs on that node
# die with it, like on a real node crash.  slurmctld's pings fail (node shown
# as "allocated*"/"idle*" after ~10 s) and the node is set DOWN ~17-18 s after
# the kill (measured on a 2-CPU VM; see MessageTimeout in slurm.conf below);
# since JobRequeue=0 the jobs running there end in the final state NODE_FAIL
# at that same moment.  `start-node N` makes the node idle again in < 0.1 s
# (ReturnToService=2: a node DOWN for "not responding" returns by itself when
# its slurmd registers again).  Jobs the scheduler starts on the dead node
# before it is DOWN fail to launch and are requeued and run elsewhere.
# restart-node N is a quick node reboot: the node never goes DOWN, but the jobs
# it was running are noticed missing ~20 s later and end NODE_FAIL (ExitCode
# 1:0 instead of 0:0).
#
# Files (all under $CORRAL_CLUSTER_DIR, default /var/lib/corral-test-cluster):
#   log/slurmctld.log  log/slurmd-n1.log .. log/slurmd-n4.log  log/slurmdbd.log
#   log/mariadb.log    (munged logs to /var/log/munge/munged.log)
#   run/*.pid          (slurmctld.pid, slurmd-n1.pid .. slurmd-n4.pid, slurmdbd.pid)
#   state/             (slurmctld StateSaveLocation)
#   spool/slurmd-nX/   (SlurmdSpoolDir of each node)
# Config: /etc/slurm/slurm.conf, /etc/slurm/slurmdbd.conf (overwritten by start).
# MariaDB keeps its data in /var/lib/mysql (Debian default).
#
# Safe to re-run after a reboot: stale pid files (pid dead or reused by another
# program) and a stale munge socket are detected and cleaned up.
# =============================================================================
set -euo pipefail
# shellcheck source=lib/daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/daemons.sh"

BASE=${CORRAL_CLUSTER_DIR:-/var/lib/corral-test-cluster}
LOG=$BASE/log
RUN=$BASE/run
STATE=$BASE/state
SPOOL=$BASE/spool
CLUSTER=corral-test
ACCOUNT=corral
NODES=(n1 n2 n3 n4)
NODE_PORT0=17000            # node nK listens on NODE_PORT0+K
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=corral-test-db-pass # local test cluster only
SLURM_CONF=/etc/slurm/slurm.conf
SLURMDBD_CONF=/etc/slurm/slurmdbd.conf
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
MUNGE_LOG=/var/log/munge/munged.log   # munged runs as munge: keeps its default log
MARIADB_PID=/run/mysqld/mysqld.pid
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

export SLURM_CONF

# ----------------------------------------------------------------------------- helpers
log()  { printf '[test-cluster] %s\n' "$*" >&2; }
die()  { printf '[test-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# wait_for SECONDS "description" "log files (space separated)" CMD...
# Polls CMD every 0.2 s until it succeeds; on timeout prints the log tails and dies.
wait_for() {
    local timeout=$1 desc=$2 logs=$3; shift 3
    local deadline=$((SECONDS + timeout))
    while true; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if ((SECONDS >= deadline)); then
            # shellcheck disable=SC2086
            show_log $logs
            die "timed out after ${timeout}s waiting for: $desc"
        fi
        sleep 0.2
    done
}

node_name() {
    local n=${1:-}
    n=${n#n}
    [[ $n =~ ^[1-4]$ ]] || die "node must be 1..4 (or n1..n4), got '${1:-}'"
    echo "n$n"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ----------------------------------------------------------------------------- packages
ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed'; then
            missing+=("$p")
        fi
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing missing packages: ${missing[*]}"
    apt-get update -qq
    # policy-rc.d 101: do not let the packages' maintainer scripts start daemons
    local prc=/usr/sbin/policy-rc.d created_prc=0
    if [[ ! -e $prc ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod 755 "$prc"; created_prc=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" ||
        { ((created_prc)) && rm -f "$prc"; die "apt-get install failed"; }
    ((created_prc)) && rm -f "$prc"
    return 0
}

ensure_dirs() {
    mkdir -p "$LOG" "$RUN" "$STATE" "$SPOOL" /etc/slurm
    local n
    for n in "${NODES[@]}"; do mkdir -p "$SPOOL/slurmd-$n"; done
    chmod 0755 "$BASE" "$LOG" "$RUN" "$SPOOL"
    chmod 0700 "$STATE"
}

# ----------------------------------------------------------------------------- munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating munge key $MUNGE_KEY"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null 2>&1; then
            rm -f "$MUNGE_KEY"
            mungekey --create --keyfile="$MUNGE_KEY"
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge /etc/munge "$MUNGE_KEY"
    chmod 0700 /etc/munge
    chmod 0400 "$MUNGE_KEY"
    mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 0755 "$MUNGE_RUN"
    chmod 0700 /var/log/munge
    chmod 0711 /var/lib/munge

    if munge_ok; then return 0; fi
    # not answering: remove a stale pid file/socket (e.g. after a reboot)
    if pid_alive "$MUNGE_PID" munged; then
        stop_pidfile "$MUNGE_PID" munged munged
    fi
    rm -f "$MUNGE_PID" "$MUNGE_RUN"/munge.socket.2 "$MUNGE_RUN"/munge.socket.2.lock
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged ||
        { show_log "$MUNGE_LOG"; die "munged failed to start"; }
    touch "$RUN/munged.started"
    wait_for 15 "munged to answer (munge -n | unmunge)" "$MUNGE_LOG" munge_ok
}

stop_munge() {
    [[ -e $RUN/munged.started ]] || return 0   # not started by us
    stop_pidfile "$MUNGE_PID" munged munged
    rm -f "$RUN/munged.started"
}

# ----------------------------------------------------------------------------- mariadb
mariadb_ok() { mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; }
# true when MariaDB answers, or when its mysqld_safe (pid $1) is gone (stop waiting)
mariadb_up_or_dead() { mariadb_ok || ! proc_running "$1"; }

start_mariadb() {
    if ! mariadb_ok; then
        if [[ ! -d /var/lib/mysql/mysql ]]; then
            log "initialising MariaDB data directory"
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG/mariadb-install.log" 2>&1 ||
                { show_log "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
        fi
        mkdir -p /run/mysqld
        chown mysql:mysql /run/mysqld
        # a stale pid file/socket from before a reboot
        if ! pid_alive "$MARIADB_PID" mariadbd && ! pid_alive "$MARIADB_PID" mysqld; then
            rm -f "$MARIADB_PID" /run/mysqld/mysqld.sock
        fi
        touch "$LOG/mariadb.log"
        chown mysql:mysql "$LOG/mariadb.log"   # mariadbd (user mysql) writes it
        log "starting MariaDB (mysqld_safe)"
        setsid mysqld_safe --skip-syslog --log-error="$LOG/mariadb.log" \
            </dev/null >>"$LOG/mysqld_safe.log" 2>&1 &
        echo $! >"$RUN/mysqld_safe.pid"
        touch "$RUN/mariadb.started"
        wait_for 60 "MariaDB to answer mysqladmin ping" "$LOG/mariadb.log $LOG/mysqld_safe.log" \
            mariadb_up_or_dead "$!"
        mariadb_ok || { show_log "$LOG/mariadb.log" "$LOG/mysqld_safe.log"; die "MariaDB died while starting"; }
    fi
    # database + user (idempotent, cheap)
    mysql -uroot <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

stop_mariadb() {
    [[ -e $RUN/mariadb.started ]] || return 0   # not started by us
    if mariadb_ok; then
        log "stopping MariaDB"
        mysqladmin shutdown || true
        local i
        for ((i = 0; i < 100; i++)); do
            pgrep -x mysqld_safe >/dev/null || pgrep -x mariadbd >/dev/null || break
            sleep 0.2
        done
    fi
    rm -f "$RUN/mariadb.started"
}

# ----------------------------------------------------------------------------- slurmdbd
write_slurmdbd_conf() {
    write_if_changed "$SLURMDBD_CONF" 0600 root:root <<EOF
# Generated by corral scripts/test-cluster.sh -- do not edit, it is overwritten.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
}

start_slurmdbd() {
    local changed=0
    write_slurmdbd_conf && changed=1
    if pid_alive "$RUN/slurmdbd.pid" slurmdbd; then
        ((changed)) || return 0
        stop_pidfile "$RUN/slurmdbd.pid" slurmdbd slurmdbd
    fi
    rm -f "$RUN/slurmdbd.pid"
    log "starting slurmdbd"
    slurmdbd || { show_log "$LOG/slurmdbd.log"; die "slurmdbd failed to start"; }
    wait_for 60 "slurmdbd to listen on port 6819" "$LOG/slurmdbd.log" port_open 6819
}

stop_slurmdbd() { stop_pidfile "$RUN/slurmdbd.pid" slurmdbd slurmdbd; }

# ----------------------------------------------------------------------------- slurm.conf
write_slurm_conf() {
    local host
    host=$(hostname -s)
    write_if_changed "$SLURM_CONF" 0644 root:root <<EOF
# Generated by corral scripts/test-cluster.sh -- do not edit, it is overwritten.
# A single-machine test cluster: one slurmctld and four slurmd (n1..n4), all on
# this host, each slurmd on its own port.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
# JobRequeue=0: batch jobs are NOT requeued when their node fails, so a node
# death gives the job the final state NODE_FAIL (the tests rely on this).
JobRequeue=0

SlurmctldPort=6817
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmctldDebug=info
StateSaveLocation=$STATE
# %n = node name: one pid file / spool dir / log per slurmd
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmdSpoolDir=$SPOOL/slurmd-%n
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmdDebug=info

# timers: fast failure detection and quick cleanup for tests
SlurmctldTimeout=30
SlurmdTimeout=10
# MessageTimeout=5 (not 10): slurmctld retries connecting to a dead slurmd for
# MessageTimeout seconds per ping, and a node is only set DOWN by the ping
# cycle *after* the failed one, so detection takes about 3 + 2*(MessageTimeout+1)
# seconds: measured 26-29 s with 10, 17-18 s with 5.
MessageTimeout=5
InactiveLimit=0
KillWait=5
MinJobAge=300
WaitTime=0
MaxArraySize=1001

# scheduling: schedule at submit time (no 'defer'), run the main loop every
# 2 s and backfill every 1 s so pending jobs/array elements start quickly.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1,sched_min_interval=0,batch_sched_delay=0,bf_resolution=1
SelectType=select/cons_tres
# CR_Core_Memory: memory is allocated too, which gives each step the memory limit
# that OverMemoryKill enforces; a job without --mem gets DefMemPerCPU per CPU.
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500

# accounting
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
# OverMemoryKill: a step found using more memory than it asked for (--mem) is
# killed and the job ends OUT_OF_MEMORY; usage is sampled every 2 s.
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/none
MailProg=/bin/true

NodeName=n[1-4] NodeHostname=$host NodeAddr=127.0.0.1 Port=$((NODE_PORT0 + 1))-$((NODE_PORT0 + ${#NODES[@]})) CPUs=2 RealMemory=4000 State=UNKNOWN
# Preemption: jobs of "urgent" (higher PriorityTier) preempt jobs of "debug" on the
# same nodes. A preempted job runs on for GraceTime seconds, then gets SIGTERM and is
# requeued if it may be (--requeue; JobRequeue=0 above) and cancelled otherwise.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=debug Nodes=n[1-4] Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=5
PartitionName=urgent Nodes=n[1-4] MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
}

sacctmgr_setup() {
    if ! sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER in slurmdbd"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
            { show_log "$LOG/slurmdbd.log"; die "sacctmgr add cluster failed"; }
    fi
    if ! sacctmgr -n -P show assoc where cluster="$CLUSTER" account="$ACCOUNT" user=root format=user 2>/dev/null |
        grep -qx root; then
        log "adding account $ACCOUNT and user root"
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" Description="corral tests" Organization=corral \
            >/dev/null 2>&1 || true   # tolerate "already exists"
        sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null 2>&1 || true
        sacctmgr -n -P show assoc where cluster="$CLUSTER" account="$ACCOUNT" user=root format=user |
            grep -qx root || die "could not create the association root/$ACCOUNT"
    fi
}

# ----------------------------------------------------------------------------- slurmctld
ctld_ok() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_ctld() {
    if pid_alive "$RUN/slurmctld.pid" slurmctld; then
        wait_for 30 "slurmctld to answer scontrol ping" "$LOG/slurmctld.log" ctld_ok
        return 0
    fi
    rm -f "$RUN/slurmctld.pid"
    log "starting slurmctld"
    slurmctld || { show_log "$LOG/slurmctld.log"; die "slurmctld failed to start"; }
    wait_for 60 "slurmctld to answer scontrol ping" "$LOG/slurmctld.log" ctld_ok
}

stop_ctld() { stop_pidfile "$RUN/slurmctld.pid" slurmctld slurmctld; }

# ----------------------------------------------------------------------------- slurmd
slurmd_pidfile() { echo "$RUN/slurmd-$1.pid"; }

start_slurmd() {
    local n=$1 pf
    pf=$(slurmd_pidfile "$n")
    pid_alive "$pf" slurmd && return 0
    rm -f "$pf"
    mkdir -p "$SPOOL/slurmd-$n"
    # step sockets left by dead slurmstepds (e.g. after a reboot)
    if [[ -z $(stepd_pids "$n") ]]; then
        find "$SPOOL/slurmd-$n" -maxdepth 1 -type s -delete 2>/dev/null || true
    fi
    log "starting slurmd -N $n"
    slurmd -N "$n" || { show_log "$LOG/slurmd-$n.log"; die "slurmd -N $n failed to start"; }
}

# pids of the slurmstepd processes of node $1 (found by their unix sockets in
# that node's spool directory)
stepd_pids() {
    local n=$1
    ss -xlpn 2>/dev/null | grep -F "$SPOOL/slurmd-$n/" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}

# all descendants of the given pids (children first is not needed: we SIGKILL)
descendants() {
    local p c
    for p in "$@"; do
        for c in $(pgrep -P "$p" 2>/dev/null || true); do
            echo "$c"
            descendants "$c"
        done
    done
}

# kill_node N: SIGKILL slurmd of node N plus its slurmstepds and the job processes
kill_node() {
    local n=$1 pf steps=() procs=()
    pf=$(slurmd_pidfile "$n")
    mapfile -t steps < <(stepd_pids "$n")
    if ((${#steps[@]})); then
        mapfile -t procs < <(descendants "${steps[@]}")
    fi
    if pid_alive "$pf" slurmd; then
        log "killing slurmd of $n (pid $(pid_of "$pf"))"
        kill -KILL "$(pid_of "$pf")" 2>/dev/null || true
    fi
    if ((${#steps[@]})); then
        log "killing ${#steps[@]} slurmstepd(s) of $n and ${#procs[@]} job process(es)"
        kill -KILL "${steps[@]}" "${procs[@]}" 2>/dev/null || true
    fi
    rm -f "$pf"
    # sockets of the dead stepds would make the next slurmd think the steps live
    find "$SPOOL/slurmd-$n" -maxdepth 1 -type s -delete 2>/dev/null || true
}

# stop_slurmd N: orderly stop (SIGTERM) of slurmd, then kill leftover steps
stop_slurmd() {
    local n=$1
    stop_pidfile "$(slurmd_pidfile "$n")" slurmd "slurmd $n"
    local steps=()
    mapfile -t steps < <(stepd_pids "$n")
    if ((${#steps[@]})); then
        kill_node "$n"
    fi
}

# node_states: "name state" lines, one per node
node_states() { timeout 10 sinfo -h -N -o '%N %T' 2>/dev/null | sort -u; }

nodes_usable() {
    local want=("$@") name st w ok=0
    while read -r name st; do
        for w in "${want[@]}"; do
            if [[ $name == "$w" ]]; then
                case $st in idle | mixed | allocated) ok=$((ok + 1)) ;; esac
            fi
        done
    done < <(node_states)
    ((ok == ${#want[@]}))
}

# resume nodes that are DOWN/DRAIN (e.g. from an earlier run) and whose slurmd runs
resume_bad_nodes() {
    local name st
    while read -r name st; do
        case $st in
            down* | drain* | fail*)
                if pid_alive "$(slurmd_pidfile "$name")" slurmd; then
                    log "resuming node $name (state $st)"
                    scontrol update nodename="$name" state=resume 2>/dev/null || true
                fi
                ;;
        esac
    done < <(node_states)
}

wait_nodes() {
    local timeout=$1; shift
    local want=("$@") t0=$SECONDS resumed=0 logs=() n
    local deadline=$((t0 + timeout))
    for n in "${want[@]}"; do logs+=("$LOG/slurmd-$n.log"); done
    while ! nodes_usable "${want[@]}"; do
        # after 3 s, resume nodes still DOWN/DRAINED from an earlier run
        if ((!resumed && SECONDS >= t0 + 3)); then
            resume_bad_nodes; resumed=1
        fi
        if ((SECONDS >= deadline)); then
            node_states >&2 || true
            show_log "${logs[@]}" "$LOG/slurmctld.log"
            die "timed out after ${timeout}s waiting for node(s) ${want[*]} to become idle"
        fi
        sleep 0.2
    done
}

# ----------------------------------------------------------------------------- commands
slurm_running() {
    local n
    pid_alive "$RUN/slurmctld.pid" slurmctld && return 0
    for n in "${NODES[@]}"; do pid_alive "$(slurmd_pidfile "$n")" slurmd && return 0; done
    return 1
}

cmd_start() {
    local t0=$SECONDS n
    [[ $EUID -eq 0 ]] || die "must run as root"
    ensure_packages
    ensure_dirs
    start_munge
    start_mariadb
    start_slurmdbd
    if write_slurm_conf && slurm_running; then
        log "slurm.conf changed: restarting slurmctld and slurmds"
        stop_slurm_daemons
    fi
    sacctmgr_setup
    start_ctld
    for n in "${NODES[@]}"; do start_slurmd "$n"; done
    wait_nodes 60 "${NODES[@]}"
    log "cluster $CLUSTER is up ($((SECONDS - t0)) s)"
}

# stop slurmctld and all slurmds in parallel (slurmctld takes ~3-5 s to exit)
stop_slurm_daemons() {
    local n
    for n in "${NODES[@]}"; do stop_slurmd "$n" & done
    stop_ctld &
    wait
}

cmd_stop() {
    stop_slurm_daemons
    stop_slurmdbd
    stop_mariadb
    stop_munge
    log "stopped"
}

cmd_status() {
    local rc=0
    if ! ctld_ok; then
        echo "slurmctld: NOT responding (scontrol ping)"
        return 1
    fi
    timeout 10 sinfo || rc=1
    if ! nodes_usable "${NODES[@]}"; then
        echo "not all nodes are idle/mixed/allocated:"
        node_states || true
        rc=1
    fi
    return $rc
}

cmd_logs() {
    local name=${1:-}
    if [[ -n $name ]]; then
        tail -n 50 "$LOG/$name.log"
    else
        show_log "$LOG"/*.log 2>&1
    fi
}

usage() {
    local rc=${1:-2}
    sed -n '2,/^# ====/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^====/d' >&2
    exit "$rc"
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        start) cmd_start ;;
        stop) cmd_stop ;;
        restart) cmd_stop; cmd_start ;;
        status) cmd_status ;;
        stop-node) kill_node "$(node_name "${1:-}")" ;;
        start-node)
            local n; n=$(node_name "${1:-}")
            ctld_ok || die "slurmctld is not running (use start)"
            start_slurmd "$n"
            wait_nodes 60 "$n"
            ;;
        restart-node)
            local n; n=$(node_name "${1:-}")
            kill_node "$n"
            start_slurmd "$n"
            wait_nodes 60 "$n"
            ;;
        stop-ctld) stop_ctld ;;
        start-ctld)
            start_ctld
            # nodes are "unknown" until their slurmd re-registers (~3-5 s)
            local n up=()
            for n in "${NODES[@]}"; do
                pid_alive "$(slurmd_pidfile "$n")" slurmd && up+=("$n")
            done
            ((${#up[@]} == 0)) || wait_nodes 60 "${up[@]}"
            ;;
        logs) cmd_logs "$@" ;;
        -h | --help | help) usage 0 ;;
        "") usage ;;
        *) log "unknown command: $cmd"; usage ;;
    esac
}

main "$@"
