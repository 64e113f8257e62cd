"""The test suites; the helpers they share are in tests.support."""
