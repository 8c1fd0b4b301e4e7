#!/usr/bin/env bash
# Prepares this machine for orchestr's demo and tests: Debian packages, the .venv, containerd and dockerd.
# Idempotent: when everything is already there it changes nothing and takes well under a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    containerd runc crun docker.io docker-registry skopeo busybox-static docker-compose containernetworking-plugins
    iptables apache2-utils openssl make python3-venv
)
VENV=.venv
STAMP=$VENV/.pyproject.sha256  # pyproject.toml's digest at the last install
LOG_DIR=${ORCHESTR_DEV_LOG_DIR:-/var/log/orchestr-dev}
WAIT_SECONDS=60

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

# --- Debian packages ------------------------------------------------------------------------------
missing_packages() {
    local installed
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null \
        | awk '$NF == "installed" { print $1 }' || true)
    for pkg in "${PACKAGES[@]}"; do
        grep -qxF "$pkg" <<<"$installed" || echo "$pkg"
    done
}

install_packages() {
    local missing
    missing=$(missing_packages)
    [[ -z $missing ]] && return
    # shellcheck disable=SC2086  # one package per word
    [[ $EUID -eq 0 ]] || die "missing Debian packages (install them as root, or run this as root):" $missing
    say "installing" $missing
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# --- Python virtualenv ----------------------------------------------------------------------------
# The real interpreter behind any shim (pyenv's costs tens of ms per start); Python >= 3.11.
find_python() {
    local cand exe
    for cand in python3.11 python3.12 python3.13 python3; do
        command -v "$cand" >/dev/null || continue
        exe=$("$cand" -c 'import sys; print(sys.executable) if sys.version_info >= (3, 11) else exit(1)' \
            2>/dev/null) && { echo "$exe"; return; }
    done
    die "Python 3.11 or newer is needed (tried python3.11, python3.12, python3.13, python3)"
}

ensure_venv() {
    if ! "$VENV/bin/python" -c 'import sys; exit(sys.version_info < (3, 11))' 2>/dev/null; then
        local python
        python=$(find_python)
        say "creating $VENV with $python"
        rm -rf "$VENV"
        "$python" -m venv "$VENV"
    fi
    # compat: plain path entries in a .pth. setuptools' default editable finder imports pathlib, re and
    # urllib.parse at every interpreter start, about 15 ms of each orchestr command.
    local install=(-e '.[test,bench]' --config-settings editable_mode=compat) digest
    digest=$( (cat pyproject.toml; echo "${install[*]}") | sha256sum | cut -d' ' -f1)
    [[ -x $VENV/bin/orchestr && -f $STAMP && $(<"$STAMP") == "$digest" ]] && return
    say "installing orchestr (editable, with test and bench extras) into $VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q "${install[@]}"
    # compat mode puts the project's root on the path; the built-in plugins' packages are one level down
    local pth
    pth=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/orchestr-plugins.pth
    echo "$PWD/plugins" >"$pth"
    echo "$digest" >"$STAMP"
}

# --- daemons --------------------------------------------------------------------------------------
containerd_answers() { ctr --connect-timeout 1s version >/dev/null 2>&1; }
dockerd_answers() { docker info >/dev/null 2>&1; }

# wait_until NAME PID LOG PROBE: poll PROBE until it succeeds, the daemon dies, or time runs out.
wait_until() {
    local name=$1 pid=$2 log=$3 probe=$4 deadline=$((SECONDS + WAIT_SECONDS))
    until $probe; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            echo "setup: error: $name exited while starting; the end of $log:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "setup: error: $name did not answer within ${WAIT_SECONDS}s; the end of $log:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.3
    done
}

# start_daemon NAME PROBE ARGV...: start ARGV detached unless the daemon answers or is already starting.
start_daemon() {
    local name=$1 probe=$2 log=$LOG_DIR/$1.log pid=""
    shift 2
    $probe && return
    if ! pgrep -x "$name" >/dev/null; then
        [[ $EUID -eq 0 ]] || die "$name is not running and only root can start it"
        mkdir -p "$LOG_DIR"
        say "starting $name (log: $log)"
        echo "--- $(date -u +%FT%TZ) started by scripts/setup.sh" >>"$log"
        setsid "$@" >>"$log" 2>&1 </dev/null &
        pid=$!
    fi
    wait_until "$name" "$pid" "$log" "$probe"
}

# Debian 12 defaults to iptables-nft; some kernels lack the nf_tables pieces dockerd needs.
use_legacy_iptables() {
    local log=$LOG_DIR/dockerd.log
    grep -qi iptables "$log" 2>/dev/null && [[ -x /usr/sbin/iptables-legacy ]] || return 1
    [[ $(readlink -f /etc/alternatives/iptables) != /usr/sbin/iptables-legacy ]] || return 1
    say "dockerd failed on iptables; switching to iptables-legacy and retrying"
    update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
    update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
}

start_daemons() {
    start_daemon containerd containerd_answers containerd || exit 1
    local dockerd=(dockerd --containerd=/run/containerd/containerd.sock)
    start_daemon dockerd dockerd_answers "${dockerd[@]}" && return
    use_legacy_iptables || exit 1
    start_daemon dockerd dockerd_answers "${dockerd[@]}" || exit 1
}

# The swarm runtime's tests need the engine to be a swarm manager: a single-node swarm on loopback, with overlay
# subnets away from native's (10.88.0.0/16) and the CRI tests' (10.200.0.0/13). Containers and networks the
# engine already has are not touched; `docker swarm leave --force` undoes it.
ensure_swarm() {
    [[ $(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null) == active ]] && return
    say "making the Docker Engine a single-node swarm on 127.0.0.1"
    docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 --data-path-addr 127.0.0.1 \
        --default-addr-pool 10.210.0.0/16 >/dev/null || die "docker swarm init failed"
}

# --no-daemons: packages and the venv only (the demo runs on the native runtime, which needs no engine).
main() {
    install_packages
    ensure_venv
    # Bytecode now, as an installed package would have it, even where PYTHONDONTWRITEBYTECODE is set.
    "$VENV/bin/python" -m compileall -q orchestr plugins >/dev/null
    [[ ${1:-} == --no-daemons ]] && return
    start_daemons
    ensure_swarm
}

main "$@"
