"""Control characters from the VM never reach the terminal; credentials are redacted from text and files."""

from __future__ import annotations

import pytest

from agentvm import textsafe


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain\ttext\nline", "plain\ttext\nline"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]52;c;ZWNobyBwd25lZA==\x07", "\\x1b]52;c;ZWNobyBwd25lZA==\\x07"),  # OSC 52: write the clipboard
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("bell\x07 back\x08 cr\r nul\x00 del\x7f", "bell\\x07 back\\x08 cr\\x0d nul\\x00 del\\x7f"),
        ("c1 \x9b31m", "c1 \\x9b31m"),
        ("émoji 🚀 שלום", "émoji 🚀 שלום"),
    ],
)
def test_clean(text, expected):
    assert textsafe.clean(text) == expected


def test_one_line_cuts_and_cleans():
    assert textsafe.one_line("\n  first \x1b[2J\nsecond") == "first \\x1b[2J"
    assert textsafe.one_line("x" * 50, 10) == "x" * 9 + "…"


def test_redactor_text_longest_first_and_short_values_ignored():
    r = textsafe.Redactor({"KEY": "sk-ant-abcdef", "INNER": "abcdef", "SHORT": "ab", "EMPTY": ""})
    assert r.text("use sk-ant-abcdef and abcdef, ab") == "use [redacted:KEY] and [redacted:INNER], ab"
    assert not textsafe.Redactor({})


def test_redactor_file_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(textsafe, "CHUNK", 7)
    secret = "SECRET-VALUE-123"
    path = tmp_path / "log"
    path.write_bytes((("pad" + secret + "x") * 20 + secret).encode())
    assert textsafe.Redactor({"K": secret}).file(path)
    data = path.read_bytes()
    assert secret.encode() not in data and data.count(b"[redacted:K]") == 21


def test_redactor_file_leaves_clean_files_alone(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"nothing to see")
    before = path.stat().st_mtime_ns
    assert not textsafe.Redactor({"K": "secretvalue"}).file(path)
    assert path.stat().st_mtime_ns == before and path.read_bytes() == b"nothing to see"
    link = tmp_path / "link"
    link.symlink_to(path)
    assert not textsafe.Redactor({"K": "nothing"}).file(link)
