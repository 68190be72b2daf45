"""Where an edge agent's readings come from: field protocols (Modbus TCP) and simulators."""
