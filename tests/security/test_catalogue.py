"""The catalogue itself: enough attacks, every area of issue 7 covered, a fast subset for the CLI."""

from __future__ import annotations

import pytest

from rlm.security import ATTACKS, CATEGORIES, select_attacks

pytestmark = pytest.mark.docker

# Issue 7's list, item by item, mapped to the attacks (here or in test_host.py) that cover it.
COVERAGE = {
    "interfaces other than loopback": ["net_interfaces"],
    "host loopback": ["net_host_loopback", "net_host_addresses"],
    "DNS": ["net_dns"],
    "raw sockets": ["net_raw_sockets"],
    "socket families other than Unix, IPv4, IPv6, netlink (AF_VSOCK)": ["net_socket_families"],
    "host paths, /proc/1/root": ["files_host_secret", "files_proc_root", "files_mounts"],
    "the sandbox uid never owns the run folder": ["files_run_folder_owner"],
    "symlinks / hard links planted in run/": ["files_run_symlink_kernel_socket", "files_run_symlink_persistent",
                                              "files_run_hardlink_socket", "files_hardlink_escape",
                                              "files_run_cleanup_links"],
    "writes to context, root fs, bridge folder": ["files_write_context", "files_write_rootfs", "files_write_bridge"],
    "uid, capabilities, setuid": ["priv_uid", "priv_capabilities", "priv_setuid_binaries", "priv_setuid0"],
    "mount, unshare, ptrace, keyring": ["priv_mount", "priv_unshare", "priv_ptrace", "priv_keyring"],
    "/dev, sysrq-trigger, release_agent": ["priv_devices", "priv_proc_sys", "priv_cgroup_escape"],
    "kill pid 1, Docker socket": ["priv_kill_init", "priv_kill_everything", "priv_docker_socket"],
    "secrets in /proc/*/environ": ["secrets_environ"],
    "fork, memory, tmpfs, file size": ["res_fork_bomb", "res_memory_bomb", "res_memory_processes", "res_tmpfs_fill",
                                       "res_huge_file", "files_run_disk_fill"],
    "fork bomb named under both runtimes, iopub flood, stdout flood": ["res_fork_bomb_plain", "res_iopub_flood",
                                                                       "res_stdout_flood_engine"],
    "output flood, loop, sleep, regex, threads": ["res_output_flood", "res_infinite_loop", "res_long_sleep",
                                                  "res_catastrophic_regex", "res_gil_hog", "res_thread_bomb"],
    "bridge frames": ["bridge_malformed_frames", "bridge_truncated_frames", "bridge_oversized_frames"],
    "bridge flood, budget, second client, escapes": ["bridge_flood", "bridge_past_budget", "bridge_ctl_second_client",
                                                     "bridge_escape_prompt"],
    "the answer": ["answer_huge_final", "answer_ansi_output", "answer_ansi_final", "answer_final_var_missing"],
    "what the host prints and traces (A8, A9, A12)": ["answer_escape_names", "answer_line_separators",
                                                      "answer_bidi_final"],
}


def test_catalogue_is_well_formed():
    names = [a.name for a in ATTACKS]
    assert len(names) == len(set(names))
    assert len(ATTACKS) >= 30
    for a in ATTACKS:
        assert a.category in CATEGORIES, a.name
        assert a.expected and a.code.strip() and callable(a.verify), a.name
        compile(a.code, a.name, "exec")  # compiled only: attack code never runs on the host


def test_every_item_of_the_issue_is_covered():
    names = {a.name for a in ATTACKS}
    missing = {item: [n for n in attacks if n not in names] for item, attacks in COVERAGE.items()}
    assert not {k: v for k, v in missing.items() if v}


def test_fast_subset_covers_every_category():
    fast = select_attacks(fast=True)
    assert {a.category for a in fast} == {a.category for a in ATTACKS}
    assert len(fast) < len(ATTACKS)
