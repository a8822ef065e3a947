"""Where a profiled run's CPU went: a summary of the py-spy stacks that ``bench.e2e
--profile DIR`` and ``bench.notify --profile FILE`` record (py-spy's ``raw`` format: one
line per distinct stack, frames joined by ``;``, the sample count last).

    python -m bench.stacks DIR_OR_FILE... [--top 15] [--json]

For each file (each process): the share of samples by the package whose code was running
(the stack's last frame: ``sqlalchemy``, ``asyncio``, ``httpcore``, caseflow's own
``shared``/``services``; a socket write or an epoll wait is the kernel's work, shown apart,
as are worker threads waiting for work), and caseflow's functions by the share of samples
they were on the stack (inclusive). It reads files only; py-spy itself is in the ``dev``
extra.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_WHERE = re.compile(r"\(([^():]+)(?::\d+)?\)\s*$")
_LINE = re.compile(r":\d+\)$")
OWN = ("shared/", "services/", "bench/")
IDLE_THREAD = "_worker (concurrent/futures/thread.py"


def package_of(frame: str) -> str:
    """The package a frame's code belongs to: its path's first folder, the standard
    library's module for a top-level file, and the kernel for socket writes and waits."""
    match = _WHERE.search(frame)
    if match is None:
        return "(unknown)"
    path = match.group(1)
    if path.endswith("selector_events.py") and ".write" in frame:
        return "kernel: socket writes"
    if path == "selectors.py":
        return "kernel: epoll (waiting, mostly idle)"
    head = path.split("/", 1)[0]
    if "/" not in path or head.startswith("<"):
        return f"stdlib {head}"
    return head


def function_of(frame: str) -> str:
    """A frame without its line number: ``name (path)``."""
    return _LINE.sub(")", frame.strip())


@dataclass
class Profile:
    """One process's samples."""

    name: str
    samples: int = 0
    by_package: collections.Counter[str] = field(default_factory=collections.Counter)
    own_inclusive: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, frames: Sequence[str], count: int) -> None:
        self.samples += count
        if frames and frames[-1].startswith(IDLE_THREAD):
            self.by_package["(worker thread waiting)"] += count
        else:
            self.by_package[package_of(frames[-1]) if frames else "(no Python frame)"] += count
        for function in {function_of(f) for f in frames if any(f"({p}" in f for p in OWN)}:
            self.own_inclusive[function] += count

    def figures(self, top: int) -> dict[str, Any]:
        def shares(counter: collections.Counter[str]) -> dict[str, float]:
            return {k: round(100 * v / self.samples, 1) for k, v in counter.most_common(top)}

        return {
            "samples": self.samples,
            "by_package_percent": shares(self.by_package) if self.samples else {},
            "caseflow_inclusive_percent": shares(self.own_inclusive) if self.samples else {},
        }


def read(path: Path) -> Profile:
    """The samples of one raw py-spy file; a line that isn't ``stack count`` is refused."""
    profile = Profile(path.stem)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        stack, space, count = line.rpartition(" ")
        if not space or not count.isdigit():
            raise SystemExit(f"{path}:{number}: not a py-spy raw line (stack, space, count)")
        # An empty stack: py-spy caught the process outside Python code.
        profile.add(stack.split(";") if stack.strip() else [], int(count))
    return profile


def files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.txt")))
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"{path}: no such file or folder")
    if not found:
        raise SystemExit("no profiles found (py-spy raw files, *.txt in a folder)")
    return found


def describe(profiles: Sequence[Profile], top: int) -> None:
    for profile in profiles:
        figures = profile.figures(top)
        print(f"{profile.name}: {profile.samples} samples")
        print("  by package (the code running):")
        for name, share in figures["by_package_percent"].items():
            print(f"    {share:5.1f}%  {name}")
        print("  caseflow's functions (on the stack):")
        for name, share in figures["caseflow_inclusive_percent"].items():
            print(f"    {share:5.1f}%  {name}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stacks", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="raw py-spy files or folders")
    parser.add_argument("--top", type=int, default=15, help="rows per table")
    parser.add_argument("--json", action="store_true", help="figures as JSON, last line")
    args = parser.parse_args(argv)
    profiles = [read(path) for path in files(args.paths)]
    describe(profiles, args.top)
    if args.json:
        result = {
            "benchmark": "stacks",
            "profiles": {p.name: p.figures(args.top) for p in profiles},
        }
        print(json.dumps(result), file=sys.stdout)


if __name__ == "__main__":
    main()
