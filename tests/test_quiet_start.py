"""classifier.quiet_start: what TensorFlow prints on stderr while it starts is held back, and
shown after all when the start fails (the end-to-end check is in test_package: the predict
command's output)."""

from __future__ import annotations

import os

import pytest

from classifier.quiet_start import stderr_held


def test_what_the_block_prints_is_dropped_when_it_succeeds(capfd) -> None:
    with stderr_held():
        os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # file descriptor 2 is back


def test_what_the_block_printed_is_shown_when_it_fails(capfd) -> None:
    with pytest.raises(ImportError, match="no such library"), stderr_held():
        os.write(2, b"E0000 loader.cc] libcudnn.so.9: cannot open shared object file\n")
        raise ImportError("no such library")
    assert "libcudnn.so.9: cannot open shared object file" in capfd.readouterr().err
