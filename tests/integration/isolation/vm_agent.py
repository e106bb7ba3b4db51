#!/usr/bin/env python3
"""The custom agent of the isolation run tests: runs in the VM as the agent would (user ``ubuntu``, sudo), plain
python3 without dependencies. It arrives in the run's workspace beside ``netclient.py``; its orders arrive as the
prompt on stdin (JSON ``{"steps": [[name, args], ...]}``); it writes what it saw into ``~/output/report.json``.

Steps (each one records its findings under its name):

``env``       which variables the agent got (token and proxy values are summarised, never written out).
``search``    as root: every regular file under / except /proc and /sys (``grep -r --binary-files=text``), every
              process's ``environ`` and ``cmdline``, for each regular expression given (write the needle as
              ``[s]k-...`` so that the expression never matches itself); a control string it plants first (a file
              and a process environment) proves that the same search does find what is there.
``api``       POST $ANTHROPIC_BASE_URL/v1/messages with x-api-key: $ANTHROPIC_API_KEY (the environment's proxy
              settings apply, as for any tool).
``stream``    the same with ``"stream": true``; the time (host clock = VM clock) each text delta arrived.
``flush``     as root: ``nft flush ruleset``, ``iptables -F`` (and whether the tools exist at all).
``host_flush`` the same done by the host for the agent, in the VM's network namespace, for guests without nft
              or iptables (the double's image): the agent asks with /tmp/agentvm-flush-request and waits for
              /tmp/agentvm-flush-done (the test harness watches the VM's /tmp through /proc/<leader>/root).
``spoof``     as root: take another address of the VM's subnet and connect from it (to the proxy, outside).
``probes``    as root: netclient.py's TCP/DNS probes, directly (no proxy).
``fetch``     curl through the environment's proxy (``http_proxy``; ``--proxytunnel`` for CONNECT): status, body.
``save``      the run's token (reversed, so that the host's redaction of exact values leaves it as a thief would)
              and the proxy's addresses into ``~/output/stolen.json``.
``steal``     a stolen token against the stolen addresses and against this run's own proxy.
``sleep``     wait (for the kill tests).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import netclient  # beside this file in the workspace

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT = os.path.expanduser("~/output")
BODY = {"model": "mock", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}

# Run as root by ``search``: argv = patterns; prints one JSON object {pattern: {"files": [...], "procs": [...]}}.
ROOT_SEARCH = r"""
import json, os, re, subprocess, sys
patterns = sys.argv[1:]
tops = sorted("/" + n for n in os.listdir("/") if n not in ("proc", "sys"))
found = {p: {"files": [], "procs": []} for p in patterns}
for p in patterns:
    proc = subprocess.run(["grep", "-r", "-l", "--binary-files=text", "-s", "-D", "skip", "-E", p, *tops],
                          capture_output=True, text=True, errors="replace")
    if proc.returncode not in (0, 1):
        found[p]["grep_error"] = proc.returncode
    found[p]["files"] = proc.stdout.splitlines()
compiled = {p: re.compile(p.encode()) for p in patterns}
pids = [n for n in os.listdir("/proc") if n.isdigit()]
for pid in pids:
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{part}", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        for p, rx in compiled.items():
            if rx.search(data):
                found[p]["procs"].append(f"{pid}/{part}")
print(json.dumps({"found": found, "processes": len(pids), "tops": tops}))
"""


# Run as root by ``spoof``: argv = address device target...; prints a JSON list of {"target", "ok", "said"}.
ROOT_SPOOF = r"""
import json, socket, subprocess, sys
address, device, *targets = sys.argv[1:]
subprocess.run(["ip", "address", "add", address + "/32", "dev", device], check=True)
out = []
try:
    for target in targets:
        host, port = target.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=2, source_address=(address, 0)):
                out.append({"target": target, "ok": True, "said": "connected"})
        except OSError as exc:
            out.append({"target": target, "ok": False, "said": str(exc)})
finally:
    subprocess.run(["ip", "address", "del", address + "/32", "dev", device], check=False)
print(json.dumps(out))
"""


def run(argv: list[str], input: str | None = None, timeout: float = 120) -> dict:
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"rc": None, "error": str(exc)}
    return {"rc": proc.returncode, "stdout": proc.stdout[-20000:], "stderr": proc.stderr[-2000:]}


def env_facts(_args: object) -> dict:
    token = os.environ.get("ANTHROPIC_API_KEY", "")
    proxy = os.environ.get("HTTPS_PROXY", "")
    parts = urlsplit(proxy) if proxy else None
    return {
        "names": sorted(os.environ),
        "token_prefix": token[:8],
        "token_length": len(token),
        "base_url": os.environ.get("ANTHROPIC_BASE_URL"),
        "proxy_hostport": f"{parts.hostname}:{parts.port}" if parts else None,
        "proxy_password_is_token": bool(parts and token and parts.password == token),
        "proxy_vars_agree": len({os.environ.get(v) for v in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")})
        == 1,
        "no_proxy": os.environ.get("NO_PROXY"),
    }


def search(patterns: list[str]) -> dict:
    control = "ctl" + secrets.token_hex(16)  # never in the prompt: the agent makes it up
    control_re = "[c]" + control[1:]
    path = "/var/tmp/agentvm-control.txt"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"planted {control}\n")
    holder = subprocess.Popen(["sleep", "300"], env={"PATH": os.environ.get("PATH", ""), "CONTROL": control})
    try:
        started = time.monotonic()
        done = run(["sudo", "-n", "python3", "-c", ROOT_SEARCH, control_re, *patterns], timeout=600)
        seconds = round(time.monotonic() - started, 1)
    finally:
        holder.kill()
        holder.wait()
        os.unlink(path)
    if done.get("rc") != 0:
        return {"error": done}
    result = json.loads(done["stdout"])
    control_found = result["found"].pop(control_re)
    return {
        "control": {
            "in_file": path in control_found["files"],
            "in_holder_environ": f"{holder.pid}/environ" in control_found["procs"],
            "files": control_found["files"],
        },
        "found": result["found"],
        "processes": result["processes"],
        "tops": result["tops"],
        "seconds": seconds,
    }


def _post(url: str, body: dict, headers: dict[str, str]) -> urllib.request.Request:
    data = json.dumps(body).encode()
    return urllib.request.Request(
        url, data=data, method="POST", headers={"content-type": "application/json", **headers}
    )


def _anthropic_headers(token: str) -> dict[str, str]:
    return {"x-api-key": token, "anthropic-version": "2023-06-01"}


def api(_args: object) -> dict:
    request = _post(
        os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", BODY, _anthropic_headers(os.environ["ANTHROPIC_API_KEY"])
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
            return {"status": response.status, "text": "".join(c.get("text", "") for c in answer.get("content", []))}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode(errors="replace")[:2000]}
    except OSError as exc:
        return {"status": None, "error": str(exc)}


def stream(_args: object) -> dict:
    request = _post(
        os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages",
        {**BODY, "stream": True},
        _anthropic_headers(os.environ["ANTHROPIC_API_KEY"]),
    )
    started = time.time()
    arrivals = []
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status = response.status
            while line := response.readline():
                if not line.startswith(b"data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("type") == "content_block_delta":
                    arrivals.append({"time": time.time(), "delta": event["delta"].get("text", "")})
    except OSError as exc:
        return {"status": None, "error": str(exc), "arrivals": arrivals}
    return {"status": status, "started": started, "arrivals": arrivals}


def flush(_args: object) -> dict:
    out = {}
    for tool, argv in (("nft", ["nft", "flush", "ruleset"]), ("iptables", ["iptables", "-F"])):
        present = any(os.path.exists(os.path.join(d, tool)) for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"))
        out[tool] = {"present": present, **run(["sudo", "-n", *argv])}
    return out


def host_flush(_args: object) -> dict:
    request, done = "/tmp/agentvm-flush-request", "/tmp/agentvm-flush-done"
    with open(request, "w", encoding="utf-8") as fh:
        fh.write("flush please\n")
    deadline = time.monotonic() + 180
    while not os.path.exists(done):
        if time.monotonic() > deadline:
            return {"done": False}
        time.sleep(0.1)
    time.sleep(0.2)  # the host writes it in one go; give the write a moment to land
    with open(done, encoding="utf-8") as fh:
        return {"done": True, "host_said": json.loads(fh.read())}


def _own_address() -> tuple[str, str]:
    """(the default route's device, the VM's IPv4 address on it)."""
    route = json.loads(run(["ip", "-j", "route", "show", "default"])["stdout"])[0]
    addresses = json.loads(run(["ip", "-j", "-4", "address", "show", "dev", route["dev"]])["stdout"])
    return route["dev"], addresses[0]["addr_info"][0]["local"]


def spoof(args: dict) -> dict:
    device, own = _own_address()
    prefix, last = own.rsplit(".", 1)
    other = f"{prefix}.{250 if last != '250' else 251}"
    api = urlsplit(os.environ["ANTHROPIC_BASE_URL"])
    targets = [f"{api.hostname}:{api.port}", *args["targets"]]
    from_own = [netclient_tcp(api.hostname, api.port)]
    done = run(["sudo", "-n", "python3", "-c", ROOT_SPOOF, other, device, *targets])
    try:
        results = json.loads(done["stdout"])
    except (KeyError, ValueError):
        return {"error": done}
    return {"own": own, "spoofed": other, "from_own_address": from_own, "from_spoofed_address": results}


def netclient_tcp(host: str, port: int) -> dict:
    ok, said = netclient.tcp(host, port, 3.0)
    return {"target": f"{host}:{port}", "ok": ok, "said": said}


def probes(args: dict) -> dict:
    flat = [str(part) for probe in args["probes"] for part in probe]
    done = run(["sudo", "-n", "python3", os.path.join(HERE, "netclient.py"), "probes", str(args["timeout"]), *flat])
    lines = [json.loads(x) for x in done.get("stdout", "").splitlines() if x.startswith("{")]
    return {"rc": done.get("rc"), "results": lines, "stderr": done.get("stderr")}


def _curl(url: str, *extra: str, config: str = "") -> dict:
    done = run(["curl", "-sS", "--max-time", "15", "-K", "-", "-w", "\n%{http_code} %{http_connect}", *extra, url],
               input=config)  # fmt: skip
    body, _, codes = (done.get("stdout") or "").rpartition("\n")
    code, _, connect = codes.partition(" ")
    return {
        "rc": done.get("rc"),
        "http_code": code,
        "http_connect": connect,
        "body": body,
        "stderr": done.get("stderr"),
    }


def fetch(args: dict) -> list[dict]:
    """Through the proxy named by the environment (curl reads ``http_proxy``; CONNECT with ``--proxytunnel``)."""
    out = []
    for item in args["urls"]:
        extra = ["--proxytunnel"] if item.get("tunnel") else []
        out.append({"url": item["url"], "tunnel": bool(item.get("tunnel")), **_curl(item["url"], *extra)})
    return out


def save(_args: object) -> dict:
    token = os.environ["ANTHROPIC_API_KEY"]
    proxy = urlsplit(os.environ["HTTPS_PROXY"])
    stolen = {
        "token_reversed": token[::-1],
        "api": os.environ["ANTHROPIC_BASE_URL"],
        "proxy": f"{proxy.hostname}:{proxy.port}",
    }
    with open(os.path.join(OUTPUT, "stolen.json"), "w", encoding="utf-8") as fh:
        json.dump(stolen, fh)
    return {"saved": True}


def _api_with(base: str, token: str) -> dict:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(
            "POST", "/v1/messages", json.dumps(BODY), {"content-type": "application/json", **_anthropic_headers(token)}
        )
        response = conn.getresponse()
        return {"status": response.status, "body": response.read().decode(errors="replace")[:500]}
    except OSError as exc:
        return {"status": None, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def steal(args: dict) -> dict:
    stolen = args["stolen"]
    token = stolen["token_reversed"][::-1]
    own_proxy = urlsplit(os.environ["HTTPS_PROXY"])
    target = args["target"]
    return {
        "api_of_the_finished_run": _api_with(stolen["api"], token),
        "api_of_this_run": _api_with(os.environ["ANTHROPIC_BASE_URL"], token),
        "proxy_of_the_finished_run": _curl(
            target, config=f'proxy = "http://{stolen["proxy"]}"\nproxy-user = "agentvm:{token}"\n'
        ),
        "proxy_of_this_run": _curl(
            target, config=f'proxy = "http://{own_proxy.hostname}:{own_proxy.port}"\nproxy-user = "agentvm:{token}"\n'
        ),
    }


def sleep(args: dict) -> dict:
    time.sleep(float(args["seconds"]))
    return {"slept": args["seconds"]}


STEPS = {
    "env": env_facts,
    "search": lambda args: search(args["patterns"]),
    "api": api,
    "stream": stream,
    "flush": flush,
    "host_flush": host_flush,
    "spoof": spoof,
    "probes": probes,
    "fetch": fetch,
    "save": save,
    "steal": steal,
    "sleep": sleep,
}


def main() -> int:
    orders = json.loads(sys.stdin.read())
    os.makedirs(OUTPUT, exist_ok=True)
    report: dict[str, object] = {"user": os.getuid(), "have": {t: bool(shutil.which(t)) for t in ("curl", "sudo")}}
    for name, args in orders["steps"]:
        report[name] = STEPS[name](args)
        with open(os.path.join(OUTPUT, "report.json"), "w", encoding="utf-8") as fh:  # after each step
            json.dump(report, fh, indent=1)
    print("agent done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
