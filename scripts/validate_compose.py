#!/usr/bin/env python3
"""Validate docker-compose.yml without a Docker engine.

    python3 scripts/validate_compose.py [--compose FILE] [--schema FILE] [--compose-config BIN]

Three layers of checks:

1. compose-go, the loader behind `docker compose config`, loads the file
   (tools/compose-config, built by scripts/test.sh): YAML (duplicate keys
   are errors), merge keys, `${VAR}` interpolation from the environment and
   a `.env` beside the file, its schema validation and consistency checks
   (undefined services, volumes and networks, dependency cycles, missing
   env files), with every profile enabled. The binary comes from
   --compose-config, else $STOCKFLOW_COMPOSE_CONFIG, else
   /var/tmp/stockflow/bin/compose-config.
2. The raw YAML document against the compose-spec project's JSON Schema, by
   default `../shared/data/compose-spec.json` relative to the repository
   root (a missing file skips this layer, with a message).
3. On the project compose-go resolved, what compose-go does not check: this
   project's policy (published ports bind to loopback; a dependency runs
   under the same profiles as its dependant; image versions equal the ones
   we pin and test) and a few mistakes (`service_healthy` without a
   healthcheck, `service_completed_successfully` on a service that
   restarts, missing build contexts and bind-mounted files).

Exit status: 0 when valid, 1 with one line per error otherwise.
Needs PyYAML and jsonschema (`pip install pyyaml jsonschema`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_COMPOSE = REPO_ROOT / "docker-compose.yml"
DEFAULT_SCHEMA = REPO_ROOT.parent / "shared" / "data" / "compose-spec.json"
DEFAULT_COMPOSE_CONFIG = Path("/var/tmp/stockflow/bin/compose-config")

LOOPBACK = {"127.0.0.1", "::1"}
ONE_SHOT_RESTART_POLICIES = {"no", "on-failure"}
AIRFLOW_IMAGE = "stockflow-airflow:local"

Service = dict[str, Any]


def _display(path: Path) -> str:
    """The path relative to the working directory when that is short, else absolute."""
    relative = os.path.relpath(path)
    return str(path.resolve()) if relative.startswith(os.pardir + os.sep + os.pardir) else relative


# --- layer 1: compose-go ------------------------------------------------------


def load_project(binary: Path, compose: Path) -> tuple[dict | None, list[str], list[str]]:
    """(resolved project or None, errors, warnings) from compose-config."""
    if not os.access(binary, os.X_OK):
        return (
            None,
            [f"{binary} not found: scripts/test.sh builds it from tools/compose-config"],
            [],
        )
    result = subprocess.run(
        [str(binary), str(compose)], capture_output=True, text=True, check=False
    )
    errors: list[str] = []
    warnings: list[str] = []
    for line in result.stderr.splitlines():
        if line.startswith("compose: "):
            errors.append("compose-go: " + line.removeprefix("compose: "))
        elif line.startswith("{"):  # a loader warning, logged as JSON
            warnings.append(json.loads(line).get("msg", line))
        elif line.strip():
            warnings.append(line)
    if result.returncode != 0:
        return None, errors or [f"compose-config exited with {result.returncode}"], warnings
    return json.loads(result.stdout), errors, warnings


# --- layer 2: JSON Schema -----------------------------------------------------


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_errors(document: Any, schema_path: Path) -> list[str]:
    import jsonschema
    from jsonschema.exceptions import best_match

    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator_cls.check_schema(schema)
    errors = []
    for error in sorted(
        validator_cls(schema).iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]
    ):
        if error.context:  # oneOf/anyOf: name the alternative that came closest
            error = best_match(error.context)
        errors.append(f"{_path(error.absolute_path)}: {error.message[:200]}")
    return errors


# --- layer 3: policy on the resolved project ----------------------------------


def _has_healthcheck(service: Service) -> bool:
    check = service.get("healthcheck") or {}
    test = check.get("test") or []
    return not check.get("disable") and bool(test) and test[:1] != ["NONE"]


def port_errors(name: str, service: Service) -> list[str]:
    return [
        f"services.{name}.ports: {port.get('host_ip') or '0.0.0.0'}:"
        f"{port.get('published') or '(random)'}->{port.get('target')} publishes on all "
        "interfaces; this project binds host ports to 127.0.0.1 only"
        for port in service.get("ports") or []
        if port.get("host_ip") not in LOOPBACK
    ]


def depends_on_errors(name: str, service: Service, services: dict[str, Service]) -> list[str]:
    errors = []
    profiles = set(service.get("profiles") or [])
    for target, spec in (service.get("depends_on") or {}).items():
        where = f"services.{name}.depends_on.{target}"
        other = services.get(target) or {}  # compose-go rejects unknown targets
        condition = spec.get("condition", "service_started")
        if condition == "service_healthy" and not _has_healthcheck(other):
            errors.append(
                f"{where}: condition service_healthy, but {target!r} defines no healthcheck"
            )
        restart = str(other.get("restart") or "no").split(":")[0]
        if (
            condition == "service_completed_successfully"
            and restart not in ONE_SHOT_RESTART_POLICIES
        ):
            errors.append(
                f"{where}: condition service_completed_successfully, but {target!r} has "
                f"restart {restart!r} and so never completes"
            )
        # A required dependency must run whenever its dependant does.
        target_profiles = set(other.get("profiles") or [])
        if (
            spec.get("required", True)
            and target_profiles
            and not (profiles and profiles <= target_profiles)
        ):
            errors.append(
                f"{where}: {target!r} only runs with profile(s) "
                f"{', '.join(sorted(target_profiles))}, but {name!r} can start without them"
            )
    return errors


def file_errors(name: str, service: Service, project_dir: Path) -> tuple[list[str], list[Path]]:
    """(errors, missing directories): build contexts, and what is bind-mounted
    from the project directory (host paths elsewhere are not ours to check)."""
    errors: list[str] = []
    missing_dirs: list[Path] = []
    build = service.get("build")
    if build and Path(build.get("context", "")).is_absolute():  # else a remote context
        context = Path(build["context"])
        dockerfile = build.get("dockerfile", "Dockerfile")
        if not context.is_dir():
            errors.append(f"services.{name}.build.context: {_display(context)} is not a directory")
        elif "dockerfile_inline" not in build and not (context / dockerfile).is_file():
            errors.append(
                f"services.{name}.build.dockerfile: {dockerfile!r} not found in {_display(context)}"
            )
    for volume in service.get("volumes") or []:
        source = Path(volume.get("source") or "/")
        if (
            volume.get("type") != "bind"
            or not source.is_relative_to(project_dir)
            or source.exists()
        ):
            continue
        # Docker creates a missing source as a directory: wrong for a file.
        if source.suffix:
            errors.append(
                f"services.{name}.volumes: bind-mounted file {_display(source)} does not exist"
            )
        else:
            missing_dirs.append(source)
    return errors, missing_dirs


def _image_repo(image: str) -> str:
    return re.sub(r"(@.*|:[^/:]*)$", "", image)


def kafka_version_errors(services: dict[str, Service], pom: Path) -> list[str]:
    """The apache/kafka image must be the broker version the local scripts
    assemble from Maven Central (deploy/kafka/pom.xml), so that Compose and
    the tests run the same Kafka."""
    found = (
        re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
        if pom.is_file()
        else None
    )
    if not found:
        return [f"{_display(pom)}: no <kafka.version>: cannot check the Kafka image"]
    want = f"apache/kafka:{found.group(1).strip()}"
    images = {
        n: s.get("image", "")
        for n, s in services.items()
        if _image_repo(s.get("image", "")) == "apache/kafka"
    }
    if not images:
        return ["no service runs the apache/kafka image"]
    return [
        f"services.{name}.image: {image!r} differs from the Kafka version pinned in "
        f"{_display(pom)} (use {want})"
        for name, image in images.items()
        if image != want
    ]


def airflow_image_errors(services: dict[str, Service], project_dir: Path) -> list[str]:
    """The Airflow services run AIRFLOW_IMAGE, built from airflow/Dockerfile,
    whose base image is the apache-airflow version airflow/requirements.txt
    pins (and scripts/airflow.sh tests)."""
    airflow = {
        n: s
        for n, s in services.items()
        if n.startswith("airflow")
        or _image_repo(s.get("image", "")) in ("apache/airflow", _image_repo(AIRFLOW_IMAGE))
    }
    if not airflow:
        return ["no Airflow service (airflow-*)"]
    dockerfile = project_dir / "airflow" / "Dockerfile"
    errors = [
        f"services.{n}.image: {s.get('image')!r}; the Airflow services run {AIRFLOW_IMAGE}, "
        f"built from {_display(dockerfile)}"
        for n, s in airflow.items()
        if s.get("image") != AIRFLOW_IMAGE
    ]
    builders = {n: s["build"] for n, s in airflow.items() if s.get("build")}
    if not builders:
        errors.append(f"no Airflow service builds {AIRFLOW_IMAGE} (give one `build: ./airflow`)")
    for n, build in builders.items():
        built = Path(build.get("context", "")) / build.get("dockerfile", "Dockerfile")
        if built != dockerfile:
            errors.append(f"services.{n}.build: builds {built}, not {_display(dockerfile)}")

    requirements = project_dir / "airflow" / "requirements.txt"
    pin = (
        re.search(r"^apache-airflow==(\S+)", requirements.read_text(), re.M)
        if requirements.is_file()
        else None
    )
    if not pin:
        return errors + [f"{_display(requirements)}: no apache-airflow==VERSION pin"]
    froms = (
        re.findall(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", dockerfile.read_text(), re.M | re.I)
        if dockerfile.is_file()
        else []
    )
    want = f"apache/airflow:{pin.group(1)}"
    if not froms or froms[-1] != want:
        errors.append(
            f"{_display(dockerfile)}: FROM {froms[-1] if froms else '(none)'} differs from the "
            f"apache-airflow pin in {_display(requirements)} (use FROM {want})"
        )
    return errors


def policy_errors(project: dict, project_dir: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of layer 3."""
    services: dict[str, Service] = project.get("services") or {}
    if not services:
        return ["services: no services defined"], []
    errors: list[str] = []
    missing_dirs: dict[Path, list[str]] = {}  # bind-mount source -> services
    for name, service in services.items():
        errors += port_errors(name, service)
        errors += depends_on_errors(name, service, services)
        file_errs, dirs = file_errors(name, service, project_dir)
        errors += file_errs
        for source in dirs:
            missing_dirs.setdefault(source, []).append(name)
    errors += kafka_version_errors(services, project_dir / "deploy" / "kafka" / "pom.xml")
    errors += airflow_image_errors(services, project_dir)

    warnings = [
        f"{_display(source)} does not exist yet, Docker creates it "
        f"(bind-mounted by {', '.join(users)})"
        for source, users in sorted(missing_dirs.items())
    ]
    used = {
        volume.get("source")
        for service in services.values()
        for volume in service.get("volumes") or []
        if volume.get("type") == "volume"
    }
    warnings += [
        f"volumes.{volume}: declared but not used by any service"
        for volume in sorted(set(project.get("volumes") or {}) - used)
    ]
    return errors, warnings


# --- main ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--compose", type=Path, default=DEFAULT_COMPOSE, help="compose file to check"
    )
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA, help="Compose JSON Schema")
    parser.add_argument(
        "--compose-config",
        type=Path,
        default=Path(os.environ.get("STOCKFLOW_COMPOSE_CONFIG") or DEFAULT_COMPOSE_CONFIG),
        help="the tools/compose-config binary",
    )
    args = parser.parse_args(argv)
    compose: Path = args.compose.resolve()
    if not compose.is_file():
        print(f"compose: {_display(compose)} not found", file=sys.stderr)
        return 1

    project, errors, warnings = load_project(args.compose_config, compose)
    if args.schema.is_file():
        try:
            raw = yaml.safe_load(compose.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            raw = None  # compose-go has reported it
        if raw is not None:
            errors += schema_errors(raw, args.schema)
    else:
        print(f"compose: schema not found at {_display(args.schema)}, skipped")
    if project is not None:
        policy, policy_warnings = policy_errors(project, compose.parent)
        errors += policy
        warnings += policy_warnings

    for warning in warnings:
        print(f"compose: warning: {warning}", file=sys.stderr)
    if errors:
        print(f"compose: {len(errors)} error(s) in {_display(compose)}:", file=sys.stderr)
        for error in errors:
            print(f"  - {error}", file=sys.stderr)
        return 1
    schema = f"schema {_display(args.schema)}" if args.schema.is_file() else "no schema"
    print(f"compose: {_display(compose)} is valid (compose-go, {schema}, policy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
