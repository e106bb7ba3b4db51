#!/usr/bin/env python3
"""Check the host prerequisites of agentvm and say what to do about each missing one.

Only a wrong Python is fatal (nothing can be installed without it). Everything else is needed
later (Multipass for `make golden`/`make run`) and is reported as a warning with a fix.
Standard library only: this runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys

MIN_PYTHON = (3, 11)
MAX_PYTHON_EXCLUSIVE = (3, 14)
MIN_MULTIPASS = (1, 15, 0)  # `multipass clone` first shipped in 1.15.0
# What the Multipass double (simulator/) needs on a Debian/Ubuntu host: nspawn containers, debootstrap for its
# image, DHCP/DNS on its bridge, NAT and egress rules, and git for workspaces.
HOST_PACKAGES = ("systemd-container", "debootstrap", "dnsmasq-base", "iptables", "iproute2", "nftables", "git")


def _install_hint() -> str:
    if platform.system() == "Darwin":
        return "install it with `brew install --cask multipass` or the installer from Canonical's Multipass site"
    return "install it with `sudo snap install multipass`"


def _parse_version(text: str) -> tuple[int, ...]:
    digits = []
    for part in text.split("+", 1)[0].split("-", 1)[0].split("."):
        if not part.isdigit():
            break
        digits.append(int(part))
    return tuple(digits)


def check_python() -> list[str]:
    version = sys.version_info[:2]
    if MIN_PYTHON <= version < MAX_PYTHON_EXCLUSIVE:
        return []
    return [
        f"Python {version[0]}.{version[1]} found at {sys.executable}; agentvm needs 3.11, 3.12 or 3.13 "
        "(ansible-core 2.19). Run `make setup PYTHON=/path/to/python3.11` or install a supported Python."
    ]


def check_make() -> list[str]:
    return [] if shutil.which("make") else ["`make` not found: install your platform's build tools."]


def multipass_version(binary: str) -> str | None:
    """The client version `multipass version --format json` reports, or None when it cannot run."""
    try:
        proc = subprocess.run(
            [binary, "version", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        return str(json.loads(proc.stdout)["multipass"])
    except (ValueError, KeyError, TypeError):
        return None


def check_multipass() -> list[str]:
    binary = os.environ.get("MULTIPASS_BIN") or "multipass"
    path = shutil.which(binary)
    if path is None:
        return [
            f"`{binary}` not found: needed by `make golden` and `make run`, not by `make test`. "
            f"To use real Multipass, {_install_hint()}."
        ]
    version = multipass_version(path)
    if version is None:
        return [f"`{path} version --format json` did not answer: check that Multipass is installed correctly."]
    if _parse_version(version) < MIN_MULTIPASS:
        return [f"Multipass {version} at {path} is too old: `clone` needs 1.15 or newer. Upgrade Multipass."]
    return []


def missing_packages(packages: tuple[str, ...] = HOST_PACKAGES) -> list[str]:
    """Debian packages of the list that dpkg does not report installed."""
    missing = []
    for pkg in packages:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False)
        if "install ok installed" not in proc.stdout:
            missing.append(pkg)
    return missing


def install_host_packages() -> list[str]:
    """Install the simulator's host packages where we can (Linux, root, apt); else say what to install."""
    packages = " ".join(HOST_PACKAGES)
    if platform.system() != "Linux" or shutil.which("dpkg-query") is None:
        return [
            "the Multipass double (for `make test` and `make demo`) runs on Debian/Ubuntu Linux as root only; "
            "with real Multipass you need none of its packages"
        ]
    missing = missing_packages()
    if not missing:
        return []
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return [f"the Multipass double needs {' '.join(missing)}: `sudo apt-get install {' '.join(missing)}`"]
    print(f"Installing the Multipass double's host packages: {' '.join(missing)} ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return [f"`{' '.join(argv)}` failed: {' / '.join(tail)}; install {packages} yourself"]
    still = missing_packages()
    return [f"still missing after apt-get: {' '.join(still)}"] if still else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python-only", action="store_true", help="check only the Python interpreter")
    parser.add_argument(
        "--install-host-packages", action="store_true", help="install the Multipass double's host packages (apt)"
    )
    args = parser.parse_args(argv)
    fatal = check_python()
    for line in fatal:
        print(f"ERROR: {line}", file=sys.stderr)
    if fatal or args.python_only:
        return 1 if fatal else 0
    warnings = check_make() + check_multipass()
    if args.install_host_packages:
        warnings += install_host_packages()
    for line in warnings:
        print(f"note: {line}")
    if not warnings:
        print("Host prerequisites OK.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
