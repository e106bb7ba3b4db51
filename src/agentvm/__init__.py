"""agentvm: run an AI agent CLI on a prompt inside a disposable Multipass VM."""

__version__ = "0.1.0"
