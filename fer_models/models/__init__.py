"""The model families, one file each, and their registry (:mod:`.registry`).

Importing this package imports every family, and each registers itself with
:func:`~fer_models.models.registry.register_model` (as timm's ``models/__init__.py`` does), so the
registry is complete as soon as anything from it is imported.
"""

from fer_models.models import backbone, cnn, feratt, keypoint, local_nonlocal, pal, stn  # noqa: F401 - registers on import
