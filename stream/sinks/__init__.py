"""Adapters that write the stream's output to PostgreSQL."""
