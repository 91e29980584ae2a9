# Shared shell functions for scripts/setup, scripts/rlm, scripts/test (sourced, not run).
# Every function works from any cwd: paths come from RLM_ROOT, set here from this file.
# shellcheck shell=bash

RLM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RLM_VENV="$RLM_ROOT/.venv"
RLM_STATE="$RLM_ROOT/.rlm"
RLM_IMAGE="${RLM_IMAGE:-rlm-sandbox:latest}"
RLM_LOCAL_BASE="rlm-base:bookworm"
RLM_DEFAULT_BASE="python:3.11-slim"
RLM_DOCKER_WAIT="${RLM_DOCKER_WAIT:-60}"
export DEBIAN_FRONTEND=noninteractive

_rlm_apt_updated=0

# shellcheck source=scripts/_gvisor.sh
source "$RLM_ROOT/scripts/_gvisor.sh"

# Progress lines go to stderr so that stdout stays the tool's own output.
say()  { printf '[rlm setup] %s\n' "$*" >&2; }
# Lines that only report that nothing had to be done; hidden when RLM_SETUP_QUIET=1.
note() { [ "${RLM_SETUP_QUIET:-0}" = 1 ] || say "$@"; }
die()  { printf '[rlm setup] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }
have()    { command -v "$1" >/dev/null 2>&1; }

# apt_install PKG...: install Debian packages when we are root and apt-get exists.
# Returns 1 (without installing) otherwise, so callers can print what to do.
apt_install() {
    is_root && have apt-get || return 1
    if [ "$_rlm_apt_updated" = 0 ]; then
        say "apt-get update ..."
        apt-get update -qq >&2 || return 1
        _rlm_apt_updated=1
    fi
    say "apt-get install -y $* ..."
    apt-get install -y -qq --no-install-recommends "$@" >&2 || return 1
}

file_hash() { sha256sum "$@" 2>/dev/null | sha256sum | cut -c1-64; }

# ---- Python virtual environment ------------------------------------------------------
find_python() {
    local py
    for py in python3.11 python3.12 python3.13 python3.10 python3; do
        if have "$py" && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            command -v "$py"; return 0
        fi
    done
    return 1
}

ensure_venv() {
    local py
    if [ -x "$RLM_VENV/bin/python" ] && "$RLM_VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
        note "virtual environment: $RLM_VENV"
        return 0
    fi
    if ! py="$(find_python)"; then
        apt_install python3 python3-venv || die "Python >= 3.10 is needed: install python3 and python3-venv"
        py="$(find_python)" || die "Python >= 3.10 is needed: install python3 and python3-venv"
    fi
    rm -rf "$RLM_VENV"
    say "creating the virtual environment $RLM_VENV with $py ..."
    if ! "$py" -m venv "$RLM_VENV" >/dev/null 2>&1; then
        rm -rf "$RLM_VENV"
        apt_install python3-venv || die "'$py -m venv' failed: install python3-venv (apt-get install python3-venv)"
        "$py" -m venv "$RLM_VENV" || die "'$py -m venv' failed"
    fi
}

# Install the project (editable, with test extras) when pyproject.toml changed.
ensure_install() {
    local stamp="$RLM_VENV/.rlm-install-stamp" want have_hash=""
    want="$(file_hash "$RLM_ROOT/pyproject.toml")"
    [ -f "$stamp" ] && have_hash="$(cat "$stamp")"
    if [ "$want" = "$have_hash" ] && [ -x "$RLM_VENV/bin/rlm" ]; then
        note "project installed (pyproject.toml unchanged)"
        return 0
    fi
    say "installing rlm and its test dependencies into .venv (pip install -e '.[test]') ..."
    local log="$RLM_STATE/pip-install.log"
    mkdir -p "$RLM_STATE"
    if ! (cd "$RLM_ROOT" && "$RLM_VENV/bin/python" -m pip install --disable-pip-version-check -q \
            -e '.[test]') >"$log" 2>&1; then
        tail -n 25 "$log" >&2
        die "pip install failed (full log: $log); check that a package index is reachable (pip config list)"
    fi
    printf '%s\n' "$want" >"$stamp"
    say "installed"
}

# ---- Docker engine --------------------------------------------------------------------
engine_answers() { have docker && timeout 20 docker info >/dev/null 2>&1; }

_wait_for_engine() {
    local pid="${1:-}" waited=0
    while ! engine_answers; do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            tail -n 15 "$RLM_STATE/dockerd.log" >&2 || true
            die "dockerd exited while starting (log: $RLM_STATE/dockerd.log)"
        fi
        if [ "$waited" -ge "$RLM_DOCKER_WAIT" ]; then
            [ -f "$RLM_STATE/dockerd.log" ] && tail -n 15 "$RLM_STATE/dockerd.log" >&2
            die "the Docker engine did not answer within ${RLM_DOCKER_WAIT}s (log: $RLM_STATE/dockerd.log)"
        fi
        if [ "$waited" -gt 0 ] && [ $((waited % 10)) = 0 ]; then
            say "still waiting for the Docker engine (${waited}s) ..."
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
}

start_engine() {
    if ! is_root; then
        die "Docker is installed but no engine answers. Start it (e.g. 'sudo systemctl start docker' or 'sudo dockerd &') and make sure your user may use it (the docker group), then run this again."
    fi
    if [ -d /run/systemd/system ] && have systemctl; then
        say "starting Docker with systemctl ..."
        if systemctl start docker >/dev/null 2>&1; then
            _wait_for_engine
            return 0
        fi
        say "systemctl start docker failed; starting dockerd directly"
    fi
    mkdir -p "$RLM_STATE"
    say "starting dockerd in the background (log: $RLM_STATE/dockerd.log) ..."
    if have setsid; then
        setsid nohup dockerd >"$RLM_STATE/dockerd.log" 2>&1 </dev/null &
    else
        nohup dockerd >"$RLM_STATE/dockerd.log" 2>&1 </dev/null &
    fi
    local pid=$!
    disown "$pid" 2>/dev/null || true
    _wait_for_engine "$pid"
}

ensure_engine() {
    if engine_answers; then
        note "Docker engine answers"
        return 0
    fi
    if [ -n "${DOCKER_HOST:-}" ]; then
        die "DOCKER_HOST=$DOCKER_HOST is set but no engine answers there: start it, or unset DOCKER_HOST"
    fi
    if ! have dockerd || ! have docker; then
        say "Docker is not installed"
        apt_install docker.io ||
            die "Docker is missing: install it (as root: apt-get install docker.io, or see https://docs.docker.com/engine/install/) and run this again"
    fi
    start_engine
}

# The local Debian base image is made with debootstrap when no python base is present.
ensure_debootstrap() {
    if have debootstrap || [ -x /usr/sbin/debootstrap ]; then return 0; fi
    if docker image inspect "$RLM_LOCAL_BASE" >/dev/null 2>&1 ||
       docker image inspect "$RLM_DEFAULT_BASE" >/dev/null 2>&1; then
        return 0
    fi
    apt_install debootstrap ||
        say "debootstrap is not installed and cannot be installed here; the image build will need --base-image or a pullable $RLM_DEFAULT_BASE"
}

# ---- the sandbox image ----------------------------------------------------------------
ensure_image() {
    if (cd "$RLM_ROOT" && "$RLM_VENV/bin/python" -m rlm.sandbox.image --status --image "$RLM_IMAGE") >/dev/null 2>&1; then
        note "sandbox image $RLM_IMAGE is current"
        return 0
    fi
    say "building the sandbox image $RLM_IMAGE (missing or stale) ..."
    local -a cmd
    if [ "$RLM_IMAGE" = rlm-sandbox:latest ] && [ -x "$RLM_VENV/bin/rlm" ] &&
       "$RLM_VENV/bin/rlm" sandbox build --help >/dev/null 2>&1; then
        cmd=("$RLM_VENV/bin/rlm" sandbox build)
    else
        cmd=("$RLM_VENV/bin/python" -m rlm.sandbox.image --image "$RLM_IMAGE")
    fi
    if ! (cd "$RLM_ROOT" && "${cmd[@]}") 2>&1 | sed -u 's/^/[rlm setup]   /' >&2; then
        die "building the sandbox image failed (see above)"
    fi
}

# ---- the embedded offline model (only when no model server is configured or answering) ---
# True when `rlm "$@"` would fall back to the embedded model: no server configured (flag,
# environment, .env, YAML) and none answering.
embedded_model_needed() {
    "$RLM_VENV/bin/python" -c 'import sys; from rlm.llm.resolve import embedded_model_needed as need
sys.exit(0 if need(sys.argv[1:]) else 1)' "$@" 2>/dev/null
}

ensure_build_tools() {
    if have cmake && { have c++ || have g++; }; then return 0; fi
    apt_install cmake g++ ||
        die "building llama.cpp's server needs cmake and g++: install them (apt-get install cmake g++) and run this again"
}

# `ensure_local_model force`, or `ensure_local_model ARGS...` (the rlm command line it is for).
# `rlm model install` builds llama.cpp's server once (portable: CPU code chosen at run time),
# fetches the weights, and proves the pair with one real completion; it fails, with the reason,
# when the model does not answer.
ensure_local_model() {
    if [ "${1:-}" != "force" ] && ! embedded_model_needed "$@"; then
        note "a model server is configured or answering: the embedded model is not needed"
        return 0
    fi
    if ! "$RLM_VENV/bin/python" -c 'import sys; from rlm.llm.local.runtime import installed_runtime
sys.exit(0 if installed_runtime() else 1)' 2>/dev/null; then
        ensure_build_tools
    fi
    local keep=()
    [ "${1:-}" != "force" ] && keep=(--keep-running)   # the command that follows uses it at once
    # on stderr: the command that follows may print JSON on stdout (./scripts/rlm benchmark --json)
    "$RLM_VENV/bin/rlm" model install ${keep[@]+"${keep[@]}"} >&2 || die "the embedded model is not usable (see above)"
}

# Debian's Chromium, for the trace viewer's browser tests.
ensure_browser() {
    if have chromium || [ -x /usr/bin/chromium ]; then note "chromium is installed"; return 0; fi
    apt_install chromium || say "chromium is not installed and cannot be installed here: the browser tests will fail under CI=true"
}

# Everything, in order.  RLM_SKIP_DOCKER=1 stops after the Python part.
rlm_setup() {
    local t0=$SECONDS
    ensure_venv
    ensure_install
    if [ "${RLM_SKIP_DOCKER:-0}" = 1 ]; then
        say "RLM_SKIP_DOCKER=1: not checking Docker or the sandbox image"
        return 0
    fi
    ensure_engine
    ensure_debootstrap
    ensure_image
    ensure_gvisor   # gVisor (runsc) where we may install it: sessions then run under it (runtime auto)
    note "ready ($((SECONDS - t0))s)"
}
