"""Destinations: each turns a Batch into its backend's protocol and reads the backend's answer."""
