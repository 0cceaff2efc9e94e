"""Dataset -> guidance tensors -> Zarr store.

The pipeline computes face boxes, 68 landmarks, aligned faces and guidance tensors (landmark
heatmaps, saliency, landmark masks) once per dataset and writes them to a versioned Zarr store
(schema in :mod:`pipeline.store`). :func:`pipeline.compute.run.preprocess` is the entry point.
"""

__version__ = "0.1.0"
