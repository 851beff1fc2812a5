"""What a training run shows on the console while it runs: the progress bar with its ETA, and the log lines."""

from __future__ import annotations

import math
import sys
import time

__all__ = ["Progress", "hms", "print_line"]


class Progress:
    """A progress bar with an ETA: tqdm when importable, else a small built-in one on stderr.

    The built-in bar redraws one line with ``\\r`` when stderr is a terminal; otherwise (CI, pipes, no TTY)
    it prints a plain line at most every ``interval`` seconds so logs stay readable.
    """

    def __init__(self, total: int, initial: int, enabled: bool | None, interval: float = 30.0):
        self.total, self.n, self.start_n = total, initial, initial
        self.enabled = enabled is not False
        self.interval = interval
        self.t0 = self.last = time.perf_counter()
        self.postfix = ""
        self._tqdm = None
        self.tty = self.enabled and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        if self.enabled:
            try:
                from tqdm import tqdm  # optional: nicer bar when installed
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(total=total, initial=initial, unit="upd", file=sys.stderr, dynamic_ncols=True,
                                  leave=False, mininterval=0.5)

    def update(self, postfix: str | None = None) -> None:
        self.n += 1
        if postfix is not None:
            self.postfix = postfix
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.update(1)
            if postfix is not None:
                self._tqdm.set_postfix_str(postfix, refresh=False)
            return
        now = time.perf_counter()
        if self.tty and now - self.last >= 0.2:
            self.last = now
            sys.stderr.write("\r\x1b[K" + self._line(now))
            sys.stderr.flush()
        elif not self.tty and now - self.last >= self.interval:
            self.last = now
            sys.stderr.write(self._line(now) + "\n")
            sys.stderr.flush()

    def _line(self, now: float) -> str:
        done = self.n - self.start_n
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.n / max(self.total, 1)
        eta_s = hms(eta) if math.isfinite(eta) else "?"
        return f"{self.n}/{self.total} updates ({pct:.0f}%) {rate:.1f} upd/s ETA {eta_s} {self.postfix}".rstrip()

    def clear(self) -> None:
        """Remove the bar before a log line is printed (the bar is redrawn by the next update)."""
        if self._tqdm is not None:
            self._tqdm.clear()
        elif self.enabled and self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        else:
            self.clear()


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def print_line(msg: str) -> None:
    """The trainer's default log: one line on stdout, flushed at once (a pipe or a CI log shows it as it happens)."""
    print(msg, flush=True)
