"""A real two-node Ray cluster on this machine for the Ray executor's tests (markers ``ray``, ``docker``)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from raycluster import RayCluster  # tests/ray/ is on sys.path (rootdir-style test folders)


def pytest_configure(config: pytest.Config) -> None:
    # also registered in pyproject.toml; kept here so that this folder runs on its own
    config.addinivalue_line("markers", "ray: needs the ray extra; starts a real Ray cluster on 127.0.0.1")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    if importlib.util.find_spec("ray") is None:
        msg = "ray is not installed: pip install '.[ray]'"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)
    cluster = RayCluster(Path(tmp_path_factory.mktemp("ray")))
    try:
        cluster.start_head()
        cluster.add_node()
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        cluster.stop()
