"""The compiled parts: optional accelerators for scanning requests (``wire/_survey.c``), for
routing them (``_route.c``: relabel rules, shards, tenants on the bytes), for converting
remote write 1.0 bytes to 2.0 (``wire/_v2.c``) and for the Datadog and OTLP destinations'
conversion (``destinations/_rows.c``), for the federate store's label order
(``destinations/_federate.c``), maps keyed by identity (``_identity.c``), the Flux rules'
steady shortcut (``rules/flux/_steady.c``), and snappy
compression through libsnappy (``wire/_snappy.c``, which loads the library at import).

``optional=True``: where no C compiler or Python headers are at hand, the install still
succeeds and the relay takes the pure Python paths (``wire.rw1_bytes.survey`` returns None,
``write.routing.Router`` decodes, relabels and encodes, ``wire.rw2.from_v1`` decodes and encodes,
``destinations.rows`` walks in Python).
Everything else about the package is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            name,
            sources=[source],
            extra_compile_args=["-O2"],
            libraries=libraries,
            # The seeded hash the memos and indexes share (in the sdist, rebuilt when changed).
            depends=["src/gotk_relay/_seeded_hash.h"],
            optional=True,
        )
        for name, source, libraries in (
            ("gotk_relay.wire._survey", "src/gotk_relay/wire/_survey.c", []),
            ("gotk_relay.write._route", "src/gotk_relay/write/_route.c", []),
            ("gotk_relay.wire._v2", "src/gotk_relay/wire/_v2.c", []),
            ("gotk_relay.destinations._rows", "src/gotk_relay/destinations/_rows.c", []),
            ("gotk_relay.destinations._federate", "src/gotk_relay/destinations/_federate.c", []),
            ("gotk_relay._identity", "src/gotk_relay/_identity.c", []),
            ("gotk_relay.rules.flux._steady", "src/gotk_relay/rules/flux/_steady.c", []),
            # dlopen()s libsnappy.so.1 at import: no snappy headers needed to build it
            ("gotk_relay.wire._snappy", "src/gotk_relay/wire/_snappy.c", ["dl"]),
        )
    ]
)
