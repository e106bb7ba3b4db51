"""Inspect or verify a golden VM from inside it (run as root: ``python3 - PARAMS_JSON`` with this file on stdin).

PARAMS_JSON: {"user": "ubuntu", "agents": {name: {"command": str, "version": str}}, "tools": [cmd, ...],
"packages": [deb, ...], "credential_paths": [path relative to a home, ...], "homes": [dir, ...]}

Prints one JSON object: {"ok": bool, "failures": [str], "agents": {name: reported}, "tools": {cmd: first line},
"packages": {deb: version}, "os": PRETTY_NAME, "user_uid": int}. Exit status 0 when ok, else 1.
"""

import json
import os
import re
import subprocess
import sys

SECRET_ASSIGNMENT = re.compile(r"^\s*(export\s+)?[A-Z0-9_]*(API_KEY|AUTH_TOKEN|OAUTH_TOKEN)\s*=\s*['\"]?[^\s'\"]", re.M)
ENV_FILES = ["/etc/environment", "/etc/profile", "/etc/bash.bashrc"]
HOME_ENV_FILES = [".bashrc", ".profile", ".bash_profile", ".zshrc"]


def as_user(user: str, command: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-l", user, "-c", command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def os_release() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def main() -> int:
    params = json.loads(sys.argv[1])
    user = params["user"]
    failures: list[str] = []
    result: dict = {"agents": {}, "tools": {}, "packages": {}, "os": os_release()}

    uid = as_user(user, "id -u")
    result["user_uid"] = int(uid.stdout.strip()) if uid.returncode == 0 and uid.stdout.strip().isdigit() else -1
    if result["user_uid"] <= 0:
        failures.append(f"the agent user {user!r} is root or cannot log in (id -u: {uid.stdout.strip()!r})")

    for name, agent in sorted(params["agents"].items()):
        try:
            proc = as_user(user, f"{agent['command']} --version")
        except subprocess.TimeoutExpired:
            failures.append(f"agent {name}: `{agent['command']} --version` timed out")
            continue
        reported = first_line(proc.stdout) or first_line(proc.stderr)
        result["agents"][name] = reported
        if proc.returncode != 0:
            failures.append(f"agent {name}: `{agent['command']} --version` exited {proc.returncode}: {reported}")
        elif agent.get("version") and agent["version"] not in reported:
            failures.append(f"agent {name}: expected version {agent['version']}, got {reported!r}")

    for tool in params["tools"]:
        try:
            proc = as_user(user, f"{tool} --version")
        except subprocess.TimeoutExpired:
            failures.append(f"tool {tool}: `{tool} --version` timed out")
            continue
        result["tools"][tool] = first_line(proc.stdout) or first_line(proc.stderr)
        if proc.returncode != 0:
            failures.append(f"tool {tool}: `{tool} --version` exited {proc.returncode}: {result['tools'][tool]}")

    if params.get("packages"):
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n", *params["packages"]],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in proc.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[2].startswith("ii"):
                result["packages"][parts[0]] = parts[1]

    for home in params["homes"]:
        for rel in params["credential_paths"]:
            path = os.path.join(home, rel)
            if os.path.lexists(path):
                failures.append(f"credential file present: {path}")
    env_files = list(ENV_FILES)
    if os.path.isdir("/etc/profile.d"):
        env_files += [os.path.join("/etc/profile.d", n) for n in sorted(os.listdir("/etc/profile.d"))]
    env_files += [os.path.join(home, n) for home in params["homes"] for n in HOME_ENV_FILES]
    for path in env_files:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                if SECRET_ASSIGNMENT.search(handle.read()):
                    failures.append(f"a credential is assigned in {path}")
        except OSError:
            continue

    if params.get("expect_identity"):
        try:
            with open("/etc/machine-id", encoding="ascii") as handle:
                machine_id = handle.read().strip()
        except OSError:
            machine_id = ""
        if not re.fullmatch(r"[0-9a-f]{32}", machine_id):
            failures.append(f"/etc/machine-id is not a fresh machine id: {machine_id!r}")
        if not any(n.startswith("ssh_host_") and n.endswith("_key.pub") for n in os.listdir("/etc/ssh")):
            failures.append("no SSH host keys in /etc/ssh (cloud-init did not regenerate them)")

    result["failures"] = failures
    result["ok"] = not failures
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
