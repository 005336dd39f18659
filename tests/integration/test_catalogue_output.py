"""`his events catalogue > file` writes the Markdown as it is: no wrapping at a terminal's width."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HIS = Path(sys.executable).parent / "his"
COMMITTED = Path(__file__).parents[2] / "docs" / "events.md"


def test_the_redirected_catalogue_is_the_committed_markdown(tmp_path: Path) -> None:
    target = tmp_path / "events.md"
    with target.open("w") as stdout:  # a file, as `> file` gives it: not a terminal
        subprocess.run(
            [HIS, "events", "catalogue"],
            stdout=stdout,
            check=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"},
        )
    written = target.read_text()
    assert any(len(line) > 80 for line in written.splitlines()), "the test needs lines longer than a terminal"
    assert written == COMMITTED.read_text()
