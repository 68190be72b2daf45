"""Ingest: validated MQTT messages into Kafka, the rest into the dead-letter topic."""
