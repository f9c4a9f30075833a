#!/usr/bin/env bash
# =============================================================================
# scripts/test-sshd.sh -- a REAL loopback "login node" for corral's remote tests:
# two OpenSSH servers on 127.0.0.1, a key-only non-root user who can submit to the
# test SLURM cluster, and that user's own venv with this checkout's corral.
#
# Usage (as root, Debian 12, no systemd needed):
#
#   scripts/test-sshd.sh start    # install (if needed) + configure + start; idempotent
#   scripts/test-sshd.sh stop     # stop both sshd
#   scripts/test-sshd.sh status   # rc 0 iff both answer and the login works
#   scripts/test-sshd.sh env      # print the shell variables the tests read
#
# What `start` sets up (each step skipped when already done):
#   1. Debian's openssh-server and python3-venv, installed with apt-get if missing
#      (policy-rc.d keeps the package from starting the system's sshd; port 22 and
#      /etc/ssh are left alone);
#   2. the user $REMOTE_USER (home /home/$REMOTE_USER, password field `*`: no
#      password, not locked, so that key logins work with UsePAM no);
#   3. in $STATE (root's, 0755): an ed25519 host key, the client key of the "laptop"
#      account (root), the sshd configs and logs, and the client files the tests use:
#      known_hosts (both servers' keys, as [127.0.0.1]:PORT) and ssh_config with the
#      aliases `corral-login` (port $LOGIN_PORT), `corral-jump` (port $JUMP_PORT) and
#      `corral-behind` (the login node again, reached with ProxyJump corral-jump);
#   4. the login sshd on $LOGIN_PORT and the jump sshd on $JUMP_PORT, both
#      `LogLevel VERBOSE` (one "Accepted publickey for USER" line per
#      authentication, which tests count), StrictModes yes, keys only;
#   5. the remote user's venv (~/venv, Debian's /usr/bin/python3, the same minor as
#      the client's) with corral installed from a wheel of this checkout: pip cannot
#      install a tree the remote user cannot write (setuptools writes egg-info), and
#      the remote user cannot read root's pyenv interpreter. Rebuilt when the
#      checkout's sources change (a hash of src/ and pyproject.toml).
#
# OpenSSH reads ~/.ssh/config from the password database's home, not $HOME, so the
# tests pass `-F $STATE/ssh_config` rather than rely on root's own config.
# =============================================================================
set -euo pipefail
# shellcheck source=lib/daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/daemons.sh"

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${CORRAL_SSHD_STATE:-/var/lib/corral-sshd}
REMOTE_USER=${CORRAL_REMOTE_USER:-corralr}
LOGIN_PORT=${CORRAL_LOGIN_PORT:-2222}
JUMP_PORT=${CORRAL_JUMP_PORT:-2223}
REMOTE_HOME=/home/$REMOTE_USER

log() { printf 'test-sshd: %s\n' "$*" >&2; }

install_packages() {
    local missing=()
    [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
    /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

make_user() {
    if ! id "$REMOTE_USER" >/dev/null 2>&1; then
        log "creating user $REMOTE_USER"
        useradd -m -d "$REMOTE_HOME" -s /bin/bash "$REMOTE_USER"
    fi
    usermod -p '*' "$REMOTE_USER"  # no password, not locked: key logins work without PAM
    install -d -m 0700 -o "$REMOTE_USER" -g "$REMOTE_USER" "$REMOTE_HOME/.ssh"
}

make_keys() {
    install -d -m 0755 "$STATE"
    [[ -f $STATE/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C corral-test-host -f "$STATE/host_ed25519"
    [[ -f $STATE/client_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C corral-test-laptop -f "$STATE/client_ed25519"
    chmod 0600 "$STATE/host_ed25519" "$STATE/client_ed25519"
    write_if_changed "$REMOTE_HOME/.ssh/authorized_keys" 0600 "$REMOTE_USER:$REMOTE_USER" \
        <"$STATE/client_ed25519.pub" || true
    local key
    key=$(cut -d' ' -f1,2 "$STATE/host_ed25519.pub")
    printf '[127.0.0.1]:%s %s\n[127.0.0.1]:%s %s\n' "$LOGIN_PORT" "$key" "$JUMP_PORT" "$key" |
        write_if_changed "$STATE/known_hosts" 0644 root:root || true
    write_if_changed "$STATE/ssh_config" 0644 root:root <<EOF || true
# The "laptop" side of corral's remote tests (scripts/test-sshd.sh); use with ssh -F.
Host corral-login
    HostName 127.0.0.1
    Port $LOGIN_PORT
Host corral-jump
    HostName 127.0.0.1
    Port $JUMP_PORT
Host corral-behind
    HostName 127.0.0.1
    Port $LOGIN_PORT
    ProxyJump corral-jump
Host corral-*
    User $REMOTE_USER
    IdentityFile $STATE/client_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF
}

sshd_config() {  # PORT NAME
    cat <<EOF
# corral's test sshd "$2" (scripts/test-sshd.sh)
Port $1
ListenAddress 127.0.0.1
HostKey $STATE/host_ed25519
PidFile $STATE/$2.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $REMOTE_USER
StrictModes yes
LogLevel VERBOSE
MaxStartups 50:30:100
AllowTcpForwarding yes
Subsystem sftp internal-sftp
EOF
}

start_sshd() {  # PORT NAME
    local port=$1 name=$2
    sshd_config "$port" "$name" | write_if_changed "$STATE/$name.conf" 0644 root:root || true
    if pid_alive "$STATE/$name.pid" sshd; then
        return 0
    fi
    install -d -m 0755 /run/sshd
    /usr/sbin/sshd -t -f "$STATE/$name.conf"
    log "starting sshd $name on 127.0.0.1:$port"
    /usr/sbin/sshd -f "$STATE/$name.conf" -E "$STATE/$name.log"
    local i
    for ((i = 0; i < 50; i++)); do
        pid_alive "$STATE/$name.pid" sshd && return 0
        sleep 0.1
    done
    show_log "$STATE/$name.log"
    log "sshd $name did not start"
    return 1
}

source_hash() {
    (cd "$ROOT_DIR" && find src pyproject.toml -type f \( -name '*.py' -o -name '*.toml' -o -name py.typed \) |
        LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}

make_venv() {
    local venv=$REMOTE_HOME/venv hash wheels
    hash=$(source_hash)
    if [[ -x $venv/bin/python && $(cat "$venv/.corral-source" 2>/dev/null) == "$hash" ]]; then
        return 0
    fi
    log "building the remote venv (corral from this checkout, $hash)"
    wheels=$(mktemp -d)
    if ! "$ROOT_DIR/.venv/bin/python" -m pip wheel -q --no-deps -w "$wheels" "$ROOT_DIR" >"$wheels/build.log" 2>&1; then
        cat "$wheels/build.log" >&2
        return 1
    fi
    chmod 0755 "$wheels"
    chmod 0644 "$wheels"/*.whl
    runuser -u "$REMOTE_USER" -- bash -c "
        set -e
        [[ -x '$venv/bin/python' ]] || /usr/bin/python3 -m venv '$venv'
        '$venv/bin/python' -m pip install -q --upgrade --force-reinstall --no-deps '$wheels'/*.whl
        '$venv/bin/python' -m pip install -q cloudpickle
        echo '$hash' > '$venv/.corral-source'
    "
    rm -rf "$wheels"
}

check_login() {
    ssh -F "$STATE/ssh_config" corral-login "$REMOTE_HOME/venv/bin/python" -c \
        "'import corral, sys; print(sys.version_info[:2], corral.__version__)'"
}

case ${1:-start} in
start)
    install_packages
    make_user
    make_keys
    start_sshd "$LOGIN_PORT" login
    start_sshd "$JUMP_PORT" jump
    make_venv
    check_login >/dev/null
    log "ready: ssh -F $STATE/ssh_config corral-login (or corral-behind, through corral-jump)"
    ;;
stop)
    stop_pidfile "$STATE/login.pid" sshd "sshd login"
    stop_pidfile "$STATE/jump.pid" sshd "sshd jump"
    ;;
status)
    pid_alive "$STATE/login.pid" sshd && pid_alive "$STATE/jump.pid" sshd && check_login
    ;;
env)
    printf 'CORRAL_SSHD_STATE=%s\nCORRAL_REMOTE_USER=%s\nCORRAL_LOGIN_PORT=%s\nCORRAL_JUMP_PORT=%s\n' \
        "$STATE" "$REMOTE_USER" "$LOGIN_PORT" "$JUMP_PORT"
    ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
