"""Exceptions with messages meant for users: each names the file, line or field and what to do."""


class ComSLError(Exception):
    """Base class; the CLI prints these as one line without a traceback."""


class ConfigError(ComSLError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(ComSLError):
    """Input data is malformed (TSV row, manifest, audio)."""


class CheckpointError(ComSLError):
    """A checkpoint is missing, incomplete or does not match the config."""
