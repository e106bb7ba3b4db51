"""Local mocks of the model APIs the agent CLIs speak, on one HTTP server (see model_api.py).

model_api        the server: routing by path, recording, ``make_server``/``serve``, command line
script           the per-test script: keys, validation, the per-API view (``Plan``)
presets          ready-made scripts with the tool calls each real CLI executes
anthropic, openai_chat, openai_responses, gemini
                 each API's answers, tool calls and error envelopes
"""
