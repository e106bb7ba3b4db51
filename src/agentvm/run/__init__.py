"""One run: validation, agent profiles, the playbook, progress, extraction of what came back, the record."""
