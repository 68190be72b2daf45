"""Vision: ONNX detectors for kitchen violations, used by the camera agent.

``runtime`` runs a shipped model (``models/<name>/`` with its ``card.yaml``) on ONNX
Runtime; ``card`` reads the model card (classes, which class means which violation of
the contracts' allow-list, thresholds, figures); ``train`` is the training pipeline
(``python -m vision.train``) that made the shipped models. See docs/vision.md.
"""
