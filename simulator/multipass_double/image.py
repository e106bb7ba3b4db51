"""The golden rootfs: debootstrapped Debian 13 (trixie), fixed up to feel like an Ubuntu cloud image.

Built once per machine into ``<images>/debian-trixie-r<RECIPE>/`` (``rootfs/`` + ``image.json``), under
``<images>/build.lock``. The build happens in ``<images>/.build-*`` and is renamed into place only when it
is complete, so an interrupted or failed build never leaves something that a later run would use; the
next build removes such leftovers (killing processes still rooted in them and unmounting first).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from multipass_double import hostutil
from multipass_double.errors import BackendError

SUITE = "trixie"
# Bump whenever the recipe below changes: a new version means a new image directory (and hash).
# r1 was bookworm; r2 is trixie (its Node.js 20 is what Gemini CLI needs; closer to Ubuntu 24.04).
RECIPE_VERSION = 2
PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-cffi-backend",
    "sudo",
    "cloud-init",
    "iproute2",
    "ifupdown",
    "isc-dhcp-client",
    "ca-certificates",
    "netbase",
    "less",
    "procps",
    "locales",
    "libnss-myhostname",
    "curl",
    "gnupg",
    "git",
    "xz-utils",
    "tar",
    "gzip",
]
DEBOOTSTRAP_TIMEOUT = 900

CLOUD_CFG = """\
# agentvm multipass double: make the instance look like a Multipass Ubuntu instance to its users.
datasource_list: [NoCloud, None]
system_info:
  default_user:
    name: ubuntu
    lock_passwd: true
    gecos: Ubuntu
    groups: [adm, audio, cdrom, dialout, dip, floppy, netdev, plugdev, sudo, video]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
"""

# cloud-init regenerates the host keys (we ship none); this is the fallback should it not run.
SSH_DROPIN = """\
[Unit]
After=cloud-init.service

[Service]
ExecStartPre=
ExecStartPre=-/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""

NPMRC = "cafile=/etc/ssl/certs/ca-certificates.crt\nfund=false\naudit=false\nupdate-notifier=false\n"
PIP_CONF = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"


@dataclass(frozen=True)
class BuiltImage:
    rootfs: Path
    sha256: str
    pretty_name: str


def image_dir(images: Path) -> Path:
    return images / f"debian-{SUITE}-r{RECIPE_VERSION}"


def load(images: Path) -> BuiltImage | None:
    """The finished image, or None when it has not been built (yet)."""
    folder = image_dir(images)
    try:
        meta = json.loads((folder / "image.json").read_text())
    except (OSError, ValueError):
        return None
    rootfs = folder / "rootfs"
    if not rootfs.is_dir():
        return None
    return BuiltImage(rootfs=rootfs, sha256=meta["sha256"], pretty_name=meta["pretty_name"])


def ensure(images: Path, *, force: bool = False) -> BuiltImage:
    existing = None if force else load(images)
    if existing:
        return existing
    with hostutil.file_lock(images / "build.lock", "waiting for another process to finish building the image"):
        existing = None if force else load(images)  # somebody else may have built it meanwhile
        if existing:
            return existing
        return _build_locked(images)


def _build_locked(images: Path) -> BuiltImage:
    remove_stale_builds(images)
    tmp = images / f".build-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        rootfs = tmp / "rootfs"
        mirror = host_mirror()
        hostutil.progress(f"building the instance image ({SUITE}, from {mirror}); this takes 1-3 minutes")
        _debootstrap(rootfs, mirror, tmp / "debootstrap.log")
        hostutil.progress(f"debootstrap done after {time.monotonic() - started:.0f} s; applying fixes")
        apply_fixes(rootfs)
        built = _write_metadata(tmp, rootfs, time.monotonic() - started)
        _install(images, tmp)
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                shutil.copy(tmp / "debootstrap.log", images / "last-failed-build.log")
            _remove_tree(tmp)
    (images / "last-failed-build.log").unlink(missing_ok=True)
    hostutil.progress(f"instance image ready in {time.monotonic() - started:.1f} s")
    final = image_dir(images) / "rootfs"
    return BuiltImage(rootfs=final, sha256=built.sha256, pretty_name=built.pretty_name)


def _install(images: Path, tmp: Path) -> None:
    """Rename the finished build into place; a forced rebuild retires the previous one."""
    final = image_dir(images)
    if final.exists():
        in_use = [m.target for m in hostutil.mounts() if str(final / "rootfs") in m.options]
        if in_use:
            raise BackendError(
                f"cannot replace the image at {final}: running instances use it ({in_use[0]} ...). "
                "Stop them first (`multipass-double down`)."
            )
        retired = images / f".build-retired-{uuid.uuid4().hex[:12]}"
        os.rename(final, retired)
        _remove_tree(retired)
    os.rename(tmp, final)


# -- debootstrap ---------------------------------------------------------------------------------


def host_mirror() -> str:
    """The Debian archive URI the host's apt uses (deb822 sources first, then sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        uri = _mirror_from_deb822(path.read_text())
        if uri:
            return uri
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        with contextlib.suppress(OSError):
            uri = _mirror_from_one_line(path.read_text())
            if uri:
                return uri
    raise BackendError(
        "cannot find the host's Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; "
        "configure apt on this host first (the image is debootstrapped from the same mirror)"
    )


def _is_archive_suite(suite: str) -> bool:
    return "-" not in suite and "/" not in suite


def _mirror_from_deb822(text: str) -> str | None:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
            continue
        if any(_is_archive_suite(s) for s in fields.get("suites", "").split()) and fields.get("uris"):
            return fields["uris"].split()[0]
    return None


def _mirror_from_one_line(text: str) -> str | None:
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and _is_archive_suite(words[2]):
            return words[1]
    return None


def _debootstrap(rootfs: Path, mirror: str, log: Path) -> None:
    argv = [
        # Die with us: an interrupted build must not keep writing into a directory the next build removes.
        "setpriv",
        "--pdeathsig",
        "KILL",
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(rootfs),
        mirror,
    ]
    with log.open("w") as out:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False, timeout=DEBOOTSTRAP_TIMEOUT
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BackendError(
            f"debootstrap of {SUITE} from {mirror} failed (exit {proc.returncode}); full log kept as "
            f"{log.parent.parent / 'last-failed-build.log'}. Check that the host reaches its apt mirror "
            f"(`apt-get update`), then retry (`multipass-double build-image`). Last lines:\n{tail}"
        )


# -- golden-image fixes --------------------------------------------------------------------------


def _chroot(rootfs: Path, script: str) -> None:
    env_script = "export DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin; " + script
    hostutil.run(["chroot", str(rootfs), "/bin/sh", "-ec", env_script], timeout=300)


def apply_fixes(rootfs: Path) -> None:
    _fix_locale(rootfs)
    _fix_identity(rootfs)
    _copy_apt_config(rootfs)
    _copy_ca_certificates(rootfs)
    _write(rootfs / "etc/npmrc", NPMRC)
    _write(rootfs / "etc/pip.conf", PIP_CONF)
    _write(rootfs / "etc/cloud/cloud.cfg.d/90-agentvm-double.cfg", CLOUD_CFG)
    _write(rootfs / "etc/systemd/system/ssh.service.d/10-agentvm-double.conf", SSH_DROPIN)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _clean_apt(rootfs)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _fix_locale(rootfs: Path) -> None:
    # Without a generated en_US.UTF-8, cloud-init's locale module fails (and re-runs locale-gen: slow).
    _chroot(
        rootfs,
        "sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen; locale-gen >/dev/null; "
        "update-locale LANG=en_US.UTF-8",
    )


def _fix_identity(rootfs: Path) -> None:
    (rootfs / "etc/machine-id").write_text("")  # systemd makes a fresh one per instance
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (rootfs / "etc/hostname").write_text("localhost\n")  # debootstrap copied the host's name
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)  # dhclient writes it from the DHCP answer; nothing from the host
    resolv.write_text("")


def _copy_apt_config(rootfs: Path) -> None:
    """Apt sources for the guest's suite on the host's mirrors, and the host's Acquire:: settings (no
    credentials)."""
    sources = guest_sources(sorted(Path("/etc/apt/sources.list.d").glob("*.sources")))
    if sources:
        _write(rootfs / "etc/apt/sources.list.d/debian.sources", sources)
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)  # debootstrap's one line, now in there
    for path in sorted(Path("/etc/apt/apt.conf.d").glob("*")):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = path.read_text()
            if "Acquire::" in text and not re.search(r"(?i)password|token|auth", text):
                shutil.copy(path, rootfs / "etc/apt/apt.conf.d" / path.name)


def guest_sources(paths: list[Path], host_codename: str | None = None) -> str:
    """The host's Debian archive stanzas (deb822) rewritten for SUITE: ``bookworm bookworm-updates`` ->
    ``trixie trixie-updates``, ``bookworm-security`` -> ``trixie-security``. Only stanzas whose suites
    are the host's own release (``host_codename``, default: the host's VERSION_CODENAME) are used, so
    vendor repositories and backports are left out; "" when nothing is usable."""
    codename = host_codename if host_codename is not None else _host_codename()
    out = []
    for path in paths:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for stanza in re.split(r"\n\s*\n", path.read_text()):
                rewritten = _rewrite_stanza(stanza, codename)
                if rewritten:
                    out.append(rewritten)
    return "\n".join(out)


def _host_codename() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return ""


_POCKETS = ("", "-updates", "-security")


def _rewrite_stanza(stanza: str, codename: str) -> str | None:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    lower = {k.lower(): v for k, v in fields.items()}
    if lower.get("enabled", "yes").lower() == "no" or "deb" not in lower.get("types", "").split():
        return None
    suites = lower.get("suites", "").split()
    pockets = [s[len(codename) :] for s in suites if codename and s.startswith(codename)]
    if not suites or len(pockets) != len(suites) or not all(p in _POCKETS for p in pockets):
        return None
    new_suites = " ".join(SUITE + p for p in pockets)
    keep = ("URIs", "Components", "Signed-By", "Architectures")
    lines = ["Types: deb", f"Suites: {new_suites}"]
    lines += [f"{k}: {v}" for k, v in fields.items() if k in keep]
    return "\n".join(lines) + "\n"


def _copy_ca_certificates(rootfs: Path) -> None:
    target = rootfs / "usr/local/share/ca-certificates"
    target.mkdir(parents=True, exist_ok=True)
    for cert in sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt")):
        shutil.copy(cert, target / cert.name)
    _chroot(rootfs, "update-ca-certificates >/dev/null 2>&1")


def _clean_apt(rootfs: Path) -> None:
    _chroot(rootfs, "apt-get clean")
    lists = rootfs / "var/lib/apt/lists"
    for entry in lists.iterdir():
        if entry.is_file() and entry.name != "lock":
            entry.unlink()
    for cache in (rootfs / "var/cache/apt").glob("*.bin"):
        cache.unlink()


# -- metadata ------------------------------------------------------------------------------------


def _write_metadata(folder: Path, rootfs: Path, seconds: float) -> BuiltImage:
    packages = hostutil.run(["chroot", str(rootfs), "dpkg-query", "-W"], timeout=60)
    digest = hashlib.sha256(f"agentvm-double recipe {RECIPE_VERSION}\n{packages}".encode()).hexdigest()
    pretty = pretty_name(rootfs)
    meta = {
        "sha256": digest,
        "pretty_name": pretty,
        "suite": SUITE,
        "recipe": RECIPE_VERSION,
        "packages": len(packages.splitlines()),
        "built_at": int(time.time()),
        "build_seconds": round(seconds, 1),
    }
    (folder / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
    return BuiltImage(rootfs=rootfs, sha256=digest, pretty_name=pretty)


def pretty_name(rootfs: Path) -> str:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = rootfs / rel
        if path.is_symlink() and os.readlink(path).startswith("/"):
            continue  # absolute links point into the host
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    return f"Debian GNU/Linux ({SUITE})"


# -- leftovers -----------------------------------------------------------------------------------


def remove_stale_builds(images: Path) -> list[str]:
    """Remove unfinished builds (call with the build lock held). Returns what was removed."""
    removed = []
    for stale in sorted(images.glob(".build-*")):
        _remove_tree(stale)
        removed.append(str(stale))
    return removed


def _remove_tree(folder: Path) -> None:
    """rm -rf that first kills processes rooted inside and unmounts what is mounted below."""
    prefix = str(folder) + "/"
    for pid in hostutil.all_pids():
        with contextlib.suppress(OSError):
            if (os.readlink(f"/proc/{pid}/root") + "/").startswith(prefix):
                hostutil.kill(pid)
    for target in hostutil.mounts_under(folder):
        hostutil.unmount(target)
    if hostutil.mounts_under(folder):
        raise BackendError(f"cannot remove {folder}: something is still mounted below it")
    shutil.rmtree(folder, ignore_errors=True)
