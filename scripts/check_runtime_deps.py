#!/usr/bin/env python3
"""Check that the Dockerfile's runtime stage installs what the binary links, and only that.

    python3 scripts/check_runtime_deps.py [--binary FILE] [--dockerfile FILE]

Reads the binary's NEEDED libraries (`readelf -d`), maps each to the Debian
package that ships it (`dpkg -S`; the CI host is Debian 12, as is the
runtime image), and compares those packages with the runtime stage's
`apt-get install` list. Errors: a needed package that is neither installed
there nor in debian:bookworm-slim already (BASE_PACKAGES); an installed
package that no needed library comes from (except ALLOWED_EXTRA). The
binary defaults to $CARGO_TARGET_DIR/debug/stockflow, CARGO_TARGET_DIR
defaulting to /var/tmp/stockflow/cargo-target; its libraries are those of
the release build in the image (same crates, same features).

Exit status: 0 when the lists agree, 1 with one line per error otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_BASE = "debian:bookworm-slim"
# In every debian:bookworm-slim image: dpkg pre-depends on libc6 and zlib1g,
# apt on libgcc-s1.
BASE_PACKAGES = {"libc6", "libgcc-s1", "zlib1g"}
# Installed on purpose although the binary links nothing from them.
ALLOWED_EXTRA = {"ca-certificates": "TLS trust store for Kafka SSL / PostgreSQL TLS"}


def needed_libraries(readelf_output: str) -> list[str]:
    """The NEEDED entries of `readelf -d` output, in order."""
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf_output)


def library_owners(dpkg_output: str, library: str, multiarch: str) -> set[str]:
    """The packages (without :arch) that `dpkg -S '*/LIBRARY'` names for the
    copy of LIBRARY the dynamic linker loads: one in the native library
    directories, not in /usr/lib32, a debug directory or the like."""
    dirs = {
        f"/lib/{multiarch}",
        f"/usr/lib/{multiarch}",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    }
    owners: set[str] = set()
    for line in dpkg_output.splitlines():
        packages, sep, path = line.partition(": ")
        if not sep or line.startswith("diversion "):
            continue
        if os.path.basename(path) == library and os.path.dirname(path) in dirs:
            owners |= {p.strip().split(":")[0] for p in packages.split(",")}
    return owners


def _instructions(dockerfile_text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[str] = []
    current = ""
    for line in dockerfile_text.splitlines():
        if line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            out.append(current.strip())
        current = ""
    if current.strip():
        out.append(current.strip())
    return out


def runtime_stage(dockerfile_text: str) -> tuple[str, list[str]]:
    """(base image, apt-get install packages) of the Dockerfile's last stage."""
    base = ""
    packages: list[str] = []
    for instruction in _instructions(dockerfile_text):
        keyword, _, rest = instruction.partition(" ")
        if keyword.upper() == "FROM":
            base = [w for w in rest.split() if not w.startswith("--")][0]
            packages = []
        elif keyword.upper() == "RUN":
            for command in re.split(r"&&|\|\||;|\|", rest):
                words = command.split()
                if words[:2] == ["apt-get", "install"]:
                    packages += [w for w in words[2:] if not w.startswith("-")]
    return base, packages


def errors_for(libraries: dict[str, set[str]], base: str, installed: list[str]) -> list[str]:
    """libraries: each NEEDED library -> the packages that ship it."""
    errors = []
    if base != RUNTIME_BASE:
        errors.append(
            f"runtime stage: FROM {base or '(none)'}, but BASE_PACKAGES {sorted(BASE_PACKAGES)} "
            f"are those of {RUNTIME_BASE}"
        )
    needed: set[str] = set()
    for library, owners in libraries.items():
        if not owners:
            errors.append(f"{library}: no Debian package ships it (dpkg -S)")
            continue
        needed |= owners
        if not owners & (set(installed) | BASE_PACKAGES):
            errors.append(
                f"{library} comes from {', '.join(sorted(owners))}, which the runtime stage "
                "does not install (add it to its apt-get install)"
            )
    for package in installed:
        if package not in needed and package not in ALLOWED_EXTRA:
            errors.append(
                f"runtime stage installs {package}, but the binary links no library from it"
            )
    return errors


def main(argv: list[str] | None = None) -> int:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "/var/tmp/stockflow/cargo-target")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", type=Path, default=target / "debug" / "stockflow")
    parser.add_argument("--dockerfile", type=Path, default=REPO_ROOT / "Dockerfile")
    args = parser.parse_args(argv)
    if not args.binary.is_file():
        print(f"runtime-deps: {args.binary} not found (build it first)", file=sys.stderr)
        return 1

    readelf = subprocess.run(
        ["readelf", "-d", str(args.binary)], capture_output=True, text=True, check=True
    )
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    libraries = {}
    for library in needed_libraries(readelf.stdout):
        dpkg = subprocess.run(
            ["dpkg", "-S", f"*/{library}"], capture_output=True, text=True, check=False
        )
        libraries[library] = library_owners(dpkg.stdout, library, multiarch)
    base, installed = runtime_stage(args.dockerfile.read_text(encoding="utf-8"))

    errors = errors_for(libraries, base, installed)
    if errors:
        print(f"runtime-deps: {len(errors)} error(s) in {args.dockerfile}:", file=sys.stderr)
        for error in errors:
            print(f"  - {error}", file=sys.stderr)
        return 1
    print(
        f"runtime-deps: the runtime stage installs {' '.join(installed)}; "
        f"{args.binary.name} links {' '.join(libraries)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
