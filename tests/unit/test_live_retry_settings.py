"""Which destination changes a reload applies to the running sender (its queue kept)."""

from __future__ import annotations

import pytest
import yaml

from gotk_relay.config import load_text
from gotk_relay.relay import retry_settings, same_but_retry


def _destination(**queue: object) -> object:
    config = {"remote_write": [{"name": "d", "url": "http://h:9/w", "queue_config": queue}]}
    return next(cfg for _, _, cfg in load_text(yaml.safe_dump(config)).destinations())


@pytest.mark.parametrize(
    ("change", "kept"),
    [
        pytest.param({}, True, id="nothing"),
        pytest.param({"sample_age_limit": "5m"}, True, id="sample_age_limit"),
        pytest.param({"min_backoff": "1s", "max_backoff": "10s"}, True, id="backoff"),
        pytest.param({"capacity": 5}, False, id="capacity"),
        pytest.param({"min_shards": 2}, False, id="shards"),
        pytest.param({"sample_age_limit": "5m", "capacity": 5}, False, id="live-and-not"),
    ],
)
def test_only_retry_settings_are_applied_live(change: dict[str, object], kept: bool) -> None:
    old, new = _destination(), _destination(**change)
    assert same_but_retry(old, new) is kept  # type: ignore[arg-type]


def test_the_running_sender_gets_the_new_limit() -> None:
    settings = retry_settings(_destination(sample_age_limit="5m"))  # type: ignore[arg-type]
    assert settings.sample_age_limit == 300.0
