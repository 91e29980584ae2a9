# shellcheck shell=bash
# gVisor (runsc) for the set-up and test scripts; sourced by scripts/_lib.sh (uses its say/note/warn/is_root).
#
#   ensure_gvisor          install runsc and register it with the engine (`rlm sandbox gvisor install`):
#                          as root only; elsewhere it says how and returns 0 (runc stays in use).
#                          RLM_GVISOR=0 skips it; RLM_GVISOR=1 makes any failure fatal.
#   gvisor_registered      true when the engine lists the runsc runtime.
#   run_runsc_tests ARGS   pytest under runsc: the security suite (it runs under every registered runtime
#                          anyway) and the sandbox integration tests of RLM_RUNSC_TESTS.

RLM_RUNSC_TESTS_DEFAULT="tests/integration/test_runtimes.py tests/integration/test_session_basics.py tests/integration/test_timeouts.py tests/integration/test_bridge.py tests/integration/test_output.py tests/integration/test_context_mount.py"
# runc-only tests: SIGSTOP of the supervisor's *host* pid (under gVisor that pid is the Sentry: the whole
# sandbox freezes and the engine cannot remove it), and EROFS where gVisor answers EACCES first.
RLM_RUNSC_DESELECT_DEFAULT="not stuck_supervisor and not bridge_folder_is_read_only_inside"

gvisor_registered() {
    command -v docker >/dev/null 2>&1 && timeout 20 docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'
}

ensure_gvisor() {
    case "${RLM_GVISOR:-auto}" in 0|no|off) note "gVisor: skipped (RLM_GVISOR=${RLM_GVISOR})"; return 0 ;; esac
    if gvisor_registered; then
        note "runsc is registered with the engine"
        return 0
    fi
    if ! is_root; then
        warn "gVisor: not installed; sessions use runc. To add it: sudo $RLM_VENV/bin/rlm sandbox gvisor install"
        [ "${RLM_GVISOR:-auto}" = 1 ] && return 1
        return 0
    fi
    say "gVisor: installing and registering runsc (rlm sandbox gvisor install) ..."
    if ! "$RLM_VENV/bin/rlm" sandbox gvisor install; then
        warn "gVisor: could not be installed (see $(_details)); sessions use runc"
        [ "${RLM_GVISOR:-auto}" = 1 ] && return 1
    fi
    return 0
}

run_runsc_tests() {
    gvisor_registered || { note "gVisor: not registered; no runsc test pass"; return 0; }
    # shellcheck disable=SC2086
    RLM_TEST_RUNTIME=runsc "$RLM_VENV/bin/python" -m pytest -m "docker and not slow" \
        -k "${RLM_RUNSC_DESELECT:-$RLM_RUNSC_DESELECT_DEFAULT}" ${RLM_RUNSC_TESTS:-$RLM_RUNSC_TESTS_DEFAULT} "$@"
}
