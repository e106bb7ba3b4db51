"""Local mocks of the model APIs the agent CLIs speak (see model_api.py)."""
