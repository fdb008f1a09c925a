"""docker-compose.yml, checked without Docker: the services a cluster needs, their healthchecks and
start order, and the search attributes registered being the ones the workflow uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from workflows.contract.names import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]


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
        assert ui["TEMPORAL_ADDRESS"] == "temporal:7233" and "TEMPORAL_CORS_ORIGINS" in ui

    def test_api_and_two_workers_from_the_project_image(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        api, worker = services["api"], services["worker"]
        assert api["build"] == worker["build"] == "."
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
        assert migrate["build"] == api["build"] == "."
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
