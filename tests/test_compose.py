"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here) or a
system package: tests/compose_check.py reads the file as Compose does (YAML merge keys,
interpolation), validates it against the Compose specification's JSON schema and checks the
cross-references; what the services run is checked against the real command line."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator

from .compose_check import SCHEMA, ComposeError, check, interpolate, load, reference_errors, schema_errors

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV = {"POSTGRES_PASSWORD": "secret"}  # the only variable without a default
FARM = ("worker", "cron", "cli")  # the services that run the project's image


@pytest.fixture(scope="module")
def doc() -> dict:
    return check(COMPOSE.read_text(), ENV)


def test_the_schema_is_the_compose_specification():
    import json

    schema = json.loads(SCHEMA.read_text())
    Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification" and "draft-07" in schema["$schema"]
    assert (SCHEMA.parent / "README.md").read_text().count("Apache License 2.0") == 1


def test_compose_file_validates(doc):
    assert schema_errors(doc) == [] and reference_errors(doc) == []


def test_services_and_volumes(doc):
    assert list(doc["services"]) == ["redis", "postgres", "worker", "cron", "cli"]
    assert set(doc["volumes"]) == {"redis-data", "postgres-data"}
    assert doc["services"]["cli"]["profiles"] == ["cli"]  # one-shot: not started by `up`


def test_the_database_password_must_come_from_the_environment(doc):
    for env in ({}, {"POSTGRES_PASSWORD": ""}):
        with pytest.raises(ComposeError) as err:
            check(COMPOSE.read_text(), env)
        assert "set POSTGRES_PASSWORD" in str(err.value)
    # and it is used where given: the server's own setting and the farm's database URL
    assert doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "secret"
    for name in FARM:
        assert urlsplit(doc["services"][name]["environment"]["PATCHFUZZ_DB"]).password == "secret"


def test_every_variable_of_the_file_is_in_env_example():
    names = set()

    class Recorder(dict):  # an environment that sets every variable, noting which are asked for
        def get(self, key, default=None):
            names.add(key)
            return "x"

    load(COMPOSE.read_text(), Recorder())
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert names == {"POSTGRES_PASSWORD", "TZ", "PATCHFUZZ_NIGHTLY"} and names <= example


def test_farm_containers_read_the_protocol_directory(doc):
    assert (ROOT / "protocols").is_dir()
    for name in FARM:
        service = doc["services"][name]
        assert service["environment"]["PATCHFUZZ_PROTOCOL_DIR"] == "/protocols"
        assert "./protocols:/protocols:ro" in service["volumes"]


def test_farm_containers_reach_redis_and_postgres_by_service_name(doc):
    for name in FARM:
        env = doc["services"][name]["environment"]
        assert urlsplit(env["PATCHFUZZ_REDIS"]).hostname == "redis"
        assert urlsplit(env["PATCHFUZZ_DB"]).hostname == "postgres"
        assert set(doc["services"][name]["depends_on"]) == {"redis", "postgres"}
    cron = doc["services"]["cron"]["entrypoint"]
    assert cron[cron.index("--url") + 1] == doc["services"]["worker"]["environment"]["PATCHFUZZ_REDIS"]


def test_workers_scale_and_nothing_is_published(doc):
    for name, service in doc["services"].items():
        assert "container_name" not in service, name  # a fixed name would forbid --scale worker=N
        assert "ports" not in service, name  # Redis and PostgreSQL stay on the compose network


def _mutations():
    def unknown_top_level_key(d):
        d["service"] = d["services"]["worker"]

    def command_of_the_wrong_type(d):
        d["services"]["worker"]["command"] = 5

    def unknown_service_key(d):
        d["services"]["worker"]["restart_policy"] = "always"

    def healthcheck_interval_as_a_number(d):
        d["services"]["redis"]["healthcheck"]["interval"] = 5

    def unknown_depends_on_condition(d):
        d["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_up"

    def depends_on_a_missing_service(d):
        d["services"]["worker"]["depends_on"]["rediss"] = {"condition": "service_started"}

    def healthy_dependency_without_healthcheck(d):
        del d["services"]["postgres"]["healthcheck"]

    def undeclared_named_volume(d):
        del d["volumes"]["redis-data"]

    def service_without_image(d):
        del d["services"]["redis"]["image"]

    return {
        unknown_top_level_key: "$: 'service' does not match any of the regexes: '^x-'",
        command_of_the_wrong_type: "$.services.worker.command: 5 is not valid",
        unknown_service_key: "$.services.worker: 'restart_policy' does not match any of the regexes",
        healthcheck_interval_as_a_number: "$.services.redis.healthcheck.interval: 5 is not of type 'string'",
        unknown_depends_on_condition: "$.services.worker.depends_on.redis.condition: 'service_up' is not one of",
        depends_on_a_missing_service: "$.services.worker.depends_on: no service named 'rediss'",
        healthy_dependency_without_healthcheck: "'postgres' must be healthy but has no healthcheck",
        undeclared_named_volume: "volume 'redis-data' is not declared",
        service_without_image: "$.services.redis: has neither an image nor a build",
    }


@pytest.mark.parametrize("mutate,message", list(_mutations().items()), ids=lambda v: getattr(v, "__name__", ""))
def test_a_broken_compose_file_is_rejected(doc, mutate, message):
    broken = copy.deepcopy(doc)
    mutate(broken)
    with pytest.raises(ComposeError) as err:
        check(yaml.safe_dump(broken), ENV)
    assert message in str(err.value)


@pytest.mark.parametrize("text,env,expected", [
    ("$$HOME ${A} $A", {"A": "1"}, "$HOME 1 1"),
    ("${A:-d} ${A-d}", {"A": ""}, "d "),
    ("${B:-d} ${B-d}", {}, "d d"),
    ("${A:+r}|${A+r}|${B+r}", {"A": ""}, "|r|"),
    ("${B:-${C:-nested}}", {}, "nested"),
    ("${UNSET}", {}, ""),
])
def test_interpolation_follows_the_compose_specification(text, env, expected):
    assert interpolate(text, env) == expected


@pytest.mark.parametrize("text,env,message", [
    ("$ lone", {}, "a lone $"),
    ("${A", {}, "unterminated"),
    ("${A:x}", {"A": "1"}, "invalid interpolation format ${A:x}"),
    ("${1A}", {}, "invalid interpolation format ${1A}"),
    ("${A?needed}", {}, "required variable A is missing a value: needed"),
    ("${A:?needed}", {"A": ""}, "required variable A is missing a value: needed"),
])
def test_interpolation_errors_are_reported(text, env, message):
    with pytest.raises(ComposeError) as err:
        interpolate(text, env, "x")
    assert str(err.value).startswith("x: ") and message in str(err.value)


@pytest.mark.parametrize("argv", [["worker", "--help"], ["farm", "submit", "--help"],
                                  ["farm", "status", "--help"], ["farm", "nightly", "--help"]])
def test_the_commands_the_services_run_exist(argv):
    p = subprocess.run([sys.executable, "-m", "fuzzer.cli", *argv], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_the_farm_services_run_those_commands(doc):
    # the image's ENTRYPOINT is `patchfuzz` (see the Dockerfile test below)
    assert doc["services"]["worker"]["command"] == ["worker"]
    assert doc["services"]["cli"]["command"] == ["farm", "status"]


def test_the_cron_service_config_module_loads(doc):
    assert doc["services"]["cron"]["entrypoint"][:3] == ["rq", "cron", "workers.cron_config"]
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
