"""The one switch for the compiled accelerators (``setup.py`` builds them, all optional).

Each is loaded here, or not: a module built without a C compiler is missing, and
``GOTK_RELAY_NO_EXTENSIONS`` (like aiohttp's ``AIOHTTP_NO_EXTENSIONS``) turns them all off, so
every module takes its pure-Python twin, which the tests run against the compiled one.
"""

from __future__ import annotations

import importlib
import os
from typing import Any


def load(module: str) -> Any:
    """The compiled module ``module`` (e.g. ``"gotk_relay.write._route"``), or None without it."""
    if os.environ.get("GOTK_RELAY_NO_EXTENSIONS"):
        return None
    try:
        return importlib.import_module(module)
    except ImportError:  # installed without a C compiler: the pure-Python twin does it all
        return None
