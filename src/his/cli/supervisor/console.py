"""What ``his up`` prints: its own lines, and each child's lines prefixed with its name in a colour
of its own."""

from __future__ import annotations

from rich.console import Console

from his.infra.procs import RotatingLog
from his.kernel.observability import render_json_line

console = Console(stderr=True, highlight=False, soft_wrap=True)
COLOURS = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_yellow",
    "bright_blue",
    "white",
)


def echo(name: str, line: str) -> None:
    colour = COLOURS[sum(map(ord, name)) % len(COLOURS)]
    console.print(f"[{colour}]{name:>13}[/] | {line}", markup=True, highlight=False, soft_wrap=True, emoji=False)


class ChildOutput(RotatingLog):
    """Where a service's output goes: its lines as they are (JSON log lines) appended to
    ``<data dir>/logs/<name>.log`` (rotated, see ``RotatingLog``), and compactly rendered to the
    console."""

    def __call__(self, name: str, line: str) -> None:
        self.write(line)
        echo(name, render_json_line(line))


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
