"""The embedded stack: real brokers and database on this machine, and the demo supervisor."""
