"""Errors users can act on: each renders as one line naming what is wrong and what was expected.

    OrchestrError
    ├── SpecError               a spec file is wrong: file, line, field, what was expected
    ├── UnknownRuntime          no installed plugin offers the runtime asked for
    ├── Interrupted             a signal ended the wait for a one-off container (exit status 128 + signal)
    └── RuntimeFailure          a runtime could not do what was asked (carries runtime and container)
        ├── NotFound            no such container or image
        ├── Conflict            clashes with the current state: name or port in use, not running, ...
        ├── RuntimeUnavailable  the engine is down or unreachable (retryable)
        ├── Timeout             an operation ran past its deadline (retryable)
        └── TerminalFailure     retrying cannot help: the spec or image asks what this runtime cannot do

`retryable` tells a caller (the controller) whether the same call may succeed later with nothing changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class OrchestrError(Exception):
    """Base of every error orchestr reports to a user; str() is the one line the CLI prints."""


class SpecError(OrchestrError):
    """A spec file is malformed: names the file, the line, the field path and what was expected."""

    def __init__(self, file: str, line: int | None, path: str, message: str):
        self.file, self.line, self.path, self.message = file, line, path, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


class UnknownRuntime(OrchestrError):
    """No plugin provides the runtime asked for."""


class RuntimeFailure(OrchestrError):
    """A runtime operation failed; the message says which container and why.

    runtime and container (the runtime's id, or orchestr's name when there is no id yet) say where; a runtime
    may leave them out, and orchestr fills them in on the way up (see context)."""

    retryable = True  # unknown causes are retried, with back-off; the subclasses that cannot be say so

    def __init__(self, message: str = "", *, runtime: str | None = None, container: str | None = None):
        super().__init__(message)
        self.runtime, self.container = runtime, container


class NotFound(RuntimeFailure):
    """A container or image that does not exist."""

    retryable = False


class Conflict(RuntimeFailure):
    """The operation clashes with current state (name in use, image in use, port taken, not running, ...)."""

    retryable = False


class RuntimeUnavailable(RuntimeFailure):
    """The runtime exists but cannot be reached or used right now (engine not running, socket refused, ...)."""


class Timeout(RuntimeFailure):
    """An operation did not finish within its deadline; whatever it started has been ended."""


class TerminalFailure(RuntimeFailure):
    """The request can never succeed as it stands (an image without a command, a feature the runtime lacks)."""

    retryable = False


def context(error: RuntimeFailure, *, runtime: str | None = None, container: str | None = None) -> RuntimeFailure:
    """Fills in where error happened when the runtime did not say; returns error."""
    error.runtime = error.runtime or runtime
    error.container = error.container or container
    return error


@contextlib.contextmanager
def located(runtime: str, container: str | None = None) -> Iterator[None]:
    """Fills in runtime and container on every RuntimeFailure raised inside that did not say where."""
    try:
        yield
    except RuntimeFailure as error:
        context(error, runtime=runtime, container=container)
        raise


class Interrupted(OrchestrError):
    """A signal ended the wait for a one-off container whose signals were not to be passed on to it; the exit
    status to give is 128 + signal, as for a process that signal ended."""

    def __init__(self, signal: int, message: str):
        self.signal = signal
        super().__init__(message)

    @classmethod
    def one_off(cls, signal: int, name: str, removed: bool) -> Interrupted:
        """The signal left the one-off container name running, or stopped and removed it."""
        import signal as signals

        what = "was stopped and removed" if removed else "goes on running"
        return cls(signal, f"{signals.Signals(signal).name}: container {name} {what}")
