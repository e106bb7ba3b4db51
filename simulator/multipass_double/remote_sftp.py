"""Runs inside an instance as `ubuntu`: the SFTP semantics of Multipass's sftp_client.cpp/sftp_utils.cpp.

Sent as `python3 -c <this file>` by exec_transfer.py; standard library only (the image's python3).
"""

import json
import os
import sys
import tarfile


def q(p: str) -> str:
    return json.dumps(str(p))


class E(Exception):
    pass


def err(e: OSError) -> str:
    return {2: "SFTP server: No such file", 13: "SFTP server: Permission denied"}.get(e.errno, "SFTP server: Failure")


def isdir(p: str) -> bool:
    return os.path.isdir(p)


def exists(p: str) -> bool:
    return os.path.lexists(p)


def mkdir_p(path: str) -> None:
    parts, acc = str(path).split("/"), ""
    for i, part in enumerate(parts):
        acc = part if i == 0 else acc + "/" + part
        if not acc:
            continue
        if exists(acc) and not isdir(acc):
            raise E(f"cannot overwrite remote non-directory {q(acc)} with directory")
        if not exists(acc):
            try:
                os.mkdir(acc, 0o777)
            except OSError as e:
                raise E(f"cannot create remote directory {q(acc)}: {err(e)}") from None


def file_target(src_name: str, target: str, parents: bool) -> str:
    full = target if target else src_name
    if not exists(full):
        parent = os.path.dirname(full) or "."
        if parents:
            mkdir_p(parent)
        if not exists(parent):
            raise E("remote target does not exist")
        return full
    if not isdir(full):
        return full
    full = full + "/" + src_name
    if isdir(full):
        raise E(f"cannot overwrite remote directory {q(full)} with non-directory")
    return full


def dir_target(src_name: str, target: str, parents: bool) -> str:
    if exists(target) and not isdir(target):
        raise E(f"cannot overwrite remote non-directory {q(target)} with directory")
    if not exists(target):
        if parents:
            mkdir_p(target)
        else:
            try:
                os.mkdir(target, 0o777)
            except OSError as e:
                raise E(f"cannot create remote directory {q(target)}: {err(e)}") from None
        return target
    child = target + "/" + src_name
    if exists(child) and not isdir(child):
        raise E(f"cannot overwrite remote non-directory {q(child)} with directory")
    if not exists(child):
        os.mkdir(child, 0o777)
    return child


def write_stream(path: str, mode: "int | None") -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o664)
    except OSError as e:
        raise E(f"cannot open remote file {q(path)}: {err(e)}") from None
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = sys.stdin.buffer.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
    if mode is not None:
        try:
            os.chmod(path, mode)
        except OSError as e:
            raise E(f"cannot set permissions for remote file {q(path)}: {err(e)}") from None


def main(op: str, *a: str) -> None:
    if op == "isdir":
        sys.exit(0 if isdir(a[0]) else 1)
    if op == "kind":  # "dir", or "file" and the permission bits (octal) when it exists
        if isdir(a[0]):
            print("dir")
        else:
            try:
                print("file", format(os.stat(a[0]).st_mode & 0o7777, "o"))
            except OSError:
                print("file -")
        return
    if op == "push-file":
        target, name, parents, mode = a[0], a[1], a[2] == "1", (int(a[3], 8) if a[3] != "-" else None)
        write_stream(file_target(name, target, parents), mode)
        return
    if op == "push-dir":
        dest = dir_target(a[1], a[0], a[2] == "1")
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
            # The archive is the double's own: extract it as-is (the filter argument exists from
            # Python 3.12 on, where leaving it out prints a DeprecationWarning).
            tar.extractall(dest, **({"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}))
        return
    if op == "pull-file":
        try:
            fh = open(a[0], "rb")  # noqa: SIM115 - opened first to map its error
        except OSError as e:
            raise E(f"cannot open remote file {q(a[0])}: {err(e)}") from None
        with fh:
            while True:
                chunk = fh.read(1 << 16)
                if not chunk:
                    break
                sys.stdout.buffer.write(chunk)
        return
    if op == "pull-dir":
        # "." first: the local target directory gets the source directory's permissions (pull_dir)
        with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
            tar.add(a[0], arcname=".")
        return


try:
    main(*sys.argv[1:])
except E as e:
    sys.stderr.write(str(e))
    sys.exit(3)
