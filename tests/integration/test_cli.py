"""The commands an operator types: serve on the default config, send, check-config, --version."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rig import free_port

# Every test here runs gotk-relay as an operator does, in a process of its own (~0.5 s each).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "docs" / "examples" / "ksm-flux.prom"


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = subprocess.run(
        [sys.executable, "-m", "gotk_relay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,  # type: ignore[call-overload]
    )
    return done


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def relay_on_default_config(tmp_path: Path) -> Iterator[str]:
    """`gotk-relay serve` with no config file, as the README's first command runs it."""
    port = free_port()
    log = (tmp_path / "relay.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gotk_relay", "serve", "--listen-address", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(base + "/-/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "relay.log").read_text()
            assert time.monotonic() < deadline, "relay did not become ready"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=15) == 0, (tmp_path / "relay.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


# Installs the project into .venv (rebuilding the extensions every relay process imports).
@pytest.mark.alone
@pytest.mark.slow
def test_the_readme_first_command_serves_the_embedded_default_config(tmp_path: Path) -> None:
    """`./scripts/serve` (README line 1): installs into .venv and serves; SIGTERM ends it cleanly."""
    readme = (REPO / "README.md").read_text()
    assert "\n./scripts/serve\n" in readme
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    # As a user runs it: a test run's GOTK_RELAY_NO_EXTENSIONS (the pure-Python twins) is not
    # part of the README's command.
    env = {k: v for k, v in os.environ.items() if k != "GOTK_RELAY_NO_EXTENSIONS"}
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "serve"), "--listen-address", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc, deadline_s=180)  # includes the pip install
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "gotk_relay_federate_series" in text
        # The install built the C request scanner (scripts/lib.sh brings gcc and the headers)
        # and the relay compresses with libsnappy (scripts/lib.sh installs libsnappy1v5).
        started = (tmp_path / "serve.log").read_text()
        assert "scan_accelerator=True" in started
        assert "compressor=libsnappy" in started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0, (tmp_path / "serve.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


def test_send_then_federate_shows_the_legacy_flux_series(relay_on_default_config: str) -> None:
    sent = _cli("send", str(SAMPLE), "--url", relay_on_default_config + "/api/v1/write")
    assert sent.returncode == 0, sent.stderr
    assert "204" in sent.stdout and "3 series" in sent.stdout
    status, text = _get(relay_on_default_config + "/federate")
    assert status == 200
    assert "gotk_resource_info{" in text
    assert "gotk_reconcile_condition{" in text and 'status="True"' in text
    assert "gotk_suspend_status{" in text
    status, only = _get(relay_on_default_config + "/federate?match[]=gotk_suspend_status")
    assert status == 200 and "gotk_suspend_status" in only and "gotk_resource_info{" not in only


def test_send_reports_a_refusal(relay_on_default_config: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.prom"
    bad.write_text('up{job="a"} 1\n')
    done = _cli("send", str(bad), "--url", relay_on_default_config + "/nope")
    assert done.returncode == 1
    assert "404" in done.stderr


def test_relay_exposes_its_metrics_and_health(relay_on_default_config: str) -> None:
    status, text = _get(relay_on_default_config + "/metrics")
    assert status == 200 and "gotk_relay_http_requests_total" in text
    assert _get(relay_on_default_config + "/-/healthy")[0] == 200
    # Without --web.enable-lifecycle, reload over HTTP is refused as in Prometheus.
    request = urllib.request.Request(relay_on_default_config + "/-/reload", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 403


def test_check_config_names_the_problem(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n")
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n    queue_config: {max_shard: 3}\n"
    )
    ok = _cli("check-config", str(good))
    assert ok.returncode == 0 and "SUCCESS: destinations: 1 remote_write;" in ok.stdout
    every = tmp_path / "every.yml"
    every.write_text(
        "remote_write: [{url: 'http://127.0.0.1:9/api/v1/write'}]\n"
        "datadog: [{api_key: k}, {api_key: k, name: b}]\n"
        "otlp: [{url: 'http://127.0.0.1:9/v1/metrics'}]\n"
    )
    done = _cli("check-config", str(every))
    assert "SUCCESS: destinations: 1 remote_write, 2 datadog, 1 otlp;" in done.stdout
    failed = _cli("check-config", str(good), str(bad))
    assert failed.returncode == 1
    assert (
        f"{bad}:3: remote_write[0].queue_config.max_shard: field max_shard not found"
        in failed.stderr  # FAILED lines go to stderr, as promtool writes them
    )
    assert f"Checking {bad}" in failed.stdout


def test_check_config_never_prints_secrets(tmp_path: Path) -> None:
    path = tmp_path / "secret.yml"
    path.write_text(
        "remote_write:\n  - url: http://a/\n    basic_auth: {username: u, password: hunter2}\n    headers: {X-Bad: [1]}\n"
    )
    done = _cli("check-config", str(path))
    assert done.returncode == 1
    assert "hunter2" not in done.stdout + done.stderr


def test_version() -> None:
    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("gotk-relay ")


def test_serve_refuses_a_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("flux: {mode: sideways}\n")
    done = _cli("serve", "--config", str(path), "--listen-address", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "flux.mode" in done.stderr


def test_sighup_reloads_and_keeps_the_old_config_on_error(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "relay.yml"
    path.write_text("federate: {match: ['{__name__=\"a\"}']}\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gotk_relay",
            "serve",
            "--config",
            str(path),
            "--listen-address",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        path.write_text(
            "federate: {match: ['{__name__=\"b\"}']}\nremote_write: [{url: 'http://127.0.0.1:9/', name: extra}]\n"
        )
        proc.send_signal(signal.SIGHUP)
        _wait_metric(base, 'gotk_relay_shards{destination="extra"} 1.0')
        path.write_text("remote_write: [{url: 'ftp://nope/'}]\n")
        proc.send_signal(signal.SIGHUP)
        _wait_metric(base, "gotk_relay_config_last_reload_successful 0.0")
        assert 'gotk_relay_shards{destination="extra"} 1.0' in _get(base + "/metrics")[1]
        path.write_text("federate: {match: ['{__name__=\"b\"}']}\n")
        proc.send_signal(signal.SIGHUP)
        _wait_metric(base, "gotk_relay_config_last_reload_successful 1.0")
        path.write_bytes(b"federate: {match: ['{__name__=\"caf\xe9\"}']}\n")  # Latin-1
        proc.send_signal(signal.SIGHUP)
        _wait_metric(base, "gotk_relay_config_last_reload_successful 0.0")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "failed to reload config" in err and "remote_write[0].url" in err
    assert "not UTF-8 (byte 0xe9 at offset" in err  # a file in another encoding: said so
    # Prometheus' lines around a reload: its start, and its end only when it took effect.
    assert err.count(f'msg="loading configuration file" filename={path}') == 4
    done = re.findall(
        rf'msg="completed loading of configuration file" filename={re.escape(str(path))} '
        r"totalDuration=[0-9.]+ms",
        err,
    )
    assert len(done) == 2
    assert proc.returncode == 0


def _wait_ready(
    base: str, proc: subprocess.Popen[str] | subprocess.Popen[bytes], deadline_s: float = 30
) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None
        try:
            if _get(base + "/-/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("relay did not become ready")


def _wait_metric(base: str, line: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if line in _get(base + "/metrics")[1]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{line!r} never appeared in /metrics")


def test_env_is_not_needed_for_the_default_config() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOTK")}
    done = _cli("check-config", str(REPO / "config" / "default.yml"), env=env)
    assert done.returncode == 0, done.stdout


FIXTURES = REPO / "tests" / "fixtures" / "flux"


def _samples(
    text: str, default_ts: float | None = None
) -> set[tuple[str, tuple[tuple[str, str], ...], float, float | None]]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (
            s.name,
            tuple(sorted(s.labels.items())),
            float(s.value),
            float(s.timestamp) if s.timestamp else default_ts,
        )
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("flux", "source", "expected"),
    [
        ("{set_job: true}", "ksm_input.prom", "expected_legacy_stored.prom"),
        ("{label_shape: raw}", "ksm_input.prom", "expected_legacy_raw.prom"),
        ("{mode: resource_info}", "legacy_input.prom", "expected_resource_info.prom"),
    ],
    ids=["legacy-stored", "legacy-raw", "reverse"],
)
def test_rewrite_prints_the_golden_output(
    tmp_path: Path, flux: str, source: str, expected: str
) -> None:
    """What `rewrite` prints = the input (keep_source) plus the hand-written golden series."""
    config = tmp_path / "relay.yml"
    config.write_text(f"flux: {flux}\n")
    done = _cli(
        "rewrite", str(FIXTURES / source), "--config", str(config), "--timestamp", "1732560000000"
    )
    assert done.returncode == 0, done.stderr
    inputs = _samples((FIXTURES / source).read_text(), default_ts=1732560000.0)
    want = inputs | _samples((FIXTURES / expected).read_text())
    assert _samples(done.stdout) == want


def test_rewrite_explain_shows_each_relabel_step(tmp_path: Path) -> None:
    config = tmp_path / "relay.yml"
    config.write_text(
        "flux: {mode: 'off'}\n"
        "relabel_configs:\n"
        "  - {source_labels: [job], target_label: team, replacement: platform}\n"
        "  - {source_labels: [__name__], regex: go_.*, action: drop}\n"
    )
    done = _cli(
        "rewrite",
        "--config",
        str(config),
        "--explain",
        "--timestamp",
        "5",
        input='up{job="a"} 1\ngo_goroutines 3\n',
    )
    assert done.returncode == 0, done.stderr
    assert _samples(done.stdout) == {("up", (("job", "a"), ("team", "platform")), 1.0, 0.005)}
    assert 'relabel_configs[1] drop: go_goroutines{team="platform"} -> dropped' in done.stderr


def test_ksm_config_names_every_kind_with_its_labels() -> None:
    import yaml

    done = _cli("ksm-config", "--format", "helm-values")
    assert done.returncode == 0, done.stderr
    values = yaml.safe_load(done.stdout)["kube-state-metrics"]
    resources = values["customResourceState"]["config"]["spec"]["resources"]
    kinds = {r["groupVersionKind"]["kind"]: r for r in resources}
    assert set(kinds) == {
        "GitRepository",
        "OCIRepository",
        "HelmRepository",
        "HelmChart",
        "Bucket",
        "Kustomization",
        "HelmRelease",
        "Alert",
        "Provider",
        "Receiver",
        "ImageRepository",
        "ImagePolicy",
        "ImageUpdateAutomation",
    }
    helm = kinds["HelmRelease"]
    assert helm["groupVersionKind"] == {
        "group": "helm.toolkit.fluxcd.io",
        "version": "v2",
        "kind": "HelmRelease",
    }
    assert helm["metricNamePrefix"] == "gotk"
    metric = helm["metrics"][0]
    labels = metric["each"]["info"]["labelsFromPath"] | metric["labelsFromPath"]
    assert {"name", "exported_namespace", "ready", "suspended", "revision", "chart_name"} <= set(
        labels
    )
    configmap = yaml.safe_load(_cli("ksm-config", "--kinds", "Kustomization").stdout)
    assert configmap["kind"] == "ConfigMap"
    assert "Kustomization" in configmap["data"]["config.yaml"]


def test_check_config_refuses_a_url_with_a_bad_port(tmp_path: Path) -> None:
    path = tmp_path / "relay.yml"
    path.write_text("remote_write:\n  - url: http://h:notaport/api/v1/write\n")
    done = _cli("check-config", str(path))
    assert done.returncode == 1
    assert f"{path}:2: remote_write[0].url: " in done.stderr  # FAILED, as promtool, on stderr
    assert "the port must be a number from 1 to 65535" in done.stderr


def test_check_config_never_prints_a_value_from_env(tmp_path: Path) -> None:
    path = tmp_path / "relay.yml"
    path.write_text("remote_write:\n  - url: ${RELAY_URL}\n    remote_timeout: ${RELAY_TIMEOUT}\n")
    env = {
        **os.environ,
        "RELAY_URL": "https://user:hunter2-pass@mimir:notaport/push?token=hunter2-token",
        "RELAY_TIMEOUT": "hunter2-duration",
    }
    done = _cli("check-config", str(path), env=env)
    assert done.returncode == 1
    assert "hunter2" not in done.stdout + done.stderr
    assert "remote_write[0].url: " in done.stderr and "${RELAY_URL}" in done.stderr
    assert "remote_write[0].remote_timeout: " in done.stderr and "${RELAY_TIMEOUT}" in done.stderr


def test_check_config_reads_every_named_file_but_never_prints_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("hunter2-from-file\n")
    missing = tmp_path / "no-such-ca.pem"
    path = tmp_path / "relay.yml"
    path.write_text(
        "remote_write:\n"
        f"  - url: https://a/\n    authorization: {{credentials_file: {token}}}\n"
        f"  - url: https://b/\n    tls_config: {{ca_file: {missing}}}\n"
    )
    done = _cli("check-config", str(path))
    assert done.returncode == 1
    assert f"remote_write[1].tls_config.ca_file: unable to read {missing}" in done.stderr
    assert "remote_write[0]" not in done.stdout + done.stderr  # a readable file: not reported
    path.write_text(
        f"remote_write:\n  - url: https://a/\n    authorization: {{credentials_file: {token}}}\n"
    )
    done = _cli("check-config", str(path))
    assert done.returncode == 0 and "SUCCESS" in done.stdout
    assert "hunter2" not in done.stdout + done.stderr


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_check_config_refuses_what_serve_would_not_start_with(tmp_path: Path) -> None:
    """A config check that passes must mean the relay starts: an empty receiver secret (which
    would let an empty credential in) and a certificate beside another's key fail both."""
    empty = tmp_path / "token"
    empty.write_text("\n")
    path = tmp_path / "relay.yml"
    path.write_text(f"receiver:\n  auth: {{bearer_token_file: {empty}}}\n")
    for command in (["check-config", str(path)], ["serve", "--config", str(path)]):
        done = _cli(*command)
        assert done.returncode == 1, command
        assert f"receiver.auth.bearer_token_file: secret file {empty} is empty" in (
            done.stdout + done.stderr
        ), command
    cert, _ = _self_signed(tmp_path, "a")
    _, other_key = _self_signed(tmp_path, "b")
    path.write_text(f"receiver:\n  tls: {{cert_file: {cert}, key_file: {other_key}}}\n")
    done = _cli("check-config", str(path))
    assert done.returncode == 1 and "FAILED" in done.stderr and str(cert) in done.stderr
    served = _cli("serve", "--config", str(path))
    assert served.returncode == 1
    empty.write_text("s3cret\n")
    key = tmp_path / "a.key"
    path.write_text(
        f"receiver:\n  auth: {{bearer_token_file: {empty}}}\n"
        f"  tls: {{cert_file: {cert}, key_file: {key}}}\n"
    )
    done = _cli("check-config", str(path))
    assert done.returncode == 0 and "SUCCESS" in done.stdout
    assert "s3cret" not in done.stdout + done.stderr


def test_serve_refuses_a_destination_tls_file_it_cannot_read(tmp_path: Path) -> None:
    """As Prometheus refuses to load such a config: exit 1, one line naming the file."""
    missing = tmp_path / "no-such-ca.pem"
    path = tmp_path / "relay.yml"
    path.write_text(
        f"remote_write:\n  - name: backend\n    url: https://127.0.0.1:9/\n"
        f"    tls_config: {{ca_file: {missing}}}\n"
    )
    done = _cli("serve", "--config", str(path), "--web.listen-address", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert f"destination 'backend': tls_config.ca_file: unable to read {missing}" in done.stderr
    assert "Traceback" not in done.stderr


def _ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 at all (a container may have IPv6 off)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.slow  # real processes
def test_the_lifecycle_api_quit_and_a_reload_with_nothing_to_reload(tmp_path: Path) -> None:
    """``:PORT`` listens on every address (IPv6 too where the machine has it); ``/-/quit``
    shuts down as SIGTERM does, with the lifecycle API on, as in Prometheus (403 without it);
    a relay run on its embedded default config says a reload has nothing to reload, not that it
    reloaded; ``--shutdown-timeout`` takes a duration."""
    port = free_port()
    log = tmp_path / "relay.log"
    argv = [sys.executable, "-m", "gotk_relay", "serve", "--listen-address", f":{port}"]
    with log.open("w") as out:
        plain = subprocess.Popen([*argv, "--shutdown-timeout", "5s"], stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, plain)
        if _ipv6_loopback():
            assert _get(f"http://[::1]:{port}/-/ready")[0] == 200
        assert _post(base + "/-/quit") == (
            403,
            "Lifecycle API is not enabled (start with --web.enable-lifecycle).\n",
        )
        plain.send_signal(signal.SIGHUP)
        _wait_metric(base, "gotk_relay_config_last_reload_successful 0.0")
    finally:
        plain.send_signal(signal.SIGTERM)
        assert plain.wait(timeout=15) == 0
    assert "nothing to reload" in log.read_text()

    with log.open("w") as out:
        lifecycle = subprocess.Popen([*argv, "--web.enable-lifecycle"], stdout=out, stderr=out)
    try:
        _wait_ready(base, lifecycle)
        status, text = _post(base + "/-/reload")
        assert status == 500 and "nothing to reload" in text
        assert _get(base + "/-/quit")[0] == 405
        assert _post(base + "/-/quit") == (200, "Requesting termination... Goodbye!\n")
        assert lifecycle.wait(timeout=15) == 0
    finally:
        if lifecycle.poll() is None:
            lifecycle.kill()
    text = log.read_text()
    assert "see you next time!" in text
    assert 'level=warn component=cli msg="received a termination request via /-/quit' in text


def test_a_listen_port_over_65535_is_refused() -> None:
    done = _cli("serve", "--web.listen-address", ":99999")
    assert done.returncode == 2
    assert "port 99999 is over 65535" in done.stderr


def _post(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
