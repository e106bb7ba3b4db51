"""The service: durable runs as Temporal workflows, their workers and clients, and the ways in (triggers)."""
