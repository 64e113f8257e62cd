"""What Datadog's series intake takes: its metric type numbers, its length and age limits, and
the reasons a sample is not sent (counted in ``skipped``).
"""

from __future__ import annotations

from typing import Final

# Datadog's MetricIntakeType numbers.
TYPE_UNSPECIFIED: Final = 0
TYPE_COUNT: Final = 1
TYPE_RATE: Final = 2
TYPE_GAUGE: Final = 3

MAX_NAME_LENGTH: Final = 200
MAX_TAG_LENGTH: Final = 200
MAX_AGE_MS: Final = 3600 * 1000  # the intake refuses points older than an hour
MAX_AHEAD_MS: Final = 600 * 1000  # ... or more than ten minutes in the future

# Reasons a sample is not sent, as counted in ``Mapped.skipped`` (and the client's ``skipped``).
STALE: Final = "stale"
NOT_FINITE: Final = "not_finite"
TOO_OLD: Final = "too_old"
TOO_NEW: Final = "too_new"
NATIVE_HISTOGRAM: Final = "native_histogram"
CREATED: Final = "created"
INVALID_NAME: Final = "invalid_name"
COUNTER_FIRST: Final = "counter_first"  # first sample of a counter: no delta yet
OUT_OF_ORDER: Final = "out_of_order"  # counter sample not newer than the last one seen
INF_BUCKET: Final = "inf_bucket"  # flux_integration: the check does not send le="+Inf" buckets
