"""The simulator: a double of the Multipass 1.16.3 CLI whose instances are real booted Debian systems, and local
mocks of the model APIs the agent CLIs speak. Used by the test suite, ``make demo``, ``make bench`` and CI.

Nothing here is imported by agentvm itself: the product reaches the double only as an executable
(``MULTIPASS_BIN=simulator/bin/multipass``), exactly as it reaches real Multipass.
"""

from __future__ import annotations

from pathlib import Path

SIMULATOR = Path(__file__).resolve().parent
REPO = SIMULATOR.parent
DOUBLE_BIN = SIMULATOR / "bin" / "multipass"
DOUBLE_ADMIN = SIMULATOR / "bin" / "multipass-double"
