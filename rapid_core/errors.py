"""The error hierarchy of the core; the service maps these to HTTP errors in one place."""


class RapidError(Exception):
    """Base class of every error the core raises on purpose."""


class ConfigError(RapidError):
    """A configuration value is invalid. ``field`` names it (dotted path) when known."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class ModelError(RapidError):
    """A model could not be found or loaded."""


class GraderError(RapidError):
    """A grader spec is invalid or a grader cannot run. ``field`` names the spec field (dotted path
    inside the grader, such as ``graders.a.reference``) when known."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class DatasetError(RapidError):
    """A dataset or task could not be loaded, or a record lacks a needed field."""


class Cancelled(RapidError):
    """Training stopped because a callback asked it to; ``request`` is "cancel" or "pause"."""

    def __init__(self, request: str):
        super().__init__(f"training stopped: {request} requested")
        self.request = request
