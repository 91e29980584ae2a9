"""The llama.cpp build's recipe: which CPU variants are built, the cache key, and which installed
build is used (today's, else an earlier one that is still safe)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rlm.llm.local import runtime as rt

# ggml/src/CMakeLists.txt's shape (not the file): the function, the x86 list, the arm lists.
CMAKELISTS = """\
function(ggml_add_cpu_backend_variant tag_name)
    ggml_add_cpu_backend_variant_impl(${tag_name})
endfunction()
if (GGML_CPU_ALL_VARIANTS)
    if (GGML_SYSTEM_ARCH STREQUAL "x86")
        ggml_add_cpu_backend_variant(x64)
        ggml_add_cpu_backend_variant(sse42              SSE42)
        ggml_add_cpu_backend_variant(sandybridge        SSE42 AVX)
        ggml_add_cpu_backend_variant(haswell            SSE42 AVX F16C FMA AVX2 BMI2)
        ggml_add_cpu_backend_variant(skylakex           SSE42 AVX F16C FMA AVX2 BMI2 AVX512)
        ggml_add_cpu_backend_variant(cascadelake        SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VNNI)
        ggml_add_cpu_backend_variant(zen4               SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI)
        ggml_add_cpu_backend_variant(alderlake          SSE42 AVX F16C FMA AVX2 BMI2 AVX_VNNI)
        if (NOT MSVC)
            ggml_add_cpu_backend_variant(sapphirerapids SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AMX_TILE AMX_INT8)
        endif()
    elseif(GGML_SYSTEM_ARCH STREQUAL "ARM")
        ggml_add_cpu_backend_variant(armv8.0_1)
        ggml_add_cpu_backend_variant(armv8.2_2    DOTPROD FP16_VECTOR_ARITHMETIC)
        ggml_add_cpu_backend_variant(armv8.6_1    DOTPROD FP16_VECTOR_ARITHMETIC SVE MATMUL_INT8)
        ggml_add_cpu_backend_variant(armv9.2_1    DOTPROD FP16_VECTOR_ARITHMETIC SVE MATMUL_INT8 SME)
        ggml_add_cpu_backend_variant(android_armv8.0_1)
    endif()
endif()
"""


def _source(tmp_path: Path, text: str = CMAKELISTS) -> Path:
    path = tmp_path / "src" / rt.VARIANTS_FILE
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return tmp_path / "src"


def _declared(source: Path) -> list[str]:
    """The variants the edited file still declares (lines that are not comments)."""
    lines = (source / rt.VARIANTS_FILE).read_text().splitlines()
    return [m.group("name") for m in map(rt._VARIANT_CALL.match, lines) if m]


def test_only_the_wanted_x86_variants_stay_declared(tmp_path):
    source = _source(tmp_path)
    dropped = rt.select_variants(source, rt.CPU_VARIANTS["x86_64"])
    assert _declared(source) == list(rt.CPU_VARIANTS["x86_64"])
    assert "sapphirerapids" in dropped and "zen4" in dropped and "sandybridge" in dropped
    assert "android_armv8.0_1" in dropped   # a name that merely ends like a wanted one is not kept
    text = (source / rt.VARIANTS_FILE).read_text()
    assert "function(ggml_add_cpu_backend_variant tag_name)" in text   # the definition is untouched
    assert "        # (not built by rlm) ggml_add_cpu_backend_variant(sapphirerapids SSE42" in text
    assert text.count("\n") == CMAKELISTS.count("\n")


def test_the_arm64_set_has_a_baseline_and_no_sme(tmp_path):
    source = _source(tmp_path)
    rt.select_variants(source, rt.CPU_VARIANTS["aarch64"])
    assert _declared(source) == ["armv8.0_1", "armv8.2_2", "armv8.6_1"]


def test_no_wanted_variant_is_excluded_and_each_arch_has_its_baseline():
    for machine, baseline in (("x86_64", "x64"), ("aarch64", "armv8.0_1")):
        wanted = rt.CPU_VARIANTS[machine]
        assert wanted[0] == baseline
        assert not set(wanted) & set(rt.EXCLUDED_VARIANTS)
    assert {"haswell", "skylakex", "cascadelake", "alderlake"} <= set(rt.CPU_VARIANTS["x86_64"])


@pytest.mark.parametrize("text", [CMAKELISTS.replace("ggml_add_cpu_backend_variant(haswell", "# haswell"),
                                  CMAKELISTS.replace("ggml_add_cpu_backend_variant(x64)",
                                                     "ggml_add_cpu_backend_variant(x64)\n"
                                                     "ggml_add_cpu_backend_variant(x64)")])
def test_a_source_that_does_not_declare_a_wanted_variant_once_is_refused(tmp_path, text):
    source = _source(tmp_path, text)
    with pytest.raises(rt.RuntimeBuildError, match="exactly once"):
        rt.select_variants(source, rt.CPU_VARIANTS["x86_64"])
    assert (source / rt.VARIANTS_FILE).read_text() == text   # left as it was


def test_the_cache_key_names_the_variants(monkeypatch):
    tag = rt._tag("x86_64")
    assert tag.startswith("0.3.36-x86_64-")
    assert tag != "0.3.36-x86_64-e6f987c480"   # the key of the build with all of ggml's variants
    monkeypatch.setitem(rt.CPU_VARIANTS, "x86_64", ("x64", "haswell"))
    assert rt._tag("x86_64") != tag
    assert rt._tag("aarch64") != rt._tag("x86_64")


def _build(cache: Path, name: str, *, variants=("x64", "haswell"), built_at=1.0, **info) -> Path:
    folder = cache / "llama.cpp" / name
    folder.mkdir(parents=True)
    (folder / rt.SERVER_BINARY).write_text(f"#!{sys.executable}\n")
    (folder / rt.SERVER_BINARY).chmod(0o755)
    for variant in variants:
        (folder / f"libggml-cpu-{variant}.so").write_bytes(b"")
    record = {"sha256": rt.SOURCE_SHA256, "machine": rt._machine(), "version": "0.3.36",
              "flags": list(rt.BUILD_FLAGS), "built_at": built_at, **info}
    (folder / rt.BUILD_INFO).write_text(json.dumps(record))
    return folder


def _earlier(n: int) -> str:
    return f"0.3.36-{rt._machine()}-old{n:07d}"


def test_todays_build_is_preferred_to_an_earlier_one(tmp_path):
    _build(tmp_path, _earlier(1), built_at=5.0)
    today = _build(tmp_path, rt.runtime_dir(tmp_path).name, built_at=1.0)
    found = rt.installed_runtime(tmp_path)
    assert found is not None and found.path == today and found.current


def test_an_earlier_valid_build_keeps_working_until_todays_exists(tmp_path):
    _build(tmp_path, _earlier(1), built_at=1.0)
    newer = _build(tmp_path, _earlier(2), built_at=2.0, variants=("x64", "haswell", "zen4"))
    found = rt.installed_runtime(tmp_path)
    assert found is not None and found.path == newer and not found.current
    assert found.to_dict()["current"] is False and "zen4" in found.variants


@pytest.mark.parametrize("change", [
    {"variants": ("x64", "haswell", "sapphirerapids")},                   # the AMX variant
    {"variants": ("haswell",)},                                            # no baseline
    {"sha256": "0" * 64},                                                  # another source
    {"machine": "riscv64"},                                                # another machine
    {"flags": [f for f in rt.BUILD_FLAGS if f != "-DGGML_NATIVE=OFF"]},    # not portable
])
def test_an_earlier_build_that_is_not_safe_is_not_used(tmp_path, change):
    _build(tmp_path, _earlier(1), **change)
    assert rt.installed_runtime(tmp_path) is None


def test_building_is_not_skipped_for_an_earlier_build(tmp_path, monkeypatch):
    _build(tmp_path, _earlier(1))
    monkeypatch.setattr(rt, "missing_tools", lambda: ["cmake"])   # stops the build before it fetches anything
    with pytest.raises(rt.RuntimeBuildError, match="needs cmake"):
        rt.build_runtime(tmp_path)
    today = _build(tmp_path, rt.runtime_dir(tmp_path).name)
    assert rt.build_runtime(tmp_path).path == today   # today's build: nothing to do
