"""Root of the test suite (tests/ and simulator/tests/): registers the Multipass double's fixtures."""

pytest_plugins = ["simulator.pytest_plugin"]
