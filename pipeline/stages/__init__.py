"""Pure per-image functions on numpy arrays: no Dask, no Zarr.

Coordinate frame used throughout: points are (x, y) in pixels with the origin at the top-left
*corner* of the top-left pixel, so the centre of pixel (row i, column j) is (j + 0.5, i + 0.5).
"""
