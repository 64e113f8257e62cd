"""Helpers shared by the test suites and by ``bench/`` (imported as ``tests.support.<module>``).

- ``strategies``: hypothesis strategies for the model (batches, series, odd requests);
- ``hand_proto``: protobuf written by hand, independent of the codecs under test;
- ``flux_traffic``: Flux traffic as kube-state-metrics and Prometheus send it;
- ``flux_oracle``: the Flux rewriter before its speed-up, the oracle the rewriter is compared with;
- ``loadgen`` (with ``snappy_holes``): the benchmark's workload generator and loader;
- ``harness``: the relay in process with scripted remote-write receivers (integration tests);
- ``datadog_intake``: a Datadog intake double that validates payloads with Datadog's models;
- ``otlp_receiver``: a scripted OTLP/HTTP receiver that decodes what it gets, as a collector;
- ``rig``: real Prometheus, vmagent, VictoriaMetrics and relay processes (e2e tests);
- ``fault_load`` and ``fault_scenarios``: the fault suite's loader, receiver and scenarios
  (``tests/faults`` asserts on them, ``bench/faults.py`` prints them).
"""
