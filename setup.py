"""The compiled parts: optional accelerators for scanning requests (``wire/_survey.c``) and for
converting remote write 1.0 bytes to 2.0 (``wire/_v2.c``).

``optional=True``: where no C compiler or Python headers are at hand, the install still
succeeds and the relay takes the pure protobuf path (``wire.scan.survey`` returns None,
``wire.rw2.from_v1`` decodes and encodes in Python).
Everything else about the package is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gotk_relay.wire._survey",
            sources=["src/gotk_relay/wire/_survey.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "gotk_relay.wire._v2",
            sources=["src/gotk_relay/wire/_v2.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
