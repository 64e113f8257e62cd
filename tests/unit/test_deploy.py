"""The Kubernetes sidecar example stays loadable and consistent with the relay it runs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gotk_relay.cli import build_parser
from gotk_relay.config import default_config_text, load_text

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "kubernetes" / "prometheus-sidecar.yaml"


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_relay_configmap_and_embedded_default_pass_check_config() -> None:
    configmap = next(
        d for d in _docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "gotk-relay"
    )
    config = load_text(configmap["data"]["relay.yml"], "configmap gotk-relay")
    assert [rw.name for rw in config.remote_write] == ["mimir"]
    assert load_text(default_config_text(), "<embedded default>").federate.enabled


def test_prometheus_writes_to_the_relay_on_localhost() -> None:
    configmap = next(
        d for d in _docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "prometheus"
    )
    prom = yaml.safe_load(configmap["data"]["prometheus.yml"])
    assert prom["remote_write"][0]["url"] == "http://127.0.0.1:9201/api/v1/write"


def test_sidecar_args_are_accepted_by_the_cli() -> None:
    deployment = next(d for d in _docs() if d["kind"] == "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    relay = next(c for c in containers if c["name"] == "gotk-relay")
    args = build_parser().parse_args(["serve", *relay["args"]])
    assert args.config == "/etc/gotk-relay/config/relay.yml"
    assert relay["readinessProbe"]["httpGet"]["path"] == "/-/ready"


def _kustomize() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    # A skip would hide that the manifest was never rendered: scripts/test installs kubectl.
    assert kubectl, "kubectl is needed (scripts/test installs Debian's kubernetes-client)"
    done = subprocess.run(
        [kubectl, "kustomize", str(MANIFEST.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_kustomize_renders_well_formed_objects() -> None:
    rendered = _kustomize()
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered} == {
        ("ConfigMap", "gotk-relay"),
        ("ConfigMap", "prometheus"),
        ("Deployment", "prometheus"),
    }
    for doc in rendered:
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"]


def test_the_relay_config_is_mounted_so_that_a_reload_sees_a_changed_configmap() -> None:
    # A subPath mount is a copy the kubelet never updates: a reload would read the old file.
    deployment = next(d for d in _kustomize() if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    configmaps = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    relay = next(c for c in pod["containers"] if c["name"] == "gotk-relay")
    config = PurePosixPath(build_parser().parse_args(["serve", *relay["args"]]).config)
    mounts = [m for m in relay["volumeMounts"] if configmaps.get(m["name"]) == "gotk-relay"]
    assert mounts, "the gotk-relay ConfigMap is not mounted in the relay container"
    for mount in mounts:
        assert "subPath" not in mount and "subPathExpr" not in mount
    holding = [m for m in mounts if config.parent == PurePosixPath(m["mountPath"])]
    assert holding, f"--config={config} is not in a directory the ConfigMap is mounted at"
    key = config.name
    configmap = next(
        d
        for d in _kustomize()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "gotk-relay"
    )
    assert key in configmap["data"]
    load_text(configmap["data"][key], "configmap gotk-relay")


def test_no_doc_says_the_relay_answers_429() -> None:
    # A full queue is a 503 (Prometheus retries it; it drops a 429 unless retry_on_http_429).
    claim = re.compile(r"(relay|gotk-relay) (says|answers|returns|responds) 429", re.IGNORECASE)
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "deploy").rglob("*")]
    files += list((REPO / "config").rglob("*.yml"))
    found = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in files
        if path.is_file()
        for line in path.read_text().splitlines()
        if claim.search(line)
    ]
    assert found == []
