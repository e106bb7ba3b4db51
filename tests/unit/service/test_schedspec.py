"""`agentvm schedule`: names, times (cron, @every, --every, time zone), overlap and notes are checked, and the run
request built, before anything connects to Temporal. No server (the service tests run the commands against one)."""

from __future__ import annotations

import pytest

from agentvm.errors import UsageError
from agentvm.service import cli, schedspec, schedules, schedview

ADD = ["schedule", "add", "nightly", "--every", "60", "--agent", "custom", "--agent-command", "cat"]


@pytest.fixture
def env(tmp_path, free_port_env) -> dict[str, str]:
    return {"AGENTVM_STATE_DIR": str(tmp_path / "state"), **free_port_env}


@pytest.fixture
def free_port_env() -> dict[str, str]:
    """A port nothing listens on: a command that got as far as connecting would exit 3, not 2."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return {"AGENTVM_TEMPORAL_PORT": str(s.getsockname()[1])}


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("nightly", True),
        ("a", True),
        ("review-9", True),
        ("x" * 48, True),
        ("x" * 49, False),
        ("Nightly", False),
        ("-nightly", False),
        ("nightly-", False),
        ("night_ly", False),
        ("night ly", False),
        ("../etc", False),
        ("", False),
        ("$(id)", False),
    ],
)
def test_names(name, ok):
    if ok:
        assert schedspec.schedule_id(name) == f"agentvm-{name}"
        assert schedspec.name_of(f"agentvm-{name}") == name
    else:
        with pytest.raises(UsageError, match="lower-case letters, digits or '-'"):
            schedspec.schedule_id(name)


def test_other_schedules_are_not_agentvms():
    assert [schedspec.name_of(i) for i in ("nightly", "agentvm-", "agentvm-Bad", "other-x")] == [None] * 4


@pytest.mark.parametrize(
    ("cron", "normal"),
    [
        ("0 6 * * 1-5", "0 6 * * 1-5"),
        ("  0   6 * *  1-5 ", "0 6 * * 1-5"),
        ("*/15 * * * *", "*/15 * * * *"),
        ("5/15 0-23/2 1,15 jan-jun mon,wed,FRI", "5/15 0-23/2 1,15 jan-jun mon,wed,FRI"),
        ("0 6 * * 7", "0 6 * * 7"),
        ("59 23 31 12 0", "59 23 31 12 0"),
        ("@daily", "@daily"),
        ("@HOURLY", "@hourly"),
        ("@midnight", "@midnight"),
    ],
)
def test_cron_expressions_temporal_takes(cron, normal):
    assert schedspec.check_cron(cron) == normal


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 6 * *", "has 4 field"),
        ("0 0 6 * * *", "has 6 field.*use --every"),
        ("60 * * * *", "minute 60 is out of range"),
        ("0 24 * * *", "hour 24 is out of range"),
        ("0 0 0 * *", "day of month 0 is out of range"),
        ("0 0 * 13 *", "month 13 is out of range"),
        ("0 0 * * 8", "day of week 8 is out of range"),
        ("0 0 * * 5-1", "ends before it starts"),
        ("*/0 * * * *", "step .* at least 1"),
        ("*/x * * * *", "step"),
        ("0 6 ? * *", "'\\?' is not a valid day of month"),
        ("0 6 L * *", "'L' is not a valid day of month"),
        ("0 6 * * 1#2", "not a valid day of week"),
        ("0 6 * * mon;id", "not a valid day of week"),
        ("0 6 * * $(id)", "not a valid day of week"),
        ("@reboot", "is not valid"),
        ("0 6 * * *\n0 7 * * *", "is not valid"),
        ("", "is not valid"),
        ("1" * 300, "is not valid"),
    ],
)
def test_bad_cron_expressions_are_refused_with_what_to_give(cron, message):
    with pytest.raises(UsageError, match=message) as info:
        schedspec.check_cron(cron)
    assert "five fields" in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3", 3), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), (" 10S ", 10)],
)
def test_durations(text, seconds):
    assert schedspec.parse_duration(text, "--every") == seconds


@pytest.mark.parametrize("text", ["0", "-5", "1.5", "5 m", "m", "5w", "", "99999999999", "1h 30m", "3; id"])
def test_bad_durations(text):
    with pytest.raises(UsageError, match="--every"):
        schedspec.parse_duration(text, "--every")


@pytest.mark.parametrize(
    ("cron", "every", "tz", "expected"),
    [
        (None, "3", None, schedspec.Times(every=3)),
        ("@every 15m", None, None, schedspec.Times(every=900)),
        ("0 6 * * 1-5", None, None, schedspec.Times(cron="0 6 * * 1-5")),
        ("0 6 * * 1-5", None, "Europe/Paris", schedspec.Times(cron="0 6 * * 1-5", timezone="Europe/Paris")),
        ("0 6 * * 1-5", None, "UTC", schedspec.Times(cron="0 6 * * 1-5", timezone="UTC")),
    ],
)
def test_times(cron, every, tz, expected):
    assert schedspec.times(cron, every, tz) == expected


@pytest.mark.parametrize(
    ("cron", "every", "tz", "message"),
    [
        (None, None, None, "exactly one of --cron"),
        ("@daily", "3", None, "exactly one of --cron"),
        (None, "3", "UTC", "--timezone applies to --cron"),
        ("@every 1m", None, "UTC", "--timezone applies to --cron"),
        ("@every soon", None, None, "the interval 'soon'"),
        ("0 6 * * *", None, "Mars/Olympus", "not known"),
        ("0 6 * * *", None, "../../etc/passwd", "IANA name"),
        ("0 6 * * *", None, "Europe/Paris\n", "IANA name"),
    ],
)
def test_bad_times(cron, every, tz, message):
    with pytest.raises(UsageError, match=message):
        schedspec.times(cron, every, tz)


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ([], lambda s: (s.agent, s.agent_command, s.timeout, s.labels) == ("custom", "cat", 1800, {})),
        (
            ["--timeout", "60", "--label", "team=ops", "--keep"],
            lambda s: (s.timeout, s.labels, s.keep) == (60, {"team": "ops"}, True),
        ),
        (["--host", "hosta", "--attempts", "1"], lambda s: (s.host, s.attempts) == ("hosta", 1)),
        (["--workspace", "https://example.invalid/r.git", "--ref", "main"], lambda s: s.workspace_ref == "main"),
    ],
)
def test_the_run_request_is_built_like_a_trigger(env, extra, check):
    args = cli.parser().parse_args([*ADD, "--prompt", "review {{ x }} $(id)", *extra])
    sid, times, spec = schedules.plan(args, {**env, "PROMPT": "from the environment"})
    assert (sid, times) == ("agentvm-nightly", schedspec.Times(every=60))
    assert spec.prompt == b"review {{ x }} $(id)"  # the option's text, literally; never $PROMPT
    assert spec.trigger == {"kind": "schedule", "name": "nightly", "id": None}
    assert check(spec)


def test_the_prompt_file_is_read_as_bytes(env, tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"line one\n\xff{% raw %}\n")
    args = cli.parser().parse_args([*ADD, "--prompt-file", str(path)])
    assert schedules.plan(args, env)[2].prompt == b"line one\n\xff{% raw %}\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt", " "], "the prompt is empty"),
        (["--prompt-file", "/nonexistent/p.txt"], "cannot read the prompt file"),
        (["--prompt", "x", "--timeout", "soon"], "TIMEOUT must be a positive whole number"),
        (["--prompt", "x", "--label", "NOT VALID=1"], "label"),
        (["--prompt", "x", "--workspace", "https://u:pw@example.invalid/r.git"], "carries credentials"),
        (["--prompt", "x", "--host", "bad host"], "--host"),
        (["--prompt", "x", "--note", "two\nlines"], "one line"),
        (["--prompt", "x", "--note", "n" * 501], "one line"),
    ],
)
def test_bad_run_options_are_refused_before_connecting(env, extra, message, capsys):
    args = cli.parser().parse_args([*ADD, *extra])
    with pytest.raises(UsageError, match=message):
        schedules.plan(args, env)
    assert cli.main([*ADD, *extra], env) == 2  # not 3: nothing tried to reach the (absent) service
    assert message.split()[0].lower() in capsys.readouterr().err.lower()


@pytest.mark.parametrize(
    "argv",
    [
        ["schedule", "add", "n", "--prompt", "x"],  # no --cron / --every
        ["schedule", "add", "n", "--every", "3"],  # no prompt
        ["schedule", "add", "n", "--every", "3", "--cron", "@daily", "--prompt", "x"],
        ["schedule", "add", "n", "--every", "3", "--prompt", "x", "--prompt-file", "f"],
        ["schedule", "add", "n", "--every", "3", "--prompt", "x", "--overlap", "terminate"],
        ["schedule", "add", "n", "--every", "3", "--prompt", "x", "--key", "k"],  # submit-only
        ["schedule", "trigger", "n", "--overlap", "sometimes"],
        ["schedule", "show"],
        ["schedule", "frobnicate", "n"],
    ],
)
def test_bad_command_lines_exit_2(argv, env):
    with pytest.raises(SystemExit) as info:
        cli.main(argv, env)
    assert info.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["schedule", "show", "Bad"],
        ["schedule", "pause", "../x"],
        ["schedule", "resume", "a b"],
        ["schedule", "trigger", "x-"],
        ["schedule", "delete", "x" * 60],
        ["schedule", "pause", "ok", "--note", "a\x1b[2Jb"],
        ["schedule", "add", "n", "--cron", "0 6 * *", "--prompt", "x"],
        ["schedule", "add", "n", "--cron", "0 6 * * *", "--timezone", "Nowhere/City", "--prompt", "x"],
    ],
)
def test_bad_names_and_times_exit_2_before_connecting(argv, env):
    assert cli.main(argv, env) == 2


@pytest.mark.parametrize("policy", schedspec.OVERLAP_POLICIES)
def test_every_overlap_policy_is_one_of_temporals(policy):
    from temporalio.client import ScheduleOverlapPolicy

    assert schedules._overlap(policy) in set(ScheduleOverlapPolicy)
    assert schedules._policy_name(schedules._overlap(policy)) == policy


def test_show_prints_temporal_text_without_control_characters():
    text = schedview.format_show(
        {
            "name": "n",
            "schedule_id": "agentvm-n",
            "when": "every 3s",
            "overlap": "skip",
            "paused": True,
            "note": "evil\x1b]0;title\x07\nnext",
            "created_at": "2026-01-01T00:00:00+00:00",
            "actions": 2,
            "skipped_overlap": 1,
            "next_action_times": [],
            "running": [],
            "recent": [{"started_at": "2026-01-01T00:00:03+00:00", "workflow_id": "agentvm-n-2026-01-01T00:00:03Z"}],
            "run": {},
        }
    )
    assert "\x1b" not in text and "\x07" not in text and "note:         evil ]0;title  next" in text
    assert "state:        paused" in text and "2 started, 1 skipped (overlap)" in text
    assert "  2026-01-01 00:00:03Z  agentvm-n-2026-01-01T00:00:03Z" in text
