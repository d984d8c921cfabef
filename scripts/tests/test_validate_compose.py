"""Tests of scripts/validate_compose.py: each check fails a small bad project.

Needs the compose-config binary (scripts/test.sh builds it; the path comes
from $STOCKFLOW_COMPOSE_CONFIG, else /var/tmp/stockflow/bin/compose-config).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

SCRIPTS = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("validate_compose", SCRIPTS / "validate_compose.py")
assert _spec and _spec.loader
vc = importlib.util.module_from_spec(_spec)
sys.modules["validate_compose"] = vc
_spec.loader.exec_module(vc)

COMPOSE_CONFIG = Path(os.environ.get("STOCKFLOW_COMPOSE_CONFIG") or vc.DEFAULT_COMPOSE_CONFIG)

# A small project that passes every check; each test breaks one thing.
BASE: dict[str, Any] = {
    "name": "t",
    "services": {
        "kafka": {
            "image": "apache/kafka:4.4.0",
            "ports": ["127.0.0.1:9092:9092"],
            "healthcheck": {"test": ["CMD", "true"]},
        },
        "init": {
            "image": "busybox",
            "restart": "no",
            "depends_on": {"kafka": {"condition": "service_healthy"}},
        },
        "app": {
            "image": "busybox",
            "depends_on": {"init": {"condition": "service_completed_successfully"}},
            "volumes": ["./conf.yml:/conf.yml:ro", "data:/data"],
        },
        "airflow-init": {
            "image": "stockflow-airflow:local",
            "build": {"context": "./airflow"},
            "profiles": ["airflow"],
            "restart": "no",
        },
        "airflow-web": {
            "image": "stockflow-airflow:local",
            "profiles": ["airflow"],
            "depends_on": {"airflow-init": {"condition": "service_completed_successfully"}},
        },
    },
    "volumes": {"data": {}},
}


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.compose = copy.deepcopy(BASE)
        self.write("conf.yml", "a: 1\n")
        self.write("deploy/kafka/pom.xml", "<kafka.version>4.4.0</kafka.version>\n")
        self.write("airflow/requirements.txt", "apache-airflow==3.3.2\n")
        self.write("airflow/Dockerfile", "FROM apache/airflow:3.3.2\n")

    def write(self, name: str, text: str) -> None:
        (self.root / name).parent.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_text(text)

    def run(self, capsys: pytest.CaptureFixture[str], text: str | None = None) -> tuple[int, str]:
        """(exit status, stderr) of validate_compose on this project."""
        if text is None:
            text = yaml.safe_dump(self.compose, sort_keys=False)
        self.write("compose.yml", text)
        status = vc.main(
            ["--compose", str(self.root / "compose.yml"), "--compose-config", str(COMPOSE_CONFIG)]
        )
        return status, capsys.readouterr().err

    @property
    def services(self) -> dict[str, Any]:
        return self.compose["services"]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    if not os.access(COMPOSE_CONFIG, os.X_OK):
        pytest.fail(f"{COMPOSE_CONFIG} missing: scripts/test.sh builds it")
    return Project(tmp_path)


def fails_with(project: Project, capsys: pytest.CaptureFixture[str], message: str) -> str:
    status, err = project.run(capsys)
    assert status == 1, err
    assert message in err, err
    return err


def test_base_project_passes(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert project.run(capsys) == (0, "")


def test_repository_compose_file_passes(capsys: pytest.CaptureFixture[str]) -> None:
    status = vc.main(["--compose-config", str(COMPOSE_CONFIG)])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "is valid" in out.out


# --- compose-go does the loading ----------------------------------------------


def test_compose_go_rejects_duplicate_keys(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = project.run(capsys, "services:\n  a:\n    image: x\n    image: y\n")
    assert status == 1
    assert "compose-go:" in err and 'mapping key "image" already defined' in err, err


def test_compose_go_rejects_undefined_dependency(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.services["app"]["depends_on"]["nowhere"] = {"condition": "service_started"}
    fails_with(project, capsys, 'compose-go: service "app" depends on undefined service "nowhere"')


def test_compose_go_interpolates_from_dotenv(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.write(".env", "KAFKA_TAG=4.3.0\n")
    project.services["kafka"]["image"] = "apache/kafka:${KAFKA_TAG:-4.4.0}"
    fails_with(project, capsys, "'apache/kafka:4.3.0' differs from the Kafka version")


# --- the JSON Schema layer ----------------------------------------------------


def test_schema_layer_reports_errors() -> None:
    errors = vc.schema_errors({"services": {"a": {"image": "x", "restart": 5}}}, vc.DEFAULT_SCHEMA)
    assert errors and errors[0].startswith("services.a.restart:"), errors


# --- policy -------------------------------------------------------------------

Mutation = Callable[[Project], None]


def _set(service: str, key: str, value: Any) -> Mutation:
    return lambda p: p.services[service].__setitem__(key, value)


@pytest.mark.parametrize(
    "port", ["9092:9092", "0.0.0.0:9092:9092", "9092", "192.168.1.2:9092:9092"]
)
def test_ports_must_bind_to_loopback(
    project: Project, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    project.services["kafka"]["ports"] = [port]
    err = fails_with(project, capsys, "publishes on all interfaces")
    assert "services.kafka.ports: " in err and "binds host ports to 127.0.0.1 only" in err, err


def test_ipv6_loopback_port_passes(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.services["kafka"]["ports"] = ["[::1]:9092:9092"]
    assert project.run(capsys)[0] == 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            # the pipeline must not wait for a service only Airflow's profile starts
            lambda p: p.services["app"]["depends_on"].__setitem__(
                "airflow-web", {"condition": "service_started"}
            ),
            "services.app.depends_on.airflow-web: 'airflow-web' only runs with profile(s) "
            "airflow, but 'app' can start without them",
        ),
        (
            lambda p: p.services["kafka"].pop("healthcheck"),
            "services.init.depends_on.kafka: condition service_healthy, but 'kafka' defines "
            "no healthcheck",
        ),
        (
            _set("kafka", "healthcheck", {"test": ["CMD", "true"], "disable": True}),
            "but 'kafka' defines no healthcheck",
        ),
        (
            _set("kafka", "healthcheck", {"test": ["NONE"]}),
            "but 'kafka' defines no healthcheck",
        ),
        (
            _set("init", "restart", "always"),
            "services.app.depends_on.init: condition service_completed_successfully, but "
            "'init' has restart 'always' and so never completes",
        ),
        (
            _set("app", "volumes", ["./missing.yml:/m.yml:ro"]),
            "services.app.volumes: bind-mounted file",
        ),
        (_set("app", "build", {"context": "./nowhere"}), "services.app.build.context: "),
        (
            _set("app", "build", {"context": ".", "dockerfile": "Nope.dockerfile"}),
            "services.app.build.dockerfile: 'Nope.dockerfile' not found",
        ),
        (
            _set("kafka", "image", "apache/kafka:4.3.0"),
            "services.kafka.image: 'apache/kafka:4.3.0' differs from the Kafka version "
            "pinned in",
        ),
        (_set("kafka", "image", "example/kafka:4.4.0"), "no service runs the apache/kafka image"),
        (
            _set("airflow-web", "image", "apache/airflow:3.3.2"),
            "services.airflow-web.image: 'apache/airflow:3.3.2'; the Airflow services run "
            "stockflow-airflow:local",
        ),
        (
            lambda p: p.services["airflow-init"].pop("build"),
            "no Airflow service builds stockflow-airflow:local",
        ),
        (
            lambda p: p.write("airflow/Dockerfile", "FROM apache/airflow:3.3.1\n"),
            "FROM apache/airflow:3.3.1 differs from the apache-airflow pin",
        ),
        (
            lambda p: p.write("airflow/requirements.txt", "apache-airflow==3.4.0\n"),
            "(use FROM apache/airflow:3.4.0)",
        ),
        (
            _set("airflow-init", "build", {"context": ".", "dockerfile": "conf.yml"}),
            "services.airflow-init.build: builds",
        ),
    ],
    ids=[
        "profiles",
        "healthy-without-healthcheck",
        "healthy-healthcheck-disabled",
        "healthy-healthcheck-none",
        "completed-but-restarts",
        "bind-file-missing",
        "build-context-missing",
        "dockerfile-missing",
        "kafka-tag",
        "kafka-missing",
        "airflow-stock-image",
        "airflow-not-built",
        "airflow-from-tag",
        "airflow-requirements-pin",
        "airflow-other-dockerfile",
    ],
)
def test_policy_check_fails(
    project: Project, capsys: pytest.CaptureFixture[str], mutate: Mutation, message: str
) -> None:
    mutate(project)
    fails_with(project, capsys, message)


def test_missing_bind_directory_is_only_a_warning(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.services["app"]["volumes"] = ["./later:/later"]
    status, err = project.run(capsys)
    assert status == 0, err
    assert "does not exist yet, Docker creates it (bind-mounted by app)" in err
