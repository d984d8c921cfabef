"""Tests of scripts/check_runtime_deps.py's pure functions, on made-up inputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "check_runtime_deps", SCRIPTS / "check_runtime_deps.py"
)
assert _spec and _spec.loader
crd = importlib.util.module_from_spec(_spec)
sys.modules["check_runtime_deps"] = crd
_spec.loader.exec_module(crd)

READELF = """
Dynamic section at offset 0x1c0e2b8 contains 33 entries:
  Tag        Type                         Name/Value
 0x0000000000000001 (NEEDED)             Shared library: [libz.so.1]
 0x0000000000000001 (NEEDED)             Shared library: [libssl.so.3]
 0x0000000000000001 (NEEDED)             Shared library: [libcrypto.so.3]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
 0x000000000000000c (INIT)               0x2f6000
 0x000000000000001d (RUNPATH)            Library runpath: [libfoo.so.1]
"""

# What the check computes on Debian 12 for the real binary (ld-linux, libm,
# libgcc_s left out).
LIBRARIES = {
    "libz.so.1": {"zlib1g"},
    "libssl.so.3": {"libssl3"},
    "libcrypto.so.3": {"libssl3"},
    "libc.so.6": {"libc6"},
}

DOCKERFILE = """\
FROM rust:1.95-bookworm AS builder
RUN apt-get update \\
    && apt-get install -y --no-install-recommends \\
        cmake libssl-dev \\
    && rm -rf /var/lib/apt/lists/*

# --- runtime
FROM --platform=linux/amd64 debian:bookworm-slim AS runtime
# apt-get install not-this-comment
RUN apt-get update \\
    && apt-get install -y --no-install-recommends \\
        ca-certificates libssl3 \\
    && rm -rf /var/lib/apt/lists/* \\
    && useradd --system stockflow
COPY --from=builder /out/stockflow /usr/local/bin/stockflow
"""


def test_needed_libraries_reads_only_needed_entries() -> None:
    assert crd.needed_libraries(READELF) == [
        "libz.so.1",
        "libssl.so.3",
        "libcrypto.so.3",
        "libc.so.6",
    ]


def test_library_owners_keeps_the_native_copy() -> None:
    dpkg = (
        "libgcc-s1:amd64: /lib/x86_64-linux-gnu/libgcc_s.so.1\n"
        "lib32gcc-s1: /usr/lib32/libgcc_s.so.1\n"
        "libgcc-s1-dbg:amd64: /usr/lib/debug/libgcc_s.so.1.debug\n"
        "diversion by foo from: /lib/x86_64-linux-gnu/libgcc_s.so.1\n"
    )
    assert crd.library_owners(dpkg, "libgcc_s.so.1", "x86_64-linux-gnu") == {"libgcc-s1"}
    dpkg = (
        "libc6:amd64: /lib64/ld-linux-x86-64.so.2\n"
        "libc6:amd64: /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n"
    )
    assert crd.library_owners(dpkg, "ld-linux-x86-64.so.2", "x86_64-linux-gnu") == {"libc6"}
    assert crd.library_owners("", "libnothing.so.1", "x86_64-linux-gnu") == set()


def test_runtime_stage_is_the_last_stage() -> None:
    assert crd.runtime_stage(DOCKERFILE) == ("debian:bookworm-slim", ["ca-certificates", "libssl3"])


def test_matching_lists_pass() -> None:
    assert crd.errors_for(LIBRARIES, "debian:bookworm-slim", ["ca-certificates", "libssl3"]) == []


def test_needed_package_not_installed_fails() -> None:
    assert crd.errors_for(LIBRARIES, "debian:bookworm-slim", ["ca-certificates"]) == [
        "libssl.so.3 comes from libssl3, which the runtime stage does not install "
        "(add it to its apt-get install)",
        "libcrypto.so.3 comes from libssl3, which the runtime stage does not install "
        "(add it to its apt-get install)",
    ]


def test_package_the_binary_does_not_link_fails() -> None:
    assert crd.errors_for(
        LIBRARIES, "debian:bookworm-slim", ["ca-certificates", "libcurl4", "libssl3"]
    ) == ["runtime stage installs libcurl4, but the binary links no library from it"]


def test_library_without_package_fails() -> None:
    libraries = {**LIBRARIES, "libmine.so.1": set()}
    assert crd.errors_for(libraries, "debian:bookworm-slim", ["ca-certificates", "libssl3"]) == [
        "libmine.so.1: no Debian package ships it (dpkg -S)"
    ]


def test_other_base_image_fails() -> None:
    errors = crd.errors_for(LIBRARIES, "debian:trixie-slim", ["ca-certificates", "libssl3"])
    assert len(errors) == 1 and errors[0].startswith(
        "runtime stage: FROM debian:trixie-slim"
    ), errors


def test_main_on_a_fake_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() wires readelf and dpkg -S output into the check."""
    outputs = {
        "readelf": READELF,
        "dpkg": "libssl3:amd64: /usr/lib/x86_64-linux-gnu/libssl.so.3\n"
        "libssl3:amd64: /usr/lib/x86_64-linux-gnu/libcrypto.so.3\n"
        "zlib1g:amd64: /lib/x86_64-linux-gnu/libz.so.1\n"
        "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6\n",
    }

    class Done:
        def __init__(self, stdout: str) -> None:
            self.stdout = stdout

    monkeypatch.setattr(crd.subprocess, "run", lambda argv, **_: Done(outputs[argv[0]]))
    monkeypatch.setattr(crd.sysconfig, "get_config_var", lambda _: "x86_64-linux-gnu")
    (tmp_path / "stockflow").write_text("")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.replace("libssl3", "libssl3 libcurl4"))
    status = crd.main(
        ["--binary", str(tmp_path / "stockflow"), "--dockerfile", str(tmp_path / "Dockerfile")]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert err.splitlines()[1:] == [
        "  - runtime stage installs libcurl4, but the binary links no library from it"
    ]
