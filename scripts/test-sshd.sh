#!/usr/bin/env bash
# =============================================================================
# scripts/test-sshd.sh -- a REAL loopback "login node" for corral's remote tests:
# three OpenSSH servers on 127.0.0.1 (two key-only, one asking a key AND a password),
# a non-root user who can submit to the test SLURM cluster, and that user's own venv
# with this checkout's corral.
#
# Usage (as root, Debian 12, no systemd needed):
#
#   scripts/test-sshd.sh start    # install (if needed) + configure + start; idempotent
#   scripts/test-sshd.sh stop     # stop the three sshd
#   scripts/test-sshd.sh status   # rc 0 iff all three answer and their logins work
#   scripts/test-sshd.sh env      # print the shell variables the tests read
#
# What `start` sets up (each step skipped when already done):
#   1. Debian's openssh-server and python3-venv, installed with apt-get if missing
#      (policy-rc.d keeps the package from starting the system's sshd; port 22 and
#      /etc/ssh are left alone);
#   2. the user $REMOTE_USER (home /home/$REMOTE_USER) with the fixed test password
#      $REMOTE_PASSWORD (set with chpasswd unless /etc/shadow already holds it): the
#      two-factor server's second factor; a password also keeps the account unlocked,
#      which key logins need with UsePAM no (`useradd` leaves it locked, `!`);
#   3. in $STATE (root's, 0755): an ed25519 host key, the client key of the "laptop"
#      account (root), the sshd configs and logs, and the client files the tests use:
#      known_hosts (the servers' key, as [127.0.0.1]:PORT) and ssh_config with the
#      aliases `corral-login` (port $LOGIN_PORT), `corral-jump` (port $JUMP_PORT),
#      `corral-behind` (the login node again, reached with ProxyJump corral-jump) and
#      `corral-mfa` (port $MFA_PORT; BatchMode no, so that ssh may ask the password,
#      which a test answers through SSH_ASKPASS with SSH_ASKPASS_REQUIRE=force);
#   4. the login sshd on $LOGIN_PORT and the jump sshd on $JUMP_PORT, keys only
#      (PasswordAuthentication no, UsePAM no), and the two-factor sshd "mfa" on
#      $MFA_PORT: `AuthenticationMethods publickey,password`, UsePAM yes (the password
#      is checked by Debian's stock /etc/pam.d/sshd, pam_unix against /etc/shadow:
#      nothing to change there), PasswordAuthentication yes, KbdInteractiveAuthentication
#      no (the second factor is the "password" method only). All three log at
#      `LogLevel VERBOSE` to $STATE/<name>.log (one "Accepted publickey for USER" line
#      per key-only authentication; on "mfa", one "Partial publickey for USER" then one
#      "Accepted password for USER" line per login), which tests count; StrictModes yes;
#   5. the remote user's venv (~/venv, Debian's /usr/bin/python3, the same minor as
#      the client's) with corral installed from a wheel of this checkout and the
#      client's own cloudpickle version: pip cannot install a tree the remote user
#      cannot write (setuptools writes egg-info), and the remote user cannot read
#      root's pyenv interpreter. Rebuilt when the checkout's sources change (a hash of
#      src/ and pyproject.toml);
#   6. a venv of another Python minor (~/venv312, the same wheel), for the preflight
#      test that refuses it: root's pyenv build (3.12.1, or $CORRAL_OTHER_PYTHON)
#      copied to /opt/corral-python3.12 (readable by all, its RUNPATH pointed at its
#      own lib/ with patchelf, since pyenv's points into /root). Skipped when pyenv
#      has no such build.
#
# A linked git worktree (git worktree add) gets venvs of its own, ~/venv-<folder> and
# ~/venv312-<folder>, so that a branch's tests never reinstall the main checkout's
# corral under its feet (or the other way round); `env` prints the paths in use.
# `start` holds a lock: two checkouts starting the servers at once take turns.
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
MFA_PORT=${CORRAL_MFA_PORT:-2224}
REMOTE_PASSWORD=${CORRAL_REMOTE_PASSWORD:-corral-2fa-test}  # a test password, for loopback only
REMOTE_HOME=/home/$REMOTE_USER
OTHER_VERSION=${CORRAL_OTHER_PYTHON:-3.12.1}  # a pyenv build of another minor than the client's
OTHER_MINOR=${OTHER_VERSION%.*}
OTHER_SOURCE=/root/.pyenv/versions/$OTHER_VERSION
OTHER_PREFIX=/opt/corral-python$OTHER_MINOR

log() { printf 'test-sshd: %s\n' "$*" >&2; }

# "" for a main checkout, "-<folder>" for a linked worktree (see the header).
checkout_suffix() {
    local own common
    own=$(git -C "$ROOT_DIR" rev-parse --absolute-git-dir 2>/dev/null) || return 0
    common=$(cd "$ROOT_DIR" && cd "$(git rev-parse --git-common-dir)" && pwd -P) || return 0
    [[ $own == "$common" ]] || printf -- '-%s' "$(basename "$ROOT_DIR" | tr -c 'A-Za-z0-9_.\n-' _)"
}
SUFFIX=$(checkout_suffix)
VENV=${CORRAL_REMOTE_VENV:-$REMOTE_HOME/venv$SUFFIX}
VENV_OTHER=${CORRAL_REMOTE_VENV_OTHER:-$REMOTE_HOME/venv${OTHER_MINOR//./}$SUFFIX}

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
    local hash
    hash=$(getent shadow "$REMOTE_USER" | cut -d: -f2)
    # crypt(3) through perl (Debian's hashes are yescrypt, which openssl passwd cannot make)
    if ! perl -e 'exit(crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? 0 : 1)' "$REMOTE_PASSWORD" "$hash"; then
        log "setting the test password of $REMOTE_USER"
        printf '%s:%s\n' "$REMOTE_USER" "$REMOTE_PASSWORD" | chpasswd
    fi
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
    printf '[127.0.0.1]:%s %s\n' "$LOGIN_PORT" "$key" "$JUMP_PORT" "$key" "$MFA_PORT" "$key" |
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
Host corral-mfa
    HostName 127.0.0.1
    Port $MFA_PORT
    BatchMode no
    PreferredAuthentications publickey,password
    NumberOfPasswordPrompts 1
Host corral-*
    User $REMOTE_USER
    IdentityFile $STATE/client_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF
}

sshd_config() {  # PORT NAME [mfa]: keys only, or a key then the password (through PAM)
    local password=no pam=no
    [[ ${3:-} != mfa ]] || password=yes pam=yes
    cat <<EOF
# corral's test sshd "$2" (scripts/test-sshd.sh)
Port $1
ListenAddress 127.0.0.1
HostKey $STATE/host_ed25519
PidFile $STATE/$2.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication $password
KbdInteractiveAuthentication no
UsePAM $pam
EOF
    [[ ${3:-} != mfa ]] || echo "AuthenticationMethods publickey,password"
    cat <<EOF
PermitRootLogin no
AllowUsers $REMOTE_USER
StrictModes yes
LogLevel VERBOSE
MaxStartups 50:30:100
AllowTcpForwarding yes
Subsystem sftp internal-sftp
EOF
}

start_sshd() {  # PORT NAME [mfa]
    local port=$1 name=$2
    sshd_config "$port" "$name" "${3:-}" | write_if_changed "$STATE/$name.conf" 0644 root:root || true
    if pid_alive "$STATE/$name.pid" sshd; then
        return 0
    fi
    install -d -m 0755 /run/sshd
    /usr/sbin/sshd -t -f "$STATE/$name.conf"
    log "starting sshd $name on 127.0.0.1:$port"
    /usr/sbin/sshd -f "$STATE/$name.conf" -E "$STATE/$name.log" 9>&-  # not the start lock
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

# The client's cloudpickle version: the remote venvs get the same (preflight compares them).
client_cloudpickle() {
    "$ROOT_DIR/.venv/bin/python" -c 'import cloudpickle; print(cloudpickle.__version__)'
}

build_wheel() {  # prints the folder holding the wheel (readable by the remote user)
    local wheels
    wheels=$(mktemp -d)
    if ! "$ROOT_DIR/.venv/bin/python" -m pip wheel -q --no-deps -w "$wheels" "$ROOT_DIR" >"$wheels/build.log" 2>&1; then
        cat "$wheels/build.log" >&2
        return 1
    fi
    chmod 0755 "$wheels"
    chmod 0644 "$wheels"/*.whl
    echo "$wheels"
}

make_venv() {  # VENV BASE_PYTHON STAMP: (re)build VENV unless it has STAMP (the wheel: $WHEELS)
    local venv=$1 base=$2 stamp=$3 pickler=${3##*cloudpickle=}
    if [[ -x $venv/bin/python && $(cat "$venv/.corral-source" 2>/dev/null) == "$stamp" ]]; then
        return 0
    fi
    [[ -n $WHEELS ]] || WHEELS=$(build_wheel)
    log "building the remote venv $venv ($base; corral from $ROOT_DIR, $stamp)"
    runuser -u "$REMOTE_USER" -- bash -c "
        set -e
        [[ -x '$venv/bin/python' ]] || '$base' -m venv '$venv'
        '$venv/bin/python' -m pip install -q --upgrade --force-reinstall --no-deps '$WHEELS'/*.whl
        '$venv/bin/python' -m pip install -q 'cloudpickle==$pickler'
        echo '$stamp' > '$venv/.corral-source'
    "
}

# Root's pyenv build of another minor, copied where the remote user can run it. pyenv
# links its python to libpythonX.Y.so through an absolute RUNPATH into /root, which that
# user cannot read: the copy's RUNPATH is $ORIGIN/../lib.
make_other_python() {
    local exe=$OTHER_PREFIX/bin/python$OTHER_MINOR tmp
    if [[ ! -x $exe ]]; then
        command -v patchelf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patchelf >/dev/null
        log "copying $OTHER_SOURCE to $OTHER_PREFIX"
        tmp=$(mktemp -d "$OTHER_PREFIX.XXXXXX")
        cp -a "$OTHER_SOURCE/." "$tmp/"
        patchelf --set-rpath '$ORIGIN/../lib' "$tmp/bin/python$OTHER_MINOR"
        chmod -R a+rX "$tmp"
        chmod 0755 "$tmp"
        mv -T "$tmp" "$OTHER_PREFIX"
    fi
    runuser -u "$REMOTE_USER" -- "$exe" -c 'import ssl, sys; assert sys.version_info[:2] == tuple(map(int, sys.argv[1].split(".")))' "$OTHER_MINOR"
}

make_venvs() {
    local stamp
    WHEELS=""
    stamp="$(source_hash) cloudpickle=$(client_cloudpickle)"
    make_venv "$VENV" /usr/bin/python3 "$stamp"
    if [[ -x $OTHER_PREFIX/bin/python$OTHER_MINOR || -d $OTHER_SOURCE ]]; then
        make_other_python
        make_venv "$VENV_OTHER" "$OTHER_PREFIX/bin/python$OTHER_MINOR" "$stamp"
    else
        log "no Python $OTHER_VERSION in $OTHER_SOURCE: no venv of another minor (its test skips)"
    fi
    [[ -z $WHEELS ]] || rm -rf "$WHEELS"
}

check_login() {
    ssh -F "$STATE/ssh_config" corral-login "$VENV/bin/python" -c \
        "'import corral, sys; print(sys.version_info[:2], corral.__version__)'"
}

# A two-factor login on "mfa": the key, then the password, which an askpass prints from
# the environment (SSH_ASKPASS_REQUIRE=force: never a terminal; NumberOfPasswordPrompts 1).
check_mfa_login() {
    local askpass rc=0
    askpass=$(mktemp)
    cat >"$askpass" <<'EOF'
#!/bin/sh
printf '%s\n' "$CORRAL_REMOTE_PASSWORD"
EOF
    chmod 0700 "$askpass"
    CORRAL_REMOTE_PASSWORD=$REMOTE_PASSWORD SSH_ASKPASS=$askpass SSH_ASKPASS_REQUIRE=force \
        ssh -F "$STATE/ssh_config" corral-mfa true </dev/null || rc=$?
    rm -f "$askpass"
    return "$rc"
}

case ${1:-start} in
start)
    install -d -m 0755 "$STATE"
    exec 9>"$STATE/start.lock"
    flock 9  # another checkout may be starting them too
    install_packages
    make_user
    make_keys
    start_sshd "$LOGIN_PORT" login
    start_sshd "$JUMP_PORT" jump
    start_sshd "$MFA_PORT" mfa mfa
    make_venvs
    check_login >/dev/null
    check_mfa_login || { show_log "$STATE/mfa.log"; log "the two-factor login on corral-mfa failed"; exit 1; }
    log "ready: ssh -F $STATE/ssh_config corral-login (or corral-behind, through corral-jump;" \
        "corral-mfa: a key and the password)"
    ;;
stop)
    stop_pidfile "$STATE/login.pid" sshd "sshd login"
    stop_pidfile "$STATE/jump.pid" sshd "sshd jump"
    stop_pidfile "$STATE/mfa.pid" sshd "sshd mfa"
    ;;
status)
    for name in login jump mfa; do
        pid_alive "$STATE/$name.pid" sshd || exit 1
    done
    check_login && check_mfa_login
    ;;
env)
    printf 'CORRAL_SSHD_STATE=%s\nCORRAL_REMOTE_USER=%s\nCORRAL_LOGIN_PORT=%s\nCORRAL_JUMP_PORT=%s\n' \
        "$STATE" "$REMOTE_USER" "$LOGIN_PORT" "$JUMP_PORT"
    printf 'CORRAL_MFA_PORT=%s\nCORRAL_REMOTE_PASSWORD=%s\n' "$MFA_PORT" "$REMOTE_PASSWORD"
    printf 'CORRAL_REMOTE_VENV=%s\nCORRAL_REMOTE_VENV_OTHER=%s\n' "$VENV" "$VENV_OTHER"
    ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
