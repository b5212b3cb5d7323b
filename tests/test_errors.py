"""``ttforge.errors``' text helpers: a non-UTF-8 file name's bytes written as ``\\xff``
by one helper for every file ttforge writes (the flow's reports, ``sweep.json``,
``generate.json``)."""

from __future__ import annotations

import json
import os

import pytest

from ttforge.errors import bytes_escaped, printable


@pytest.mark.parametrize("raw, text", [
    (b"run\xff/a\x80b", "run\\xff/a\\x80b"),   # each byte that is not UTF-8, as the byte
    ("é\u202e\n.ttfa".encode(), "é\u202e\n.ttfa"),  # UTF-8: unchanged (printable escapes the rest)
    (b"a\\xff", "a\\xff"),                     # a name that is already such text: unchanged
])
def test_a_non_utf8_byte_is_written_as_the_byte(raw, text):
    assert bytes_escaped(os.fsdecode(raw)) == text
    text.encode("utf-8")


def test_a_surrogate_that_is_no_byte_is_written_as_its_code_point():
    assert bytes_escaped("x\ud800y\udc00") == "x\\ud800y\\udc00"
    assert json.loads(json.dumps(bytes_escaped("\udcff"), ensure_ascii=False).encode().decode("utf-8")) == "\\xff"


def test_the_files_that_escape_a_name_agree():
    """``flow.report.file_text`` (reports, CSV, TOML comments) and
    ``hw.generate.file_name_record`` (generate.json) showed such a byte by two means."""
    from ttforge.flow.report import file_text, json_safe
    from ttforge.hw.generate import file_name_record

    name = os.fsdecode(b"c\xff\x1b.ttfa")
    assert file_text(name) == printable(bytes_escaped(name)) == "c\\xff\\x1b.ttfa"
    assert json_safe({name: [name]}) == {bytes_escaped(name): [bytes_escaped(name)]}
    assert file_name_record(name) == {"file": bytes_escaped(name), "file_bytes": b"c\xff\x1b.ttfa".hex()}
    assert file_name_record("é.ttfa") == {"file": "é.ttfa"}


@pytest.mark.parametrize("name", ["a\x9b31mb.onnx", "a\u202eb.onnx", "a\x1b[31mb.onnx", "a\nb.onnx",
                                  os.fsdecode(b"x\xff.onnx")])
def test_show_path_quotes_every_character_printable_escapes(name):
    """show_path (every "wrote PATH" line) quoted C0 controls only: a C1 CSI (\\x9b) or a
    right-to-left override reached the terminal as is."""
    from ttforge.errors import show_path

    text = show_path(name)
    assert text == repr(name) and printable(text) == text and text.isascii()


def test_show_path_leaves_a_plain_path_as_is():
    from ttforge.errors import show_path

    assert show_path("run/é.onnx") == "run/é.onnx"


def test_every_control_and_format_character_is_escaped():
    """The escaped ranges stopped at U+FFFF (a tag character, U+E0041, or a musical
    format control, U+1D173, reached the terminal inside a quoted path) and left the
    Arabic prepended concatenation marks: every Unicode control (Cc) and format
    character (Cf) is escaped, and show_path quotes a name holding one."""
    import unicodedata

    from ttforge.errors import show_path

    left = [hex(c) for c in range(0x110000)
            if unicodedata.category(chr(c)) in ("Cc", "Cf") and printable(chr(c)) == chr(c)]
    assert left == []
    assert show_path("a\U000e0041b") == repr("a\U000e0041b") and show_path("a\U000e0041b").isascii()
