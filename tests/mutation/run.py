"""Run the mutation check: seed each listed bug into a copy of the repository, run its tests there.

    python -m tests.mutation.run [--list] [--only ID[,ID]] [--report PATH] [--jobs N] [--baseline]

For each mutant (``tests/mutation/mutants/*.toml``, see ``tests.mutation.catalogue``):

1. copy the repository's files as they are in the working tree (tracked files with their
   uncommitted changes, and new files git does not ignore) into a temporary directory;
2. make the mutant's change(s) in the copy's real file(s); a ``find`` that does not occur exactly
   once is a stale mutant: the run stops before it starts;
3. run only the mutant's tests with pytest from the copy, with this interpreter (the project's
   ``.venv``) and ``PYTHONPATH=<copy>/src:<copy>`` ahead of the editable install, so the mutated
   code is what the tests, and every process they start, import (checked: ``his.__file__`` must be
   inside the copy);
4. KILLED when pytest reports failed tests (exit code 1); SURVIVED when they pass (0); any other
   exit (collection or usage error, interrupted, no tests ran, timeout) is an ERROR, not a kill.

It prints a line per mutant, writes a Markdown report (``mutants-report.md`` by default) and exits
non-zero if any mutant survived or errored. ``--baseline`` first runs each mutant's tests on the
unmutated copy: a test that fails there proves nothing when it fails on the mutant.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.mutation.catalogue import REPO, CatalogueError, Mutant, load, problems

KILLED, SURVIVED, ERROR = "killed", "SURVIVED", "error"
#: ``-rfE`` summary lines: ``FAILED path::test[param id] - AssertionError: assert 2 == 1`` (a
#: parameter id may hold spaces; the message is cut to the terminal's width).
FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (.+?::.+?)(?: - .*)?$", re.M)
REASON_LINE = re.compile(r"^(?:FAILED|ERROR) .+?::.+? - (.*)$", re.M)
EXIT_MEANING = {2: "interrupted or failed to collect", 3: "internal error", 4: "usage error", 5: "no tests ran"}


@dataclass
class Outcome:
    mutant: Mutant
    result: str
    seconds: float
    failed: list[str] = field(default_factory=list)
    note: str = ""
    how: str = ""  # the first failure's message, as pytest's summary gives it
    log: str = ""


def working_tree_files(root: Path) -> list[str]:
    """Tracked files present in the working tree, and untracked ones git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    names = sorted({n for n in out.decode().split("\0") if n})
    return [n for n in names if (root / n).is_file() or (root / n).is_symlink()]


def copy_tree(root: Path, dest: Path, files: Sequence[str]) -> None:
    for name in files:
        src, dst = root / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    # The embedded PostgreSQL runs as a system user when the tests run as root: let it in.
    dest.chmod(0o755)


def child_env(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), str(copy)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing the copy compiles is kept, nothing stale is read
    env["COLUMNS"] = "300"  # pytest cuts a summary line's message to the width, or drops it
    return env


def check_imports_copy(copy: Path, env: dict[str, str]) -> None:
    """Refuse to run if ``his`` would be imported from anywhere but the copy."""
    where = subprocess.run(
        [sys.executable, "-c", "import his; print(his.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"error: under the mutation environment `his` is imported from {where}, not from {copy}")


def run_pytest(copy: Path, tests: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """Run ``tests`` from ``copy``; returns pytest's exit code (None on timeout) and its output."""
    env = child_env(copy)
    check_imports_copy(copy, env)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", "--no-header", *tests]
    with subprocess.Popen(
        cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # pytest and every server it started, by their group
            out, _ = proc.communicate()
            return None, out
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): leave no test servers behind
            os.killpg(proc.pid, signal.SIGKILL)
            raise


def judge(m: Mutant, code: int | None, out: str, seconds: float) -> Outcome:
    failed = FAILED_LINE.findall(out)
    if code is None:
        return Outcome(m, ERROR, seconds, failed, "timed out", out)
    if code == 1 and failed:
        how = next(iter(REASON_LINE.findall(out)), "")
        return Outcome(m, KILLED, seconds, failed, how=how[:300], log=out)
    if code == 0:
        return Outcome(m, SURVIVED, seconds, [], "its tests passed", out)
    return Outcome(m, ERROR, seconds, failed, f"pytest exit {code}: {EXIT_MEANING.get(code, 'unexpected')}", out)


def run_one(m: Mutant, files: Sequence[str], timeout: float, baseline: bool) -> Outcome:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"his-mutant-{m.id}-") as tmp:
        copy = Path(tmp)
        copy_tree(REPO, copy, files)
        if baseline:
            code, out = run_pytest(copy, m.tests, timeout)
            if code != 0:
                return Outcome(
                    m,
                    ERROR,
                    time.monotonic() - start,
                    FAILED_LINE.findall(out),
                    f"its tests do not pass without the mutant (exit {code})",
                    out,
                )
        for name, text in m.mutated(copy).items():
            (copy / name).write_text(text, encoding="utf-8")
        code, out = run_pytest(copy, m.tests, timeout)
        return judge(m, code, out, time.monotonic() - start)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report(outcomes: Sequence[Outcome], total: float) -> str:
    counts = {r: sum(o.result == r for o in outcomes) for r in (KILLED, SURVIVED, ERROR)}
    lines = [
        "# Mutation check",
        "",
        f"{len(outcomes)} mutants: {counts[KILLED]} killed, {counts[SURVIVED]} survived, {counts[ERROR]} errors; "
        f"{total:.0f} s in all.",
        "",
        "| id | file | what it breaks | result | failed tests | how the first failed | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        files = ", ".join(f"`{f}`" for f in o.mutant.files)
        failed = "<br>".join(f"`{t}`" for t in o.failed) or "—"
        result = o.result if not o.note else f"{o.result} ({o.note})"
        quoted = cell(o.how).replace("`", "'")
        how = f"`{quoted}`" if o.how else "—"
        lines.append(
            f"| `{o.mutant.id}` | {files} | {cell(o.mutant.breaks)} | {cell(result)} | {failed} | {how} | "
            f"{o.seconds:.1f} s |"
        )
    bad = [o for o in outcomes if o.result != KILLED]
    for o in bad:
        tail = "\n".join(o.log.rstrip().splitlines()[-40:])
        lines += [
            "",
            f"## `{o.mutant.id}`: {o.result}",
            "",
            f"Tests: {', '.join(o.mutant.tests)}",
            "",
            "```",
            tail,
            "```",
        ]
    return "\n".join(lines) + "\n"


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make mutants", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--only", default="", help="comma-separated mutant ids to run")
    ap.add_argument("--report", type=Path, default=Path("mutants-report.md"), help="the Markdown report to write")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1: the suite starts servers)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a mutant's tests may take")
    ap.add_argument("--baseline", action="store_true", help="first check that each mutant's tests pass without it")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)

    try:
        mutants = load()
    except CatalogueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {m.id for m in mutants})
        if unknown:
            print(f"error: no mutant with id {', '.join(unknown)}", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.id in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.id:40} {m.file}\n{'':40} {m.breaks}\n{'':40} tests: {' '.join(m.tests)}")
        return 0
    stale = [p for m in mutants for p in problems(m)]
    if stale:
        print("error: mutants that do not fit the code (fix them before running):", file=sys.stderr)
        for p in stale:
            print(f"  {p}", file=sys.stderr)
        return 2

    files = working_tree_files(REPO)
    lock, done = threading.Lock(), [0]
    start = time.monotonic()

    def one(m: Mutant) -> Outcome:
        with lock:
            print(f"[start] {m.id}: {', '.join(m.tests)}", flush=True)
        o = run_one(m, files, args.timeout, args.baseline)
        with lock:
            done[0] += 1
            named = ", ".join(o.failed[:3]) + (f" and {len(o.failed) - 3} more" if len(o.failed) > 3 else "")
            by = f" by {named}" if o.failed and o.result == KILLED else ""
            note = f" ({o.note})" if o.note else ""
            print(f"[{done[0]}/{len(mutants)}] {m.id}: {o.result}{note}{by} in {o.seconds:.1f} s", flush=True)
        return o

    if args.jobs <= 1:  # in the main thread, so that an interruption stops the running tests
        outcomes = [one(m) for m in mutants]
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            outcomes = list(pool.map(one, mutants))
    total = time.monotonic() - start
    args.report.write_text(report(outcomes, total), encoding="utf-8")
    bad = [o for o in outcomes if o.result != KILLED]
    print(f"{len(outcomes) - len(bad)} of {len(outcomes)} mutants killed in {total:.0f} s; report: {args.report}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
