"""The relay's exception tree; transport errors become SendError in exactly one place.

Exception
├── ConfigError            (config/base)   a configuration that cannot be used
├── DecodeError(ValueError) (wire/errors)  a malformed request body → 400
│   └── TooLargeError                      over a size limit → 413
└── SendError                              a request to a destination failed before any
                                           HTTP status (connect, TLS, timeout, reset);
                                           always retried
"""

from __future__ import annotations


class SendError(Exception):
    """The destination could not be reached or did not answer in time."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
