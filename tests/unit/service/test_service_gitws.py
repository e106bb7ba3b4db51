"""Git workspaces: fetched with real git from a file:// repository made here; hostile URLs and refs never reach
git; failures leave no scratch folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agentvm.errors import UsageError
from agentvm.service import gitws


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    (src / "a.txt").write_text("one\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "one", cwd=src)
    git("tag", "v1", cwd=src)
    (src / "a.txt").write_text("two\n")
    git("commit", "-qam", "two", cwd=src)
    git("checkout", "-qb", "side", cwd=src)
    (src / "b.txt").write_text("side\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "side", cwd=src)
    git("checkout", "-q", "main", cwd=src)
    return src


def test_fetches_head_a_branch_a_tag_and_a_commit(repo, tmp_path):
    url = f"file://{repo}"
    scratch = tmp_path / "scratch"
    head = gitws.fetch(url, None, scratch)
    assert (head / "a.txt").read_text() == "two\n" and not (head / "b.txt").exists()
    assert git("rev-list", "--count", "HEAD", cwd=head) == "1"  # depth 1
    assert (gitws.fetch(url, "side", scratch) / "b.txt").read_text() == "side\n"
    assert (gitws.fetch(url, "v1", scratch) / "a.txt").read_text() == "one\n"
    first = git("rev-list", "--max-parents=0", "HEAD", cwd=repo)
    assert (gitws.fetch(url, first, scratch) / "a.txt").read_text() == "one\n"
    assert all(p.name.startswith(f"ws-{os.getpid()}-") for p in scratch.iterdir())


@pytest.mark.parametrize("ref", ["nope", "refs/heads/missing"])
def test_missing_ref_is_a_usage_error_and_leaves_nothing(repo, tmp_path, ref):
    scratch = tmp_path / "scratch"
    with pytest.raises(UsageError, match="cannot fetch the workspace"):
        gitws.fetch(f"file://{repo}", ref, scratch)
    assert list(scratch.iterdir()) == []


def test_missing_repository_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot fetch the workspace"):
        gitws.fetch(f"file://{tmp_path}/absent.git", None, tmp_path / "scratch")


def test_unreachable_server_is_retryable(tmp_path):
    # Port 9 on loopback (discard) refuses connections: a failure that may go away, so the attempt is retried.
    with pytest.raises(gitws.FetchFailed, match="cannot fetch the workspace"):
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        gitws.fetch("https://127.0.0.1:9/org/repo.git", None, tmp_path / "scratch", {**env, "NO_PROXY": "*"}, 30)
    assert list((tmp_path / "scratch").iterdir()) == []


@pytest.mark.parametrize(
    ("url", "ref"),
    [
        ("ext::sh%20-c%20touch%20{marker}", None),
        ("file://{repo}", "--upload-pack=touch {marker}"),
        ("--upload-pack=touch%20{marker}", None),
    ],
)
def test_hostile_urls_and_refs_never_run(repo, tmp_path, url, ref):
    marker = tmp_path / "pwned"
    url = url.format(marker=marker, repo=repo)
    ref = ref.format(marker=marker) if ref else None
    with pytest.raises(UsageError):
        gitws.fetch(url, ref, tmp_path / "scratch")
    assert not marker.exists()


def test_git_is_called_with_an_argument_list_and_only_three_transports(tmp_path):
    init, fetch, checkout = gitws.git_argv(tmp_path / "d", "https://example.org/r.git", "main")
    assert init[:2] == ["git", "init"]
    assert fetch[-3:] == ["--", "https://example.org/r.git", "main"]
    assert "protocol.allow=never" in fetch and "core.hooksPath=/dev/null" in fetch
    assert checkout[-2:] == ["--detach", "FETCH_HEAD"]
    env = gitws._git_env({"GIT_DIR": "/elsewhere", "GIT_SSH_COMMAND": "ssh -i k", "PATH": "/bin"})
    assert "GIT_DIR" not in env and env["GIT_ALLOW_PROTOCOL"] == "https:ssh:file"
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["GIT_SSH_COMMAND"] == "ssh -i k"


def test_stale_scratch_folders_of_dead_workers_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"ws-{dead.pid}-abc").mkdir()
    (tmp_path / f"ws-{os.getpid()}-mine").mkdir()
    (tmp_path / "ws-1-init").mkdir()  # pid 1 is alive
    (tmp_path / "unrelated").mkdir()
    assert gitws.remove_stale(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"ws-{os.getpid()}-mine", "ws-1-init", "unrelated"])
