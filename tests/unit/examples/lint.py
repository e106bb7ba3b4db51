"""Helpers of the examples' tests: load a YAML example, lint it with the repository's own yamllint config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def load(relative: str) -> Any:
    return yaml.safe_load((EXAMPLES / relative).read_text(encoding="utf-8"))


def lint_problems(relative: str) -> list[str]:
    """yamllint --strict's findings (errors and warnings) with the repository's .yamllint; the file must not be
    one the config ignores, or `make lint` would never look at it."""
    conf = YamlLintConfig(file=str(ROOT / ".yamllint"))
    path = EXAMPLES / relative
    rel = str(path.relative_to(ROOT))
    if conf.is_file_ignored(rel):
        return [f"{rel} is ignored by .yamllint"]
    text = path.read_text(encoding="utf-8")
    return [f"{rel}:{p.line}:{p.column} {p.level} {p.desc} ({p.rule})" for p in linter.run(text, conf, rel)]
