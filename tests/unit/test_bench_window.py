"""A fair base: the window from the server's /props, tokens counted by its /tokenize, the context cut
to fit with room for the answer (scripted servers over real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import threading

from rlm.bench.generators import BenchItem
from rlm.bench.window import ANSWER_TOKENS, TEMPLATE_MARGIN, TokenCounter, Window, detect, fit
from rlm.config import Settings
from rlm.jobs.benchmark import BASE_SYSTEM, BenchRunner, base_prompt
from rlm.llm.base import ModelSettings
from rlm.llm.fake_server import FakeModelServer
from rlm.llm.resolve import make_client


class TokenizingServer(FakeModelServer):
    """The scripted server plus llama.cpp's /props (a window of ``n_ctx``) and /tokenize (one token per word)."""

    def __init__(self, n_ctx: int, **kwargs) -> None:
        self.window_tokens = n_ctx
        self.tokenized: list[int] = []
        self._tok_lock = threading.Lock()
        super().__init__(**kwargs)

    def _handler_class(self):
        base = super()._handler_class()
        server = self

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/props":
                    self._send(200, {"default_generation_settings": {"n_ctx": server.window_tokens}, "model_path": "m.gguf"})
                else:
                    super().do_GET()

            def do_POST(self) -> None:  # noqa: N802
                if self.path != "/tokenize":
                    return super().do_POST()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                words = body["content"].split()
                with server._tok_lock:
                    server.tokenized.append(len(words))
                self._send(200, {"tokens": list(range(len(words)))})

        return Handler


def _words(text: str) -> int:
    return len(text.split())


def _item(words: int) -> BenchItem:
    context = "\n".join(" ".join(f"w{i * 10 + j}" for j in range(10)) for i in range(words // 10))
    return BenchItem(id="made-up-1", benchmark="made_up", size=len(context), question="Which word is last?",
                     context=context, expected=f"w{words - 1}", scorer="exact")


def test_the_window_and_the_token_count_come_from_the_server() -> None:
    with TokenizingServer(900) as server:
        window = detect(server.url)
        assert window.tokens == 900 and window.source == "server /props"
        assert window.counter.method == "server /tokenize" and window.counter.count("a b c") == 3
        assert detect(server.url, tokens=4000).tokens == 4000          # a setting wins
    with FakeModelServer() as plain:                                   # no /props, no /tokenize
        window = detect(plain.url)
        assert window.source == "default" and window.tokens == 32_768
        assert window.counter.method.startswith("estimate: 3 characters per token")


def test_the_base_prompt_is_cut_by_tokens_to_fit_the_window_leaving_room_for_the_answer() -> None:
    item = _item(5000)                                                 # 5,000 tokens: far over the window
    render = lambda prefix, cut: base_prompt(item.question, prefix, cut)  # noqa: E731
    with TokenizingServer(1200) as server:
        window = detect(server.url)
        fitted = fit(item.context, render, BASE_SYSTEM, window)
        small = _item(100)
        whole = fit(small.context, render, BASE_SYSTEM, Window(1200, "x", window.counter))
    budget = 1200 - ANSWER_TOKENS - TEMPLATE_MARGIN
    used = _words(BASE_SYSTEM) + _words(fitted.prompt)
    assert used == fitted.prompt_tokens <= budget
    assert used > budget - 15                                          # not far under: the window is used
    assert item.context.startswith(fitted.shown) and fitted.shown.endswith("9")    # cut at a line break
    assert f"{len(item.context) - len(fitted.shown):,} more were not shown" in fitted.prompt
    assert fitted.full_prompt_tokens is None                           # far over the window: not counted whole
    assert whole.shown == small.context and "cut to" not in whole.prompt


def test_without_a_tokenizer_the_cut_uses_the_stated_characters_per_token() -> None:
    item = _item(5000)
    window = Window(2000, "--base-window-tokens", TokenCounter(None, chars_per_token=3.0))
    fitted = fit(item.context, lambda p, c: base_prompt(item.question, p, c), BASE_SYSTEM, window)
    assert (len(BASE_SYSTEM) + len(fitted.prompt)) / 3.0 <= 2000 - ANSWER_TOKENS - TEMPLATE_MARGIN + 2
    assert len(fitted.shown) > 0.9 * 3.0 * (2000 - ANSWER_TOKENS - TEMPLATE_MARGIN) - 600


def test_the_base_run_sends_the_fitted_prompt_and_the_oracle_its_own_passages(tmp_path) -> None:
    item = _item(3000)
    item = BenchItem(**{**item.__dict__, "oracle_context": "The last word is w2999."})
    with TokenizingServer(1000, root=["w2999", "FINAL(w2999)"]) as server:
        settings = Settings(model=ModelSettings(base_url=server.url, root_model="root-model"))
        client = make_client(settings)
        runner = BenchRunner(settings, client, compare_base=True, window=detect(server.url), trace_dir=tmp_path)
        base = runner.run_base(item)
        oracle = runner.run_base(item, item.oracle_context)
        requests = server.requests
        client.close()
    assert base["status"] == "ok" and base["score"] == 1.0 and base["exact"] == 1.0
    assert base["context_chars"] == len(item.context) and base["context_chars_shown"] < len(item.context)
    assert base["prompt_tokens_counted"] <= 1000 - ANSWER_TOKENS - TEMPLATE_MARGIN
    sent = requests[0]["messages"][-1]["content"]
    assert _words(sent) + _words(BASE_SYSTEM) == base["prompt_tokens_counted"]
    assert requests[0]["max_tokens"] == ANSWER_TOKENS
    assert oracle["answer"] == "w2999" and oracle["context_chars_shown"] == len(item.oracle_context)
    assert "The last word is w2999." in requests[1]["messages"][-1]["content"]


def test_a_context_far_over_the_window_is_not_counted_whole() -> None:
    item = _item(200_000)                                              # ~1.3M characters
    with TokenizingServer(1200) as server:
        window = detect(server.url)
        fitted = fit(item.context, lambda p, c: base_prompt(item.question, p, c), BASE_SYSTEM, window)
        counted = list(server.tokenized)
    assert fitted.full_prompt_tokens is None and fitted.prompt_tokens <= 1200 - ANSWER_TOKENS - TEMPLATE_MARGIN
    assert max(counted) < 20_000                                       # never the 200,000 words


def test_a_context_somewhat_over_the_window_is_counted_whole_and_cut() -> None:
    item = _item(1200)                                                 # ~7,000 characters, 1,200 tokens
    with TokenizingServer(1200) as server:
        fitted = fit(item.context, lambda p, c: base_prompt(item.question, p, c), BASE_SYSTEM, detect(server.url))
    budget = 1200 - ANSWER_TOKENS - TEMPLATE_MARGIN
    assert fitted.full_prompt_tokens is not None and fitted.full_prompt_tokens > budget
    assert budget - 15 < fitted.prompt_tokens <= budget and len(fitted.shown) < len(item.context)


def test_a_base_request_longer_than_the_runs_timeout_finishes_on_the_base_client(tmp_path) -> None:
    """A whole window takes minutes to read on a small CPU: the base and oracle requests go through
    their own client (``--base-timeout``), not the run's request timeout."""
    item = _item(300)
    slow = {"content": "w299", "delay_s": 1.5}
    with TokenizingServer(1000, root=[slow, slow]) as server:
        quick = ModelSettings(base_url=server.url, root_model="root-model", timeout_s=0.5, max_wait_s=0.5,
                              max_retries=0)
        settings = Settings(model=quick)
        with make_client(settings) as client, \
                make_client(Settings(model=ModelSettings(**{**quick.__dict__, "timeout_s": 10.0,
                                                            "max_wait_s": 10.0}))) as base_client:
            window = detect(server.url)
            alone = BenchRunner(settings, client, compare_base=True, window=window, trace_dir=tmp_path)
            paired = BenchRunner(settings, client, compare_base=True, window=window, trace_dir=tmp_path,
                                 base_client=base_client)
            timed_out = alone.run_base(item)
            finished = paired.run_base(item)
    assert timed_out["status"] == "error" and "0.5" in timed_out["error"]
    assert finished["status"] == "ok" and finished["answer"] == "w299"
