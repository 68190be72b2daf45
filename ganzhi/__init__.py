"""ganzhi: the perception network of a market-supervision platform.

This package holds what every part shares: wire contracts, settings, logging and
metrics, the database schema, and the ``ganzhi`` command. The services live in the
top-level packages ``ingest``, ``stream``, ``alerts``, ``api``, ``edge`` and ``vision``.
"""

__version__ = "0.1.0"
