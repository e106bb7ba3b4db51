"""Service settings, the dev server's command line, ``agentvm submit``'s request building, and small helpers.
No server."""

from __future__ import annotations

import argparse
import io
import threading
from pathlib import Path

import pytest

from agentvm.errors import UsageError
from agentvm.service import activities, client, config, devserver
from agentvm.service.cli import parser
from agentvm.service.submitcli import build_spec


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"AGENTVM_STATE_DIR": str(tmp_path / "state"), "AGENTVM_HOST": "hosta"}


def test_defaults_are_the_embedded_dev_server_on_loopback(env, tmp_path):
    s = config.load(env)
    assert (s.address, s.embedded, s.namespace, s.ui_port, s.ui_url) == (
        "127.0.0.1:7233",
        True,
        "default",
        8233,
        "http://127.0.0.1:8233",
    )
    assert (s.task_queue, s.host_queue, s.drain) == ("agentvm", "agentvm@hosta", 0)
    assert s.service_dir == tmp_path / "state" / "service"
    assert config.connect_options(s) == {"target_host": "127.0.0.1:7233", "namespace": "default"}


def test_ports_ui_and_drain(env):
    s = config.load({**env, "AGENTVM_TEMPORAL_PORT": "17000", "AGENTVM_WORKER_DRAIN": "30"})
    assert (s.address, s.ui_port, s.drain) == ("127.0.0.1:17000", 18000, 30)
    assert config.load({**env, "AGENTVM_TEMPORAL_UI": "0"}).ui_port is None
    for key, value in [
        ("AGENTVM_TEMPORAL_PORT", "0"),
        ("AGENTVM_TEMPORAL_UI_PORT", "70000"),
        ("AGENTVM_WORKER_DRAIN", "-1"),
    ]:
        with pytest.raises(UsageError, match=key):
            config.load({**env, key: value})


def test_a_cluster_uses_the_temporal_cli_variables(env):
    s = config.load({**env, "TEMPORAL_ADDRESS": "temporal.example.internal:7233", "TEMPORAL_NAMESPACE": "agents"})
    assert (s.embedded, s.address, s.namespace) == (False, "temporal.example.internal:7233", "agents")
    options = config.connect_options(
        s,
        {
            "TEMPORAL_ADDRESS": "temporal.example.internal:7233",
            "TEMPORAL_API_KEY": "k-123",
            "TEMPORAL_NAMESPACE": "agents",
        },
    )
    assert options["target_host"] == "temporal.example.internal:7233" and options["namespace"] == "agents"
    assert options["api_key"] == "k-123" and options["tls"] is True  # an API key implies TLS
    with pytest.raises(UsageError, match="host:port"):
        config.load({**env, "TEMPORAL_ADDRESS": "temporal.example.internal"})
    with pytest.raises(UsageError, match="TEMPORAL_TLS_CLIENT_CERT_PATH"):
        config.load({**env, "TEMPORAL_ADDRESS": "t:7233", "TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent/cert.pem"})


def test_dev_server_command_line(env):
    s = config.load({**env, "AGENTVM_TEMPORAL_PORT": "17000"})
    argv = devserver.argv(s, Path("/state/temporal.db"), "/venv/bin/temporal")
    assert argv[:3] == ["/venv/bin/temporal", "server", "start-dev"]
    joined = " ".join(argv)
    for part in (
        "--ip 127.0.0.1",
        "--port 17000",
        "--db-filename /state/temporal.db",
        "--ui-port 18000",
        "--ui-ip 127.0.0.1",
        "--ui-disable-news-fetch",
        "--search-attribute AgentvmStatus=Keyword",
        "--search-attribute AgentvmLabels=KeywordList",
        "--log-level error",
    ):
        assert part in joined
    assert "--headless" not in argv
    headless = devserver.argv(config.load({**env, "AGENTVM_TEMPORAL_UI": "0"}), Path("/db"))
    assert "--headless" in headless and "--ui-port" not in headless
    assert Path(devserver.binary()).name == "temporal"


def args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["submit", *argv])


def test_submit_takes_run_options_and_environment_defaults(tmp_path):
    e = {"AGENT": "custom", "AGENT_COMMAND": "cat", "TIMEOUT": "60", "MODEL": "m1", "KEEP": "1"}
    spec = build_spec(args("hello"), e)
    assert (spec.prompt, spec.agent, spec.agent_command, spec.timeout, spec.model, spec.keep) == (
        b"hello",
        "custom",
        "cat",
        60,
        "m1",
        True,
    )
    spec = build_spec(args("hi", "--agent", "claude", "--timeout", "90", "--max-turns", "3", "--label", "a=b"), e)
    assert (spec.agent, spec.timeout, spec.max_turns, spec.labels) == ("claude", 90, 3, {"a": "b"})
    assert build_spec(args("x"), {"AGENT": "custom", "AGENT_COMMAND": "cat"}).timeout == 1800
    assert build_spec(args("x"), {}).attempts == 3
    assert build_spec(args("x", "--attempts", "5"), {}).attempts == 5
    assert (
        build_spec(args("x"), {"AGENTVM_SERVICE_ATTEMPTS": "2", "AGENTVM_HEARTBEAT_TIMEOUT": "7"}).heartbeat_timeout
        == 7
    )


def test_submit_prompt_sources(tmp_path):
    f = tmp_path / "p.md"
    f.write_bytes(b"from \xff file")
    assert build_spec(args("--prompt-file", str(f)), {}).prompt == b"from \xff file"
    assert build_spec(args("-"), {}, io.BytesIO(b"from stdin")).prompt == b"from stdin"
    assert build_spec(args(), {"PROMPT": "from env"}).prompt == b"from env"
    assert build_spec(args(), {"PROMPT_FILE": str(f)}).prompt == b"from \xff file"
    with pytest.raises(UsageError, match="empty"):
        build_spec(args(), {})
    with pytest.raises(UsageError, match="not both"):
        build_spec(args("x", "--prompt-file", str(f)), {})


def test_submit_refuses_bad_input_before_anything_is_sent(tmp_path):
    for argv, e, message in [
        (("x", "--agent", "nope"), {}, "unknown agent"),
        (("x", "--agent", "custom"), {}, "needs AGENT_COMMAND"),
        (("x", "--timeout", "soon"), {}, "TIMEOUT"),
        (("x", "--workspace", str(tmp_path)), {}, "--host"),
        (("x", "--workspace", "http://example.org/r.git"), {}, "https://"),
        (("x", "--workspace", "https://example.org/r.git", "--ref=-x"), {}, "ref"),
        (("x", "--host", "bad host"), {}, "--host"),
        (("x", "--label", "UPPER=1"), {}, "label name"),
        (("x", "--attempts", "0"), {}, "attempts"),
    ]:
        with pytest.raises(UsageError, match=message):
            build_spec(args(*argv), e)


def test_submit_workspace_forms(tmp_path):
    spec = build_spec(args("x", "--workspace", "https://example.org/r.git", "--ref", "v2"), {})
    assert (spec.workspace_git, spec.workspace_ref, spec.workspace_path) == ("https://example.org/r.git", "v2", None)
    spec = build_spec(args("x", "--workspace", str(tmp_path), "--host", "hosta"), {})
    assert (spec.workspace_git, spec.workspace_path, spec.host) == (None, str(tmp_path), "hosta")


def test_summary_line_is_short_and_printable():
    assert (
        client.summary_line(b"\n\n  Fix the \x1b[31mbug\x07 now\nsecond", "claude") == "claude: Fix the  [31mbug  now"
    )
    assert client.summary_line(b"y" * 200, None).endswith("...")


def test_line_prefixer_prefixes_whole_lines():
    out = io.StringIO()
    w = activities.LinePrefixer(out, "[wf #1]", threading.Lock())
    w.write("a\nb")
    w.write("c\n")
    assert out.getvalue() == "[wf #1] a\n[wf #1] bc\n"


def test_alert_settings_are_taken_out_of_the_environment():
    environ = {"ALERT_WEBHOOK_URL": "http://127.0.0.1:1/x", "ALERT_ATTEMPTS": "2", "PATH": "/bin"}
    assert activities.take_alert_env(environ) == {"ALERT_WEBHOOK_URL": "http://127.0.0.1:1/x", "ALERT_ATTEMPTS": "2"}
    assert environ == {"PATH": "/bin"}


def test_the_run_command_does_not_load_the_temporal_sdk():
    """`agentvm run` (make run) stays as it was: the service's wiring in agentvm.cli imports no Temporal code."""
    import subprocess
    import sys

    code = (
        "import sys, agentvm.cli, agentvm.service;"
        "print(sorted(m for m in sys.modules if m.startswith(('temporalio', 'agentvm.service'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "['agentvm.service']"


def test_a_taken_port_is_found_before_the_dev_server_starts(env):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not devserver.port_free("127.0.0.1", port)
        server = devserver.DevServer(config.load({**env, "AGENTVM_TEMPORAL_PORT": str(port)}))
        with pytest.raises(UsageError, match=f"127.0.0.1:{port} is in use"):
            server.start()
        assert server.proc is None
    assert devserver.port_free("127.0.0.1", port)


def test_recent_runs_is_none_without_a_service(env):
    with socket_closed_port() as port:
        assert client.recent_runs({**env, "AGENTVM_TEMPORAL_PORT": str(port), "PATH": "/usr/bin:/bin"}) is None


class socket_closed_port:
    """A loopback port nobody listens on (bound, not listening: connections are refused)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()
