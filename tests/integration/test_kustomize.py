"""The Kubernetes packages (deploy/kustomize, docs/kubernetes.md), checked with the real tools.

Every overlay, alone and with each optional component, is rendered by a real kustomize
(``kubectl kustomize``); every object is validated against the Kubernetes schemas of several
versions (``kubernetes-validate``, strict: an unknown field is an error); the relay config in each
rendered ConfigMap passes ``gotk-relay check-config`` and the sidecar's Prometheus config
``promtool check config``; and what docs/kubernetes.md promises is asserted on the rendered
objects: non-root, read-only root filesystem, probes, drain time, the config mounted so that a
reload sees it, secrets from Secrets, the spool on a claim, the autoscaler, budget, policy and
Services aimed at the relay.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from gotk_relay import __version__
from gotk_relay.cli import build_parser
from gotk_relay.config import load_text, referenced_files
from tests.support.rig import HOST, Proc, free_port, http_request, relay_env, wait_http

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kustomize"
OVERLAYS = ("sidecar", "gateway", "stateful")
# relay-pod is not optional: every overlay includes it (it holds the relay's containers).
OPTIONAL = tuple(
    sorted(p.name for p in (KUSTOMIZE / "components").iterdir() if p.name != "relay-pod")
)
# The shared service's Flux tier, and both tiers in one command: their objects are named
# gotk-relay-flux (the tier) or both ways, so the one-relay-per-overlay tests do not take them;
# the tests over every variant and the shared-service tests below do.
TIERS = ("flux-tier", "shared-service")
VARIANTS = (
    [(overlay, None) for overlay in OVERLAYS]
    + [(overlay, component) for overlay in OVERLAYS for component in OPTIONAL]
    + [(overlay, None) for overlay in TIERS]
    + [(overlay, component) for overlay in TIERS for component in OPTIONAL]
)
VARIANT_IDS = [overlay if c is None else f"{overlay}+{c}" for overlay, c in VARIANTS]
# Current Kubernetes minors, as kubernetes-validate ships their schemas (1.37 the newest).
K8S_VERSIONS = ("1.33", "1.34", "1.35", "1.36", "1.37")
IMAGE = f"ghcr.io/gotk-relay/gotk-relay:{__version__}"
RELAY = "gotk-relay"  # the relay's container, ConfigMap and Service name
RELOADER = "config-reloader"
INJECT = "gotk-relay.io/relay-pod"

Obj = dict[str, Any]


@functools.cache
def _render(overlay: str, component: str | None) -> tuple[Obj, ...]:
    kubectl = shutil.which("kubectl")
    # A skip would hide that nothing was rendered: scripts/test installs kubectl.
    assert kubectl, "kubectl is needed (scripts/test installs Debian's kubernetes-client)"
    root = KUSTOMIZE / "overlays" / overlay
    scratch = None
    if component is not None:
        # An overlay with a component, as a user's own kustomization would include them
        # (kustomize takes relative paths only).
        scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"gotk-relay-kustomize-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        rel = os.path.relpath(KUSTOMIZE, scratch)
        (scratch / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources: [{rel}/overlays/{overlay}]\n"
            f"components: [{rel}/components/{component}]\n"
        )
        root = scratch
    try:
        done = subprocess.run(
            [kubectl, "kustomize", str(root)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", f"kustomize warns: {done.stderr}"  # e.g. a deprecated field
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def _objects(overlay: str, component: str | None = None) -> tuple[Obj, ...]:
    return _render(overlay, component)


def _one(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def _workloads(objs: tuple[Obj, ...]) -> list[Obj]:
    """The workloads whose pods run the relay (and so must carry the relay-pod pieces)."""
    return [
        o
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet")
        and any(c["name"] == RELAY for c in o["spec"]["template"]["spec"]["containers"])
    ]


def _workload(overlay: str) -> Obj:
    workloads = _workloads(_objects(overlay))
    assert len(workloads) == 1, [w["metadata"]["name"] for w in workloads]
    return workloads[0]


def _container(pod: Obj, name: str) -> Obj:
    return next(c for c in pod["containers"] if c["name"] == name)


def _serve_args(container: Obj) -> Any:
    """The relay's flags as `gotk-relay serve` parses them (the image's entrypoint)."""
    return build_parser().parse_args(["serve", *container.get("args", [])])


def _relay_port(pod: Obj) -> int:
    relay = _container(pod, RELAY)
    host, port = _serve_args(relay).listen
    assert host == "0.0.0.0", "probes and Services reach the pod's address, not 127.0.0.1"
    declared = [p["containerPort"] for p in relay["ports"]]
    assert declared == [port], f"ports {declared} against --web.listen-address port {port}"
    return int(port)


def _named_port(pod: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(
        next(
            p["containerPort"]
            for c in pod["containers"]
            for p in c.get("ports", [])
            if p["name"] == port
        )
    )


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _relay_config_text(objs: tuple[Obj, ...], pod: Obj) -> tuple[str, str]:
    """(key, text) of the ConfigMap file the relay's --config.file names."""
    config = PurePosixPath(_serve_args(_container(pod, RELAY)).config)
    mount = next(
        m
        for m in _container(pod, RELAY)["volumeMounts"]
        if PurePosixPath(m["mountPath"]) == config.parent
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = _one(objs, "ConfigMap", volume["configMap"]["name"])
    return config.name, configmap["data"][config.name]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gotk_relay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- rendering and schemas ---------------------------------------------------------------------


def test_there_is_an_optional_component_to_combine() -> None:
    assert "servicemonitor" in OPTIONAL


@pytest.mark.parametrize(("overlay", "component"), VARIANTS, ids=VARIANT_IDS)
def test_every_variant_renders_uniquely_named_objects(overlay: str, component: str | None) -> None:
    objs = _objects(overlay, component)
    keys = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys)), keys
    for workload in _workloads(objs):  # each relay's config is rendered with it
        _relay_config_text(objs, workload["spec"]["template"]["spec"])
    if component is not None:
        assert len(objs) > len(_objects(overlay)), f"{component} added nothing to {overlay}"
    # Every workload marked for the relay got its containers from the relay-pod component.
    marked = [o for o in objs if o["metadata"].get("annotations", {}).get(INJECT) == "true"]
    assert marked and [o["metadata"]["name"] for o in marked] == [
        o["metadata"]["name"] for o in _workloads(objs)
    ]


def _check_custom_resource(obj: Obj) -> None:
    """CRD kinds have no schema in kubernetes-validate: the keys this package relies on."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["apiVersion"]
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        assert set(spec["selector"]) <= {"matchLabels", "matchExpressions"}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels"}
            assert isinstance(endpoint["port"], str), "a Service port name"
            assert re.fullmatch(r"[0-9]+(ms|s|m|h)", endpoint.get("interval", "30s"))
    elif obj["kind"] == "PrometheusRule":
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules", "labels", "limit"}
            assert group["rules"] and all("expr" in rule for rule in group["rules"])
    else:
        pytest.fail(f"{obj['kind']}: no check for this custom resource kind")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("overlay", "component"), VARIANTS, ids=VARIANT_IDS)
def test_every_object_validates_against_the_kubernetes_schemas(
    overlay: str, component: str | None, version: str
) -> None:
    validated = 0
    for obj in _objects(overlay, component):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            _check_custom_resource(obj)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{where} is not valid for Kubernetes {version} at {path}: {exc.message}")
        else:
            validated += 1
    assert validated >= 4


# -- the embedded configs ----------------------------------------------------------------------


@pytest.mark.slow  # starts gotk-relay check-config (~0.5 s)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_relay_config_passes_check_config(overlay: str, tmp_path: Path) -> None:
    objs = _objects(overlay)
    pod = _workload(overlay)["spec"]["template"]["spec"]
    key, text = _relay_config_text(objs, pod)
    # The pod's secret mounts, laid out under tmp_path: check-config reads every *_file.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in _container(pod, RELAY)["volumeMounts"]:
        if "secret" in volumes.get(mount["name"], {}):  # (a claim's volume is in no list)
            local = tmp_path / mount["name"]
            text = text.replace(mount["mountPath"].rstrip("/") + "/", f"{local}/")
    config = load_text(text, f"{overlay}/{key}")
    assert config.remote_write, "the example forwards somewhere"
    for key, path in referenced_files(config):
        # Only files under a Secret's mount were moved here (the rest is another test's failure).
        assert Path(path).is_relative_to(tmp_path), f"{key}: {path} is not in a Secret's mount"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("not-a-real-token\n")
    (tmp_path / key).write_text(text)
    done = _cli("check-config", str(tmp_path / key))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.slow  # starts promtool
def test_sidecar_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian's prometheus package; scripts/test installs it)"
    objs = _objects("sidecar")
    statefulset = _workload("sidecar")
    pod = statefulset["spec"]["template"]["spec"]
    prometheus = _container(pod, "prometheus")
    flag = next(a for a in prometheus["args"] if a.startswith("--config.file="))
    config = PurePosixPath(flag.partition("=")[2])
    mount = next(
        m for m in prometheus["volumeMounts"] if PurePosixPath(m["mountPath"]) == config.parent
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    text = _one(objs, "ConfigMap", volume["configMap"]["name"])["data"][config.name]
    (tmp_path / config.name).write_text(text)
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / config.name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    # ...and it remote-writes to the relay in its own pod.
    urls = [urlsplit(rw["url"]) for rw in yaml.safe_load(text)["remote_write"]]
    assert [(u.hostname, u.port, u.path) for u in urls] == [
        ("127.0.0.1", _relay_port(pod), "/api/v1/write")
    ]


# -- the pods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_relay_containers_run_locked_down(overlay: str) -> None:
    pod = _workload(overlay)["spec"]["template"]["spec"]
    pod_context = pod.get("securityContext", {})
    for name in (RELAY, RELOADER):
        container = _container(pod, name)
        # A container's own securityContext wins over the pod's, field by field.
        ctx = {**pod_context, **container.get("securityContext", {})}
        assert ctx.get("runAsNonRoot") is True, name
        assert isinstance(ctx.get("runAsUser"), int) and ctx["runAsUser"] > 0, name
        assert ctx.get("allowPrivilegeEscalation") is False, name
        assert ctx.get("readOnlyRootFilesystem") is True, name
        assert ctx.get("capabilities") == {"drop": ["ALL"]}, name
        assert ctx.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name
    relay = _container(pod, RELAY)
    assert relay["image"] == IMAGE
    # The relay writes nowhere but /tmp (receiver.workers' socket directory) and its spool.
    writable = {m["mountPath"] for m in relay["volumeMounts"] if not m.get("readOnly")}
    assert "/tmp" in writable
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = next(m for m in relay["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]


# Pod Security Standards, "restricted" profile: the volume types it allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.mark.parametrize(("overlay", "component"), VARIANTS, ids=VARIANT_IDS)
def test_every_pod_meets_the_restricted_pod_security_standard(
    overlay: str, component: str | None
) -> None:
    """Every pod rendered (the sidecar's Prometheus too) can run in a namespace labelled
    pod-security.kubernetes.io/enforce: restricted."""
    pods = [
        o["spec"]["template"]["spec"]
        for o in _objects(overlay, component)
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]
    assert pods
    for pod in pods:
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
        pod_context = pod.get("securityContext", {})
        for container in pod["containers"] + pod.get("initContainers", []):
            ctx = {**pod_context, **container.get("securityContext", {})}
            name = container["name"]
            assert ctx.get("runAsNonRoot") is True and ctx.get("runAsUser", 1) != 0, name
            assert ctx.get("allowPrivilegeEscalation") is False, name
            assert not ctx.get("privileged"), name
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
            assert set(ctx.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}
            assert ctx.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost")
            assert not any("hostPort" in port for port in container.get("ports", [])), name


def test_the_image_runs_as_the_user_the_pods_ask_for() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    uid = int(re.search(r"useradd [^\n]*--uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    assert f"USER {uid}:{uid}" in dockerfile
    for overlay in OVERLAYS:
        relay = _container(_workload(overlay)["spec"]["template"]["spec"], RELAY)
        assert relay["securityContext"]["runAsUser"] == uid
        assert relay["securityContext"]["runAsGroup"] == uid


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_drain_fit_the_relay(overlay: str) -> None:
    pod = _workload(overlay)["spec"]["template"]["spec"]
    relay = _container(pod, RELAY)
    port = _relay_port(pod)
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        get = relay[probe]["httpGet"]
        assert get["path"] == path
        assert _named_port(pod, get["port"]) == port
    # The kubelet's grace period counts from the start of preStop: it must cover the sleep
    # and the relay's whole drain, or the drain ends in SIGKILL.
    command = relay["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop > 0
    shutdown = _serve_args(relay).shutdown_timeout
    assert pod["terminationGracePeriodSeconds"] > pre_stop + shutdown


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_is_mounted_so_that_the_reloader_sees_changes(overlay: str) -> None:
    objs = _objects(overlay)
    pod = _workload(overlay)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    relay = _container(pod, RELAY)
    args = _serve_args(relay)
    config = PurePosixPath(args.config)
    # A subPath mount is a copy the kubelet never updates: a reload would read the old file.
    relay_mounts = [m for m in relay["volumeMounts"] if "configMap" in volumes.get(m["name"], {})]
    assert relay_mounts
    for mount in relay_mounts:
        assert "subPath" not in mount and "subPathExpr" not in mount
    held = [m for m in relay_mounts if PurePosixPath(m["mountPath"]) == config.parent]
    assert len(held) == 1, f"--config.file={config} is not in a mounted ConfigMap's directory"
    key, text = _relay_config_text(objs, pod)
    assert key == config.name
    load_text(text, f"{overlay}/{key}")
    # The reloader watches the same volume and POSTs the relay's /-/reload on this pod.
    assert args.lifecycle, "POST /-/reload needs --web.enable-lifecycle"
    reloader = _container(pod, RELOADER)
    flags = dict(a.removeprefix("--").split("=", 1) for a in reloader["args"])
    watched = next(m for m in reloader["volumeMounts"] if m["name"] == held[0]["name"])
    assert "subPath" not in watched
    assert flags["watched-dir"] == watched["mountPath"]
    url = urlsplit(flags["reload-url"])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", _relay_port(pod), "/-/reload")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_file_is_mounted_from_a_secret(overlay: str) -> None:
    objs = _objects(overlay)
    pod = _workload(overlay)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    relay = _container(pod, RELAY)
    _, text = _relay_config_text(objs, pod)
    files = referenced_files(load_text(text, overlay))
    assert files, "the example shows how a secret reaches the relay"
    for key, path in files:
        mount = next(
            (
                m
                for m in relay["volumeMounts"]
                if PurePosixPath(m["mountPath"]) == PurePosixPath(path).parent
            ),
            None,
        )
        assert mount is not None, f"{key}: {path} is in no mounted directory"
        assert "secret" in volumes.get(mount["name"], {}), f"{key}: {path} is not from a Secret"
        assert "subPath" not in mount  # a rotated Secret reaches the file


# -- per overlay -------------------------------------------------------------------------------


def _pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    assert _selects(workload["spec"]["selector"]["matchLabels"], labels)
    return labels


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_reaches_the_relay_port(overlay: str) -> None:
    objs = _objects(overlay)
    workload = _workload(overlay)
    pod = workload["spec"]["template"]["spec"]
    service = _one(objs, "Service", RELAY)
    assert _selects(service["spec"]["selector"], _pod_labels(workload))
    port = _relay_port(pod)
    [service_port] = service["spec"]["ports"]
    assert service_port["port"] == port
    assert _named_port(pod, service_port["targetPort"]) == port


def test_gateway_scales_a_deployment_within_a_budget_and_a_policy() -> None:
    objs = _objects("gateway")
    deployment = _workload("gateway")
    assert deployment["kind"] == "Deployment"
    # The autoscaler owns the replica count: one in the Deployment would be reset on apply.
    assert "replicas" not in deployment["spec"]
    labels = _pod_labels(deployment)
    pod = deployment["spec"]["template"]["spec"]
    hpa = _one(objs, "HorizontalPodAutoscaler", RELAY)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is of the request: there must be one.
    assert "cpu" in _container(pod, RELAY)["resources"]["requests"]
    pdb = _one(objs, "PodDisruptionBudget", RELAY)
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable", 0) >= 1
    policy = _one(objs, "NetworkPolicy", RELAY)
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = [p for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert [(_named_port(pod, p["port"]), p["protocol"]) for p in ports] == [
        (_relay_port(pod), "TCP")
    ]


def test_stateful_keeps_the_spool_on_a_claim_per_pod() -> None:
    objs = _objects("stateful")
    statefulset = _workload("stateful")
    assert statefulset["kind"] == "StatefulSet"
    pod = statefulset["spec"]["template"]["spec"]
    _, text = _relay_config_text(objs, pod)
    data_dir = load_text(text, "stateful").spool.data_dir
    assert data_dir, "the stateful overlay turns the spool on"
    claims = {t["metadata"]["name"]: t for t in statefulset["spec"]["volumeClaimTemplates"]}
    relay = _container(pod, RELAY)
    holding = [
        m
        for m in relay["volumeMounts"]
        if PurePosixPath(data_dir).is_relative_to(PurePosixPath(m["mountPath"]))
    ]
    # The deepest mount holding the directory is where the files land: the claim's volume.
    mount = max(holding, key=lambda m: len(m["mountPath"]))
    assert mount["name"] in claims and not mount.get("readOnly")
    assert mount["name"] not in {v["name"] for v in pod.get("volumes", [])}
    assert claims[mount["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The relay's user can write the claim's files.
    assert pod["securityContext"]["fsGroup"] == relay["securityContext"]["runAsGroup"]
    # The StatefulSet's governing Service is headless and selects its pods.
    service = _one(objs, "Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert _selects(service["spec"]["selector"], _pod_labels(statefulset))
    # No autoscaler: scaling down would strand a pod's spooled backlog on its claim.
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    pdb = _one(objs, "PodDisruptionBudget", RELAY)
    assert _selects(pdb["spec"]["selector"]["matchLabels"], _pod_labels(statefulset))


def test_sidecar_adds_the_relay_to_a_prometheus_statefulset() -> None:
    statefulset = _workload("sidecar")
    assert (statefulset["kind"], statefulset["metadata"]["name"]) == ("StatefulSet", "prometheus")
    pod = statefulset["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert sorted(names) == sorted(["prometheus", RELAY, RELOADER])
    # Prometheus keeps its WAL on a claim: what the relay did not acknowledge survives a restart.
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    storage = next(a for a in _container(pod, "prometheus")["args"] if "storage.agent.path" in a)
    path = storage.partition("=")[2]
    assert any(
        m["name"] in claims and m["mountPath"] == path
        for m in _container(pod, "prometheus")["volumeMounts"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_scrapes_the_relay_service(overlay: str) -> None:
    # One relay per overlay: its Service, named as the relay.
    objs = _objects(overlay, "servicemonitor")
    monitor = _one(objs, "ServiceMonitor", RELAY)
    selected = [
        o
        for o in objs
        if o["kind"] == "Service"
        and _selects(monitor["spec"]["selector"]["matchLabels"], o["metadata"]["labels"])
    ]
    # Exactly one: two Services over the same pods would scrape each pod twice.
    assert [s["metadata"]["name"] for s in selected] == [RELAY]
    ports = {p["name"] for p in selected[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS + TIERS)
def test_servicemonitor_scrapes_every_relay_pod_through_one_service(overlay: str) -> None:
    """Both tiers of the shared service too: the gateways' Service and the Flux tier's."""
    objs = _objects(overlay, "servicemonitor")
    (monitor,) = [o for o in objs if o["kind"] == "ServiceMonitor"]
    selected = [
        o
        for o in objs
        if o["kind"] == "Service"
        and _selects(monitor["spec"]["selector"]["matchLabels"], o["metadata"]["labels"])
    ]
    workloads = _workloads(objs)
    assert len(workloads) == (2 if overlay == "shared-service" else 1)
    for workload in workloads:
        pods = workload["spec"]["template"]["metadata"]["labels"]
        over = [s for s in selected if _selects(s["spec"]["selector"], pods)]
        # Exactly one: two Services over the same pods would scrape each pod twice.
        assert len(over) == 1, (workload["metadata"]["name"], [s["metadata"]["name"] for s in over])
        ports = {p["name"] for p in over[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports
    # Every Service it selects is over relay pods.
    assert all(
        any(
            _selects(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
            for w in workloads
        )
        for s in selected
    )


def _walk(node: object) -> Iterator[tuple[str, object]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@pytest.mark.parametrize(("overlay", "component"), VARIANTS, ids=VARIANT_IDS)
def test_nothing_is_mounted_with_subpath(overlay: str, component: str | None) -> None:
    # Not only the relay's: a subPath mount of a ConfigMap or Secret never sees an update.
    found = [
        k for obj in _objects(overlay, component) for k, _ in _walk(obj) if k.startswith("subPath")
    ]
    assert found == []


# -- the rendered pod, run -----------------------------------------------------------------------


def _kubelet_update(directory: Path, files: dict[str, str], generation: int) -> None:
    """Lay out a ConfigMap volume as the kubelet does, or update it: the files in a new
    timestamped directory, then one atomic rename of the ``..data`` symlink to it. The visible
    names are symlinks through ``..data``, so a reader sees the old files or the new ones."""
    directory.mkdir(parents=True, exist_ok=True)
    version = directory / f"..{generation}"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    staged = directory / "..data_tmp"
    staged.symlink_to(version.name)
    staged.rename(directory / "..data")


@pytest.mark.slow  # runs the relay (~2 s)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_relay_runs_as_the_pod_runs_it(overlay: str, tmp_path: Path) -> None:
    """The rendered container's flags, config and mounts, on a real relay: the probes' paths
    answer 200, the reloader's POST reloads a kubelet-style update of the mounted directory (and
    a bad one is refused, the relay still ready), and SIGTERM drains and exits 0 in time."""
    objs = _objects(overlay)
    pod = _workload(overlay)["spec"]["template"]["spec"]
    relay = _container(pod, RELAY)
    root = tmp_path / "pod"  # the container's filesystem, for the paths the pod mounts

    def local(path: str) -> str:
        return str(root / path.lstrip("/"))

    key, text = _relay_config_text(objs, pod)
    for mount in sorted(relay["volumeMounts"], key=lambda m: -len(m["mountPath"])):
        if mount["mountPath"] != "/tmp":
            text = text.replace(
                mount["mountPath"].rstrip("/") + "/", local(mount["mountPath"]) + "/"
            )
    for _, path in referenced_files(load_text(text, overlay)):
        assert Path(path).is_relative_to(root), path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("not-a-real-token\n")
    args = _serve_args(relay)
    config_dir = Path(local(str(PurePosixPath(args.config).parent)))
    _kubelet_update(config_dir, {key: text}, 1)
    port = free_port()
    argv = []
    for arg in relay["args"]:
        if arg.startswith("--config.file="):
            arg = f"--config.file={config_dir / key}"
        elif arg.startswith("--web.listen-address="):
            arg = f"--web.listen-address={HOST}:{port}"
        argv.append(arg)
    base = f"http://{HOST}:{port}"
    reloader = dict(a.removeprefix("--").split("=", 1) for a in _container(pod, RELOADER)["args"])
    reload_url = base + urlsplit(reloader["reload-url"]).path
    with Proc(
        f"relay-{overlay}",
        [sys.executable, "-m", "gotk_relay", "serve", *argv],
        tmp_path,
        env=relay_env({"TMPDIR": str(tmp_path)}),
    ) as proc:
        wait_http(base + relay["readinessProbe"]["httpGet"]["path"], 30, proc=proc)
        assert http_request(base + relay["livenessProbe"]["httpGet"]["path"])[0] == 200
        # An update, as the kubelet writes it, then the reloader's POST.
        _kubelet_update(config_dir, {key: text + "\nrelabel_configs: []\n"}, 2)
        status, _, body = http_request(reload_url, method="POST", data=b"")
        assert status == 200, body
        # A file that does not validate: refused, the running config stays, still ready.
        _kubelet_update(config_dir, {key: text + "\nrelabel_configz: []\n"}, 3)
        status, _, body = http_request(reload_url, method="POST", data=b"")
        assert status == 500 and b"relabel_configz" in body, body
        metrics = http_request(base + "/metrics")[2].decode()
        assert "gotk_relay_config_last_reload_successful 0.0" in metrics
        assert http_request(base + relay["readinessProbe"]["httpGet"]["path"])[0] == 200
        if overlay == "stateful":
            data_dir = load_text(text, overlay).spool.data_dir
            assert data_dir and Path(data_dir).is_dir()
        # The kubelet's SIGTERM comes after preStop; the drain must end within the grace left.
        pre_stop = float(relay["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = pod["terminationGracePeriodSeconds"] - pre_stop
        assert proc.stop(timeout_s=grace) == 0, proc.log_tail()


# -- the shared service: gateways and the Flux tier ---------------------------------------------


def _by_kind(objs: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def test_the_flux_tier_is_one_pod_with_its_spool_on_a_claim() -> None:
    objs = _objects("flux-tier")
    [statefulset] = _workloads(objs)
    assert statefulset["kind"] == "StatefulSet"
    # One owner for every Flux object: more pods would split the objects' state.
    assert statefulset["spec"]["replicas"] == 1
    assert not _by_kind(objs, "HorizontalPodAutoscaler")
    pod = statefulset["spec"]["template"]["spec"]
    _, text = _relay_config_text(objs, pod)
    config = load_text(text, "flux-tier")
    assert config.flux.mode == "legacy"
    assert config.spool.data_dir
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = [
        m
        for m in _container(pod, RELAY)["volumeMounts"]
        if PurePosixPath(config.spool.data_dir).is_relative_to(PurePosixPath(m["mountPath"]))
    ]
    assert max(mounts, key=lambda m: len(m["mountPath"]))["name"] in claims
    service = _one(objs, "Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert _selects(service["spec"]["selector"], _pod_labels(statefulset))
    account = pod["serviceAccountName"]
    assert _one(objs, "ServiceAccount", account)["automountServiceAccountToken"] is False


def test_the_shared_service_wires_the_gateways_to_the_flux_tier() -> None:
    objs = _objects("shared-service")
    workloads = {w["kind"]: w for w in _workloads(objs)}
    assert sorted(workloads) == ["Deployment", "StatefulSet"]
    gateway, tier = workloads["Deployment"], workloads["StatefulSet"]
    gateway_pod, tier_pod = gateway["spec"]["template"]["spec"], tier["spec"]["template"]["spec"]
    # Each tier's pods get their own config and account, and each Service reaches its own only.
    gateway_config = load_text(_relay_config_text(objs, gateway_pod)[1], "gateway")
    tier_config = load_text(_relay_config_text(objs, tier_pod)[1], "flux-tier")
    assert gateway_pod["serviceAccountName"] != tier_pod["serviceAccountName"]
    for account in (gateway_pod["serviceAccountName"], tier_pod["serviceAccountName"]):
        _one(objs, "ServiceAccount", account)
    for service in _by_kind(objs, "Service"):
        selected = [
            w["kind"]
            for w in (gateway, tier)
            if _selects(service["spec"]["selector"], _pod_labels(w))
        ]
        assert len(selected) == 1, (service["metadata"]["name"], selected)
    for budget in _by_kind(objs, "PodDisruptionBudget"):
        assert (
            sum(
                _selects(budget["spec"]["selector"]["matchLabels"], _pod_labels(w))
                for w in (gateway, tier)
            )
            == 1
        )
    # The gateways answer once delivered and leave the Flux rules to the tier...
    assert gateway_config.receiver.acknowledge == "delivered"
    assert gateway_config.flux.mode == "off"
    assert tier_config.flux.mode == "legacy" and tier_config.receiver.acknowledge == "queued"
    # ...whose one pod they write the Flux inputs to, by its stable name and port...
    [to_tier] = [d for d in gateway_config.remote_write if d.name == "flux-tier"]
    url = urlsplit(str(to_tier.url))
    assert url.hostname == f"{tier['metadata']['name']}-0.{tier['spec']['serviceName']}"
    assert url.port == _relay_port(tier_pod)
    # ...and only them: the backend gets every other series, the tier the Flux ones.
    [backend] = [d for d in gateway_config.remote_write if d.name != "flux-tier"]
    [drop] = backend.write_relabel_configs
    [keep] = to_tier.write_relabel_configs
    assert (drop.action, keep.action) == ("drop", "keep")
    assert tuple(drop.source_labels) == tuple(keep.source_labels) == ("__name__",)
    assert drop.regex == keep.regex
    assert set(str(drop.regex).split("|")) == {
        "gotk_resource_info",
        "flux_resource_info",
        "gotk_reconcile_condition",
        "gotk_suspend_status",
    }
