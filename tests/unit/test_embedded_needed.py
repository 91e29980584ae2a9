"""`embedded_model_needed`: what the set-up scripts ask before installing the embedded model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import rlm.llm.local.fallback as embedded
from rlm.llm.resolve import embedded_model_needed

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A working directory with the shipped default.yaml, no base URL in the environment, and
    nothing answering at the default URL (``probe_url`` records the URLs it was asked about)."""
    for name in ("OLLAMA_BASE_URL", "RLM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text((REPO / "configs" / "default.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    probed: list[str] = []
    monkeypatch.setattr(embedded, "probe_url", lambda url, timeout=1.0: probed.append(url) or False)
    return SimpleNamespace(path=tmp_path, probed=probed)


def test_needed_when_nothing_is_configured_or_answering(workdir: SimpleNamespace) -> None:
    assert embedded_model_needed(["demo", "needle"]) is True
    assert workdir.probed == ["http://localhost:11434/v1"]


def test_not_needed_when_the_default_url_answers(workdir: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "probe_url", lambda url, timeout=1.0: True)
    assert embedded_model_needed(["demo"]) is False


@pytest.mark.parametrize("argv", [["query", "--base-url", "http://h:1/v1"], ["query", "--base-url=http://h:1/v1"]])
def test_not_needed_with_a_base_url_flag(workdir: SimpleNamespace, argv: list[str]) -> None:
    assert embedded_model_needed(argv) is False
    assert workdir.probed == []


def test_not_needed_with_a_base_url_in_the_environment(workdir: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://h:1/v1")
    assert embedded_model_needed(["demo"]) is False


@pytest.mark.parametrize("form", ["separate", "joined"])
def test_a_base_url_in_the_yaml_given_with_config_counts(workdir: SimpleNamespace, form: str) -> None:
    (workdir.path / "mine.yaml").write_text("model:\n  base_url: http://h:1/v1\n")
    argv = ["query", "--config", "mine.yaml"] if form == "separate" else ["query", "--config=mine.yaml"]
    assert embedded_model_needed(argv) is False
    assert embedded_model_needed(["query"]) is True      # without --config the shipped file is read


def test_settings_that_do_not_load_are_left_to_the_command(workdir: SimpleNamespace) -> None:
    assert embedded_model_needed(["query", "--config", "missing.yaml"]) is False
