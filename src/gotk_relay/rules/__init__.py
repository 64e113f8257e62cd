"""Series rewriting rules: Prometheus relabeling and the Flux-specific rewrites."""
