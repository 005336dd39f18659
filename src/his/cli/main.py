"""``his``: run and operate a hospital."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from his.cli.settings import OperatorSettings

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

T = TypeVar("T")

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="his — an event-driven Hospital Information System.",
)
dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list, show, replay, discard.")
events_app = typer.Typer(no_args_is_help=True, help="The event registry.")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
app.add_typer(audit_app, name="audit")
app.add_typer(dlq_app, name="dlq")
app.add_typer(events_app, name="events")
api_app = typer.Typer(no_args_is_help=True, help="The public API.")
app.add_typer(api_app, name="api")
bench_app = typer.Typer(
    help="Benchmarks, each against a raw baseline from the same run; without a sub-command, all of them."
)
app.add_typer(bench_app, name="bench")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@app.command()
def up() -> None:
    """Start the whole hospital: PostgreSQL, NATS, every service and the gateway."""
    from his.cli.services import start_forkserver
    from his.infra.forkserver import ForkServer, ForkServerError

    settings = OperatorSettings()
    refuse_bad_admin(settings)
    forks: ForkServer | None = None
    # First of all, once the settings are known to be usable: the fork server imports what the
    # services need while the supervisor imports itself.
    try:
        forks = start_forkserver(settings.data_path)
    except ForkServerError as exc:
        err.print(f"warning: {exc}; starting each service as its own interpreter")
    from his.cli.supervisor import up as run_up

    raise typer.Exit(run_up(settings, forks))


def refuse_bad_admin(settings: OperatorSettings) -> None:
    """Exit at once, before any server starts, if the first start could not create the administrator
    from HIS_ADMIN_EMAIL / HIS_ADMIN_PASSWORD (the password breaks the policy, say): identity
    says so (``python -m his.identity.admin check``)."""
    from his.cli.admin import AdminProgramError, refusal

    try:
        why = refusal(settings)
    except AdminProgramError as exc:
        err.print(f"error: {exc}. Nothing was started.")
        raise typer.Exit(1) from None
    if why is not None:
        err.print(
            f"error: cannot create the administrator from HIS_ADMIN_EMAIL / HIS_ADMIN_PASSWORD: {why}. "
            "Nothing was started; set another password (or unset HIS_ADMIN_PASSWORD to have one generated)."
        )
        raise typer.Exit(2)


@app.command()
def demo(
    patients: Annotated[int, typer.Option(min=1, max=5000, help="How many patients to register.")] = 300,
    clinics: Annotated[int, typer.Option(min=1, max=8, help="How many doctors (one clinic each).")] = 6,
    admissions: Annotated[
        int,
        typer.Option(
            min=0,
            max=500,
            help="How many patients to admit on the ward day, at most those not booked in a clinic (0: no ward day).",
        ),
    ] = 24,
    admin_password: Annotated[
        str | None, typer.Option(help="The administrator's password (default: HIS_ADMIN_PASSWORD).")
    ] = None,
) -> None:
    """Fill the running hospital through its API and play a day: staff, a week of shifts,
    patients, a day of bookings, a waitlist, check-ins, completions, cancellations; then a ward
    day: admissions, lab work, supplies, transfers, discharges and their invoices."""
    from zoneinfo import ZoneInfo

    from his.cli import demo as demo_mod
    from his.cli import state

    settings = OperatorSettings()
    st = state.read(settings.data_path)
    if st is None:
        err.print(f"error: no running hospital found in {settings.data_path} (start it with `his up`)")
        raise typer.Exit(1)
    password = admin_password or settings.admin_password
    if not password:
        password = typer.prompt(f"password of {settings.admin_email}", hide_input=True)
    try:
        summary = asyncio.run(
            demo_mod.run(
                st.gateway_url,
                settings.admin_email,
                password,
                patients=patients,
                clinics=clinics,
                admissions=admissions,
                zone=ZoneInfo(settings.timezone),
                console=err,
                maildir=settings.data_path / "mail" / "maildir",
            )
        )
    except demo_mod.DemoError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from None
    demo_mod.render(out, summary)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One machine-readable snapshot.")] = False,
    once: Annotated[bool, typer.Option("--once", help="One snapshot instead of the live view.")] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds the request rates and p95 of a single snapshot cover (0: lifetime p95).")
    ] = 1.0,
) -> None:
    """Live view of every service: health, req/s, p95, outbox backlog and age, consumer lag, DLQ depth.

    Refreshes every 2 seconds until Ctrl-C; ``--once`` or ``--json`` take one snapshot (and exit 1
    when the hospital is not running or not healthy).
    """
    from his.cli.ops import render_status, snapshot_once, watch

    settings = OperatorSettings()
    if not (as_json or once) and out.is_terminal:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch(settings, out))
        return
    snapshot = asyncio.run(snapshot_once(settings, max(interval, 0.0)))
    if as_json:
        out.print_json(json.dumps(snapshot))
    else:
        render_status(out, snapshot)
    if not snapshot.get("running") or not snapshot.get("healthy"):
        raise typer.Exit(1)


def _with_js(fn: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    from his.cli.ops import NotRunningError, with_jetstream

    try:
        return asyncio.run(with_jetstream(OperatorSettings(), fn))
    except NotRunningError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from None
    except (OSError, TimeoutError) as exc:
        err.print(f"error: cannot reach NATS: {str(exc) or 'no answer within 5s'}")
        raise typer.Exit(1) from None


@dlq_app.command("list")
def dlq_list(
    consumer: Annotated[str | None, typer.Option(help="Only this consumer's dead letters.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List dead letters, oldest first."""
    from his.cli.ops import dead_letters_view
    from his.kernel import dlq

    items = _with_js(lambda js: dlq.list_dead_letters(js, consumer=consumer))
    if as_json:
        out.print_json(json.dumps([d.as_dict() for d in items]))
        return
    out.print(dead_letters_view(items))


@dlq_app.command("show")
def dlq_show(dlq_id: int) -> None:
    """Show one dead letter with its original event."""
    from his.kernel import dlq

    d = _with_js(lambda js: dlq.get_dead_letter(js, dlq_id))
    if d is None:
        err.print(f"no dead letter {dlq_id}")
        raise typer.Exit(1)
    out.print_json(json.dumps(d.as_dict(with_data=True)))


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    consumer: Annotated[str | None, typer.Option(help="With --all: only this consumer.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replay even events older than the inboxes remember.")] = False,
) -> None:
    """Send dead letters back to their consumer (idempotent: the consumer's inbox drops repeats).

    An event older than HIS_INBOX_RETENTION_DAYS (less a day) is refused: its consumer may have
    forgotten applying it. Check it, then replay it with --force."""
    from datetime import timedelta

    from his.kernel import dlq

    remembered = None if force else timedelta(days=OperatorSettings().inbox_retention_days)
    refused = 0

    async def go(js: JetStreamContext) -> list[str]:
        nonlocal refused
        targets = list(ids or [])
        if all_:
            targets += [d.id for d in await dlq.list_dead_letters(js, consumer=consumer)]
        done = []
        for i in targets:
            try:
                dl = await dlq.replay(js, i, remembered=remembered)
            except dlq.ForgottenError as exc:
                refused += 1
                done.append(f"{i}: refused: {exc}")
                continue
            done.append(f"{i}: " + (f"replayed to {dl.target}" if dl else "not found"))
        return done

    if not ids and not all_:
        err.print("name dead letter ids, or use --all")
        raise typer.Exit(2)
    for line in _with_js(go):
        out.print(line)
    if refused:
        raise typer.Exit(1)


@dlq_app.command("discard")
def dlq_discard(ids: list[int]) -> None:
    """Remove dead letters without replaying them."""
    from his.kernel import dlq

    async def go(js: JetStreamContext) -> list[str]:
        return [f"{i}: " + ("discarded" if await dlq.discard(js, i) else "not found") for i in ids]

    for line in _with_js(go):
        out.print(line)


@events_app.command("catalogue")
def events_catalogue(output: Annotated[Path | None, typer.Option("-o", help="Write to this file.")] = None) -> None:
    """Print (or write) the event catalogue generated from the registry."""
    import his.events  # noqa: F401
    from his.cli.services import consumers_by_event
    from his.kernel.events import catalogue_markdown

    text = catalogue_markdown(consumers=consumers_by_event()) + "\n"
    if output:
        output.write_text(text)
    else:  # as it is: a console would wrap its lines at the terminal's width (80 when redirected)
        sys.stdout.write(text)


@api_app.command("reference")
def api_reference(output: Annotated[Path | None, typer.Option("-o", help="Write to this file.")] = None) -> None:
    """Print (or write) the API reference (docs/api.md): the gateway's OpenAPI document as Markdown,
    built from the services' routes without starting anything."""
    from his.cli.reference import markdown, public_document

    text = markdown(public_document())
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@api_app.command("routes")
def api_routes(output: Annotated[Path | None, typer.Option("-o", help="Write to this file.")] = None) -> None:
    """Print (or write) the gateway's route table (src/his/gateway/routes.json): the routes the
    services mark public, read from their own OpenAPI documents without starting anything."""
    from his.cli.reference import service_documents
    from his.gateway.routing import dumps, table

    text = dumps(table(service_documents()))
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


BenchQuick = Annotated[bool, typer.Option("--quick", help="A short run of every suite (a few minutes).")]
BenchOut = Annotated[Path, typer.Option("--out", help="Directory of the Markdown and JSON report.")]
BenchWorkdir = Annotated[Path | None, typer.Option(help="Where the temporary servers and hospital live.")]
BenchKeep = Annotated[bool, typer.Option("--keep", help="Keep their files (and logs).")]


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    quick: BenchQuick = False,
    out_dir: BenchOut = Path("bench/reports"),
    workdir: BenchWorkdir = None,
    keep: BenchKeep = False,
) -> None:
    """Every suite in one run (~10–15 min; --quick a few minutes), written to <out>/<timestamp>.md and .json."""
    if ctx.invoked_subcommand is None:
        bench_all(quick, out_dir, workdir, keep)


@bench_app.command("all")
def bench_all(
    quick: BenchQuick = False,
    out_dir: BenchOut = Path("bench/reports"),
    workdir: BenchWorkdir = None,
    keep: BenchKeep = False,
) -> None:
    """Every suite in one run, written as a Markdown and a JSON report (the same as `his bench`)."""
    from his.benchmarks.full import FullConfig
    from his.benchmarks.full import main as run_all

    cfg = FullConfig.quick() if quick else FullConfig()
    raise typer.Exit(run_all(cfg, out_dir=out_dir, out=out, err=err, workdir=workdir, keep=keep))


@bench_app.command("backbone")
def bench_backbone(
    quick: Annotated[bool, typer.Option("--quick", help="A short smoke run (~30 s).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    workdir: Annotated[Path | None, typer.Option(help="Where the temporary servers live.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the servers' files (and logs).")] = False,
) -> None:
    """Outbox relay, consumer and write paths on private PostgreSQL + NATS (see docs/performance.md)."""
    from his.benchmarks.backbone import main as run_backbone

    raise typer.Exit(run_backbone(quick=quick, as_json=as_json, out=out, err=err, workdir=workdir, keep=keep))


@bench_app.command("booking")
def bench_booking(  # noqa: PLR0917 - one parameter per command-line option
    quick: Annotated[bool, typer.Option("--quick", help="A short smoke run (~1 min).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    rate: Annotated[
        float | None, typer.Option(min=1, help="Constant booking rate of the latency part, per second (default 100).")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(min=0.5, help="Seconds of load per target and per rate (default 10; quick 3).")
    ] = None,
    users: Annotated[int, typer.Option(min=1, max=1000, help="Concurrent users of the throughput part.")] = 50,
    workdir: Annotated[Path | None, typer.Option(help="Where the private hospital lives.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the hospital's data directory and logs.")] = False,
) -> None:
    """Booking through the gateway against a bare ASGI + one INSERT endpoint, on a private `his up`
    (see docs/performance.md)."""
    import dataclasses

    from his.benchmarks.booking import BookingConfig
    from his.benchmarks.booking import main as run_booking

    cfg = BookingConfig.quick() if quick else BookingConfig()
    cfg = dataclasses.replace(
        cfg,
        users=users,
        rate=cfg.rate if rate is None else rate,
        seconds=cfg.seconds if seconds is None else seconds,
    )
    raise typer.Exit(run_booking(cfg, as_json=as_json, out=out, err=err, workdir=workdir, keep=keep))


@bench_app.command("reads")
def bench_reads(
    quick: Annotated[bool, typer.Option("--quick", help="A short smoke run (~1 min).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    workdir: Annotated[Path | None, typer.Option(help="Where the private hospital lives.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the hospital's data directory and logs.")] = False,
) -> None:
    """A patient read through the gateway against a bare ASGI + one SELECT endpoint, on a private
    `his up` (see docs/performance.md)."""
    from his.benchmarks.reads import ReadConfig
    from his.benchmarks.reads import main as run_reads

    cfg = ReadConfig.quick() if quick else ReadConfig()
    raise typer.Exit(run_reads(cfg, as_json=as_json, out=out, err=err, workdir=workdir, keep=keep))


@bench_app.command("console")
def bench_console(
    quick: Annotated[bool, typer.Option("--quick", help="A short smoke run (~2 min).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    seconds: Annotated[
        float | None, typer.Option(min=0.5, help="Seconds of load per target and round (default 10; quick 4).")
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="Where the private hospital lives.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the hospital's data directory and logs.")] = False,
) -> None:
    """The console's day list (a doctor's 60 patients, a day of 300) against the same data as JSON
    from the API, and what its pages weigh, on a private `his up` (see docs/performance.md)."""
    import dataclasses

    from his.benchmarks.console import ConsoleConfig
    from his.benchmarks.console import main as run_console

    cfg = ConsoleConfig.quick() if quick else ConsoleConfig()
    cfg = dataclasses.replace(cfg, seconds=cfg.seconds if seconds is None else seconds)
    raise typer.Exit(run_console(cfg, as_json=as_json, out=out, err=err, workdir=workdir, keep=keep))


@app.command()
def soak(  # noqa: PLR0917 - one parameter per command-line option
    minutes: Annotated[
        float, typer.Option(min=0.5, help="Minutes of load (faults land during the first 90 %).")
    ] = 30.0,
    faults: Annotated[
        str, typer.Option(help="Comma-separated faults: kill, nats, postgres, slow (empty: none).")
    ] = "kill,nats,postgres,slow",
    seed: Annotated[int, typer.Option(help="Seed of the traffic and of when and where the faults land.")] = 0,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Concurrent patient journeys.")] = 4,
    fault_every: Annotated[
        float | None, typer.Option(min=2, help="Mean seconds between faults (default: two rounds of every kind).")
    ] = None,
    slow_seconds: Annotated[float, typer.Option(min=0.5, help="How long a 'slow' fault freezes a service.")] = 6.0,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Report directory (default ./soak-<timestamp>/).")
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="Where the private hospital lives.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the hospital's data directory and logs.")] = False,
) -> None:
    """Play a hospital day on a loop on a private `his up`, with faults injected at random; report
    lost and duplicated effects (exit 1 unless both are 0 and every fault landed), p95 per
    operation, memory per process, outbox age and consumer lag (Markdown with plots)."""
    from datetime import UTC, datetime

    from his.reliability.soak import FAULTS, SoakConfig
    from his.reliability.soak import main as run_soak

    chosen = tuple(f.strip() for f in faults.split(",") if f.strip())
    unknown = sorted(set(chosen) - set(FAULTS))
    if unknown:
        err.print(f"error: unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
        raise typer.Exit(2)
    cfg = SoakConfig(
        minutes, seed=seed, faults=chosen, workers=workers, fault_every=fault_every, slow_seconds=slow_seconds
    )
    target = out_dir or Path(f"soak-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    raise typer.Exit(run_soak(cfg, out_dir=target, out=out, err=err, workdir=workdir, keep=keep))


def _admin_dsn() -> str:
    from his.cli import state

    settings = OperatorSettings()
    st = state.read(settings.data_path)
    dsn = settings.database_url or (st.admin_dsn if st is not None else None)
    if not dsn:
        err.print(f"error: no running hospital found in {settings.data_path} and HIS_DATABASE_URL is not set")
        raise typer.Exit(1)
    return str(dsn)


@audit_app.command("verify")
def audit_verify(
    grace: Annotated[
        float, typer.Option(help="Seconds to wait for access records still on their way before naming them missing.")
    ] = 10.0,
) -> None:
    """Check the whole audit chain, its checkpoints and every producer's numbered access records;
    name the first bad record and each producer's missing numbers."""
    from his.cli import state
    from his.cli.audit import verify_all

    settings = OperatorSettings()
    st = state.read(settings.data_path)
    nats_url = (st.nats_url if st is not None else None) or settings.nats_url
    identity = state.operator_identity(settings.data_path)
    verdict, note = asyncio.run(verify_all(_admin_dsn(), settings.data_path, nats_url, identity, grace=grace))
    if note:
        err.print(f"[yellow]warning:[/] {note}; the producers' own counters were compared")
    if verdict.ok:
        out.print(f"audit chain intact: {verdict.checked} records")
        return
    err.print(f"audit chain BROKEN: {verdict.problem} (verified {verdict.checked} records before it)")
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    every: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Go on writing one every this many seconds until stopped (SIGTERM or Ctrl-C): a cluster's "
            "witness, as his up is its own hospital's.",
        ),
    ] = None,
) -> None:
    """Record the current head of the chain outside the database (HMAC-authenticated, chained to
    the checkpoint before)."""
    from his.cli.audit import NoCheckpointKeyError, witness, write_checkpoint

    data = OperatorSettings().data_path
    if every is None:
        cp = asyncio.run(write_checkpoint(_admin_dsn(), data))
        out.print(f"checkpoint at record {cp.seq}: {cp.hash.hex()[:16]}…")
        return

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await witness(dsn, data, every, stop)

    dsn = _admin_dsn()
    out.print(f"witnessing the audit chain every {every:g}s into {data / 'audit' / 'checkpoints.jsonl'}")
    try:
        failed = asyncio.run(run())
    except NoCheckpointKeyError as exc:
        err.print(f"error: {exc}; it comes from the hospital's secrets (the his-audit-checkpoint-key Secret)")
        raise typer.Exit(1) from None
    out.print(f"stopped ({failed} turns failed)")


@app.command()
def migrate(
    passwords_dir: Annotated[
        Path, typer.Option("--passwords-dir", help="One file per service: its database role's password.")
    ] = Path("/var/run/secrets/his/db"),
) -> None:
    """Provision and migrate every schema and declare the streams, against HIS_DATABASE_URL and
    HIS_NATS_URL (a cluster's pre-deploy step; `his up` does this itself)."""
    from his.cli.migrate import MigrateError, run_migrate

    try:
        for line in asyncio.run(run_migrate(OperatorSettings(), passwords_dir)):
            out.print(line)
    except MigrateError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from None


def main() -> None:
    from his.kernel.observability import quiet_tls_eof

    quiet_tls_eof()
    app()
