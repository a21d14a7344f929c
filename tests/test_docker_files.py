"""docker/: the compose file's structure and security rules, the Dockerfile's stages, and the
server command checked against the installed `mlflow server`. `docker compose config` and an image
build run where Docker offers them (no Docker engine runs on the development machines)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines() if re.match(r"^[A-Z_]+=", line)]
    return {k: v for k, v in pairs}


def _mounts(service: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) of every volume entry in short syntax, defaults interpolated."""
    found = []
    for entry in service.get("volumes", []):
        parts = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", entry).split(":")
        found.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return found


def _stages(dockerfile: str) -> dict[str, list[str]]:
    """Stage name -> its instruction lines (continuations joined)."""
    text = re.sub(r"\\\n", " ", dockerfile)
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if found:
            current = found.group(1)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def test_compose_has_the_database_the_server_and_a_gpu_worker(services, compose):
    assert set(services) == {"postgres", "mlflow", "worker"}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["mlflow"]["build"]["target"] == "mlflow" and services["worker"]["build"]["target"] == "worker"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    command = services["worker"]["command"]
    assert command[0] == "run" and services["worker"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_database_and_artifacts_live_on_named_volumes(services, compose):
    named = set(compose["volumes"])
    assert ("pgdata", "/var/lib/postgresql/data", "rw") in _mounts(services["postgres"]) and "pgdata" in named
    command = " ".join(services["mlflow"]["command"])
    destination = re.search(r"--artifacts-destination\s+(\S+)", command).group(1)
    assert any(src in named and target == destination for src, target, _ in _mounts(services["mlflow"]))
    assert "--serve-artifacts" in command
    assert "postgresql+psycopg://" in (DOCKER / "mlflow-entrypoint.sh").read_text()  # the store, built there


def test_worker_shares_nothing_with_the_server_but_the_network(services):
    worker, server = _mounts(services["worker"]), _mounts(services["mlflow"])
    assert not {src for src, _, _ in worker} & {src for src, _, _ in server}
    assert "env_file" not in services["worker"]  # the database credentials stay with the server
    data = [m for m in worker if m[1] == "/data"]
    assert data and data[0][2] == "ro"


def test_only_loopback_ports_are_published(services):
    published = [(name, port) for name, service in services.items() for port in service.get("ports", [])]
    assert [name for name, _ in published] == ["mlflow"]
    for _, port in published:
        assert str(port).startswith("127.0.0.1:"), port
    assert "ports" not in services["postgres"]


def test_credentials_come_from_a_gitignored_env_file(services):
    for name in ("postgres", "mlflow"):
        assert services[name]["env_file"] == ".env"
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO)
    assert "docker/.env" in (REPO / ".gitignore").read_text().split()
    assert ignored.returncode in (0, 128), "docker/.env must be gitignored"  # 128: not a git checkout (an sdist)
    example = _env_example()
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(example)
    text = (DOCKER / "compose.yaml").read_text()
    assert example["POSTGRES_PASSWORD"] not in text  # no password in the compose file itself
    # Every variable the compose file interpolates without a default is documented in the example.
    required = set(re.findall(r"(?<!\$)\$\{([A-Z_]+)\}", text))
    assert required <= set(example), required - set(example)


def _entrypoint(tmp_path, env: dict, args: list[str]) -> subprocess.CompletedProcess:
    """docker/mlflow-entrypoint.sh under sh, with an `mlflow` on PATH that records what it was given."""
    recorder = tmp_path / "bin" / "mlflow"
    recorder.parent.mkdir(exist_ok=True)
    recorder.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD.args"\nenv > "$RECORD.env"\n')
    recorder.chmod(0o755)
    full = {"PATH": f"{recorder.parent}:/usr/bin:/bin", "RECORD": str(tmp_path / "record")} | env
    return subprocess.run(["sh", str(DOCKER / "mlflow-entrypoint.sh"), *args], env=full, capture_output=True, text=True)


def test_server_command_is_accepted_by_the_installed_mlflow(services, tmp_path, monkeypatch):
    """The compose options plus what the entry point adds parse as `mlflow server` options; the
    database URL arrives in MLFLOW_BACKEND_STORE_URI, and the password is on no command line."""
    from mlflow.cli import server

    values = _env_example() | {"POSTGRES_PASSWORD": "s3cret-pass", "MLFLOW_SERVER_OPTIONS": "--app-name basic-auth"}
    result = _entrypoint(tmp_path, values, services["mlflow"]["command"])
    assert result.returncode == 0, result.stderr
    words = (tmp_path / "record.args").read_text().split()
    assert words[0] == "server" and not any("s3cret-pass" in w for w in words)
    environment = dict(line.split("=", 1) for line in (tmp_path / "record.env").read_text().splitlines() if "=" in line)
    assert "POSTGRES_PASSWORD" not in environment
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", environment["MLFLOW_BACKEND_STORE_URI"])
    context = server.make_context("server", words[1:])
    assert context.params["serve_artifacts"] is True
    assert context.params["backend_store_uri"] == "postgresql+psycopg://bench:s3cret-pass@postgres:5432/mlflow"
    assert context.params["host"] == "0.0.0.0" and context.params["app_name"] == "basic-auth"
    allowed = services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "mlflow:5000" in allowed  # the worker's Host header passes the server's rebinding check


@pytest.mark.parametrize("password", ["change-me", ""])
def test_the_server_refuses_the_example_or_an_empty_password(tmp_path, password):
    result = _entrypoint(tmp_path, _env_example() | {"POSTGRES_PASSWORD": password}, ["--port", "5000"])
    assert result.returncode == 2 and "POSTGRES_PASSWORD is empty or the example's change-me" in result.stderr
    assert not (tmp_path / "record.args").exists()  # the server never started


def test_dockerfile_builds_a_cuda_pytorch_worker_and_a_server_as_non_root_users():
    text = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"ARG PYTORCH_IMAGE=(\S+)", text).group(1)
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", base)
    stages = _stages(text)
    assert set(stages) == {"mlflow", "worker"}
    assert stages["worker"][0].split()[1] == "${PYTORCH_IMAGE}"
    for name, lines in stages.items():
        users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), name
    worker = "\n".join(stages["worker"])
    assert 'ENTRYPOINT ["bench"]' in worker and re.search(r"pip install .*\"\.\[postgres\]\"", worker)
    assert "mlflow[auth]" in "\n".join(stages["mlflow"])


def test_every_copied_path_exists_and_is_in_the_build_context():
    text = (DOCKER / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE) for s in line.split()[:-1] if not s.startswith("--")]
    allowed = [line[1:].rstrip("/") for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert any(source == a or source.startswith(a + "/") for a in allowed), f"{source} is not in the build context"


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _docker_compose_available(), reason="the docker compose plugin is not installed here")
def test_docker_compose_config_accepts_the_file(tmp_path):
    # A copy with the example as its .env: `config` needs the env file that users create themselves.
    shutil.copytree(DOCKER, tmp_path / "docker")
    shutil.copy(DOCKER / ".env.example", tmp_path / "docker" / ".env")
    result = subprocess.run(
        ["docker", "compose", "-f", str(tmp_path / "docker" / "compose.yaml"), "--profile", "worker", "config", "--quiet"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
