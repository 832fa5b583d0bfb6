#!/usr/bin/env python3
"""Hent's command line: run the bus, check a configuration, validate and inspect files.

    python run_bus.py demo                       the whole flow on an embedded default
    python run_bus.py run -c config/hent.yaml    serve until SIGTERM / SIGINT
    python run_bus.py check -c FILE [--online]   every configuration error at once (exit 2), and warnings (exit 0);
                                                 --online: reach each server
    python run_bus.py validate FILE...           an ACTES XML or archive against the schema
    python run_bus.py inspect FILE               a ministry message, parsed, as JSON
    python run_bus.py status -c FILE             documents and deliveries (--awaiting-answer: open letters)
    python run_bus.py journal verify -c FILE     the journal's hash chain is intact
    python run_bus.py classification SIREN -c FILE   the classification acts are checked against
    python run_bus.py cancel IDACTE -c FILE      ask for the cancellation of an acknowledged act
    python run_bus.py failed -c FILE             the dead letters: FAILED documents and deliveries, with why
    python run_bus.py replay ID... -c FILE       put dead letters back into the flow (--route R, --all-failed)
    python run_bus.py purge --older-than 90d -c FILE   spool blobs and done/ files of documents done with
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bus.logging_setup import FORMATS, setup_logging

if TYPE_CHECKING:
    from bus.errors import Problem

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _load(path: str) -> Any:
    from bus.config import load_config

    return load_config(Path(path))


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from bus.insecure import file_mode_warnings
    from bus.processes import Supervisor, as_worker_process, worker_command
    from bus.runtime import Runtime
    from routes.pipeline import Pipeline

    config = _load(args.config)
    for warning in file_mode_warnings(config):  # each endpoint says verify_tls: false itself, as it is built
        logging.getLogger("bus.insecure").warning("%s", warning)
    if args.process:  # a worker process that a run with bus.processes > 1 started
        as_worker_process(config, args.process)
    runtime = Runtime(config, Pipeline.for_runtime, role=args.role)
    supervisor = None
    if config.bus.processes > 1:
        supervisor = Supervisor(
            config.bus.processes - 1,
            lambda index: worker_command(Path(args.config), index, global_args=_global_args(args)),
            shutdown_timeout=float(config.bus.shutdown_timeout),
        )
        supervisor.start()
    try:
        runtime.run()
    finally:
        if supervisor is not None:
            supervisor.stop()
    return EXIT_OK


def _global_args(args: argparse.Namespace) -> list[str]:
    """The options before the command, for a worker process to log as its parent does."""
    found = ["--log-format", args.log_format]
    return [*found, "--log-level", args.log_level] if args.log_level else found


def cmd_check(args: argparse.Namespace) -> int:
    from routes.check import check_report

    report = check_report(Path(args.config))
    for problem in report.problems:
        print(problem, file=sys.stderr)
    for warning in report.warnings:  # the bus would run: they do not change the exit code
        print(f"warning: {warning}", file=sys.stderr)
    warned = f", {len(report.warnings)} warning(s)" if report.warnings else ""
    if report.problems:
        print(f"{args.config}: {len(report.problems)} error(s){warned}", file=sys.stderr)
        return EXIT_CONFIG
    print(report.summary)
    if report.warnings:
        print(f"{args.config}: {len(report.warnings)} warning(s)", file=sys.stderr)
    if not args.online:
        return EXIT_OK
    from bus.secrets import redact
    from routes.check import probe_connectors

    status = EXIT_OK
    for name, ok, detail in probe_connectors(Path(args.config)):
        print(f"connector {name}: {'OK' if ok else 'FAILED'} — {redact(detail)}")
        status = status if ok else EXIT_FAILED
    return status


def cmd_validate(args: argparse.Namespace) -> int:
    from transformers.actes_validate import default_validator

    validator = default_validator()
    status = EXIT_OK
    for name in args.files:
        problems = validator.validate_file(Path(name))
        for problem in problems:
            print(_located(problem, name))
        if problems:
            status = EXIT_FAILED
        else:
            print(f"{name}: valid")
    return status


def _located(problem: Problem, name: str) -> str:
    """The problem as a line that starts with the file as given: ``out/x.tar.gz: member:5: ...``."""
    if problem.file in (None, Path(name).name):  # the archive itself, or a standalone message
        return str(replace(problem, file=name))
    return f"{name}: {problem}"  # a member of the archive


def cmd_inspect(args: argparse.Namespace) -> int:
    from transformers.actes_in import parse_message

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    message = parse_message(data, path.name)
    print(json.dumps(message.to_dict(), indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from bus.ledger import Ledger

    config = _load(args.config)
    ledger = Ledger(config.bus.ledger)
    if args.awaiting_answer:
        return _awaiting_answer(ledger, args)
    try:
        recorded = {c["endpoint"]: c for c in ledger.circuits()}
        endpoints = sorted({name for route in config.routes for name in route.to} | set(recorded))
        circuits = [recorded.get(name) or {"endpoint": name, "state": "closed", "failures": 0, "actor": None,
                                           "updated_at": None} for name in endpoints]
        if args.endpoints:
            for circuit in circuits:
                seen = circuit["updated_at"]
                entry = {**circuit, "updated_at": seen.isoformat() if seen else None}
                print(json.dumps(entry, ensure_ascii=False) if args.json else
                      f"{entry['endpoint']:<16} circuit {entry['state']:<9} {entry['failures']} failures in a row"
                      + (f" (seen by {entry['actor']} at {entry['updated_at']})" if seen else " (never opened)"))
            return EXIT_OK
        rows: list[dict[str, Any]] = []
        for doc in ledger.documents(state=args.state, route=args.route, siren=args.siren):
            deliveries = ledger.deliveries_of(doc.id)
            rows.append(
                {
                    "document": doc.id,
                    "source": doc.source,
                    "bundle": doc.bundle,
                    "state": str(doc.state),
                    "route": doc.route,
                    "siren": doc.siren,
                    "id_acte": doc.id_acte,
                    "reason": doc.reason,
                    "deliveries": [
                        {"endpoint": d.endpoint, "state": str(d.state), "archive": d.artifact_name,
                         "reason": d.reason}
                        for d in deliveries
                    ],
                }
            )
    finally:
        ledger.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return EXIT_OK
    for circuit in circuits:
        if circuit["state"] != "closed":
            print(f"endpoint {circuit['endpoint']}: circuit {circuit['state']} after {circuit['failures']} failures "
                  f"in a row (since {circuit['updated_at']:%Y-%m-%d %H:%M:%S})")
    for row in rows:
        print(f"{row['document']}  {row['state']:<9} {row['source']}/{row['bundle']}  {row['id_acte'] or ''}")
        for d in row["deliveries"]:
            print(f"    → {d['endpoint']:<16} {d['state']:<12} {d['archive'] or ''}")
        if row["reason"]:
            for line in row["reason"].splitlines():
                print(f"    ! {line}")
    print(f"{len(rows)} document(s)")
    return EXIT_OK


def _awaiting_answer(ledger: Any, args: argparse.Namespace) -> int:
    """The préfecture's letters nobody answered yet, oldest first."""
    from datetime import UTC, datetime

    from bus.answers import ANSWERS, open_letters

    try:
        letters = [letter for letter in open_letters(ledger) if not args.siren or letter["siren"] == args.siren]
    finally:
        ledger.close()
    now = datetime.now(UTC)
    for letter in letters:
        days = int((now - letter["received_at"]).total_seconds() // 86400)
        row = {"id_acte": letter["id_acte"], "code": letter["code"], "letter": letter["name"],
               "received_at": letter["received_at"].isoformat(), "days": days, "siren": letter["siren"],
               "source": letter["source"], "bundle": letter["bundle"], "answers": list(ANSWERS[letter["code"]])}
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(f"{letter['id_acte']}  {letter['code']}  received {letter['received_at']:%Y-%m-%d} ({days} days)  "
                  f"{letter['source']}/{letter['bundle']}  answer with {' or '.join(ANSWERS[letter['code']])}")
    if not args.json:
        print(f"{len(letters)} letter(s) awaiting an answer")
    return EXIT_OK


def cmd_journal_verify(args: argparse.Namespace) -> int:
    from bus.ledger import Ledger

    config = _load(args.config)
    ledger = Ledger(config.bus.ledger)
    try:
        problems = ledger.verify_journal()
    finally:
        ledger.close()
    for problem in problems:
        print(problem)
    if problems:
        print(f"journal: {len(problems)} problem(s): it was altered", file=sys.stderr)
        return EXIT_FAILED
    print("journal: intact")
    return EXIT_OK


def _runtime(config_path: str) -> Any:
    from bus.runtime import Runtime
    from routes.pipeline import Pipeline

    return Runtime(_load(config_path), Pipeline.for_runtime, serve_http=False)


def cmd_classification(args: argparse.Namespace) -> int:
    from transformers.classification import Classification

    runtime = _runtime(args.config)
    try:
        if args.refresh:
            for name in runtime.endpoints:
                runtime.answers.refresh_classifications(name)
        kept = runtime.ledger.classification(args.siren)
        if kept is not None:
            with runtime.spool.open(kept["sha256"]) as handle:
                classification = Classification.from_bytes(handle.read(), name=kept["name"])
            origin = f"received from the platform as {kept['name']} on {kept['received_at']:%Y-%m-%d %H:%M}"
        else:
            classification = runtime.processor.classification(args.siren)
            origin = "the configured file" if classification is not None else ""
    finally:
        runtime.shutdown()
    if classification is None:
        print(f"{args.siren}: no classification (configure one, or ask the platform with --refresh)")
        return EXIT_FAILED
    print(f"{args.siren}: classification of {classification.date}, {origin}")
    for code, nature in sorted(classification.natures.items()):
        print(f"  nature {code} {nature.abbrev} {nature.libelle}: {', '.join(sorted(nature.type_codes))}")
    for code, matiere in sorted(classification.matieres.items()):
        children = ", ".join(f"{code}.{sub}" for sub in sorted(matiere.children))
        print(f"  matière {code} {matiere.libelle}" + (f": {children}" if children else ""))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    from bus.connector import AnsweringEndpoint

    runtime = _runtime(args.config)
    try:
        delivery = runtime.ledger.find_delivery(id_acte=args.id_acte)
        if delivery is None or delivery.state != "ACKNOWLEDGED" or not delivery.remote_id:
            state = f"it is {delivery.state}" if delivery is not None else "no delivery has that IDActe"
            print(f"{args.id_acte}: cannot be cancelled: {state} (only an acknowledged act can)", file=sys.stderr)
            return EXIT_FAILED
        endpoint = opened = runtime.acting_for(delivery)
        if not isinstance(endpoint, AnsweringEndpoint):
            print(f"{args.id_acte}: endpoint {delivery.endpoint!r} cannot cancel an act", file=sys.stderr)
            return EXIT_FAILED
        answering: AnsweringEndpoint = endpoint
        opened.connect()
        try:
            status = answering.cancel(delivery.remote_id, args.id_acte)
        finally:
            opened.close()
        runtime.ledger.record("delivery", delivery.id, actor="cli",
                              reason=f"cancellation (6-1) sent: {status.state} {status.detail}".rstrip())
    finally:
        runtime.shutdown()
    print(f"{args.id_acte}: cancellation sent ({status.state}); the ARAnnulation (6-2) will be recorded "
          "and returned to the software when the platform sends it")
    return EXIT_OK


def _routes_sources(config: Any, route: str | None) -> list[str]:
    """The sources ``route`` takes from (a document that failed before routing is of them)."""
    return [name for r in config.routes if r.name == route for name in r.from_]


def cmd_failed(args: argparse.Namespace) -> int:
    from bus.ledger import Ledger
    from bus.ledger_ops import dead_letters

    config = _load(args.config)
    ledger = Ledger(config.bus.ledger)
    try:
        letters = dead_letters(ledger, route=args.route, route_sources=_routes_sources(config, args.route),
                               source=args.source, since=args.since)
    finally:
        ledger.close()
    for letter in letters:
        if args.json:
            print(json.dumps(letter.to_dict(), ensure_ascii=False))
            continue
        to = f" → {letter.endpoint}" if letter.endpoint else ""
        attempts = f"{letter.failures} attempt{'' if letter.failures == 1 else 's'}"
        print(f"{letter.id}  {letter.kind:<8} {letter.document.source}/{letter.document.bundle}  "
              f"route {letter.route or '-'}{to}  {letter.when:%Y-%m-%d %H:%M:%S} UTC  {attempts}")
        for line in letter.reason.splitlines():
            print(f"    ! {line}")
    if not args.json:
        print(f"{len(letters)} dead letter(s)" + ("; after the fix: run_bus.py replay ID -c FILE" if letters else ""))
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from bus.ledger import Ledger, StaleState
    from bus.ledger_ops import apply_replay, dead_letters, find_replays, replays_of
    from bus.progress import Progress
    from bus.spool import Spool

    if sum((bool(args.ids), args.route is not None, args.all_failed)) != 1:
        print("replay: give the IDs to replay, or --route R, or --all-failed (one of them)", file=sys.stderr)
        return EXIT_CONFIG
    config = _load(args.config)
    ledger = Ledger(config.bus.ledger, actor=args.by)
    spool = Spool(config.bus.spool)
    status = EXIT_OK
    done = []
    try:
        if args.ids:
            replays, refused = find_replays(ledger, args.ids, spool=spool)
        else:
            letters = dead_letters(ledger, route=args.route, route_sources=_routes_sources(config, args.route))
            replays, refused = replays_of(letters, spool=spool)
        for problem in refused:
            print(f"not replayed: {problem}", file=sys.stderr)
            status = EXIT_FAILED
        with Progress("would replay" if args.dry_run else "replayed", total=len(replays)) as progress:
            for number, replay in enumerate(replays):
                progress.update(number)
                if args.dry_run:
                    print(f"would replay {replay.describe()}")
                    continue
                try:
                    done.append(apply_replay(ledger, replay, actor=args.by, note=args.reason))
                except StaleState as exc:
                    print(f"not replayed: {exc}", file=sys.stderr)
                    status = EXIT_FAILED
                    continue
                print(f"replayed {replay.describe()}")
    finally:
        ledger.close()
    if done:
        _reply_replayed(config, done, args.by)
        print(f"{len(done)} replayed, journaled as {args.by}; a running bus takes them at its next sweep once "
              f"{config.bus.lease:g} s (bus.lease) have passed, else when it starts")
    elif not replays and not refused:
        print("nothing to replay: no dead letter" + (f" of route {args.route}" if args.route else ""))
    return status


def _reply_replayed(config: Any, done: list[Any], actor: str) -> None:
    """A reply to each source saying its document was put back.

    The broker is not told: a bus that is not running would find the message beside its own
    re-publication at start, and two messages for one delivery in one worker may both send it.
    """
    from bus import registry
    from bus.connector import InboundContext
    from bus.errors import HentError
    from bus.progress import Progress
    from bus.runtime import reply_summary
    from bus.secrets import redact

    by_source: dict[str, list[Any]] = {}
    for replay in done:
        by_source.setdefault(replay.document.source, []).append(replay)
    with Progress("replies written", total=len(done)) as progress:
        for source, replays in sorted(by_source.items()):
            try:
                cfg = config.connector_config(source, "inbound")
            except KeyError:
                print(f"source {source}: no longer configured: no reply written")
                continue
            connector = registry.connector_class(cfg.type, "inbound")(source, cfg, InboundContext())
            try:
                for replay in replays:
                    what = ("prepared again" if replay.delivery is None else
                            f"sent again to {replay.delivery.endpoint} as it was built")
                    note = f"put back into the flow by {actor} after its failure: it will be {what}"
                    connector.reply(replay.document.bundle, None, None,
                                    reply_summary(replay.document, replay.delivery, note=note))
                    progress.advance()
            except HentError as exc:
                print(f"source {source}: the reply saying so could not be written: {redact(_one_line(str(exc)))}")
            finally:
                connector.close()


def cmd_purge(args: argparse.Namespace) -> int:
    import time
    from datetime import UTC, datetime, timedelta

    from bus.ledger import Ledger
    from bus.ledger_ops import KEPT_REASONS, plan_purge, purge_folder, purge_spool
    from bus.progress import Progress
    from bus.spool import Spool

    config = _load(args.config)
    ledger = Ledger(config.bus.ledger)
    spool = Spool(config.bus.spool)
    cutoff = datetime.now(UTC) - timedelta(seconds=args.older_than)
    would = "would remove" if args.dry_run else "removed"
    try:
        with Progress("purge: reading the ledger") as progress:
            progress.update()
            plan = plan_purge(ledger, cutoff, spool)
        with Progress("purge: spool blobs") as progress:
            purged = purge_spool(ledger, spool, plan, dry_run=args.dry_run, progress=progress.count)
    finally:
        ledger.close()
    orphans = {sha: size for sha, size in purged.removed.items() if sha in plan.orphans}
    named_count, named_size = len(purged.removed) - len(orphans), purged.size - sum(orphans.values())
    print(f"spool: {would} {named_count} blob(s), {_bytes(named_size)}, of {len(plan.documents)} document(s) "
          f"done with before {cutoff:%Y-%m-%d %H:%M} UTC")
    if orphans:
        print(f"spool: {would} {len(orphans)} blob(s), {_bytes(sum(orphans.values()))}, that nothing in the ledger "
              "names, stored before then (the files of bundles refused or interrupted while they were copied)")
    if plan.shared or purged.restored:
        print(f"spool: kept {len(plan.shared) + len(purged.restored)} blob(s) these documents share with others "
              "still in use")
    for why in KEPT_REASONS:
        if plan.kept.get(why):
            print(f"kept: {plan.kept[why]} document(s) {why}")
    for name in sorted({name for route in config.routes for name in route.from_}):
        source = config.connector_config(name, "inbound")
        if source.type != "folder" or source.on_success == "delete":
            continue
        done_dir = source.done_dir or source.path / "done"
        with Progress(f"purge: source {name}") as progress:
            removed = purge_folder(done_dir, time.time() - args.older_than, dry_run=args.dry_run,
                                   progress=progress.count)
        print(f"source {name}: {would} {len(removed)} file(s), {_bytes(sum(removed.values()))}, from {done_dir}")
    print("the ledger and its journal are kept whole" + ("; nothing was removed (--dry-run)" if args.dry_run else ""))
    return EXIT_OK


def _bytes(size: int) -> str:
    """``532 bytes``, ``14.2 KB``, ``3.0 MB``, ``1.2 GB``."""
    if size < 1024:
        return f"{size} bytes"
    value, unit = size / 1024, "KB"
    for bigger in ("MB", "GB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _since(text: str) -> Any:
    """A moment: ISO date or time (UTC unless it says otherwise), or a duration ago (``2h``, ``7d``)."""
    from datetime import UTC, datetime, timedelta

    try:
        return datetime.now(UTC) - timedelta(seconds=_duration(text))
    except argparse.ArgumentTypeError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a date (2026-05-01, 2026-05-01T14:30) nor a duration (12h, 7d)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _duration(text: str) -> float:
    from bus.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:  # pydantic's error is a ValueError
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90d, 12h, 30m)") from exc


def cmd_demo(args: argparse.Namespace) -> int:
    import os
    import threading

    from bus.progress import Progress
    from simulators.demo import run_demo

    given = Path(args.workspace).resolve() if args.workspace else None
    before = os.environ.get("HENT_DEMO_WORKSPACE")
    stop = threading.Event()
    with Progress("demo:", until_output=True) as progress:
        if progress.enabled:  # the demo's workspace: the one given, else the one it makes and announces
            workspace = (lambda: given) if given else (
                lambda: os.environ.get("HENT_DEMO_WORKSPACE") if os.environ.get("HENT_DEMO_WORKSPACE") != before
                else None)
            threading.Thread(target=_watch_demo, args=(progress, workspace, stop), name="demo-progress",
                             daemon=True).start()
        try:
            return run_demo(workspace=given, keep=args.keep, as_json=args.json, transport=args.transport)
        finally:
            stop.set()


def _watch_demo(progress: Any, workspace: Any, stop: Any) -> None:
    """Until ``stop``: how many of the demo's documents are prepared and deliveries final, read
    from its ledger (``<workspace>/var/ledger.db``, as config/demo*.yaml put it) without writing."""
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.exc import SQLAlchemyError

    from bus.ledger_schema import deliveries_table, documents_table

    engine = None
    try:
        progress.update(text="starting the platform's simulator")
        while not stop.wait(0.3):
            folder = workspace()
            database = Path(folder) / "var" / "ledger.db" if folder else None
            if database is None or not database.is_file():
                continue
            if engine is None:
                engine = create_engine(f"sqlite:///file:{database}?mode=ro&uri=true")
            try:
                with engine.connect() as conn:
                    states: dict[str, dict[str, int]] = {
                        name: {state: count for state, count in conn.execute(
                            select(table.c.state, func.count()).group_by(table.c.state))}
                        for name, table in (("documents", documents_table), ("deliveries", deliveries_table))}
            except SQLAlchemyError:  # not created yet, or busy: the next look
                continue
            documents, deliveries = states["documents"], states["deliveries"]
            if not documents:
                continue
            prepared = documents.get("ROUTED", 0) + documents.get("FAILED", 0)
            final = sum(deliveries.get(s, 0) for s in ("DELIVERED", "ACKNOWLEDGED", "REJECTED", "FAILED"))
            progress.update(text=f"{prepared}/{sum(documents.values())} documents prepared, "
                            f"{final}/{sum(deliveries.values())} deliveries final")
    finally:
        if engine is not None:
            engine.dispose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_bus.py",
        description="Hent: integration bus for @ctes (contrôle de légalité) and DECP.",
    )
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR (default INFO; WARNING for demo)"
    )
    parser.add_argument(
        "--log-format", choices=FORMATS, default="human",
        help="human: one line per record for people (default); json: one JSON object per line (time, level, "
        "logger, message, and when known document_id, delivery_id, route, connector, state) for a log shipper; "
        "auto: human when stderr is a terminal, json otherwise. Logs go to stderr, secrets masked",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", required=True, help="the YAML configuration file")
        return p

    run = with_config(sub.add_parser("run", help="run the bus until SIGTERM or SIGINT"))
    run.add_argument("--role", choices=("all", "poller", "worker"), default="all",
                     help="poller: read the sources and the platforms' answers (each source and each endpoint's "
                          "answers held by one node at a time); worker: prepare and send; all: both (default)")
    run.add_argument("--process", metavar="N:PARENT",
                     help="set by Hent itself: worker process N of the run PARENT (bus.processes), which ends "
                          "with its parent and serves its metrics on the metrics port + N")
    run.set_defaults(func=cmd_run)
    check = with_config(sub.add_parser("check", help="report every configuration error at once (exit 2)"))
    check.add_argument("--online", action="store_true",
                       help="also reach every connector's server with its credentials (exit 1 if one fails)")
    check.set_defaults(func=cmd_check)
    validate = sub.add_parser("validate", help="validate ACTES XML files or .tar.gz archives")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_validate)
    inspect = sub.add_parser("inspect", help="print a message from the ministry, parsed, as JSON")
    inspect.add_argument("file", metavar="FILE")
    inspect.set_defaults(func=cmd_inspect)
    status = with_config(sub.add_parser("status", help="documents and their deliveries"))
    status.add_argument("--state", help="only documents in this state (RECEIVED, ROUTED, FAILED...)")
    status.add_argument("--route", help="only documents of this route")
    status.add_argument("--siren", help="only documents of this SIREN")
    status.add_argument("--json", action="store_true", help="one JSON object per document (or endpoint)")
    status.add_argument("--endpoints", action="store_true",
                        help="each endpoint's circuit breaker (closed, open, half-open) as last recorded")
    status.add_argument("--awaiting-answer", action="store_true",
                        help="the préfecture's letters (2-1, 3-1, 4-1) not answered yet, oldest first")
    status.set_defaults(func=cmd_status)
    journal = sub.add_parser("journal", help="the hash-chained journal of every transition")
    journal_sub = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    verify = with_config(journal_sub.add_parser("verify", help="detect an edited, inserted or deleted row"))
    verify.set_defaults(func=cmd_journal_verify)
    classification = with_config(sub.add_parser("classification", help="the classification of a SIREN"))
    classification.add_argument("siren", metavar="SIREN")
    classification.add_argument("--refresh", action="store_true", help="ask the platform for it first (7-1)")
    classification.set_defaults(func=cmd_classification)
    cancel = with_config(sub.add_parser("cancel", help="ask for the cancellation (6-1) of an acknowledged act"))
    cancel.add_argument("id_acte", metavar="IDACTE")
    cancel.set_defaults(func=cmd_cancel)
    failed = with_config(sub.add_parser(
        "failed", help="the dead letters: FAILED documents and deliveries, with the reason",
        description="The dead letters, oldest first: FAILED documents (their preparation failed: mapping, rules, "
        "files) and FAILED deliveries (refused by the endpoint, or given up after the retries), each with the id "
        "replay takes, its bundle, source, route, endpoint, when, attempts and the reason."))
    failed.add_argument("--route", help="only those of this route (a document not routed yet: of a source it takes "
                        "from)")
    failed.add_argument("--source", help="only those of documents from this source")
    failed.add_argument("--since", type=_since, metavar="WHEN",
                        help="only those that failed since WHEN: a date or time in UTC (2026-05-01, "
                        "2026-05-01T14:30) or a duration ago (12h, 7d)")
    failed.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    failed.set_defaults(func=cmd_failed)
    replay = with_config(sub.add_parser(
        "replay", help="put dead letters back into the flow after a fix, journaled",
        description="Put dead letters back into the flow after a fix, journaled. A FAILED document goes back to "
        "RECEIVED: the bus prepares its files again with the mappings and configuration it read at its start "
        "(restart it after changing one). A FAILED delivery goes back to PENDING, attempts reset: the same bytes, "
        "and an endpoint that may hold them already is asked before anything is sent twice. A running bus takes "
        "them at its next sweep once bus.lease has passed, else when it starts; the source gets a reply saying so. "
        "A delivery the "
        "platform REJECTED is not replayed: correct the act and drop it again. Exit 1 if any ID is refused."))
    replay.add_argument("ids", nargs="*", metavar="ID",
                        help="a document's or a delivery's id, as failed lists them (a routed document's id: its "
                        "FAILED deliveries)")
    replay.add_argument("--route", help="every dead letter of this route")
    replay.add_argument("--all-failed", action="store_true", help="every dead letter")
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed, change nothing")
    replay.add_argument("--by", default="replay", metavar="NAME",
                        help="who replays, as the journal records it (default: replay)")
    replay.add_argument("--reason", help="why, added to the journal's reason")
    replay.set_defaults(func=cmd_replay)
    purge = with_config(sub.add_parser(
        "purge", help="remove old spool blobs and done/ files of documents done with",
        description="Remove the spool blobs named only by documents done with for longer than DURATION (ROUTED "
        "with every delivery DELIVERED, ACKNOWLEDGED or REJECTED, or FAILED), and the files of folder sources' "
        "done/ folders unchanged for as long, and the blobs nothing in the ledger names stored before then and "
        "an hour ago at least (the files of bundles refused or interrupted while they were copied). Never a "
        "blob that a document in flight, a FAILED delivery (a dead letter), a letter not answered yet or a "
        "classification names; replies, the ledger and its journal are kept whole."))
    purge.add_argument("--older-than", type=_duration, required=True, metavar="DURATION",
                       help="how long since a document's last change (90d, 12h)")
    purge.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    purge.set_defaults(func=cmd_purge)
    demo = sub.add_parser("demo", help="generate realistic bundles, run the bus on them, report")
    demo.add_argument("--workspace", help="folder to work in (default: a new temporary folder)")
    demo.add_argument("--keep", action="store_true", help="keep the workspace afterwards")
    demo.add_argument("--json", action="store_true", help="one JSON object per document")
    demo.add_argument("--transport", choices=("soap", "sftp"), default="soap",
                      help="reach the legality platform's simulator over SOAP (default) or SFTP, through an "
                      "embedded SFTP server that also serves the finance software's outbox")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or ("WARNING" if args.command == "demo" else "INFO"), args.log_format)
    from bus.errors import ConfigError, HentError
    from bus.secrets import redact

    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return EXIT_CONFIG
    except HentError as exc:  # a ledger down, a document refused: one line, not a traceback
        print(redact(_one_line(str(exc))), file=sys.stderr)
        return EXIT_FAILED


def _one_line(text: str) -> str:
    """``text`` on one line: each line break (and the indent after it) becomes one space."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
