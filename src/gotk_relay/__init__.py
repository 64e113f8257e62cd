"""gotk-relay: a Prometheus remote-write relay that gives Flux users their metrics back."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gotk-relay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
