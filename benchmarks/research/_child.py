"""Benchmark work done in a process of its own: ``python -m benchmarks.research._child KIND SPEC``.

A child has its own GIL, its own connections and its own peak RSS. SPEC is a JSON object;
the child's last line of output is its result, a JSON object. A child that reads a start
signal prints ``ready`` first and waits for a line on its standard input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import checkout_env

__all__ = ["Child", "ChildFailed", "rss_kb", "signal_ready"]

READY = "ready"


def rss_kb() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in kB, from /proc (Linux); elsewhere the peak
    from getrusage for both. The peak is this process's own: /proc's VmHWM starts afresh at
    exec, while getrusage's maxrss may carry over the peak of the process that spawned it."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak // 1024 if sys.platform == "darwin" else peak  # bytes there, kB on Linux
        return peak, peak


class ChildFailed(RuntimeError):
    """A child process exited with an error; the message ends with its output."""


class Child:
    """One child process running ``KIND`` with ``spec``."""

    def __init__(self, kind: str, spec: dict[str, Any]) -> None:
        self.kind = kind
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.research._child", kind, json.dumps(spec)],
            env=checkout_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        """Wait for the child's ``ready`` line (it has connected and is waiting to start)."""
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if line != READY:
            self._failed(line)

    def start(self) -> None:
        """Tell a ready child to go."""
        assert self._process.stdin is not None
        self._process.stdin.write("go\n")
        self._process.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """The child's result, once it exits; ChildFailed if it failed."""
        try:
            out, err = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            out, err = self._process.communicate()
            raise ChildFailed(
                f"{self.kind} child did not finish within {timeout:g}s: {err}"
            ) from None
        lines = out.strip().splitlines()
        if self._process.returncode != 0 or not lines:
            raise ChildFailed(
                f"{self.kind} child exited with status {self._process.returncode}: "
                f"{(out + err).strip()[-2000:]}"
            )
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def kill(self) -> None:
        """End the child if it still runs (after another child failed)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate()

    def _failed(self, line: str) -> None:
        self._process.kill()
        out, err = self._process.communicate()
        raise ChildFailed(
            f"{self.kind} child did not get ready: {(line + out + err).strip()[-2000:]}"
        )


def signal_ready() -> None:
    """In a child: say it is ready and wait for the signal to start."""
    print(READY, flush=True)
    sys.stdin.readline()


def main(argv: Sequence[str]) -> int:
    from .latency import latency_child
    from .processes import writer_child

    kinds: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "latency": latency_child,
        "writer": writer_child,
    }
    kind, spec = argv
    print(json.dumps(kinds[kind](json.loads(spec))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
