"""Errors users can act on: each renders as one line naming what is wrong and what was expected."""

from __future__ import annotations


class OrchestrError(Exception):
    """Base of every error orchestr reports to a user; str() is the one line the CLI prints."""


class SpecError(OrchestrError):
    """A spec file is malformed: names the file, the line, the field path and what was expected."""

    def __init__(self, file: str, line: int | None, path: str, message: str):
        self.file, self.line, self.path, self.message = file, line, path, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


class RuntimeNotFound(OrchestrError):
    """No plugin provides the runtime asked for."""


class RuntimeUnavailable(OrchestrError):
    """The runtime exists but cannot be used here (engine not running, not root, ...)."""


class NotFound(OrchestrError):
    """A container or image that does not exist."""


class Conflict(OrchestrError):
    """The operation clashes with current state (name in use, image in use, port taken, ...)."""


class RuntimeFailure(OrchestrError):
    """A runtime operation failed; the message says which container and why."""
