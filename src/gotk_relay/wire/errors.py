"""Decode errors. Each carries a one-line reason that is safe to send back in a 400/413 body."""


class DecodeError(ValueError):
    """The request body is malformed: answered with 400."""


class TooLargeError(DecodeError):
    """The body or its declared decompressed size is over a limit: answered with 413."""
