"""Vision: ONNX detectors for kitchen violations (the camera agent's model runtime).

Not built yet: the detector runtime, training pipeline and shipped models are their own
capability. The wire contract they publish (``Detection``, ``Evidence``) already exists
in :mod:`ganzhi.contracts` and ingest accepts it.
"""
