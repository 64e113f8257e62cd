"""GET /federate serves every family with its metadata, as a scraper needs it.

OpenMetrics scrapers (the Datadog Agent's checks among them) skip families served ``untyped``,
and the text format wants a histogram's or summary's series under one ``# TYPE`` line named for
the family. Remote write carries metadata apart from the series: 1.0 as family entries (often in
requests of their own, every ``metadata_config.send_interval``), 2.0 on each series. Whatever the
way, /federate must serve each family under its name with its TYPE and HELP, and what it serves
must pass ``promtool check metrics`` (the Prometheus linter).
"""

from __future__ import annotations

import subprocess
from typing import Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gotk_relay.model import Batch, FamilyMetadata, Metadata, MetricType, Sample, Series
from tests.support.harness import RelayClient, relay_client, rw_body
from tests.support.rig import require_binary

# The samples are dated 2023: no lookback leaves them out (test_federate_lookback.py).
CONFIG: Final = {
    "flux": {"mode": "off"},
    "federate": {"match": ['{__name__=~"gotk_.*"}'], "lookback_delta": "100y"},
}
TS: Final = 1_700_000_000_000
RESOURCE: Final = (
    ("__name__", "gotk_resource_info"),
    ("customresource_kind", "Kustomization"),
    ("exported_namespace", "apps"),
    ("name", "podinfo"),
    ("ready", "True"),
)
DURATION: Final = "gotk_reconcile_duration_seconds"
LAG: Final = "gotk_lag_seconds"
EVENTS: Final = "gotk_events_total"

FAMILIES: Final = {
    "gotk_resource_info": FamilyMetadata(
        "gotk_resource_info", MetricType.GAUGE, "The current state of a Flux resource."
    ),
    DURATION: FamilyMetadata(
        DURATION, MetricType.HISTOGRAM, "The duration in seconds of a reconciliation."
    ),
    LAG: FamilyMetadata(LAG, MetricType.SUMMARY, "Lag quantiles."),
    EVENTS: FamilyMetadata(EVENTS, MetricType.COUNTER, "Events seen."),
}


def _series() -> tuple[Series, ...]:
    kind = (("kind", "Kustomization"),)
    items = [Series(RESOURCE, (Sample(1.0, TS),))]
    for le, count in (("0.5", 1.0), ("1", 3.0), ("+Inf", 4.0)):
        items.append(
            Series((("__name__", f"{DURATION}_bucket"), *kind, ("le", le)), (Sample(count, TS),))
        )
    items.append(Series((("__name__", f"{DURATION}_count"), *kind), (Sample(4.0, TS),)))
    items.append(Series((("__name__", f"{DURATION}_sum"), *kind), (Sample(2.5, TS),)))
    items.append(Series((("__name__", LAG), ("quantile", "0.5")), (Sample(0.1, TS),)))
    items.append(Series((("__name__", f"{LAG}_count"),), (Sample(7.0, TS),)))
    items.append(Series((("__name__", f"{LAG}_sum"),), (Sample(0.9, TS),)))
    items.append(Series((("__name__", EVENTS),), (Sample(12.0, TS),)))
    return tuple(items)


def _family_of(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in (DURATION, LAG):
            return name[: -len(suffix)]
    return name


def _with_series_metadata(series: tuple[Series, ...]) -> tuple[Series, ...]:
    """As a 2.0 sender writes them: each series carries its family's metadata."""
    out = []
    for s in series:
        family = FAMILIES[_family_of(s.name)]
        out.append(s._replace(metadata=Metadata(family.type, family.help, family.unit)))
    return tuple(out)


async def _post(client: RelayClient, batch: Batch, v2: bool = False) -> None:
    body, headers = rw_body(batch, v2=v2)
    response = await client.post("/api/v1/write", data=body, headers=headers)
    assert response.status == 204, await response.text()


WAYS: Final = ["v1-beside-the-series", "v1-in-a-request-of-their-own", "v1-metadata-after", "v2"]


async def _federate(way: str, config: dict[str, object]) -> str:
    series = _series()
    async with relay_client(config) as (client, _):
        if way == "v1-beside-the-series":
            await _post(client, Batch(series, tuple(FAMILIES.values())))
        elif way == "v1-in-a-request-of-their-own":
            await _post(client, Batch((), tuple(FAMILIES.values())))
            await _post(client, Batch(series))
        elif way == "v1-metadata-after":
            await _post(client, Batch(series))
            await _post(client, Batch((), tuple(FAMILIES.values())))
        else:
            await _post(client, Batch(_with_series_metadata(series)), v2=True)
        response = await client.get("/federate")
        assert response.status == 200
        return await response.text()


@pytest.mark.parametrize(
    "picked", ["by-name", "every-series"], ids=["picked-by-name", "every-series-picked"]
)
@pytest.mark.parametrize("flux", ["off", "legacy"], ids=["flux-off", "flux-legacy"])
@pytest.mark.parametrize("way", WAYS)
async def test_every_family_is_served_under_its_name_with_its_type_and_help(
    way: str, flux: str, picked: str
) -> None:
    """Also with the Flux rules on, whose steady shortcut (a request whose Flux objects are all
    known, or that has none: a request of metadata alone) once left the request's own
    metadata out of what the store was given."""
    config: dict[str, object] = {**CONFIG, "flux": {"mode": flux}}
    if picked == "every-series":  # a selector that can match any name
        config["federate"] = {
            "match": ['{__name__=~"gotk_.*"}', '{job="none"}'],
            "lookback_delta": "100y",
        }
    text = await _federate(way, config)
    found = {
        family.name: (family.type, family.documentation, sorted(s.name for s in family.samples))
        for family in text_string_to_metric_families(text)
    }
    assert found == {
        "gotk_resource_info": (
            "gauge",
            FAMILIES["gotk_resource_info"].help,
            ["gotk_resource_info"],
        ),
        DURATION: (
            "histogram",
            FAMILIES[DURATION].help,
            [f"{DURATION}_bucket"] * 3 + [f"{DURATION}_count", f"{DURATION}_sum"],
        ),
        LAG: ("summary", FAMILIES[LAG].help, [LAG, f"{LAG}_count", f"{LAG}_sum"]),
        "gotk_events": ("counter", FAMILIES[EVENTS].help, [EVENTS]),
    }, text


@pytest.mark.parametrize("way", WAYS)
async def test_promtool_check_metrics_passes_on_federate(way: str) -> None:
    text = await _federate(way, dict(CONFIG))
    done = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr + "\n" + text
