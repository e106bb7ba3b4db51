"""The shape of the code: no import circles in src/agentvm, no file over 300 lines, and no code outside the
collection's module_utils (the simulator and the bench's shell baseline aside) that starts Multipass."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from tests.conftest import REPO

SRC = REPO / "src" / "agentvm"
MAX_LINES = 300


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """agentvm modules imported by ``path`` at module level or inside functions."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("agentvm")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.startswith("agentvm"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph, as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_circle_finder_finds_circles():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles_in_src_agentvm():
    edges = graph()
    # a package's __init__ is a docstring only: importing from the package is a dependency on its modules
    packages = {name for name in edges if (SRC / Path(*name.split(".")[1:]) / "__init__.py").exists()}
    edges = {k: v - packages for k, v in edges.items()}
    assert len(edges) > 20
    circle = find_circle(edges)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_no_python_file_in_src_is_over_300_lines():
    long = {
        str(p.relative_to(REPO)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


MODULE_UTILS = REPO / "collections/ansible_collections/agentvm/multipass/plugins/module_utils/multipass.py"
PROCESS_CALLS = re.compile(
    r"\b(subprocess\.(run|Popen|call|check_call|check_output)|os\.(exec\w*|spawn\w*|system|popen))\b"
)
#: Names that hold the Multipass executable, or its text, in argv lists.
MULTIPASS_NAMES = re.compile(
    r"MULTIPASS_BIN|multipass_bin|DOUBLE_BIN|\bDOUBLE\b(?! / .multipass-double)|'multipass'|\"multipass\""
)
#: The exceptions the rule allows, each with its reason.
ALLOWED = {
    "scripts/bench_connection.py": "its baseline is a raw `multipass exec`, measured against the connection plugin",
    "scripts/bench_ops.py": "its baseline is a shell script making the same Multipass calls as a run",
}


def python_files() -> list[Path]:
    roots = [REPO / "src", REPO / "scripts", REPO / "collections", REPO / "roles"]
    return [p for root in roots for p in root.rglob("*.py") if p != MODULE_UTILS]


def multipass_calls(path: Path) -> list[str]:
    """Process-starting calls in ``path`` whose argv names the Multipass executable."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and PROCESS_CALLS.search(ast.unparse(node.func)):
            argv = ast.unparse(node.args[0]) if node.args else ""
            if MULTIPASS_NAMES.search(argv):
                found.append(ast.unparse(node)[:120])
    return found


def test_the_rule_catches_a_direct_call(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import subprocess, os\nsubprocess.run([os.environ['MULTIPASS_BIN'], 'list'])\n")
    good = tmp_path / "good.py"
    good.write_text("import subprocess\nsubprocess.run(['git', 'status'])\n")
    assert len(multipass_calls(bad)) == 1 and multipass_calls(good) == []


def test_only_module_utils_starts_multipass_from_python():
    offenders = {}
    for path in python_files():
        rel = str(path.relative_to(REPO))
        if rel not in ALLOWED and (calls := multipass_calls(path)):
            offenders[rel] = calls
    assert offenders == {}


def test_no_role_or_playbook_runs_multipass_itself():
    offenders = []
    for path in [*REPO.joinpath("roles").rglob("*.yml"), *REPO.joinpath("playbooks").rglob("*.yml")]:
        for task in _tasks(yaml.load(path.read_text(), Loader=_AnsibleLoader)):
            for key in ("ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.raw", "command", "shell"):
                if key in task and "multipass" in yaml.safe_dump(task[key]).lower():
                    offenders.append(f"{path.relative_to(REPO)}: {task.get('name')}")
    assert offenders == []


class _AnsibleLoader(yaml.SafeLoader):
    """The safe loader, with Ansible's ``!unsafe`` tag read as a plain string."""


_AnsibleLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _tasks(doc):
    if isinstance(doc, list):
        for item in doc:
            yield from _tasks(item)
    elif isinstance(doc, dict):
        if "name" in doc or any("." in k for k in doc):
            yield doc
        for key in ("tasks", "block", "rescue", "always", "pre_tasks", "post_tasks", "handlers"):
            if key in doc:
                yield from _tasks(doc[key])
