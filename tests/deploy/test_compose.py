"""docker-compose.yml, the Dockerfile and .env.example agree with each other and the settings.

There is no Docker engine where the tests run: these read the files themselves, and
test_production_processes.py runs the very commands compose would run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
SETTINGS_SOURCES = [REPO_ROOT / "asm_console" / "settings.py", REPO_ROOT / "asm_console" / "env.py"]

APP_SERVICES = ("migrate", "web", "worker", "beat")
LONG_RUNNING = ("postgres", "redis", "web", "worker", "beat")

# `env.integer("NAME", ...)`, `env.is_set("NAME")`, ... and, should one ever appear,
# `os.environ["NAME"]`, `os.environ.get("NAME")` or `os.getenv("NAME")`.
_SETTING_READ = re.compile(
    r"""(?:\benv\.[a-z_]+\(|os\.environ\.get\(|os\.environ\[|os\.getenv\()\s*["']([A-Z][A-Z0-9_]*)["']"""
)
# `NAME=value` or `# NAME=value` (commented out: the default applies).
_EXAMPLE_ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
# `${NAME}`, `${NAME:-default}`, `${NAME:?message}`; `$${...}` is a literal dollar.
_COMPOSE_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)")


def load_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    services = load_compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    definition = services[name]
    assert isinstance(definition, dict)
    return definition


def service_command(name: str) -> list[str]:
    """The command compose runs for a service, as an argument list."""
    command = service(name).get("command")
    assert command, f"service {name!r} has no command"
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def subprocess_environ(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without the console's settings or the test run's Django
    switches (DJANGO_SETTINGS_MODULE, DJANGO_ALLOW_ASYNC_UNSAFE from the browser tests), plus
    `extra`: what a production process would see."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in settings_variables() and not name.startswith("DJANGO_")
    }
    return {**inherited, **extra}


def settings_variables() -> set[str]:
    """Every environment variable the settings read, found in their source."""
    names: set[str] = set()
    for source in SETTINGS_SOURCES:
        names.update(_SETTING_READ.findall(source.read_text()))
    return names


def env_example_assignments() -> list[tuple[str, str, bool]]:
    """(name, value, active) for each assignment in .env.example, commented out or not."""
    assignments = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _EXAMPLE_ASSIGNMENT.match(line.strip())
        if match:
            commented, name, value = match.groups()
            assignments.append((name, value, commented is None))
    return assignments


def compose_interpolated_variables() -> set[str]:
    return set(_COMPOSE_INTERPOLATION.findall(COMPOSE_FILE.read_text()))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile_json_command(instruction: str) -> list[str]:
    """The exec-form command of CMD or HEALTHCHECK (the last one, as Docker uses)."""
    arguments = [args for keyword, args in dockerfile_instructions() if keyword == instruction]
    assert arguments, f"the Dockerfile has no {instruction}"
    last = arguments[-1]
    if instruction == "HEALTHCHECK":
        _, separator, last = last.partition("CMD ")
        assert separator, "the HEALTHCHECK has no CMD"
    command = json.loads(last)
    assert isinstance(command, list), f"{instruction} must use the exec (JSON) form"
    return [str(part) for part in command]


def option_value(argv: list[str], option: str) -> str:
    for index, argument in enumerate(argv):
        if argument == option:
            return argv[index + 1]
        if argument.startswith(f"{option}="):
            return argument.split("=", 1)[1]
    raise AssertionError(f"{option} not in {argv}")


def healthcheck_test(name: str) -> list[str]:
    healthcheck = service(name).get("healthcheck")
    assert healthcheck, f"service {name!r} has no healthcheck"
    test = healthcheck["test"]
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(part) for part in test]


def test_compose_runs_the_production_services() -> None:
    assert set(load_compose()["services"]) == {
        "postgres",
        "redis",
        "migrate",
        "web",
        "worker",
        "beat",
    }


def test_postgres_keeps_its_data_in_a_volume_and_reports_readiness() -> None:
    postgres = service("postgres")
    assert postgres["image"].startswith("postgres:16")
    volume_sources = [mount.split(":")[0] for mount in postgres["volumes"]]
    data_volume = next(
        mount.split(":")[0]
        for mount in postgres["volumes"]
        if mount.split(":")[1] == "/var/lib/postgresql/data"
    )
    assert data_volume in load_compose()["volumes"], volume_sources
    test = healthcheck_test("postgres")
    assert "pg_isready" in " ".join(test)


def test_redis_reports_readiness() -> None:
    redis = service("redis")
    assert redis["image"].startswith("redis:7")
    assert healthcheck_test("redis")[1:] == ["redis-cli", "ping"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_build_the_image_and_read_env_file(name: str) -> None:
    definition = service(name)
    build = definition["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert context == "."
    if isinstance(build, dict):
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
    env_file = definition["env_file"]
    assert env_file == ".env" or ".env" in env_file

    environment = definition["environment"]
    assert re.fullmatch(r"postgres://[^@/]+@postgres:5432/\w+", environment["DATABASE_URL"])
    assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    # Interpolation with `:?` makes `docker compose up` refuse to start without a key.
    assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", environment["SECRET_KEY"])


def test_migrate_is_a_one_shot_migration_after_postgres_is_healthy() -> None:
    assert service_command("migrate") == ["python", "manage.py", "migrate", "--noinput"]
    assert service("migrate")["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert service("migrate").get("restart", "no") == "no"


def test_web_runs_gunicorn_after_migrations_on_port_8000() -> None:
    command = service_command("web")
    assert command[:2] == ["gunicorn", "asm_console.wsgi:application"]
    assert option_value(command, "--bind") == "0.0.0.0:8000"
    assert int(option_value(command, "--workers")) >= 2
    assert int(option_value(command, "--threads")) >= 2
    assert option_value(command, "--access-logfile") == "-"
    web = service("web")
    assert any(str(port).endswith(":8000") for port in web["ports"]), web["ports"]
    assert web["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def test_web_healthcheck_probes_healthz() -> None:
    test = healthcheck_test("web")
    assert test[0] == "CMD"
    assert "http://127.0.0.1:8000/healthz" in " ".join(test)


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_celery_processes_run_the_console_app(name: str) -> None:
    command = service_command(name)
    assert command[:4] == ["celery", "-A", "asm_console", name]
    assert "--loglevel=INFO" in command
    depends_on = service(name)["depends_on"]
    assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
    assert depends_on["redis"] == {"condition": "service_healthy"}


@pytest.mark.parametrize(("name", "node"), [("worker", "celery"), ("beat", "celerybeat")])
def test_celery_healthcheck_pings_its_own_node(name: str, node: str) -> None:
    # In a container, $HOSTNAME is the hostname that names the node (`$$` escapes compose).
    test = healthcheck_test(name)
    assert test[0] == "CMD-SHELL"
    assert f"celery -A asm_console inspect ping --destination {node}@$$HOSTNAME" in test[1]


def test_beat_answers_remote_control() -> None:
    assert "--enable-remote-control" in service_command("beat")


def test_beat_keeps_its_schedule_in_a_writable_place() -> None:
    # The image's code directory belongs to root; /tmp is writable by the app user.
    schedule = option_value(service_command("beat"), "--schedule")
    assert schedule.startswith("/tmp/")  # noqa: S108 (a path inside the container)


def test_migrate_does_not_inherit_the_web_healthcheck() -> None:
    # The image's HEALTHCHECK probes 127.0.0.1:8000, which only `web` listens on.
    assert service("migrate")["healthcheck"] == {"disable": True}


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_restart_unless_stopped(name: str) -> None:
    assert service(name)["restart"] == "unless-stopped"


def test_dockerfile_builds_from_slim_python_and_installs_without_dev_extras() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    installs = [run.split("&&")[0].split() for run in runs if run.startswith("pip install")]
    # `pip install .` from pyproject.toml, pinned by the constraints CI tests with.
    assert any(install[-1] == "." for install in installs), installs
    assert all("-c" in install and "constraints.txt" in install for install in installs), installs
    assert not any("[dev]" in " ".join(install) or "-r" in install for install in installs), (
        installs
    )
    assert ("EXPOSE", "8000") in instructions


def test_dockerfile_collects_static_files_without_a_database() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    collect = next(run for run in runs if "collectstatic" in run)
    assert "python manage.py collectstatic --noinput" in collect
    # The build-time environment lives in the RUN step only, never in ENV or ARG.
    assert "SECRET_KEY=" in collect
    build_time = " ".join(args for keyword, args in dockerfile_instructions() if keyword != "RUN")
    assert "SECRET_KEY" not in build_time


def test_dockerfile_does_not_run_as_root() -> None:
    instructions = dockerfile_instructions()
    users = [
        (index, args) for index, (keyword, args) in enumerate(instructions) if keyword == "USER"
    ]
    assert users, "the Dockerfile never switches away from root"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    # Nothing after the switch may switch back or run as root.
    assert all(keyword != "USER" for keyword, _ in instructions[index + 1 :])


def test_dockerfile_cmd_is_the_compose_web_command() -> None:
    assert dockerfile_json_command("CMD") == service_command("web")


def test_dockerfile_healthcheck_is_the_compose_web_healthcheck() -> None:
    assert ["CMD", *dockerfile_json_command("HEALTHCHECK")] == healthcheck_test("web")


def test_every_setting_the_console_reads_is_in_env_example() -> None:
    read = settings_variables()
    # Guard against a pattern that silently matches nothing.
    assert {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "ALLOWED_HOSTS"} <= read
    documented = {name for name, _, _ in env_example_assignments()}
    assert sorted(read - documented) == []


def test_env_example_names_only_settings_and_compose_variables() -> None:
    documented = [name for name, _, _ in env_example_assignments()]
    assert len(documented) == len(set(documented)), "a variable appears twice"
    compose_only = compose_interpolated_variables() - settings_variables()
    assert sorted(set(documented) - settings_variables() - compose_only) == []
    # What compose interpolates must be documented too.
    assert sorted(compose_interpolated_variables() - set(documented)) == []


def test_env_example_requires_a_secret_key_and_sets_the_public_addresses() -> None:
    active = {name: value for name, value, is_active in env_example_assignments() if is_active}
    # Present but empty: compose's `${SECRET_KEY:?...}` refuses to start until it is filled in.
    assert active["SECRET_KEY"] == ""
    for name in ("ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "ASM_BASE_URL"):
        assert active[name], name


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    patterns = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", ".venv", "data", "staticfiles"} <= patterns
    # The Dockerfile copies these before the rest of the context.
    assert not {"pyproject.toml", "constraints.txt"} & patterns
