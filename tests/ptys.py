"""A pseudo-terminal of a given size for a child process, and reading all it got, for the tests of what saerl
prints on a terminal (tests/test_terminal.py: stderr's bars and log lines; tests/test_status.py: stdout's tables)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import termios

READ_BYTES = 4096  # read from the terminal's master side this much at a time


def sized_pty(rows: int, cols: int) -> tuple[int, int]:
    """A fresh pty whose size is `rows` x `cols` (0 x 0: one nobody sized, as `script -qc CMD /dev/null` gives a CI
    job). in: the size; out: (master fd, slave fd): give the slave to the child, close it here once it started."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return master, slave


def drain(master: int) -> bytes:
    """Everything the terminal got, read until every end of its other side is closed (the child exited), then the
    master closed. in: the master fd; out: the bytes."""
    chunks = []
    while True:
        try:
            data = os.read(master, READ_BYTES)
        except OSError:  # EIO: every end of the terminal's other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return b"".join(chunks)
