"""Prediction on new faces: a trained run applied to photos, folders and videos through its store's
own preprocessing chain, and its export to ONNX."""
