"""``scrape_configs`` → the targets to scrape, each with its URL, its labels and the offset of
its scrapes within the interval.

As in Prometheus: a target's labels are its group's ``labels`` with ``job`` (the job name unless
a label sets it) and ``instance`` (the address unless a label sets it); ``__scheme__`` and
``__metrics_path__`` in ``labels`` override the job's scheme and path, ``__param_<name>`` adds a
parameter the job's ``params`` do not set (theirs win, as in Prometheus 2.x); other labels
starting with ``__`` are dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlencode

from ..config import ScrapeConfig
from ..model import Labels


@dataclass(frozen=True)
class Target:
    job: ScrapeConfig
    address: str  # host:port
    scheme: str
    path: str
    params: tuple[tuple[str, str], ...]
    labels: Labels  # job, instance and the static labels, sorted

    @property
    def key(self) -> tuple[str, Labels, str]:
        """A target's identity across reloads: its job, labels and URL (as Prometheus hashes
        it: two addresses with the same labels are two targets)."""
        return self.job.job_name, self.labels, self.url

    @property
    def url(self) -> str:
        query = f"?{urlencode(self.params)}" if self.params else ""
        return f"{self.scheme}://{self.address}{self.path}{query}"

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


def _target(job: ScrapeConfig, address: str, static: dict[str, str]) -> Target:
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
    labels.update({k: v for k, v in static.items() if not k.startswith("__") and v != ""})
    return Target(job, address, scheme, path, tuple(params), tuple(sorted(labels.items())))
