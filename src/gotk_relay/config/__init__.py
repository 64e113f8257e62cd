"""The relay's configuration: schema, defaults, ``${ENV}`` expansion, ``*_file`` secrets, and
errors that name the file, the line and the key.

A ``remote_write:`` entry takes the same keys as in ``prometheus.yml`` so a user can paste one.
Loading never exits the process: it returns a ``Config`` or raises ``ConfigError`` whose message
is ready to print (``check-config`` and ``/-/reload`` both show it as is).

Modules, in the order they build on each other: ``base`` (``ConfigError``, strict models),
``client`` (HTTP auth, TLS, URLs, headers, secret files), ``destinations`` (``remote_write:``,
``datadog:``, ``otlp:``), ``receiver`` (``receiver:``), ``scrape`` (``scrape_configs:``),
``document`` (``Config``, the whole file), ``env`` (``${VAR}`` expansion and redaction),
``loading`` (YAML to ``Config``, errors).
"""

from __future__ import annotations

from .base import ConfigError
from .client import (
    URL,
    Authorization,
    BasicAuth,
    FileStamp,
    Headers,
    TLSConfig,
    check_headers,
    check_url,
    file_stamp,
    read_secret_file,
    sanitize_url,
)
from .destinations import (
    DATADOG_SITES,
    METADATA_MAX_SAMPLES_PER_SEND,
    METADATA_SEND_INTERVAL,
    DatadogConfig,
    MetadataConfig,
    OTLPConfig,
    QueueConfig,
    QueuedDestinationConfig,
    RemoteWriteConfig,
    TenantConfig,
    destination_name,
)
from .document import (
    Config,
    FederateConfig,
    QueuesConfig,
    SpoolConfig,
    destination_names,
)
from .env import Expanded, expand_env
from .loading import default_config_text, load, load_file, load_text, referenced_files
from .receiver import IngressAuth, IngressBasicAuth, IngressTLS, ReceiverConfig
from .scrape import ScrapeConfig, StaticConfig

__all__ = [
    "DATADOG_SITES",
    "METADATA_MAX_SAMPLES_PER_SEND",
    "METADATA_SEND_INTERVAL",
    "URL",
    "Authorization",
    "BasicAuth",
    "Config",
    "ConfigError",
    "DatadogConfig",
    "Expanded",
    "FederateConfig",
    "FileStamp",
    "Headers",
    "IngressAuth",
    "IngressBasicAuth",
    "IngressTLS",
    "MetadataConfig",
    "OTLPConfig",
    "QueueConfig",
    "QueuedDestinationConfig",
    "QueuesConfig",
    "ReceiverConfig",
    "RemoteWriteConfig",
    "ScrapeConfig",
    "SpoolConfig",
    "StaticConfig",
    "TLSConfig",
    "TenantConfig",
    "check_headers",
    "check_url",
    "default_config_text",
    "destination_name",
    "destination_names",
    "expand_env",
    "file_stamp",
    "load",
    "load_file",
    "load_text",
    "read_secret_file",
    "referenced_files",
    "sanitize_url",
]
