"""The service: durable runs as Temporal workflows, their workers and clients, and the ways in (triggers).

Importing this package is cheap (no Temporal SDK): ``agentvm.cli`` checks :data:`COMMANDS` and only then imports
:mod:`agentvm.service.cli`. docs/service.md describes the whole service.
"""

COMMANDS = ("service", "worker", "submit", "status", "cancel")
