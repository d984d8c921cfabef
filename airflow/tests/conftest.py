"""Test fixtures for the stockflow DAGs.

Airflow runs against a private, temporary AIRFLOW_HOME with a SQLite metadata
DB (``airflow db migrate`` once per session); stockflow's own data lives in a
temporary database on the real PostgreSQL (default 127.0.0.1:5432, user
postgres; override the server with STOCKFLOW_TEST_PG_URL, a URL to its
maintenance database), created from migrations/ and dropped at the end.

Everything that configures Airflow must happen before ``airflow`` is
imported, so it is done at import time of this module.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "airflow" / "dags"
MIGRATIONS_DIR = REPO / "migrations"

# --------------------------------------------------------------------------- Airflow home (before any airflow import)
_OWN_HOME = not os.environ.get("STOCKFLOW_AIRFLOW_TEST_HOME")
AIRFLOW_HOME = Path(os.environ.get("STOCKFLOW_AIRFLOW_TEST_HOME") or tempfile.mkdtemp(prefix="stockflow-airflow-test-"))
AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        # Never let boto look for instance credentials on the network.
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
for _var in ("AIRFLOW_CONN_STOCKFLOW_S3", "AIRFLOW_VAR_STOCKFLOW_S3_BUCKET", "STOCKFLOW_REPORT_DIR"):
    os.environ.pop(_var, None)

if not (AIRFLOW_HOME / "airflow.db").exists():
    _airflow = Path(sys.executable).with_name("airflow")
    subprocess.run(
        [str(_airflow) if _airflow.exists() else "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
    )

if str(DAGS_DIR) not in sys.path:
    sys.path.insert(0, str(DAGS_DIR))

import psycopg  # noqa: E402

ADMIN_URL = os.environ.get("STOCKFLOW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# Every table the tests fill; wiped before each test.
DATA_TABLES = ("reports", "sales_daily", "orders", "events_log", "inventory", "products", "suppliers")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_HOME:
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


ROLES_SQL = REPO / "sinks" / "src" / "postgres" / "roles.sql"


def _as_user(url: str, user: str) -> str:
    """``url`` with ``user`` and no password (trust on loopback)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def _migration_files() -> list[Path]:
    def version(p: Path) -> int:
        m = re.match(r"V(\d+)__", p.name)
        return int(m.group(1)) if m else 0

    files = sorted((p for p in MIGRATIONS_DIR.glob("V*__*.sql") if version(p)), key=version)
    assert files, f"no migrations in {MIGRATIONS_DIR}"
    return files


@pytest.fixture(scope="session")
def pg_url():
    """URL of a fresh stockflow database (schema from migrations/, the roles
    of `stockflow migrate --roles`), dropped afterwards. The tests set data
    up through this (the owner's) URL; the DAGs reach the database as a
    login in ``stockflow_reporting``, as in production."""
    name = f"stockflow_airflow_test_{secrets.token_hex(4)}"
    reporter = f"sf_report_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(ADMIN_URL, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for path in _migration_files():
                conn.execute(path.read_text(encoding="utf-8"))
            conn.execute(ROLES_SQL.read_text(encoding="utf-8"))
            conn.execute(f"CREATE ROLE {reporter} LOGIN IN ROLE stockflow_reporting")
        # The DAGs reach it through the Airflow connection, as in production.
        dag_url = _as_user(url, reporter)
        os.environ["AIRFLOW_CONN_STOCKFLOW_POSTGRES"] = dag_url.replace("postgresql://", "postgres://", 1)
        yield url
    finally:
        os.environ.pop("AIRFLOW_CONN_STOCKFLOW_POSTGRES", None)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f"DROP ROLE IF EXISTS {reporter}")


@pytest.fixture
def db(pg_url):
    """Autocommit connection to the test database, emptied before the test."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(DATA_TABLES) + " CASCADE")
        yield conn


@pytest.fixture
def report_dir(tmp_path, monkeypatch):
    path = tmp_path / "reports"
    monkeypatch.setenv("STOCKFLOW_REPORT_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture
def run_dag(dagbag, pg_url):
    """run_dag(dag_id, logical_date=None) -> the finished DagRun, via dag.test().

    Retries are switched off so that a failing task fails the run at once.
    """

    def run(dag_id: str, logical_date: datetime | None = None):
        dag = dagbag.get_dag(dag_id)
        assert dag is not None, f"DAG {dag_id} not found; import errors: {dagbag.import_errors}"
        for task in dag.tasks:
            task.retries = 0
        return dag.test(logical_date=logical_date or datetime.now(timezone.utc))

    return run
