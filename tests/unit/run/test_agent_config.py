"""The per-run configuration of each agent, as agent-run.py writes it in the VM (run here on a private home):
spec.json from the real profiles, the config files rendered from the agent's environment, the values escaped
so that hostile model names or base URLs stay data. Crush cannot be installed here: its test is that the
file written is the configuration its source reads (docs/agents.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agentvm.run.profiles import get_profile, load_profiles
from agentvm.settings import REPO

AGENT_RUN = REPO / "roles" / "agent_run" / "files" / "agent-run.py"
HOSTILE = 'm"1\\ $(touch /tmp/pwned) `id` ${HOME} \n\t\x7f \u05e9 \U0001f680'
# Prints what the agent would see: its environment and the files in its home.
PROBE = (
    "import json, os, sys; home = os.path.expanduser('~'); files = {}\n"
    "for d, _, names in os.walk(home):\n"
    "    for n in names: files[os.path.relpath(os.path.join(d, n), home)] = open(os.path.join(d, n)).read()\n"
    "json.dump({'env': dict(os.environ), 'files': files, 'stdin': sys.stdin.read()}, sys.stdout)"
)


def run_agent_run(tmp_path: Path, agent: str, secrets: dict[str, str], model: str | None, max_turns: int | None):
    profile = get_profile(agent)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    spec = {
        "argv": [sys.executable, "-c", PROBE],
        "env": dict(profile.env),
        "env_from": {k: list(v) for k, v in profile.env_from.items()},
        "config_files": profile.files(model, max_turns),
        "prompt_via": profile.prompt,
        "timeout": 60,
        "cwd": str(work),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "prompt.txt").write_text("the prompt")
    secret_file = tmp_path / "secrets.json"
    secret_file.write_text(json.dumps(secrets))
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, str(AGENT_RUN), str(work), str(secret_file)], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert not secret_file.exists()
    summary = json.loads((work / "agent-summary.json").read_text())
    assert summary["exit_code"] == 0, (work / "stderr.log").read_text()
    seen = json.loads((work / "stdout.log").read_text())
    return seen, work, home


def test_gemini_settings_select_the_api_key_and_bound_retries_and_turns(tmp_path):
    seen, work, home = run_agent_run(tmp_path, "gemini", {"GOOGLE_API_KEY": "tok-marker-1"}, "gemini-x", 7)
    settings = json.loads(seen["files"][".gemini/settings.json"])
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["general"] == {
        "enableAutoUpdate": False,
        "enableAutoUpdateNotification": False,
        "maxAttempts": 1,
        "retryFetchErrors": False,
    }
    assert settings["privacy"]["usageStatisticsEnabled"] is False and settings["telemetry"]["enabled"] is False
    assert settings["model"]["maxSessionTurns"] == 7
    assert seen["env"]["GEMINI_API_KEY"] == "tok-marker-1"  # env_from: the CLI reads only this name
    assert seen["env"]["TMPDIR"] == str(work / "tmp") and (work / "tmp").is_dir()
    assert seen["stdin"] == "the prompt"
    assert "tok-marker-1" not in seen["files"][".gemini/settings.json"]
    assert oct((home / ".gemini" / "settings.json").stat().st_mode & 0o777) == "0o600"


def test_gemini_without_max_turns_has_no_limit(tmp_path):
    seen, _, _ = run_agent_run(tmp_path, "gemini", {"GEMINI_API_KEY": "tok-marker"}, None, None)
    assert json.loads(seen["files"][".gemini/settings.json"])["model"]["maxSessionTurns"] == -1


@pytest.mark.parametrize(
    ("secrets", "base"),
    [
        ({"OPENAI_API_KEY": "tok-marker", "OPENAI_BASE_URL": "http://10.1.2.3:4567/v1"}, "http://10.1.2.3:4567/v1"),
        ({"CODEX_API_KEY": "tok-marker"}, "https://api.openai.com/v1"),
        ({"OPENAI_API_KEY": "tok-marker", "OPENAI_BASE_URL": HOSTILE}, HOSTILE),
    ],
    ids=["proxy", "default-endpoint", "hostile-base-url"],
)
def test_codex_provider_points_at_the_runs_endpoint(tmp_path, secrets, base):
    seen, _, _ = run_agent_run(tmp_path, "codex", secrets, "gpt-x", 3)
    config = tomllib.loads(seen["files"][".codex/config.toml"])
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == base
    assert provider["env_key"] == "OPENAI_API_KEY" and seen["env"]["OPENAI_API_KEY"] == "tok-marker"
    assert provider["wire_api"] == "responses"
    assert provider["request_max_retries"] == 0 and provider["stream_max_retries"] == 0
    assert config["features"]["plugins"] is False and config["analytics"]["enabled"] is False
    assert config["feedback"]["enabled"] is False and config["otel"]["exporter"] == "none"
    assert config["check_for_update_on_startup"] is False
    assert (config["approval_policy"], config["sandbox_mode"]) == ("never", "danger-full-access")
    assert "tok-marker" not in seen["files"][".codex/config.toml"]


@pytest.mark.parametrize(
    ("secrets", "kind", "base", "key_var"),
    [
        ({"OPENAI_API_KEY": "tok-marker", "OPENAI_BASE_URL": "http://h/v1"}, "openai-compat", "OPENAI_BASE_URL", "OPENAI_API_KEY"),
        ({"ANTHROPIC_API_KEY": "tok-marker"}, "anthropic", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
    ],
)  # fmt: skip
def test_crush_config_is_the_provider_of_the_delivered_credential(tmp_path, secrets, kind, base, key_var):
    seen, _, _ = run_agent_run(tmp_path, "crush", secrets, HOSTILE, None)
    config = json.loads(seen["files"][".config/crush/crush.json"])
    provider = config["providers"]["agentvm"]
    assert provider["type"] == kind
    # Crush resolves $VAR itself, from the agent's environment: neither the key nor the URL is in the file.
    assert provider["api_key"] == f"${key_var}" and provider["base_url"].startswith("${" + base + ":-https://")
    assert "tok-marker" not in seen["files"][".config/crush/crush.json"]
    # The model id is a plain string to Crush (never resolved): the hostile name arrives as it is.
    assert provider["models"][0]["id"] == HOSTILE
    assert config["models"]["large"] == {"provider": "agentvm", "model": HOSTILE}
    assert config["options"]["disable_default_providers"] is True
    for var in ("CRUSH_DISABLE_METRICS", "CRUSH_DISABLE_PROVIDER_AUTO_UPDATE", "CRUSH_DISABLE_DEFAULT_PROVIDERS"):
        assert seen["env"][var] == "1"
    assert seen["stdin"] == ""  # the prompt is an argument; stdin is /dev/null, not closed


def test_crush_prompt_is_one_argument_after_the_end_of_options():
    argv = get_profile("crush").command("/vm/p", b"--yolo $(id) {model}", "m", None)
    assert argv[-2:] == ["--", "--yolo $(id) {model}"] and "-q" in argv


def test_no_profile_writes_a_credential_into_a_file():
    for name, data in load_profiles().items():
        for entry in data.get("config_files") or ():
            for credential in data["credentials"]:
                assert "${" + credential + "}" not in entry["content"].replace("$${", ""), (name, credential)


def test_a_config_file_outside_the_home_is_refused(tmp_path, monkeypatch):
    from agentvm.run import profiles

    bad = tmp_path / "agents.yml"
    bad.write_text(
        "x:\n  binary: x\n  prompt: stdin\n  argv: [x]\n  output: text\n  credentials: [K]\n"
        "  config_files: [{path: ../.bashrc, format: text, content: hi}]\n"
    )
    monkeypatch.setattr(profiles, "PROFILES_FILE", bad)
    monkeypatch.setattr(profiles, "load_profiles", lambda path=bad: profiles.yaml.safe_load(bad.read_text()))
    with pytest.raises(ValueError, match="relative to the agent's home"):
        profiles.get_profile("x")
    bad.write_text(bad.read_text().replace("../.bashrc", ".k").replace("content: hi", "content: '${K}'"))
    with pytest.raises(ValueError, match="never write a credential"):
        profiles.get_profile("x")
