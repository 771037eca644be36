"""Test-suite wiring: Kafka/Redis/isolation fixtures live in tests/fixtures/cluster.py (see its docstring)."""

pytest_plugins = ["tests.fixtures.cluster"]
