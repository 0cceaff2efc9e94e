"""The project's error classes.

Every error the project raises on purpose derives from :class:`FerStoreError`, and also from the
builtin exception a caller would expect (``ValueError``, ``FileNotFoundError``, ...), so that both
``except FerStoreError`` and ``except ValueError`` work. Messages say what to change.
"""


class FerStoreError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(FerStoreError, ValueError):
    """A configuration value is invalid; raised before any work starts."""


class DatasetError(FerStoreError, ValueError):
    """A dataset root or one of its files is missing or malformed."""


class ModelFileError(FerStoreError, FileNotFoundError):
    """A dlib model file cannot be found or read."""


class StoreMismatchError(FerStoreError, ValueError):
    """An existing store was built from other inputs (config or manifest) than this run's."""


class StoreError(FerStoreError, ValueError):
    """A store is missing, incomplete or does not follow the schema."""


class StoreNetworkError(StoreError, ConnectionError):
    """A remote store's server did not answer (a timeout, a dropped connection, 5xx after every
    retry): the network's fault or the server's, not damage to the store."""


class UnreadableImageError(FerStoreError, ValueError):
    """An input file is not an image that can be decoded (status 4 ``unreadable``)."""


class DiskFullError(FerStoreError, OSError):
    """The disk holding a store ran out of space (or quota) while a run wrote it; the run stops
    and everything written before is kept."""


class StoreRefusedError(StoreError):
    """A store's metadata fails the checks made before zarr reads anything; ``problems`` lists
    each objection, naming the array and the field."""

    def __init__(self, location: str, problems: list[str]):
        self.location, self.problems = location, tuple(problems)
        shown = "\n  - ".join(self.problems[:12]) + (
            f"\n  ... and {len(self.problems) - 12} more" if len(self.problems) > 12 else ""
        )
        super().__init__(f"refusing the store at {location}: its metadata is damaged or hostile:\n  - {shown}")

    def __reduce__(self) -> tuple[type["StoreRefusedError"], tuple[str, list[str]]]:
        return type(self), (self.location, list(self.problems))


class GuidanceFailedError(FerStoreError, RuntimeError):
    """A guidance type being added failed on more than the allowed share of a store's samples; the
    growth was undone and the store is as it was before the run."""


class TrainingDivergedError(FerStoreError, FloatingPointError):
    """A training run's loss or weights stopped being finite; the last good checkpoint is kept."""


class CheckpointSaveError(FerStoreError, OSError):
    """A checkpoint could not be written; the previous one is kept."""


class ViewerError(FerStoreError, RuntimeError):
    """The store viewer cannot run: FiftyOne or its database is missing or does not start."""


class EnvironmentFaultError(FerStoreError, RuntimeError):
    """A stage cannot run in this environment (a module or attribute missing, a model that does
    not run, the same failure on most samples of a shard): never recorded as the samples' fault;
    the run stops, keeps what it finished and leaves the store incomplete."""
