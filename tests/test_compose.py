"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here):
Debian's docker-compose validates the file, and what the services run is checked against the
real command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"


def compose(*args: str, password: str | None = "secret") -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is required to validate docker-compose.yml: apt-get install "
                    "docker-compose (.ci/run does)", pytrace=False)
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    return subprocess.run([exe, "-f", str(COMPOSE), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_compose_file_validates():
    p = compose("config", "-q")
    assert p.returncode == 0, p.stderr


def test_services_and_volumes():
    assert compose("config", "--services").stdout.split() == ["redis", "postgres", "worker", "cron", "cli"]
    assert set(compose("config", "--volumes").stdout.split()) == {"redis-data", "postgres-data"}


def test_the_database_password_must_come_from_the_environment():
    p = compose("config", "-q", password=None)
    assert p.returncode != 0 and "set POSTGRES_PASSWORD" in p.stderr
    assert "secret" in compose("config").stdout  # and it is used where given


def test_farm_containers_read_the_protocol_directory():
    text = compose("config").stdout
    assert "PATCHFUZZ_PROTOCOL_DIR: /protocols" in text and ":/protocols:ro" in text
    assert (ROOT / "protocols").is_dir()


def test_workers_scale_and_nothing_is_published():
    text = compose("config").stdout
    assert "container_name" not in text  # a fixed name would forbid --scale worker=N
    assert "ports:" not in text  # Redis and PostgreSQL stay on the compose network


@pytest.mark.parametrize("argv", [["worker", "--help"], ["farm", "submit", "--help"],
                                  ["farm", "status", "--help"], ["farm", "nightly", "--help"]])
def test_the_commands_the_services_run_exist(argv):
    p = subprocess.run([sys.executable, "-m", "fuzzer.cli", *argv], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_the_cron_service_config_module_loads():
    text = COMPOSE.read_text()
    assert '"rq", "cron", "workers.cron_config"' in text
    p = subprocess.run([sys.executable, "-c", "import workers.cron_config as c; "
                        "print(c.cron._job_data_registry[0]['func'].__module__)"],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "workers.jobs", p.stderr


def test_dockerfile_installs_the_project_and_runs_a_worker_unprivileged():
    text = (ROOT / "Dockerfile").read_text()
    for needed in ("COPY fuzzer fuzzer", "COPY workers workers", "COPY db db", "COPY corpus corpus",
                   "pip install --no-cache-dir -e .", "USER patchfuzz", 'ENTRYPOINT ["patchfuzz"]',
                   'CMD ["worker"]'):
        assert needed in text
