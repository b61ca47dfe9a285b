"""docker-compose.yml and docker-compose.gpu.yml: valid for docker-compose, and the structure the
README promises (two services, one shared volume, health checks, a GPU switch, no baked secret).
There is no Docker engine here; `docker-compose config` validates and merges without one."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

FILES_BASE = ["-f", "docker-compose.yml"]
FILES_GPU = ["-f", "docker-compose.yml", "-f", "docker-compose.gpu.yml"]
INTERPOLATION = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?[?-][^}]*)?\}$")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|CREDENTIAL", re.I)


def _compose(
    docker_compose: str, repo: Path, files: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    # An empty --env-file: a developer's own .env (with a real ADMIN_TOKEN) must not leak in.
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    base_env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "API_PORT")}
    return subprocess.run(
        [docker_compose, "--env-file", str(empty_env_file), *files, "config"],
        cwd=repo,
        env={**base_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _env_dict(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _stages(dockerfile: str) -> set[str]:
    return {
        m.group(1).lower()
        for m in re.finditer(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M | re.I)
    }


@pytest.mark.parametrize("files", [FILES_BASE, FILES_GPU], ids=["base", "base+gpu"])
def test_docker_compose_config_accepts_the_files(docker_compose, repo, tmp_path, files):
    proc = _compose(docker_compose, repo, files, {"ADMIN_TOKEN": "t0k3n-for-config"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    merged = yaml.safe_load(proc.stdout)
    assert set(merged["services"]) == {"api", "trainer"}
    assert merged["services"]["api"]["environment"]["ADMIN_TOKEN"] == "t0k3n-for-config"
    (port,) = merged["services"]["api"]["ports"]
    assert (int(port["published"]), int(port["target"])) == (8000, 8000)


def test_docker_compose_refuses_to_start_without_admin_token(docker_compose, repo, tmp_path):
    proc = _compose(docker_compose, repo, FILES_BASE, {}, tmp_path)
    assert proc.returncode != 0
    assert "ADMIN_TOKEN" in proc.stderr


def test_gpu_override_merges_an_nvidia_reservation_into_the_trainer_only(
    docker_compose, repo, tmp_path
):
    proc = _compose(docker_compose, repo, FILES_GPU, {"ADMIN_TOKEN": "x" * 32}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    devices = services["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert services["trainer"]["build"]["target"] == "gpu"
    # everything else of the trainer survives the merge
    assert services["trainer"]["command"] == ["specrec-worker"]
    assert services["trainer"]["volumes"] == services["api"]["volumes"]
    assert "deploy" not in services["api"]
    assert services["api"]["build"]["target"] == "runtime"


def test_two_services_run_the_declared_console_scripts(compose, pyproject):
    services = compose["services"]
    assert set(services) == {"api", "trainer"}
    scripts = pyproject["project"]["scripts"]
    assert services["api"]["command"] == ["specrec-serve"]
    assert services["trainer"]["command"] == ["specrec-worker"]
    assert {"specrec-serve", "specrec-worker"} <= set(scripts)


def test_one_named_volume_holds_specrec_home_for_both_services(compose):
    named = set(compose["volumes"])
    assert len(named) == 1
    (volume,) = named
    for name in ("api", "trainer"):
        service = compose["services"][name]
        home = _env_dict(service)["SPECREC_HOME"]
        assert f"{volume}:{home}" in service["volumes"], (name, service["volumes"])


def test_api_is_published_on_8000_listens_on_all_interfaces_and_checks_readiness(compose):
    api = compose["services"]["api"]
    env = _env_dict(api)
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == "8000"
    # host port 8000 unless API_PORT says otherwise; the container always listens on 8000
    assert api["ports"] == ["${API_PORT:-8000}:8000"]
    assert api["healthcheck"]["test"][-1] == "ready"
    assert "specrec-healthcheck" in " ".join(api["healthcheck"]["test"])


def test_api_waits_for_the_trainer_to_publish_a_model(compose):
    api, trainer = compose["services"]["api"], compose["services"]["trainer"]
    assert api["depends_on"] == {"trainer": {"condition": "service_healthy"}}
    assert trainer["healthcheck"]["test"][-1] == "model"
    # the first start trains on CPU: the start period must cover it
    assert re.fullmatch(r"\d+m", trainer["healthcheck"]["start_period"])
    assert int(trainer["healthcheck"]["start_period"][:-1]) >= 10


def test_admin_token_comes_from_the_environment_only(compose, compose_gpu):
    api_env = _env_dict(compose["services"]["api"])
    assert re.fullmatch(r"\$\{ADMIN_TOKEN:\?[^}]+\}", api_env["ADMIN_TOKEN"])
    for doc in (compose, compose_gpu):
        for name, service in doc["services"].items():
            for key, value in _env_dict(service).items():
                if SECRET_NAME.search(key):
                    assert INTERPOLATION.match(value), f"{name}.{key} is hard-coded: {value!r}"


def test_trainer_picks_its_device_automatically(compose, compose_gpu):
    """SPECREC_DEVICE unset means: CUDA when present, else CPU (trainer's device choice)."""
    for doc in (compose, compose_gpu):
        for service in doc["services"].values():
            assert "SPECREC_DEVICE" not in _env_dict(service)


def test_gpu_override_uses_a_device_reservation(compose_gpu):
    trainer = compose_gpu["services"]["trainer"]
    (device,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device["count"] == "all" or int(device["count"]) >= 1
    assert set(compose_gpu["services"]) == {"trainer"}


def test_build_targets_named_in_compose_exist_in_the_dockerfile(repo, compose, compose_gpu):
    stages = _stages((repo / "Dockerfile").read_text())
    targets = {
        s["build"]["target"]
        for doc in (compose, compose_gpu)
        for s in doc["services"].values()
        if "build" in s
    }
    assert targets == {"runtime", "gpu"}
    assert targets <= stages, (targets, stages)


def test_healthchecks_call_the_script_the_image_installs(repo, compose):
    dockerfile = (repo / "Dockerfile").read_text()
    assert "COPY scripts/healthcheck.py /usr/local/bin/specrec-healthcheck" in dockerfile
    for service in compose["services"].values():
        assert service["healthcheck"]["test"][:3] == [
            "CMD",
            "python",
            "/usr/local/bin/specrec-healthcheck",
        ]


def test_each_service_is_restarted_by_itself(compose):
    """As under `make run` (supervisord): a dead worker or API is started again, the other
    keeps running (compose restarts a container alone; dependents are not stopped)."""
    for name, service in compose["services"].items():
        assert service["restart"] in ("unless-stopped", "always"), name
