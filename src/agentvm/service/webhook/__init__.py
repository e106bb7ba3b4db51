"""``agentvm webhook``: signed webhooks turned into runs (docs/triggers.md).

``routes`` reads and checks the routes file, ``auth`` verifies the three signature schemes, ``render`` is the
sandboxed Jinja environment of the prompt templates, ``app`` the ASGI application (starlette) that applies the checks
in order, and ``server`` serves it with uvicorn, alone or inside ``agentvm service``.
"""
