# Shared shell functions for scripts/setup, scripts/rlm, scripts/test (sourced, not run).
# Every function works from any cwd: paths come from RLM_ROOT, set here from this file.
#
# Output: one line per step with its time on stderr ("[rlm setup] docker engine ... ok (12.3s)");
# what the step's tools print (apt, debootstrap, docker build, cmake, pip) goes to the log
# RLM_SETUP_LOG (default .rlm/setup.log, new for each run), whose last RLM_SETUP_TAIL (40) lines
# are printed only when a step fails.  RLM_SETUP_VERBOSE=1 prints everything as it comes (no log).
# RLM_SETUP_QUIET=1 (./scripts/rlm) hides the steps that had nothing to do.
# shellcheck shell=bash

RLM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RLM_VENV="$RLM_ROOT/.venv"
RLM_STATE="$RLM_ROOT/.rlm"
RLM_IMAGE="${RLM_IMAGE:-rlm-sandbox:latest}"
RLM_LOCAL_BASE="rlm-base:bookworm"
RLM_DEFAULT_BASE="python:3.11-slim"
RLM_DOCKER_WAIT="${RLM_DOCKER_WAIT:-60}"
RLM_SETUP_LOG="${RLM_SETUP_LOG:-$RLM_STATE/setup.log}"
RLM_SETUP_TAIL="${RLM_SETUP_TAIL:-40}"
export DEBIAN_FRONTEND=noninteractive

_rlm_apt_updated=0

# shellcheck source=scripts/_gvisor.sh
source "$RLM_ROOT/scripts/_gvisor.sh"

# ---- steps: one line each on the terminal, the details in the log ----------------------------
_rlm_step=""          # the open step's label ("" outside steps)
_rlm_step_t0=0
_rlm_step_shown=0     # its line is on the terminal
_rlm_step_did=0       # it did some work (a `say` inside it)
_rlm_step_note=""     # its last `note` (what it found already done)
_rlm_line_open=0      # the terminal's last line is unfinished ("[rlm setup] label ... ")
_rlm_log_state=new    # new | open | told (its path printed)
_rlm_term=2           # the terminal's stderr (a saved copy while a step's output goes to the log)

setup_verbose() { case "${RLM_SETUP_VERBOSE:-0}" in 1|yes|true|on) return 0 ;; *) return 1 ;; esac; }
_setup_quiet()  { [ "${RLM_SETUP_QUIET:-0}" = 1 ]; }
_in_log_step()  { [ -n "$_rlm_step" ] && ! setup_verbose; }

# Microseconds (EPOCHREALTIME, bash 5; whole seconds otherwise), and the open step's time as "12.3s".
_now_us() {
    local t="${EPOCHREALTIME:-}"
    if [ -n "$t" ]; then printf '%s' "${t//[!0-9]/}"; else printf '%s' "$((SECONDS * 1000000))"; fi
}
_step_time() {
    local d=$((($(_now_us) - _rlm_step_t0 + 50000) / 100000))
    printf '%d.%ds' $((d / 10)) $((d % 10))
}

# A whole line on the terminal (finishing an unfinished one first).
_term() {
    if [ "$_rlm_line_open" = 1 ]; then printf '\n' >&"$_rlm_term"; _rlm_line_open=0; fi
    printf '%s\n' "$*" >&"$_rlm_term"
}

# Where the details are: "above" when they were printed, else the log.
_details() { if setup_verbose; then printf 'above'; else printf '%s' "$RLM_SETUP_LOG"; fi; }

_log_open() {
    [ "$_rlm_log_state" = new ] || return 0
    if ! { mkdir -p "$(dirname "$RLM_SETUP_LOG")" && : >"$RLM_SETUP_LOG"; } 2>/dev/null; then
        RLM_SETUP_LOG="$(mktemp "${TMPDIR:-/tmp}/rlm-setup.XXXXXX.log")"
    fi
    printf 'rlm set-up log: %s, %s (RLM_SETUP_VERBOSE=1 prints this on the terminal instead)\n' \
        "$(date '+%Y-%m-%d %H:%M:%S')" "$0" >>"$RLM_SETUP_LOG"
    _rlm_log_state=open
}

_show_step() {
    [ "$_rlm_step_shown" = 0 ] || return 0
    _rlm_step_shown=1
    if setup_verbose; then
        _term "[rlm setup] $_rlm_step ..."
        return 0
    fi
    if [ "$_rlm_log_state" = open ]; then
        _term "[rlm setup] details: $RLM_SETUP_LOG"
        _rlm_log_state=told
    fi
    [ "$_rlm_line_open" = 0 ] || printf '\n' >&"$_rlm_term"
    printf '[rlm setup] %s ... ' "$_rlm_step" >&"$_rlm_term"
    _rlm_line_open=1
}

# The end of the open step's line: "ok (1.2s)", "FAILED (3.4s)", ...
_step_result() {
    if [ "$_rlm_line_open" = 1 ]; then
        printf '%s\n' "$1" >&"$_rlm_term"
        _rlm_line_open=0
    else
        _term "[rlm setup] $_rlm_step: $1"
    fi
}

_step_close() {
    if [ "$_rlm_term" != 2 ]; then exec {_rlm_term}>&-; fi
    _rlm_term=2
    _rlm_step=""
    trap - INT TERM
}

# The open step failed (exit status $1, message $2): its line, the log's tail, the message.
_step_failed() {
    local rc="${1:-1}" message="${2:-}" what=FAILED
    [ "$rc" = 130 ] && what=interrupted
    _show_step
    _step_result "$what ($(_step_time))"
    if ! setup_verbose && [ -s "$RLM_SETUP_LOG" ]; then
        _term "[rlm setup] the last $RLM_SETUP_TAIL lines of $RLM_SETUP_LOG:"
        tail -n "$RLM_SETUP_TAIL" "$RLM_SETUP_LOG" 2>/dev/null | sed 's/^/  | /' >&"$_rlm_term" || true
    fi
    if [ -n "$message" ]; then
        _term "[rlm setup] ERROR: $message"
        if ! setup_verbose; then printf '[rlm setup] ERROR: %s\n' "$message" >>"$RLM_SETUP_LOG"; fi
    fi
    _step_close
}

# Runs at exit: a step still open means a command failed under `set -e`.
_rlm_on_exit() {
    local rc="$1"
    if [ -n "$_rlm_step" ] && [ "$rc" != 0 ]; then _step_failed "$rc"; fi
    _stop_model_build
    return 0
}
# Ctrl-C or SIGTERM during a step: its line says so, then exit 130 / 143.
_rlm_on_signal() {
    if [ -n "$_rlm_step" ]; then _step_failed "$1"; fi
    exit "$1"
}

# step LABEL COMMAND [ARGS...]: run COMMAND (a function of this file, in this shell) as one step.
# Its output goes to the log; the terminal gets "[rlm setup] LABEL ... ok (1.2s)".  Inside a step,
# `say` reports work being done, `note` what was found already done, `warn` what the user must
# read; `die` ends the script with the step's failure, the log's tail and its message.
step() {
    local label="$1" rc=0
    shift
    if [ -n "$_rlm_step" ]; then "$@"; return; fi   # nested: part of the open step
    _rlm_step="$label" _rlm_step_t0="$(_now_us)" _rlm_step_shown=0 _rlm_step_did=0 _rlm_step_note=""
    trap '_rlm_on_exit $?' EXIT
    trap '_rlm_on_signal 130' INT
    trap '_rlm_on_signal 143' TERM
    if setup_verbose; then
        _setup_quiet || _show_step
        "$@"
        rc=$?   # reached with rc != 0 only without `set -e`
    else
        _log_open
        _setup_quiet || _show_step
        printf '\n== %s (%s)\n' "$label" "$(date +%T)" >>"$RLM_SETUP_LOG"
        exec {_rlm_term}>&2
        "$@" >>"$RLM_SETUP_LOG" 2>&1 </dev/null
        rc=$?
    fi
    if [ "$rc" != 0 ]; then
        _step_failed "$rc"
        return "$rc"
    fi
    if [ "$_rlm_step_shown" = 1 ]; then
        if [ "$_rlm_step_did" = 0 ] && [ -n "$_rlm_step_note" ] && ! setup_verbose; then
            _step_result "ok ($(_step_time)): $_rlm_step_note"
        else
            _step_result "ok ($(_step_time))"
        fi
    fi
    _step_close
}

# Work being done (inside a step: it shows the step's line even under RLM_SETUP_QUIET=1).
# Progress lines go to stderr so that stdout stays the tool's own output.
say() {
    if [ -n "$_rlm_step" ]; then
        _rlm_step_did=1
        _show_step
    fi
    printf '[rlm setup] %s\n' "$*" >&2
}
# Something found already done; hidden outside steps when RLM_SETUP_QUIET=1.
note() {
    if [ -n "$_rlm_step" ]; then _rlm_step_note="$*"; fi
    if _in_log_step || ! _setup_quiet; then printf '[rlm setup] %s\n' "$*" >&2; fi
}
# What the user must read even when all goes well (on the terminal, and in the log).
warn() {
    if _in_log_step; then
        printf '[rlm setup] %s\n' "$*" >&2
        _term "[rlm setup] $*"
    else
        printf '[rlm setup] %s\n' "$*" >&2
    fi
}
die() {
    if [ -n "$_rlm_step" ]; then
        _step_failed 1 "$*"
    else
        _term "[rlm setup] ERROR: $*"
    fi
    exit 1
}

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
    # (in a subshell that first closes the saved terminal: a daemon must not hold it open)
    if have setsid; then
        ( [ "$_rlm_term" = 2 ] || exec {_rlm_term}>&-; exec setsid nohup dockerd >"$RLM_STATE/dockerd.log" 2>&1 </dev/null ) &
    else
        ( [ "$_rlm_term" = 2 ] || exec {_rlm_term}>&-; exec nohup dockerd >"$RLM_STATE/dockerd.log" 2>&1 </dev/null ) &
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
        warn "debootstrap is not installed and cannot be installed here; the image build will need --base-image or a pullable $RLM_DEFAULT_BASE"
}

# ---- the sandbox image ----------------------------------------------------------------
ensure_image() {
    if (cd "$RLM_ROOT" && "$RLM_VENV/bin/python" -m rlm.sandbox.image --status --image "$RLM_IMAGE") >/dev/null 2>&1; then
        note "the image is current"
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
        die "building the sandbox image failed (see $(_details))"
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
# `rlm model build` builds llama.cpp's server once (portable: CPU code chosen at run time);
# `rlm model install` fetches the weights and proves the pair with one real completion; it
# fails, with the reason, when the model does not answer.  `start_model_build` (rlm_setup
# --model ARGS) starts the build early, in the background; this then waits for it.
_rlm_model_needed=""   # whether the embedded model is needed ("": not asked yet)
_rlm_build_pid=""      # llama.cpp's server being built in the background (its process group)
RLM_BUILD_LOG="$RLM_STATE/model-build.log"

ensure_local_model() {
    _model_check "$@"
    [ "$_rlm_model_needed" = 1 ] || return 0
    step "llama.cpp server (built once from pinned source)" _ensure_model_runtime
    step "embedded model (weights, a test completion)" _ensure_model_weights "$@"
}

# Start building llama.cpp's server in the background when the embedded model will be needed and
# is not built, so that it compiles while Docker and the sandbox image are set up.  RLM_BUILD_EARLY=0:
# not early (ensure_local_model builds it then).
start_model_build() {
    [ "${RLM_BUILD_EARLY:-1}" != 0 ] || return 0
    _model_check "$@"
    [ "$_rlm_model_needed" = 1 ] || return 0
    step "llama.cpp server: build started in the background" _start_model_build
}

_model_check() {
    [ -z "$_rlm_model_needed" ] || return 0
    if [ "${1:-}" = "force" ]; then
        _rlm_model_needed=1
    else
        _rlm_model_needed=1
        step "model server" _check_model_needed "$@"
    fi
}

_check_model_needed() {
    if embedded_model_needed "$@"; then
        note "none configured or answering: the embedded model will be used"
    else
        note "a model server is configured or answering: the embedded model is not needed"
        _rlm_model_needed=0
    fi
}

# The installed llama-server's folder on stdout; false when none is built.
_built_runtime() {
    "$RLM_VENV/bin/python" -c 'import sys; from rlm.llm.local.runtime import installed_runtime
r = installed_runtime(); print(r.path if r else ""); sys.exit(0 if r else 1)' 2>/dev/null
}

_start_model_build() {
    local built
    if built="$(_built_runtime)"; then
        note "built: $built"
        return 0
    fi
    ensure_build_tools   # (apt, now: not beside the engine's install)
    mkdir -p "$RLM_STATE"
    say "rlm model build, in the background (log: $RLM_BUILD_LOG)"
    # its own process group (setsid), so that an early end of this script stops all of it; the
    # saved terminal closed: the build must not hold it open
    if have setsid; then
        ( [ "$_rlm_term" = 2 ] || exec {_rlm_term}>&-; exec setsid "$RLM_VENV/bin/rlm" model build >"$RLM_BUILD_LOG" 2>&1 </dev/null ) &
    else
        ( [ "$_rlm_term" = 2 ] || exec {_rlm_term}>&-; exec "$RLM_VENV/bin/rlm" model build >"$RLM_BUILD_LOG" 2>&1 </dev/null ) &
    fi
    _rlm_build_pid=$!
}

# At exit: a background build still running is stopped (a later run starts it again).
_stop_model_build() {
    [ -n "$_rlm_build_pid" ] || return 0
    if kill -0 "$_rlm_build_pid" 2>/dev/null; then
        kill -TERM -- "-$_rlm_build_pid" 2>/dev/null || kill -TERM "$_rlm_build_pid" 2>/dev/null || true
    fi
    _rlm_build_pid=""
}

_ensure_model_runtime() {
    local built rc=0
    if [ -n "$_rlm_build_pid" ]; then
        say "waiting for the build started in the background (log: $RLM_BUILD_LOG) ..."
        wait "$_rlm_build_pid" || rc=$?
        _rlm_build_pid=""
        cat "$RLM_BUILD_LOG" >&2 || true
        [ "$rc" = 0 ] || die "building llama.cpp's server failed (exit $rc; see $(_details))"
        return 0
    fi
    if built="$(_built_runtime)"; then
        note "built: $built"
        return 0
    fi
    ensure_build_tools
    say "building llama.cpp's server (rlm model build) ..."
    "$RLM_VENV/bin/rlm" model build >&2 || die "building llama.cpp's server failed (see $(_details))"
}

_ensure_model_weights() {
    local keep=()
    [ "${1:-}" != "force" ] && keep=(--keep-running)   # the command that follows uses it at once
    say "rlm model install ${keep[*]-}"
    # on stderr: the command that follows may print JSON on stdout (./scripts/rlm benchmark --json)
    "$RLM_VENV/bin/rlm" model install ${keep[@]+"${keep[@]}"} >&2 || die "the embedded model is not usable (see $(_details))"
}

# Debian's Chromium, for the trace viewer's browser tests.
ensure_browser() { step "chromium (the trace viewer's browser tests)" _ensure_browser; }
_ensure_browser() {
    if have chromium || [ -x /usr/bin/chromium ]; then note "chromium is installed"; return 0; fi
    apt_install chromium || warn "chromium is not installed and cannot be installed here: the browser tests will fail under CI=true"
}

_ensure_python() {
    ensure_venv
    ensure_install
}

_ensure_sandbox_image() {
    ensure_debootstrap
    ensure_image
}

# Everything, in order.  RLM_SKIP_DOCKER=1 stops after the Python part.
# `rlm_setup --model force|ARGS...`: also start building llama.cpp's server in the background when
# the embedded model will be needed (start_model_build); call `ensure_local_model` with the same
# ARGS afterwards.
rlm_setup() {
    local t0=$SECONDS
    step "python environment (.venv)" _ensure_python
    if [ "${1:-}" = --model ]; then
        shift
        start_model_build "$@"
    fi
    if [ "${RLM_SKIP_DOCKER:-0}" = 1 ]; then
        say "RLM_SKIP_DOCKER=1: not checking Docker or the sandbox image"
        return 0
    fi
    step "docker engine" ensure_engine
    step "sandbox image $RLM_IMAGE" _ensure_sandbox_image
    step "gVisor (runsc)" ensure_gvisor   # where we may install it: sessions then run under it (runtime auto)
    note "ready ($((SECONDS - t0))s)"
}
