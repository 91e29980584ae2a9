"""rlm's seccomp profile as data: socket families, the reviewed calls, no syscall both allowed and denied."""

from __future__ import annotations

from rlm.sandbox import seccomp


def _rules(name: str) -> list[dict]:
    return [r for r in seccomp.profile("x86_64")["syscalls"] if name in r["names"]]


def test_socket_and_socketpair_only_for_the_four_families() -> None:
    for call in ("socket", "socketpair"):
        rules = _rules(call)
        assert all(r["action"] == "SCMP_ACT_ALLOW" for r in rules)
        allowed = sorted(r["args"][0]["value"] for r in rules)
        assert allowed == [1, 2, 10, 16]                       # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
        assert all(r["args"][0]["op"] == "SCMP_CMP_EQ" and r["args"][0]["index"] == 0 for r in rules)
        assert 40 not in allowed                                # AF_VSOCK
        assert call not in seccomp.ALLOWED


def test_sync_syncfs_refused_and_memfd_secret_not_provided() -> None:
    for name in ("sync", "syncfs"):
        assert name in seccomp.DENIED and name not in seccomp.ALLOWED
    assert "memfd_secret" not in seccomp.ALLOWED and "memfd_secret" not in seccomp.DENIED
    assert not _rules("memfd_secret")                           # the default action: ENOSYS
    assert "fsync" in seccomp.ALLOWED and "fdatasync" in seccomp.ALLOWED


def test_no_syscall_is_both_allowed_and_denied() -> None:
    assert not set(seccomp.ALLOWED) & set(seccomp.DENIED)
