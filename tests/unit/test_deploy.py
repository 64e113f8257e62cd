"""The Kubernetes sidecar example stays loadable and consistent with the relay it runs."""

from __future__ import annotations

from pathlib import Path

import yaml

from gotk_relay.cli import build_parser
from gotk_relay.config import default_config_text, load_text

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "kubernetes" / "prometheus-sidecar.yaml"


def _docs() -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_relay_configmap_and_embedded_default_pass_check_config() -> None:
    configmap = next(
        d for d in _docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "gotk-relay"
    )  # type: ignore[index]
    config = load_text(configmap["data"]["relay.yml"], "configmap gotk-relay")  # type: ignore[index]
    assert [rw.name for rw in config.remote_write] == ["mimir"]
    assert load_text(default_config_text(), "<embedded default>").federate.enabled


def test_prometheus_writes_to_the_relay_on_localhost() -> None:
    configmap = next(
        d for d in _docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "prometheus"
    )  # type: ignore[index]
    prom = yaml.safe_load(configmap["data"]["prometheus.yml"])  # type: ignore[index]
    assert prom["remote_write"][0]["url"] == "http://127.0.0.1:9201/api/v1/write"


def test_sidecar_args_are_accepted_by_the_cli() -> None:
    deployment = next(d for d in _docs() if d["kind"] == "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    relay = next(c for c in containers if c["name"] == "gotk-relay")
    args = build_parser().parse_args(["serve", *relay["args"]])
    assert args.config == "/etc/gotk-relay/relay.yml"
    mounts = {m["mountPath"] for m in relay["volumeMounts"]}
    assert "/etc/gotk-relay/relay.yml" in mounts
    assert relay["readinessProbe"]["httpGet"]["path"] == "/-/ready"
