# scripts/lib/daemons.sh -- shell helpers shared by the test cluster scripts
# (test-cluster.sh for SLURM, test-sge.sh for Grid Engine). Sourced, not run; the
# sourcing script defines log().

# show_log FILE...: print the tail of the given log files (for error messages)
show_log() {
    local f
    for f in "$@"; do
        if [[ -f $f ]]; then
            printf -- '----- last lines of %s -----\n' "$f" >&2
            tail -n 25 "$f" >&2 || true
        else
            printf -- '----- (no log file %s) -----\n' "$f" >&2
        fi
    done
}

# proc_running PID: the process exists and is not a zombie (killed daemons are
# reparented to PID 1, which may reap them late when it is not a real init)
proc_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# pid_alive PIDFILE COMM: true iff PIDFILE holds the pid of a live process whose
# name is COMM (so a pid reused after a reboot is not mistaken for our daemon).
pid_alive() {
    local pidfile=$1 comm=$2 pid c
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile") || return 1
    pid=${pid//[^0-9]/}
    [[ -n $pid ]] || return 1
    c=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $c == "$comm" ]] && proc_running "$pid"
}

# write_if_changed FILE MODE OWNER: stdin -> FILE; returns 0 if content changed
write_if_changed() {
    local file=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        # keep mode/owner right even if unchanged
        chmod "$mode" "$file"; chown "$owner" "$file"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

# pid_of PIDFILE: the pid it holds
pid_of() { local p; p=$(<"$1"); echo "${p//[^0-9]/}"; }

# stop_pidfile PIDFILE COMM NAME [SIGNAL]: signal the process, wait for it to exit
stop_pidfile() {
    local pidfile=$1 comm=$2 name=$3 sig=${4:-TERM} pid i
    if ! pid_alive "$pidfile" "$comm"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(pid_of "$pidfile")
    log "stopping $name (pid $pid, SIG$sig)"
    kill -s "$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do           # up to 20 s
        proc_running "$pid" || break
        sleep 0.2
    done
    if proc_running "$pid"; then
        log "$name did not exit, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$pidfile"
}
