"""``ttforge.limits.open_regular``: what is opened is checked, not only what was looked at."""
from __future__ import annotations

import os
import threading

import pytest

from ttforge import limits
from ttforge.errors import UserError


def _opened_after_a_swap(tmp_path, monkeypatch, make):
    """open_regular on ``make(path)`` (a FIFO, a large file) while its stat still says a
    small regular file: the swap between the check and the open."""
    small = tmp_path / "small.ttfa"
    small.write_bytes(b"x")
    path = tmp_path / "input.ttfa"
    make(path)
    real_stat = os.stat
    monkeypatch.setattr(limits.os, "stat", lambda p, *a, **k: real_stat(small) if str(p) == str(path)
                        else real_stat(p, *a, **k))
    got: dict = {}

    def call():
        try:
            got["file"] = limits.open_regular(path, "artifact", 10)
        except UserError as e:
            got["error"] = str(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # blocked in open(): give it a writer so that the thread ends
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("open_regular blocked opening a FIFO swapped in after its check")
    return got


def test_a_fifo_swapped_in_after_the_check_is_refused_not_waited_on(tmp_path, monkeypatch):
    got = _opened_after_a_swap(tmp_path, monkeypatch, os.mkfifo)
    assert "is a FIFO" in got.get("error", "") and "input.ttfa" in got["error"]


def test_a_file_grown_past_the_limit_after_the_check_is_refused(tmp_path, monkeypatch):
    got = _opened_after_a_swap(tmp_path, monkeypatch, lambda p: p.write_bytes(b"y" * 11))
    assert "11 bytes, above ttforge's limit of 10" in got.get("error", "")


def test_a_regular_file_reads_and_blocks_as_usual(tmp_path):
    f = tmp_path / "a.ttfa"
    f.write_bytes(b"abc")
    fh, size = limits.open_regular(f, "artifact", 10)
    with fh:
        assert size == 3 and fh.read() == b"abc" and os.get_blocking(fh.fileno())
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(UserError):
        limits.open_regular(tmp_path, "artifact", 10)
    assert len(os.listdir("/proc/self/fd")) == before   # a refusal leaks no descriptor
