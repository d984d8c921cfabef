#!/usr/bin/env python3
"""Validate docker-compose.yml without a Docker engine.

    python3 scripts/validate_compose.py [--compose FILE] [--schema FILE] [--with-docker]

Two layers of checks:

1. The Compose JSON Schema (the compose-spec project's `compose-spec.json`),
   by default at `../shared/data/compose-spec.json` relative to the repository
   root. The file is loaded the way `docker compose` loads it first: YAML
   (duplicate keys are an error, `<<` merge keys are resolved), then
   `${VAR}` interpolation from the environment and a `.env` file beside the
   compose file, then the schema, using the JSON Schema draft that its
   `$schema` names.
2. Semantic checks the schema cannot express: every `depends_on` target
   exists, and is enabled by the same profiles as its dependant; no
   dependency cycles; `service_healthy` targets define a healthcheck;
   `service_completed_successfully` targets can complete; named volumes and
   networks are declared; bind-mounted files, env files and build contexts
   exist; and, as this project's policy, published ports bind to loopback.

Exit status: 0 when valid, 1 with one line per error otherwise. A missing
schema file skips layer 1 ("compose: schema not found at ..., skipped") and
still runs layer 2. `--with-docker` also runs `docker compose config -q`
when a Compose v2 client is installed (it needs no engine); without that
flag the script never depends on Docker.

Needs PyYAML and jsonschema (`pip install pyyaml jsonschema`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_COMPOSE = REPO_ROOT / "docker-compose.yml"
DEFAULT_SCHEMA = REPO_ROOT.parent / "shared" / "data" / "compose-spec.json"

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
ONE_SHOT_RESTART_POLICIES = {"no", "on-failure"}

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the environment
    print(
        "compose: PyYAML is not installed (pip install pyyaml jsonschema)",
        file=sys.stderr,
    )
    sys.exit(1)


# --- loading ------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping, as Compose does.

    PyYAML silently keeps the last value; keys brought in by a `<<` merge may
    be overridden, which is the point of merging, so only explicit keys count.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # reported by the base class
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first defined at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


# --- interpolation ------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^{}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S
)


def read_dotenv(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a `.env` file (comments, `export` and quotes handled)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)
        values[key] = value
    return values


class Interpolator:
    """Compose-style `${VAR}` substitution over every string value of a document."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []
        self.unset: set[str] = set()
        self.required_missing: set[str] = set()

    def string(self, value: str, where: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group("escaped"):
                return "$"
            if match.group("named"):
                return self._lookup(match.group("named"), None, None, where)
            braced = _BRACED.match(match.group("braced"))
            if braced is None:
                self.errors.append(f"{where}: invalid interpolation {match.group(0)!r}")
                return ""
            return self._lookup(
                braced.group("name"), braced.group("op"), braced.group("arg"), where
            )

        return _INTERPOLATION.sub(substitute, value)

    def _lookup(self, name: str, op: str | None, arg: str | None, where: str) -> str:
        value = self.env.get(name)
        is_set = value is not None
        is_nonempty = bool(value)
        if op in (":-", "-"):
            use_default = not is_nonempty if op == ":-" else not is_set
            return self.string(arg or "", where) if use_default else str(value)
        if op in (":?", "?"):
            missing = not is_nonempty if op == ":?" else not is_set
            if missing:
                if name not in self.required_missing:  # once, not per merged copy
                    self.required_missing.add(name)
                    message = f"{where}: required variable {name} is not set"
                    self.errors.append(f"{message}: {arg}" if arg else message)
                return ""
            return str(value)
        if op in (":+", "+"):
            use_alt = is_nonempty if op == ":+" else is_set
            return self.string(arg or "", where) if use_alt else ""
        if not is_set:
            self.unset.add(name)
            return ""
        return str(value)

    def document(self, node: Any, where: str = "") -> Any:
        if isinstance(node, dict):
            return {
                k: self.document(v, f"{where}.{k}" if where else str(k))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [self.document(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str):
            return self.string(node, where)
        return node


# --- schema -------------------------------------------------------------------


def _path(parts: Iterator[Any]) -> str:
    out = ""
    for part in parts:
        out += (
            f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        )
    return out or "(top level)"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def schema_errors(document: Any, schema_path: Path) -> list[str]:
    try:
        import jsonschema
        from jsonschema.exceptions import best_match
    except ImportError:
        return [
            f"jsonschema is not installed (pip install pyyaml jsonschema); cannot check against {schema_path}"
        ]

    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft7Validator
    )
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    errors = []
    for error in sorted(
        validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]
    ):
        message = error.message
        if error.context:
            # oneOf/anyOf: name the alternative that came closest.
            deepest = best_match(error.context)
            message = f"{_short(error.instance)} is not valid: {deepest.message}"
            if deepest.absolute_path != error.absolute_path:
                message += f" (at {_path(deepest.absolute_path)})"
        elif len(message) > 200:
            message = message[:197] + "..."
        errors.append(f"{_path(error.absolute_path)}: {message}")
    return errors


# --- semantic checks ----------------------------------------------------------


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _depends_on(service: dict) -> dict[str, dict]:
    """depends_on in its long form: {target: {condition, required}}."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {
            name: {"condition": "service_started", "required": True} for name in raw
        }
    return (
        {name: (spec or {}) for name, spec in raw.items()}
        if isinstance(raw, dict)
        else {}
    )


def _has_healthcheck(service: dict) -> bool:
    check = service.get("healthcheck")
    if not isinstance(check, dict):
        return False
    if str(check.get("disable", "false")).lower() == "true":
        return False
    test = check.get("test")
    if not test:
        return False
    return not (isinstance(test, list) and test[:1] == ["NONE"])


def _is_local_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or bool(
        re.match(r"^[A-Za-z]:[\\/]", source)
    )


def _volume_mounts(service: dict) -> Iterator[tuple[str, str]]:
    """(type, source) of each mount that has a source; type is volume, bind, tmpfs..."""
    for entry in _as_list(service.get("volumes")):
        if isinstance(entry, str):
            parts = entry.split(":")
            if re.match(r"^[A-Za-z]:[\\/]", entry):  # Windows drive letter
                parts = [parts[0] + ":" + parts[1]] + parts[2:]
            if len(parts) == 1:
                continue  # anonymous volume
            source = parts[0]
            yield ("bind" if _is_local_path(source) else "volume", source)
        elif isinstance(entry, dict):
            kind = entry.get("type", "volume")
            source = entry.get("source")
            if source:
                yield (kind, str(source))


def _published_ports(service: dict) -> Iterator[tuple[str | None, str]]:
    """(host_ip or None, the entry as written) for each port that is published."""
    for entry in _as_list(service.get("ports")):
        if isinstance(entry, dict):
            if entry.get("published") is not None or entry.get("host_ip"):
                yield (entry.get("host_ip"), _short(entry))
            else:
                yield (None, _short(entry))  # a target alone gets a random host port
            continue
        text = str(entry).split("/")[0]
        ip = None
        if text.startswith("["):  # [::1]:host:container
            ip = text[1 : text.index("]")]
        else:
            parts = text.split(":")
            if len(parts) == 3:
                ip = parts[0]
        yield (ip, str(entry))


def _check_depends_on(name: str, service: dict, services: dict) -> list[str]:
    errors = []
    profiles = set(_as_list(service.get("profiles")))
    for target, spec in _depends_on(service).items():
        where = f"services.{name}.depends_on.{target}"
        if target == name:
            errors.append(f"{where}: a service cannot depend on itself")
            continue
        if target not in services:
            errors.append(f"{where}: no service named {target!r}")
            continue
        other = services[target] if isinstance(services[target], dict) else {}
        condition = spec.get("condition", "service_started")
        if condition == "service_healthy" and not _has_healthcheck(other):
            errors.append(
                f"{where}: condition service_healthy, but {target!r} defines no healthcheck"
            )
        if condition == "service_completed_successfully":
            # "on-failure:3" counts as on-failure; a non-string is a schema error.
            restart = other.get("restart", "no")
            restart = restart.split(":")[0] if isinstance(restart, str) else "no"
            if restart not in ONE_SHOT_RESTART_POLICIES:
                errors.append(
                    f"{where}: condition service_completed_successfully, but {target!r} has "
                    f"restart {restart!r} and so never completes"
                )
        target_profiles = set(_as_list(other.get("profiles")))
        # A required dependency must run whenever its dependant does.
        if (
            spec.get("required", True)
            and target_profiles
            and not (profiles and profiles <= target_profiles)
        ):
            errors.append(
                f"{where}: {target!r} only runs with profile(s) {', '.join(sorted(target_profiles))}, "
                f"but {name!r} can start without them"
            )
    return errors


def _check_build(name: str, service: dict, compose_dir: Path) -> list[str]:
    build = service.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, dict):
        return []
    context = str(build.get("context", "."))
    if re.match(r"^[a-z]+://|^git@", context):
        return []  # a remote context
    context_dir = compose_dir / context
    if not context_dir.is_dir():
        return [f"services.{name}.build.context: {context!r} is not a directory"]
    dockerfile = build.get("dockerfile", "Dockerfile")
    if "dockerfile_inline" not in build and not (context_dir / dockerfile).is_file():
        return [
            f"services.{name}.build.dockerfile: {dockerfile!r} not found in {context!r}"
        ]
    return []


def _check_ports(name: str, service: dict) -> list[str]:
    return [
        f"services.{name}.ports: {entry} publishes on all interfaces; "
        "this project binds host ports to 127.0.0.1 only"
        for host_ip, entry in _published_ports(service)
        if host_ip not in LOOPBACK_HOSTS
    ]


def semantic_errors(doc: dict, compose_dir: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the checks the JSON Schema cannot express."""
    services = doc.get("services")
    if not isinstance(services, dict) or not services:
        return ["services: no services defined"], []
    errors: list[str] = []
    warnings: list[str] = []
    declared_volumes = set((doc.get("volumes") or {}).keys())
    declared_networks = set((doc.get("networks") or {}).keys()) | {"default"}
    used_volumes: set[str] = set()
    missing_dirs: dict[str, list[str]] = {}  # bind-mount source -> services

    for name, service in services.items():
        if not isinstance(service, dict):
            continue  # the schema reports it
        where = f"services.{name}"
        errors += _check_depends_on(name, service, services)
        errors += _check_build(name, service, compose_dir)
        errors += _check_ports(name, service)

        for kind, source in _volume_mounts(service):
            if kind == "volume":
                used_volumes.add(source)
                if source not in declared_volumes:
                    errors.append(
                        f"{where}.volumes: named volume {source!r} is not declared under top-level volumes"
                    )
            elif (
                kind == "bind"
                and not source.startswith(("/", "~"))
                and not (compose_dir / source).exists()
            ):
                # Docker creates a missing directory, and a missing file as a directory too.
                if Path(source).suffix:
                    errors.append(
                        f"{where}.volumes: bind-mounted file {source!r} does not exist"
                    )
                else:
                    missing_dirs.setdefault(source, []).append(name)

        for entry in _as_list(service.get("env_file")):
            if isinstance(entry, str):
                entry = {"path": entry}
            path = entry.get("path")
            if (
                path
                and entry.get("required", True)
                and not (compose_dir / path).is_file()
            ):
                errors.append(f"{where}.env_file: {path!r} does not exist")

        networks = service.get("networks") or []
        for network in networks if isinstance(networks, (list, dict)) else []:
            if network not in declared_networks:
                errors.append(
                    f"{where}.networks: network {network!r} is not declared under top-level networks"
                )

    for source, users in sorted(missing_dirs.items()):
        warnings.append(
            f"{source!r} does not exist yet, Docker creates it (bind-mounted by {', '.join(users)})"
        )
    for volume in sorted(declared_volumes - used_volumes):
        warnings.append(f"volumes.{volume}: declared but not used by any service")
    errors += _cycles(services)
    return errors, warnings


def _cycles(services: dict) -> list[str]:
    graph = {
        name: [t for t in _depends_on(s) if t in services]
        if isinstance(s, dict)
        else []
        for name, s in services.items()
    }
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    found: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                found.append("depends_on: dependency cycle " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    return found


# --- docker compose (optional) ------------------------------------------------


def docker_compose_config(compose: Path) -> tuple[bool | None, str]:
    """(ok, output) of `docker compose config -q`; ok is None when it cannot run."""
    if shutil.which("docker") is None:
        return None, "no docker client"
    probe = subprocess.run(
        ["docker", "compose", "version"], check=False, capture_output=True, text=True
    )
    if probe.returncode != 0:
        return None, "no Compose v2 plugin"
    result = subprocess.run(
        ["docker", "compose", "-f", str(compose), "--profile", "*", "config", "-q"],
        check=False,
        capture_output=True,
        text=True,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


# --- main ---------------------------------------------------------------------


def _display(path: Path) -> str:
    """The path relative to the working directory when that is short, else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path.resolve())
    return (
        str(path.resolve())
        if relative.startswith(os.path.join(os.pardir, os.pardir))
        else relative
    )


def kafka_version_errors(doc: dict, pom: Path) -> list[str]:
    """The apache/kafka image must be the broker version the local scripts
    assemble from Maven Central (deploy/kafka/pom.xml), so that Compose and
    the tests run the same Kafka."""
    if not pom.is_file():
        return [f"{_display(pom)} not found: cannot check the Kafka version"]
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not found:
        return [f"{_display(pom)} has no <kafka.version>"]
    want = found.group(1).strip()
    errors = []
    images = {
        name: str(service.get("image", ""))
        for name, service in (doc.get("services") or {}).items()
        if isinstance(service, dict) and str(service.get("image", "")).startswith("apache/kafka")
    }
    if not images:
        errors.append("no service runs the apache/kafka image")
    for name, image in images.items():
        if image != f"apache/kafka:{want}":
            errors.append(
                f"services.{name}.image: {image!r} differs from the Kafka version "
                f"{want} pinned in {_display(pom)} (use apache/kafka:{want})"
            )
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--compose", type=Path, default=DEFAULT_COMPOSE, help="compose file to check"
    )
    parser.add_argument(
        "--schema", type=Path, default=DEFAULT_SCHEMA, help="Compose JSON Schema"
    )
    parser.add_argument(
        "--with-docker",
        action="store_true",
        help="also run `docker compose config -q` when available",
    )
    args = parser.parse_args(argv)
    compose: Path = args.compose.resolve()
    schema: Path = args.schema

    if not compose.is_file():
        print(f"compose: {_display(compose)} not found", file=sys.stderr)
        return 1
    try:
        raw = load_yaml(compose)
    except yaml.YAMLError as e:
        print(f"compose: {_display(compose)} is not valid YAML:\n{e}", file=sys.stderr)
        return 1
    if not isinstance(raw, dict):
        print(f"compose: {_display(compose)} is not a YAML mapping", file=sys.stderr)
        return 1

    env = {**read_dotenv(compose.parent / ".env"), **os.environ}
    interpolator = Interpolator(env)
    doc = interpolator.document(raw)
    errors = list(interpolator.errors)
    warnings = [
        f"variable {name} is not set and has no default: it becomes an empty string"
        for name in sorted(interpolator.unset)
    ]

    schema_checked = schema.is_file()
    if schema_checked:
        errors += schema_errors(doc, schema)
    else:
        print(f"compose: schema not found at {_display(schema)}, skipped")

    semantic, semantic_warnings = semantic_errors(doc, compose.parent)
    errors += semantic
    errors += kafka_version_errors(doc, compose.parent / "deploy" / "kafka" / "pom.xml")
    warnings += semantic_warnings

    if args.with_docker:
        ok, output = docker_compose_config(compose)
        if ok is None:
            warnings.append(f"docker compose config not run: {output}")
        elif not ok:
            errors.append(f"docker compose config -q failed: {output}")
        else:
            print("compose: docker compose config -q passed")

    for warning in warnings:
        print(f"compose: warning: {warning}", file=sys.stderr)
    if errors:
        print(
            f"compose: {len(errors)} error(s) in {_display(compose)}:", file=sys.stderr
        )
        for error in errors:
            print(f"  - {error}", file=sys.stderr)
        return 1
    if schema_checked:
        print(f"compose: valid against {_display(schema)}")
    else:
        print(f"compose: semantic checks passed ({_display(compose)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
