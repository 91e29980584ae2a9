"""Fault round 2 on reply parsing (issue 33: D10): a reply of many unclosed ``FINAL(`` is parsed in time
linear in its length.  The tests assert the result, not the time (``benchmarks`` print the figure); a
quadratic scan would not finish a megabyte within the child's timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm.core.parsing import find_final

from .conftest import cli_env, run_cli

MB = 1_000_000


def _unclosed(unit: str, size: int = MB) -> str:
    return unit * (size // len(unit))


@pytest.mark.parametrize("unit", ["FINAL(", 'FINAL("', "FINAL('''x ", "FINAL_VAR(", "FINAL((\n"],
                         ids=["bare", "open-string", "open-triple-string", "var", "nested"])
def test_a_megabyte_of_unclosed_finals_of_every_shape_is_no_answer(unit: str) -> None:
    assert find_final(_unclosed(unit)) is None


def test_the_last_well_formed_final_after_a_megabyte_of_unclosed_ones_is_found() -> None:
    text = _unclosed('FINAL("') + '\nThe answer: FINAL("forty-two")'
    found = find_final(text)
    assert found is not None and (found.kind, found.value) == ("answer", "forty-two")


@pytest.mark.docker
def test_a_run_whose_reply_is_a_megabyte_of_unclosed_final_goes_on_to_its_answer(scripted, tmp_path: Path) -> None:
    server = scripted([_unclosed("FINAL("), "Now for real.\nFINAL(forty-two)"])
    result = run_cli("query", "-q", "what is it?", "-c", "some context", "--json",
                     env=cli_env(server), cwd=tmp_path, timeout=60)
    assert result.returncode == 0, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert '"forty-two"' in result.stdout
    assert len(server.requests) >= 2    # the megabyte was no answer: the loop asked again
