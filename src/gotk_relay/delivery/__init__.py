"""Queues and retry policy: what happens to a batch between admission and a backend's 2xx."""
