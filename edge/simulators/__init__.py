"""Deterministic device simulators for the demo and the tests."""
