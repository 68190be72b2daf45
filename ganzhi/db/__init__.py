"""The PostgreSQL/TimescaleDB schema (ordered SQL migrations) and how to apply it."""
