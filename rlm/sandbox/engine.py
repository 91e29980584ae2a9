"""The Docker engine adapter: the only module of rlm that imports ``docker``.

Everything Docker can raise is translated here into ``SandboxError`` subclasses whose
messages say what to do.  Callers describe containers with ``ContainerSpec`` (plain
data) and never see docker-py objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

import docker
import docker.errors
import requests.exceptions

from rlm.errors import EngineUnavailable, ImageMissing, SandboxError
from rlm.sandbox.settings import DEFAULT_USER

ENGINE_HINT = "start Docker (dockerd) or run the set-up command: ./scripts/rlm setup"
BUILD_HINT = "run `rlm sandbox build` (or ./scripts/rlm setup)"


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = True


@dataclass
class ContainerSpec:
    image: str
    command: list[str]
    name: str | None = None
    user: str = DEFAULT_USER
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    tmpfs: dict[str, str] = field(default_factory=dict)
    network_mode: str = "none"
    read_only: bool = True
    cap_drop: list[str] = field(default_factory=lambda: ["ALL"])
    security_opt: list[str] = field(default_factory=list)
    pids_limit: int | None = None
    mem_limit_bytes: int | None = None
    memswap_limit_bytes: int | None = None
    nano_cpus: int | None = None
    ulimits: list[tuple[str, int, int]] = field(default_factory=list)
    init: bool = True
    runtime: str | None = None
    working_dir: str | None = None
    auto_remove: bool = True            # the engine removes the container once it stops
    # No container logs: whatever reaches the container's stdout would cost dockerd and containerd CPU
    # outside the container's quota (an os.write(1, ...) loop: 8-9 CPU-seconds per 10 s with json-file).
    # The supervisor also sends the kernel's stdout/stderr to /dev/null; cell output travels over iopub.
    log_driver: str = "none"


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    status: str          # created | running | exited | dead | ...
    exit_code: int | None
    oom_killed: bool
    labels: dict[str, str]


def _translate(exc: Exception, what: str) -> SandboxError:
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageMissing(f"{what}: image not found ({exc.explanation or exc})", hint=BUILD_HINT)
    if isinstance(exc, docker.errors.NotFound):
        return SandboxError(f"{what}: not found ({exc.explanation or exc})")
    if isinstance(exc, docker.errors.APIError):
        return SandboxError(f"{what}: Docker refused: {exc.explanation or exc}")
    if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError)):
        return EngineUnavailable(f"{what}: no Docker engine answers ({exc.__class__.__name__})", hint=ENGINE_HINT)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return SandboxError(f"{what}: the Docker engine did not answer in time")
    if isinstance(exc, docker.errors.DockerException):
        return EngineUnavailable(f"{what}: {exc}", hint=ENGINE_HINT)
    return SandboxError(f"{what}: {exc.__class__.__name__}: {exc}")


_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError,
                  FileNotFoundError)


class Engine:
    """A connection to one Docker engine (``DOCKER_HOST`` or the local socket)."""

    def __init__(self, base_url: str | None = None, timeout: float = 120.0) -> None:
        try:
            if base_url:
                self._client = docker.DockerClient(base_url=base_url, timeout=timeout)
            else:
                self._client = docker.from_env(timeout=timeout)
            self._client.ping()
        except _DOCKER_ERRORS as exc:
            where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            raise EngineUnavailable(f"no Docker engine answers at {where}", hint=ENGINE_HINT) from exc
        self._api = self._client.api

    # -- engine ---------------------------------------------------------------------------
    def version(self) -> dict:
        try:
            return self._client.version()
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "reading the engine version") from exc

    def info(self) -> dict:
        try:
            return self._client.info()
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "reading engine info") from exc

    # -- images ---------------------------------------------------------------------------
    def image_labels(self, name: str) -> dict[str, str] | None:
        """Labels of an image, or None when it is not there."""
        try:
            image = self._client.images.get(name)
        except docker.errors.ImageNotFound:
            return None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"inspecting image {name}") from exc
        return dict(image.labels or {})

    def image_exists(self, name: str) -> bool:
        return self.image_labels(name) is not None

    def tag_image(self, source: str, target: str) -> None:
        repo, _, tag = target.rpartition(":")
        try:
            self._client.images.get(source).tag(repo, tag)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"tagging {source} as {target}") from exc

    def build_image(self, context_dir: str, dockerfile: str, tag: str, buildargs: dict[str, str],
                    labels: dict[str, str], on_line: Callable[[str], None] = lambda _l: None) -> str:
        """Build an image with no network; stream build output lines to ``on_line``."""
        try:
            stream: Iterator[dict] = self._api.build(
                path=context_dir, dockerfile=dockerfile, tag=tag, buildargs=buildargs, labels=labels,
                rm=True, forcerm=True, network_mode="none", decode=True, pull=False)
            image_id = None
            for chunk in stream:
                if "error" in chunk:
                    raise SandboxError(f"building {tag} failed: {chunk['error'].strip()}")
                if "stream" in chunk and chunk["stream"].strip():
                    on_line(chunk["stream"].rstrip())
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
            return image_id or self._client.images.get(tag).id
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"building {tag}") from exc

    def import_image(self, tar_path: str, repository: str, tag: str) -> None:
        """``docker import`` a root filesystem tarball."""
        try:
            with open(tar_path, "rb") as fh:
                self._api.import_image_from_data(fh, repository=repository, tag=tag)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"importing {repository}:{tag}") from exc

    def pull_image(self, name: str) -> bool:
        """Try to pull; False (not an exception) when no registry can be reached."""
        repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "latest")
        try:
            self._client.images.pull(repo, tag=tag or "latest")
            return True
        except _DOCKER_ERRORS:
            return False

    def image_python_version(self, image: str) -> str | None:
        """The ``X.Y`` of python3 in an image (a throwaway container with no network)."""
        try:
            out = self._client.containers.run(
                image, ["python3", "-c", "import sys;print('%d.%d'%sys.version_info[:2])"],
                network_mode="none", remove=True, stdout=True, stderr=False)
        except docker.errors.ContainerError:
            return None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"probing python in {image}") from exc
        return out.decode().strip() or None

    # -- containers -----------------------------------------------------------------------
    def run(self, spec: ContainerSpec) -> str:
        """Create and start a detached container; return its id."""
        kwargs = dict(
            image=spec.image, command=spec.command, name=spec.name, user=spec.user, detach=True,
            environment=spec.environment, labels=spec.labels, network_mode=spec.network_mode,
            read_only=spec.read_only, cap_drop=spec.cap_drop, security_opt=spec.security_opt,
            tmpfs=spec.tmpfs, init=spec.init, working_dir=spec.working_dir,
            volumes={m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts},
            ulimits=[docker.types.Ulimit(name=n, soft=s, hard=h) for n, s, h in spec.ulimits],
            auto_remove=spec.auto_remove,
            log_config=docker.types.LogConfig(type=spec.log_driver),
        )
        if spec.pids_limit:
            kwargs["pids_limit"] = spec.pids_limit
        if spec.mem_limit_bytes:
            kwargs["mem_limit"] = spec.mem_limit_bytes
            kwargs["memswap_limit"] = spec.memswap_limit_bytes or spec.mem_limit_bytes
        if spec.nano_cpus:
            kwargs["nano_cpus"] = spec.nano_cpus
        if spec.runtime:
            kwargs["runtime"] = spec.runtime
        kwargs.pop("detach")
        try:
            container = self._client.containers.create(**kwargs)  # create never pulls: no registry is assumed
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "starting the sandbox container") from exc
        try:
            container.start()
        except _DOCKER_ERRORS as exc:
            self.remove(container.id)
            raise _translate(exc, "starting the sandbox container") from exc
        return container.id

    def inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            data = self._api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"inspecting container {container_id[:12]}") from exc
        state = data.get("State", {})
        return ContainerInfo(
            id=data["Id"], name=data.get("Name", "").lstrip("/"), status=state.get("Status", "unknown"),
            exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")),
            labels=dict((data.get("Config") or {}).get("Labels") or {}))

    def remove(self, container_id: str) -> None:
        """Force-remove a container; a container already gone is not an error."""
        try:
            self._api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                self._wait_gone(container_id)
                return
            raise _translate(exc, f"removing container {container_id[:12]}") from exc
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, f"removing container {container_id[:12]}") from exc

    def _wait_gone(self, container_id: str, timeout: float = 10.0) -> None:
        """Wait until a removal the engine already started has finished."""
        try:
            self._api.wait(container_id, timeout=timeout, condition="removed")
        except docker.errors.NotFound:
            return
        except _DOCKER_ERRORS:
            pass

    def list_labelled(self, label: str) -> list[ContainerInfo]:
        """Every container (running or not) that carries ``label`` (key or key=value)."""
        try:
            items = self._api.containers(all=True, filters={"label": label})
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "listing containers") from exc
        out = []
        for c in items:
            out.append(ContainerInfo(id=c["Id"], name=(c.get("Names") or ["?"])[0].lstrip("/"),
                                     status=c.get("State", "unknown"), exit_code=None, oom_killed=False,
                                     labels=dict(c.get("Labels") or {})))
        return out

    def exec_run(self, container_id: str, cmd: list[str], user: str = DEFAULT_USER) -> tuple[int, bytes]:
        """``docker exec`` (used only as a speed baseline by the benchmark)."""
        try:
            result = self._client.containers.get(container_id).exec_run(cmd, user=user)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "docker exec") from exc
        return result.exit_code, result.output

    def memory_usage_bytes(self, container_id: str) -> int | None:
        try:
            stats = self._api.stats(container_id, stream=False)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc, "reading container stats") from exc
        mem = stats.get("memory_stats") or {}
        usage = mem.get("usage")
        if usage is None:
            return None
        cache = (mem.get("stats") or {}).get("inactive_file", (mem.get("stats") or {}).get("cache", 0))
        return max(0, usage - cache)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a dead HTTP pool must not mask the real error
            pass
