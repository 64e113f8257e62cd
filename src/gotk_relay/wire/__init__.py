"""Wire formats: snappy framing limits, remote write 1.0/2.0 protobuf, Prometheus text format."""
