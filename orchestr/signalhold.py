"""A one-off run's hold on the signals that would end orchestr, while its container runs in the foreground: the
runtimes that run one without an event loop share it."""

from __future__ import annotations

import signal as signals
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import Interrupted, OrchestrError

if TYPE_CHECKING:  # loaded for a timer only: a run that no signal reaches spares its import
    import threading


class SignalHold:
    """The hold on SIGTERM, SIGHUP and SIGINT while a one-off container runs in the foreground (Client.run says
    what "forward" and "leave" do); a signal that arrives before the container has started waits for it."""

    SIGNALS = (signals.SIGTERM, signals.SIGHUP, signals.SIGINT)

    def __init__(self, mode: str | None) -> None:
        if mode not in (None, "forward", "leave"):
            raise ValueError(f"on_signal must be None, 'forward' or 'leave', not {mode!r}")
        self.mode = mode
        self.previous: dict[int, object] = {}
        self.pending: list[int] = []
        self.target: Callable[[int], None] | None = None
        self.ended_at_once: int | None = None  # the signal the container was killed at once for
        self.timer: threading.Timer | None = None
        self.interrupted = False
        self.closed = False

    def __enter__(self) -> SignalHold:
        if self.mode is not None:
            for sig in self.SIGNALS:
                if signals.getsignal(sig) is signals.SIG_IGN:  # nohup's or a background job's: stays so
                    continue
                try:
                    self.previous[sig] = signals.signal(sig, self._caught)
                except ValueError:  # not the main thread, where alone handlers can be set: signals stay as they are
                    break
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        for sig, handler in self.previous.items():
            signals.signal(sig, signals.SIG_DFL if handler is None else handler)

    def _caught(self, sig: int, frame: object) -> None:
        if self.closed:
            return
        if self.target is None:
            self.pending.append(sig)
        else:
            self._deliver(sig)

    def _deliver(self, sig: int) -> None:
        if self.mode == "forward" and self.target is not None:
            try:
                self.target(sig)
            except (OSError, OrchestrError):  # gone meanwhile: nothing left to pass it to
                pass
        elif self.mode == "leave" and not self.interrupted:  # once: a second signal must not cut short the first's
            self.interrupted = True
            raise Interrupted(sig, signals.Signals(sig).name)

    def attach(self, target: Callable[[int], None]) -> None:
        """Signals go to target from now on, those that came before first."""
        self.target = target
        pending, self.pending = self.pending, []
        for sig in pending:
            self._deliver(sig)

    def after(self, seconds: float, then: Callable[[], object]) -> None:
        """Calls then in seconds, unless closed before; only the first such call counts."""
        if self.timer is None:
            import threading

            self.timer = threading.Timer(seconds, then)
            self.timer.daemon = True
            self.timer.start()

    def close(self) -> None:
        """Signals from now on are dropped (the run is ending), and a pending kill with them."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
