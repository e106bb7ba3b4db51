"""Teardown that survives signals: from the start of a run until its VM is deleted and its scratch removed,
SIGINT/SIGTERM/SIGHUP only *ask* the run to stop. The first one cancels the playbook; later ones are
acknowledged with a line saying what is still being done, and cannot skip the delete."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalGuard:
    def __init__(self, cancel: threading.Event, say: Callable[[str], None]) -> None:
        self.cancel = cancel
        self.say = say
        self.doing = "starting the run"
        self.count = 0

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            self.say(f"{name}: stopping the run; the VM will be deleted before agentvm exits")
        else:
            self.say(f"{name} again: still {self.doing}; agentvm exits as soon as that is done")
        self.cancel.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # a worker thread (the service): the caller cancels through the event
            return
        previous = {sig: signal.signal(sig, self._handler) for sig in SIGNALS}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
