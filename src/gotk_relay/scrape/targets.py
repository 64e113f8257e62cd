"""``scrape_configs`` → the targets to scrape, each with its URL, its labels and the offset of
its scrapes within the interval.

As in Prometheus: a target's labels are its group's ``labels`` with ``job`` (the job name unless
a label sets it) and ``instance`` (the address unless a label sets it); ``__scheme__``,
``__metrics_path__``, ``__scrape_interval__`` and ``__scrape_timeout__`` in ``labels`` override
the job's scheme, path, interval and timeout, ``__param_<name>`` adds a parameter the job's
``params`` do not set (theirs win, as in Prometheus 2.x); other labels starting with ``__`` are
dropped. A label with an empty value is no label (Prometheus' label builder drops it), so an
empty ``__scheme__`` or ``__param_x`` leaves the job's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlencode

from ..config import ScrapeConfig
from ..model import Labels

# What Go's escaping of a URL's path (encodePath) leaves as it is, beside letters, digits and
# -_.~ (which quote never escapes).
_PATH_SAFE: Final = "$&+,/:;=@"


@dataclass(frozen=True)
class Target:
    job: ScrapeConfig
    address: str  # host:port
    scheme: str
    path: str
    params: tuple[tuple[str, str], ...]
    labels: Labels  # job, instance and the static labels, sorted
    interval: float  # seconds
    timeout: float

    @property
    def key(self) -> tuple[str, Labels, str]:
        """A target's identity across reloads: its job, labels and URL (as Prometheus hashes
        it: two addresses with the same labels are two targets)."""
        return self.job.job_name, self.labels, self.url

    @property
    def url(self) -> str:
        """As Go's ``url.URL`` writes it: the path escaped (``?`` and ``%`` included, so
        ``metrics_path`` is always a path), the parameters encoded sorted by name."""
        query = f"?{urlencode(self.params)}" if self.params else ""
        return f"{self.scheme}://{self.address}{quote(self.path, safe=_PATH_SAFE)}{query}"

    @property
    def instance(self) -> str:
        return dict(self.labels).get("instance", self.address)

    def offset(self, interval: float) -> float:
        """Where in each interval this target is scraped (seconds from a multiple of it): a hash
        of the target, so that targets are spread over the interval, not scraped at once."""
        digest = hashlib.blake2b(repr((self.url, self.labels)).encode(), digest_size=8).digest()
        step = max(1, int(interval * 1e6))
        return (int.from_bytes(digest, "big") % step) / 1e6


def targets_of(jobs: list[ScrapeConfig]) -> dict[tuple[str, Labels, str], Target]:
    """Every target of every job, by identity (duplicates in a job collapse into one)."""
    found: dict[tuple[str, Labels, str], Target] = {}
    for job in jobs:
        for group in job.static_configs:
            for address in group.targets:
                target = _target(job, address, group.labels)
                found.setdefault(target.key, target)
    return found


def _target(job: ScrapeConfig, address: str, given: dict[str, str]) -> Target:
    static = {name: value for name, value in given.items() if value != ""}
    scheme = static.get("__scheme__", job.scheme)
    path = static.get("__metrics_path__", job.metrics_path)
    if not path.startswith("/"):  # as Go's url.URL writes it (config/scrape.py, metrics_path)
        path = "/" + path
    # Prometheus 2.x sets ``__param_<name>`` from the job's params over a static one, so the
    # job's values win; a static one adds a parameter the job does not set. Encoded sorted by
    # name (Go's url.Values), each name's values in order.
    by_name = {name: list(values) for name, values in job.params.items() if values}
    for name, value in static.items():
        if name.startswith("__param_"):
            by_name.setdefault(name.removeprefix("__param_"), [value])
    params = [(name, value) for name in sorted(by_name) for value in by_name[name]]
    labels = {"job": job.job_name, "instance": address}
    labels.update({k: v for k, v in static.items() if not k.startswith("__")})
    interval, timeout = job.timing(static)  # checked when the config was loaded
    return Target(
        job, address, scheme, path, tuple(params), tuple(sorted(labels.items())), interval, timeout
    )
