"""ContainerCPU reads a container's CPU time from its cgroup, in every layout Docker uses, and
never builds a path from anything but a hexadecimal id."""

from __future__ import annotations

import pytest

from rlm.sandbox.cgroup import ContainerCPU

CID = "ab" * 32


@pytest.mark.parametrize("relative, text, seconds", [
    (f"cpuacct/docker/{CID}/cpuacct.usage", "2500000000\n", 2.5),
    (f"cpu,cpuacct/system.slice/docker-{CID}.scope/cpuacct.usage", "1000000000\n", 1.0),
    (f"system.slice/docker-{CID}.scope/cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n", 1.5),
    (f"docker/{CID}/cpu.stat", "usage_usec 250000\n", 0.25),
])
def test_every_layout_is_read(tmp_path, relative, text, seconds):
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert ContainerCPU(CID, root=tmp_path).seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("container_id", [None, "", "../../etc", "rlm-abc", CID + "/.."])
def test_no_path_from_anything_but_a_hex_id(tmp_path, container_id):
    assert ContainerCPU(container_id, root=tmp_path).seconds() is None


def test_an_unknown_layout_or_a_garbled_file_is_none(tmp_path):
    assert ContainerCPU(CID, root=tmp_path).seconds() is None
    path = tmp_path / "docker" / CID / "cpu.stat"
    path.parent.mkdir(parents=True)
    path.write_text("usage_usec lots\n")
    assert ContainerCPU(CID, root=tmp_path).seconds() is None
