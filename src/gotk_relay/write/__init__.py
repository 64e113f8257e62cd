"""The write path, one module per stage in the order a request travels.

1. ``edge``: credentials, in-flight cap, headers, the body read within its limits (4xx here).
2. ``routing`` → ``views`` → ``scan``: rules, shards and tenants on a request's bytes; what
   each destination takes from a request (planned once per configuration); and the scan of a
   remote write 1.0 request on its bytes: strict checks, global relabeling, the series the
   Flux rules read, each destination's share.
3. ``admission``: the request's entries queued for every destination or none (``Relay.admit``
   runs the Flux rules and holds the queues).

Then ``delivery/`` (queues, senders) and ``destinations/`` (one client per protocol). The HTTP
handler that calls these in order is ``server._write``; docs/architecture.md has the picture.
"""
