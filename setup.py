"""The one compiled part: an optional accelerator for scanning requests (``wire/_survey.c``).

``optional=True``: where no C compiler or Python headers are at hand, the install still
succeeds and the relay takes the pure protobuf path (``wire.scan.survey`` returns None).
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
            "gotk_relay.destinations._rows",
            sources=["src/gotk_relay/destinations/_rows.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
