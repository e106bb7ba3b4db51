"""The double's backend against real systemd-nspawn instances (root only).

One data folder under ``<repo>/.cache/`` for the whole module, the machine-wide image cache, and as few
boots as possible: ``alpha`` serves most tests; ``beta`` and ``gamma`` show isolation and copy-on-write
layers. The last test tears the data folder down with ``multipass-double down --data`` and checks that
nothing of it is left on the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from multipass_double import hostutil, image, network, nspawn
from multipass_double.backend import Backend, InstanceSpec
from multipass_double.config import REPO_ROOT, Paths

DOUBLE_DIR = Path(__file__).resolve().parents[1]
ADMIN = DOUBLE_DIR / "bin" / "multipass-double"
MARK = "written by cloud-init for the backend test"
USER_DATA = f"""#cloud-config
write_files:
  - path: /etc/agentvm-backend-test
    content: "{MARK}\\n"
"""


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the Multipass double's backend needs root (systemd-nspawn, overlay mounts, a bridge)"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is missing (apt-get install systemd-container)"
    if shutil.which("debootstrap") is None:
        return "debootstrap is missing (apt-get install debootstrap)"
    return None


needs_root = pytest.mark.skipif(_unavailable() is not None, reason=_unavailable() or "")
double = [pytest.mark.double, needs_root]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paths() -> Iterator[Paths]:
    if _unavailable():
        pytest.skip(_unavailable() or "")
    data = REPO_ROOT / ".cache" / f"test-backend-{uuid.uuid4().hex[:8]}"
    result = Paths(data=data, images=Paths.from_env().images)
    try:
        yield result
    finally:
        subprocess.run([sys.executable, str(ADMIN), "down", "--data", str(data), "--purge", "--quiet"], check=False)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def backend(paths: Paths) -> Backend:
    return Backend(paths)


def _spec(paths: Paths, name: str, layers: list[Path] | None = None) -> InstanceSpec:
    return InstanceSpec(
        name=name,
        directory=paths.instance_dir(name),
        layers=layers or [],
        user_data=USER_DATA,
        meta_data={"instance-id": name, "local-hostname": name, "cloud-name": "multipass"},
    )


def _launch(backend: Backend, spec: InstanceSpec) -> InstanceSpec:
    backend.prepare(spec)
    started = time.monotonic()
    backend.boot(spec, timeout=120)
    ssh_up = time.monotonic() - started
    backend.wait_cloud_init(spec, timeout=120)
    print(f"{spec.name}: sshd after {ssh_up:.1f} s, cloud-init done after {time.monotonic() - started:.1f} s")
    return spec


@pytest.fixture(scope="module")
def alpha(backend: Backend, paths: Paths) -> InstanceSpec:
    return _launch(backend, _spec(paths, "alpha"))


def run(
    backend: Backend, spec: InstanceSpec, *argv: str, user: str = "ubuntu", stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    proc = backend.popen(
        spec, list(argv), user=user, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate(stdin.encode(), timeout=120)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out.decode(), err.decode())


def sh(backend: Backend, spec: InstanceSpec, script: str, user: str = "ubuntu") -> str:
    result = run(backend, spec, "/bin/sh", "-c", script, user=user)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- the image (no boot needed) ------------------------------------------------------------------


@pytest.mark.double
@needs_root
def test_image_is_cached_and_identified(backend: Backend) -> None:
    info = backend.ensure_image()
    assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
    assert "Debian" in info.pretty_name
    assert backend.ensure_image() == info  # cached: same build
    assert not list((info.rootfs / "etc/ssh").glob("ssh_host_*")), "host keys must be made per instance"
    assert (info.rootfs / "etc/machine-id").read_text() == ""
    cloud_cfg = (info.rootfs / "etc/cloud/cloud.cfg.d/90-agentvm-double.cfg").read_text()
    assert "name: ubuntu" in cloud_cfg
    assert "datasource_list: [NoCloud, None]" in cloud_cfg
    sources = info.rootfs / "etc/apt/sources.list.d/debian.sources"
    if image.guest_sources(sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))):
        assert f"Suites: {image.SUITE} {image.SUITE}-updates\n" in sources.read_text()
        assert not (info.rootfs / "etc/apt/sources.list").exists()


def test_mirror_is_read_from_apt_sources() -> None:
    deb822 = (
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    assert image._mirror_from_deb822(deb822) == "http://mirror.example/debian"
    one_line = "# comment\ndeb [arch=amd64] http://m.example/debian bookworm main\n"
    assert image._mirror_from_one_line(one_line) == "http://m.example/debian"
    assert image._mirror_from_one_line("deb http://m.example/debian-security bookworm-security main\n") is None


def test_guest_sources_are_the_host_debian_stanzas_for_the_guest_suite(tmp_path: Path) -> None:
    debian = tmp_path / "debian.sources"
    debian.write_text(
        "Types: deb\n# a snapshot URL\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: contrib\n"
    )
    vendor = tmp_path / "vendor.sources"
    vendor.write_text("Types: deb\nURIs: https://vendor.example/node\nSuites: nodistro\nComponents: main\n")
    assert image.guest_sources([debian, vendor], host_codename="bookworm") == (
        f"Types: deb\nSuites: {image.SUITE} {image.SUITE}-updates\nURIs: http://mirror.example/debian\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        f"Types: deb\nSuites: {image.SUITE}-security\nURIs: http://mirror.example/debian-security\nComponents: main\n"
    )
    assert image.guest_sources([vendor], host_codename="bookworm") == ""
    assert image.guest_sources([debian], host_codename="") == ""


@pytest.mark.double
@needs_root
def test_interrupted_build_leftovers_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".build-interrupted"
    (stale / "rootfs/proc").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(stale / "rootfs/proc")], check=True)
    try:
        assert image.remove_stale_builds(tmp_path) == [str(stale)]
    finally:
        subprocess.run(["umount", str(stale / "rootfs/proc")], check=False, capture_output=True)
    assert not stale.exists()
    assert image.load(tmp_path) is None  # an unfinished build is never used


# -- one booted instance -------------------------------------------------------------------------


@pytest.mark.double
@needs_root
def test_user_data_is_applied(backend: Backend, alpha: InstanceSpec) -> None:
    assert sh(backend, alpha, "cat /etc/agentvm-backend-test") == MARK + "\n"


@pytest.mark.double
@needs_root
def test_hostname_is_the_instance_name(backend: Backend, alpha: InstanceSpec) -> None:
    assert sh(backend, alpha, "hostname").strip() == "alpha"


@pytest.mark.double
@needs_root
def test_exec_runs_as_ubuntu_in_a_clean_session(
    backend: Backend, alpha: InstanceSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTVM_MUST_NOT_LEAK", "1")
    assert sh(backend, alpha, "id -un").strip() == "ubuntu"
    assert sh(backend, alpha, "pwd").strip() == "/home/ubuntu"
    env = dict(line.split("=", 1) for line in sh(backend, alpha, "env").splitlines() if "=" in line)
    assert env["HOME"] == "/home/ubuntu"
    assert env["USER"] == env["LOGNAME"] == "ubuntu"
    assert env["SHELL"] == "/bin/bash"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin:/usr/games"
    assert env["LANG"] in ("C.UTF-8", "en_US.UTF-8")
    assert "AGENTVM_MUST_NOT_LEAK" not in env
    assert sh(backend, alpha, "id -un", user="root").strip() == "root"


@pytest.mark.double
@needs_root
def test_ubuntu_has_passwordless_sudo(backend: Backend, alpha: InstanceSpec) -> None:
    assert run(backend, alpha, "sudo", "-n", "true").returncode == 0
    assert sh(backend, alpha, "sudo -n id -un").strip() == "root"


@pytest.mark.double
@needs_root
def test_exec_forwards_stdin_keeps_streams_apart_and_passes_the_exit_code(
    backend: Backend, alpha: InstanceSpec
) -> None:
    assert run(backend, alpha, "cat", stdin="piped in\n").stdout == "piped in\n"
    result = run(backend, alpha, "bash", "-c", "echo out; echo err >&2; exit 33")
    assert (result.stdout, result.stderr, result.returncode) == ("out\n", "err\n", 33)
    assert run(backend, alpha, "bash", "-c", "kill -TERM $$").returncode == -signal.SIGTERM


@pytest.mark.double
@needs_root
def test_sshd_answers_on_the_reported_address(backend: Backend, alpha: InstanceSpec, paths: Paths) -> None:
    addresses = backend.ipv4(alpha)
    net = network.current(paths)
    assert net is not None and addresses and net.contains(addresses[0])
    with socket.create_connection((addresses[0], 22), timeout=10) as conn:
        assert conn.recv(64).startswith(b"SSH-2.0-")


@pytest.mark.double
@needs_root
def test_instance_reaches_the_host_package_mirror(backend: Backend, alpha: InstanceSpec) -> None:
    url = f"{image.host_mirror().rstrip('/')}/dists/{image.SUITE}/Release"
    result = run(backend, alpha, "curl", "-fsS", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code}", url)
    assert result.returncode == 0, f"no route/DNS to the mirror through NAT: {result.stderr}"


@pytest.mark.double
@needs_root
def test_runtime_info(backend: Backend, alpha: InstanceSpec) -> None:
    info = backend.runtime_info(alpha)
    assert int(info["cpu_count"]) >= 1
    assert re.fullmatch(r"\d+\.\d\d \d+\.\d\d \d+\.\d\d", info["load"])
    assert 0 < info["memory"]["used"] < info["memory"]["total"]
    assert 0 < int(info["disk"]["used"]) < int(info["disk"]["total"])
    assert info["release"] == "Debian GNU/Linux 13 (trixie)"


@pytest.mark.double
@needs_root
def test_is_running_checks_the_pid_really_is_our_nspawn(backend: Backend, alpha: InstanceSpec) -> None:
    assert backend.is_running(alpha)
    dirs = nspawn.Dirs(alpha.directory)
    real = dirs.runtime.read_text()
    record = json.loads(real)
    try:
        dirs.runtime.write_text(json.dumps({**record, "nspawn_pid": os.getpid()}))  # a reused pid
        assert not backend.is_running(alpha)
        dirs.runtime.write_text(json.dumps({**record, "boot_id": "0" * 32}))  # recorded before a reboot
        assert not backend.is_running(alpha)
    finally:
        dirs.runtime.write_text(real)
    assert backend.is_running(alpha)


CALLER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from multipass_double.backend import Backend, InstanceSpec
from multipass_double.config import Paths
paths = Paths(data=Path(sys.argv[2]), images=Path(sys.argv[3]))
spec = InstanceSpec(name=sys.argv[4], directory=paths.instance_dir(sys.argv[4]))
proc = Backend(paths).popen(spec, ["bash", "-c", sys.argv[5]])
print(proc.pid, flush=True)
sys.exit(proc.wait())
"""


def _count(backend: Backend, spec: InstanceSpec, pattern: str) -> int:
    out = run(backend, spec, "pgrep", "-c", "-f", pattern, user="root").stdout.strip()
    return int(out or 0)


def _wait_for(predicate: object, what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


@pytest.mark.double
@needs_root
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_caller_kills_the_inner_command(
    backend: Backend, alpha: InstanceSpec, paths: Paths, sig: signal.Signals
) -> None:
    tag = f"{4000 + int(sig)}"
    script = f"sleep {tag}1 & sleep {tag}2; wait"  # a child and a grandchild of the command
    args = [str(DOUBLE_DIR), str(paths.data), str(paths.images), alpha.name, script]
    caller = subprocess.Popen([sys.executable, "-c", CALLER, *args], stdout=subprocess.PIPE)
    try:
        _wait_for(lambda: _count(backend, alpha, f"^sleep {tag}") == 2, "the inner command to start")
        caller.send_signal(sig)
        caller.wait(timeout=30)
        _wait_for(lambda: _count(backend, alpha, f"^sleep {tag}") == 0, "the inner command to die")
    finally:
        caller.kill()
        caller.wait()


# -- more instances: isolation, copy-on-write layers, shutdown -----------------------------------


@pytest.fixture(scope="module")
def beta(backend: Backend, paths: Paths) -> InstanceSpec:
    return _launch(backend, _spec(paths, "beta"))


@pytest.mark.double
@needs_root
def test_files_stay_inside_their_instance(backend: Backend, alpha: InstanceSpec, beta: InstanceSpec) -> None:
    sh(backend, alpha, "echo alpha > /home/ubuntu/only-in-alpha")
    sh(backend, beta, "echo beta > /home/ubuntu/only-in-beta")
    assert sh(backend, beta, "ls /home/ubuntu/only-in-alpha 2>/dev/null || echo absent").strip() == "absent"
    assert sh(backend, alpha, "ls /home/ubuntu/only-in-beta 2>/dev/null || echo absent").strip() == "absent"
    assert not Path("/home/ubuntu/only-in-alpha").exists()
    assert not (backend.ensure_image().rootfs / "home/ubuntu/only-in-alpha").exists()


@pytest.mark.double
@needs_root
def test_shutdown_unmounts_and_a_frozen_upper_is_a_copy_on_write_layer(
    backend: Backend, beta: InstanceSpec, paths: Paths
) -> None:
    sh(backend, beta, "echo from-beta > /home/ubuntu/beta-file")
    backend.shutdown(beta)
    assert not backend.is_running(beta)
    assert hostutil.mounts_under(beta.directory) == []
    assert not (beta.directory / "runtime.json").exists()
    backend.shutdown(beta)  # stopping a stopped instance is a no-op

    # What state.py does for clone/snapshot: the stopped instance's upper becomes a read-only layer.
    layer = paths.layers / "beta-frozen"
    layer.parent.mkdir(parents=True, exist_ok=True)
    os.replace(beta.directory / "upper", layer)
    (beta.directory / "upper").mkdir()
    gamma = _launch(backend, _spec(paths, "gamma", layers=[layer]))
    try:
        assert sh(backend, gamma, "cat /home/ubuntu/beta-file") == "from-beta\n"
        sh(backend, gamma, "echo from-gamma > /home/ubuntu/beta-file; touch /home/ubuntu/gamma-file")
        assert (layer / "home/ubuntu/beta-file").read_text() == "from-beta\n"  # the layer is untouched
        assert not (layer / "home/ubuntu/gamma-file").exists()
        assert sh(backend, gamma, "hostname").strip() == "gamma"
    finally:
        backend.destroy(gamma)
    assert not gamma.directory.exists()
    assert hostutil.mounts_under(paths.data) == [paths.instance_dir("alpha") / "merged"]


@pytest.mark.double
@needs_root
def test_force_shutdown_then_restart_keeps_the_disk(backend: Backend, alpha: InstanceSpec) -> None:
    sh(backend, alpha, "echo kept > /home/ubuntu/kept")
    backend.shutdown(alpha, force=True)
    assert not backend.is_running(alpha)
    assert hostutil.mounts_under(alpha.directory) == []
    backend.boot(alpha, timeout=120)
    assert sh(backend, alpha, "cat /home/ubuntu/kept") == "kept\n"


# -- teardown (keep last) ------------------------------------------------------------------------


@pytest.mark.double
@needs_root
def test_down_leaves_nothing_of_the_data_folder(backend: Backend, alpha: InstanceSpec, paths: Paths) -> None:
    assert backend.is_running(alpha)
    bridge = network.bridge_name(paths.data)
    assert network.bridge_exists(bridge)
    subprocess.run([sys.executable, str(ADMIN), "down", "--data", str(paths.data), "--quiet"], check=True)
    assert nspawn.nspawn_processes(paths.data) == {}
    assert hostutil.mounts_under(paths.data) == []
    assert not network.bridge_exists(bridge)
    assert network.dnsmasq_pids(re.compile(f"^{bridge}$")) == []
    rules = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert f"{network.RULE_TAG} {bridge}" not in rules
    assert not backend.is_running(alpha)
    again = subprocess.run(
        [sys.executable, str(ADMIN), "down", "--data", str(paths.data)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr  # safe when nothing is left
