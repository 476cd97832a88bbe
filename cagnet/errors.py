"""Exceptions for expected failures (bad input files, bad configuration).

Their message is one line that names the offending file, key or value; the CLI prints it
without a traceback.
"""


class CagnetError(Exception):
    """Base class of the errors the CLI reports as one line."""


class DatasetError(CagnetError, ValueError):
    """A dataset file is missing, unreadable or inconsistent."""


class EmbeddingError(CagnetError, ValueError):
    """A word-embedding file or table is malformed or refused."""


class ConfigError(CagnetError, ValueError):
    """A configuration key or value is unknown or invalid."""


class CheckpointError(CagnetError, ValueError):
    """A checkpoint does not match the model or cannot be read safely."""


class MetricError(CagnetError, ValueError):
    """Label maps, a confusion matrix or a class split that cannot be scored."""


class RunFolderError(CagnetError, ValueError):
    """A run folder is in use by another process, holds a run that would be replaced, or has
    a log that cannot be read."""
