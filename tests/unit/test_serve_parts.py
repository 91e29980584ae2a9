"""The service's parts without Docker: auth, path confinement, uploads, the queue, error mapping, and the
HTTP app's refusals (an in-process ASGI client; nothing is run)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from rlm.errors import ContextError, Interrupted, ModelNotFound, ModelUnreachable, SandboxTimeout  # noqa: E402
from rlm.serve.auth import Authenticator, check_bind, is_loopback, load_token  # noqa: E402
from rlm.serve.contexts import FileStore, confined  # noqa: E402
from rlm.serve.errors import APIError, from_rlm_error  # noqa: E402
from rlm.serve.queue import RunQueue  # noqa: E402

TOKEN = "a-long-enough-token-0123456789"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.5.0.1", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("192.0.2.7", False),
                                            ("::", False), ("example.org", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_off_loopback_without_a_token_refuses_to_start():
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(Exception, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(Exception, match="too short"):
        check_bind("0.0.0.0", "short")


def test_the_token_comes_from_a_file_or_the_environment_which_then_forgets_it(tmp_path):
    env = {"RLM_SERVE_TOKEN": f" {TOKEN} \n", "OTHER": "x"}
    assert load_token(None, environ=env) == TOKEN
    assert "RLM_SERVE_TOKEN" not in env  # no child process inherits it
    path = tmp_path / "token"
    path.write_text(TOKEN + "\nsecond line\n")
    assert load_token(path, environ={}) == TOKEN
    path.write_text("\n")
    with pytest.raises(Exception, match="empty"):
        load_token(path, environ={})
    assert load_token(None, environ={}) is None


def test_the_authenticator_compares_bearer_tokens_and_never_shows_them():
    auth = Authenticator(TOKEN)
    assert auth.allows(f"Bearer {TOKEN}") and auth.allows(f"bearer {TOKEN}")
    for bad in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", "Bearer "):
        assert not auth.allows(bad)
    assert TOKEN not in repr(auth)
    assert Authenticator(None).allows(None)


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (tmp_path / "outside.txt").write_text("secret")
    (root / "out-link.txt").symlink_to(tmp_path / "outside.txt")
    (root / "in-link.txt").symlink_to(root / "a.txt")
    (root / "leaky").mkdir()
    (root / "leaky" / "x").symlink_to(tmp_path)
    return root


def test_paths_are_confined_to_the_root_links_included(root):
    assert confined(root, "a.txt") == (root / "a.txt").resolve()
    assert confined(root, "sub/b.txt") == (root / "sub" / "b.txt").resolve()
    assert confined(root, str(root / "a.txt")) == (root / "a.txt").resolve()
    assert confined(root, "in-link.txt") == (root / "a.txt").resolve()
    assert confined(root, "sub") == (root / "sub").resolve()
    for given, code in (("../outside.txt", "path_outside_root"), ("out-link.txt", "path_outside_root"),
                        ("/etc/passwd", "path_outside_root"), ("leaky", "path_outside_root"),
                        ("sub/../../outside.txt", "path_outside_root"), ("nope.txt", "invalid_context"),
                        ("", "invalid_context"), ("a.txt\x00", "invalid_context")):
        with pytest.raises(APIError) as caught:
            confined(root, given)
        assert caught.value.status == 400 and caught.value.code == code, given
    with pytest.raises(APIError, match="without --context-root"):
        confined(None, "a.txt")


def test_uploads_are_stored_under_their_own_id_with_a_safe_name(tmp_path):
    store = FileStore(tmp_path / "files", max_bytes=10)
    stored, part = store.new("../../etc/passwd", "user_data")
    part.write_bytes(b"12345")
    store.commit(stored, part, 5)
    again = store.get(stored.id)
    assert again.path.read_bytes() == b"12345" and again.filename == "passwd"
    assert again.path.parent.parent == tmp_path / "files"
    for bad in ("../x", "file-zz", "file-" + "0" * 24):
        with pytest.raises(APIError) as caught:
            store.get(bad)
        assert caught.value.status == 404
    store.delete(stored.id)
    with pytest.raises(APIError):
        store.get(stored.id)


def test_a_full_queue_refuses_with_429_and_retry_after():
    async def main() -> tuple[APIError, int]:
        queue = RunQueue(workers=1, max_queue=1)
        release = asyncio.Event()
        entered = asyncio.Event()

        async def hold() -> None:
            async with queue.slot():
                entered.set()
                await release.wait()

        async def wait_turn() -> None:
            async with queue.slot():
                pass

        first = asyncio.ensure_future(hold())
        await entered.wait()
        second = asyncio.ensure_future(wait_turn())
        while queue.waiting == 0:
            await asyncio.sleep(0)
        with pytest.raises(APIError) as caught:
            async with queue.slot():
                pass
        release.set()
        await asyncio.gather(first, second)
        return caught.value, queue.running

    err, running = asyncio.run(main())
    assert err.status == 429 and int((err.headers or {})["Retry-After"]) >= 1 and running == 0


@pytest.mark.parametrize("exc, status", [
    (ContextError("bad context"), 400), (ModelNotFound("no model"), 404), (ModelUnreachable("down"), 503),
    (SandboxTimeout("slow cell"), 504), (Interrupted("cancelled"), 503)])
def test_rlm_errors_become_openai_errors_with_their_status(exc, status):
    err = from_rlm_error(exc)
    body = err.body()["error"]
    assert err.status == status and set(body) == {"message", "type", "param", "code"}


def _asgi_app(tmp_path: Path, token: str | None = None, **options):
    """The service's HTTP app (not started), its data under ``tmp_path / "data"``."""
    from rlm.config import Settings
    from rlm.config.settings import LoadedSettings
    from rlm.serve.http import create_app
    from rlm.serve.service import ServeOptions, Service

    service = Service(LoadedSettings(settings=Settings(), sources={}),
                      ServeOptions(data_dir=tmp_path / "data", token=token, context_root=tmp_path, **options))
    service.models = ["root-model"]
    return create_app(service, start_service=False)


def _app(tmp_path: Path, token: str | None = None):
    from starlette.testclient import TestClient

    return TestClient(_asgi_app(tmp_path, token), raise_server_exceptions=False)


def test_the_app_refuses_requests_without_the_token(tmp_path):
    with _app(tmp_path, TOKEN) as client:
        assert client.get("/v1/models").status_code == 401
        refused = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/health").status_code == 200
        ok = client.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
        assert [m["id"] for m in ok.json()["data"]] == ["rlm", "rlm/root-model"]


def test_the_app_answers_bad_requests_with_error_objects(tmp_path):
    with _app(tmp_path) as client:
        cases = [
            (b"[1, 2]", 400, "invalid_request"), (b"{", 400, "invalid_json"),
            (b'{"messages": []}', 400, "invalid_request"),
            (b'{"messages": [{"role": "user", "content": "Q"}], "model": "other"}', 404, "model_not_found"),
            (b'{"messages": [{"role": "user", "content": "Q"}], "rlm": {"context": {"path": "/etc"}}}', 400,
             "path_outside_root"),
            (b'{"messages": [{"role": "user", "content": "Q"}], "rlm": {"context": {"url": "x"}}}', 400,
             "invalid_context"),
            (b'{"messages": [{"role": "user", "content": "Q"}], "rlm": {"context": {"file_id": "file-x"}}}', 404,
             "file_not_found"),
        ]
        for body, status, code in cases:
            response = client.post("/v1/chat/completions", content=body)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
        assert client.get("/v1/traces/../../etc/passwd").status_code == 404
        assert client.get("/v1/traces/run-0123456789abcdef/view").status_code == 404
        assert "Traceback" not in client.get("/v1/nothing").text


def test_an_upload_without_a_length_is_read_only_up_to_the_cap(tmp_path):
    """A chunked upload declares no Content-Length: the multipart parser, which spools the file to
    disk, must stop reading at the cap instead of taking the whole (here 8 MB) body."""
    cap, piece, pieces = 1000, 64 * 1024, 128
    app = _asgi_app(tmp_path, max_upload_bytes=cap)
    head = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n")
    body = [head] + [b"x" * piece] * pieces + [b"\r\n--B--\r\n"]
    read, sent = [0], []

    async def receive():
        if not body:
            return {"type": "http.disconnect"}
        chunk = body.pop(0)
        read[0] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(body)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/files", "raw_path": b"/v1/files", "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"multipart/form-data; boundary=B"),
                         (b"transfer-encoding", b"chunked")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and b"file_too_large" in sent[1]["body"]
    assert read[0] <= cap + 64 * 1024 + piece + len(head)          # not the 8 MB sent
    assert not list((tmp_path / "data" / "files").glob("**/*.txt"))
