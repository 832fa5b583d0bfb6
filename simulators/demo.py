"""``run_bus.py demo``: realistic bundles in a workspace, the bus run on them, a report.

With nothing but Python: the legality platform's simulator starts on a free loopback port;
the deliberation, HR and finance software drop their exports (a broken deliberation among
them); the bus runs on the embedded default until every delivery is final: the good acts
are acknowledged by the ministry (an ARActe with their IDActe), the broken one fails
locally with a named error.  Then one more deliberation is prepared just before the
préfecture publishes a new classification: the ministry rejects it (ODT-VERIF-01).  Each
document's fate is printed; the software finds every answer in its ``replies/`` folder.

``transport="soap"`` (config/demo.yaml) reaches the platform through its SOAP simulator;
``transport="sftp"`` (config/demo-sftp.yaml) starts an embedded SFTP server instead, serving
the finance software's outbox and the platform's desk (archives in, the ministry's answers
out), and ends with the ministry's new classification read from the answer folder.
"""

from __future__ import annotations

__all__ = ["run_demo", "DEMO_CONFIG", "DEMO_SFTP_CONFIG", "TRANSPORTS", "drop_demo_bundles"]

import json
import os
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from simulators.backoffice import drop_contract, drop_deliberation, drop_hr_decision

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
DEMO_SFTP_CONFIG = DEMO_CONFIG.with_name("demo-sftp.yaml")
TRANSPORTS = ("soap", "sftp")


def drop_demo_bundles(workspace: Path, today: date | None = None, *, finances: Path | None = None) -> None:
    """The four bundles of the demo: three good ones and a broken deliberation (the contract in
    ``finances``, by default the finance software's drop folder)."""
    today = today or date.today()
    drop = workspace / "drop"
    drop_deliberation(drop / "deliberations", "DEL2026_042", decision=today - timedelta(days=3), annexes=2,
                      objet="Cession de la parcelle BK 112 — rue de la Solidarité, à l’euro symbolique")
    drop_hr_decision(drop / "rh", "AR2026_0187", decision=today - timedelta(days=1))
    drop_contract(finances or drop / "finances", "MAR2026_0031", signed=today - timedelta(days=7))
    # broken: a NumeroInterne the ministry refuses (leading and trailing underscore)
    drop_deliberation(drop / "deliberations", "_A_", decision=today - timedelta(days=2),
                      objet="Délibération exportée avec un numéro invalide")


def _report(ledger: Any) -> list[dict[str, Any]]:
    rows = []
    for document in ledger.documents():
        deliveries = ledger.deliveries_of(document.id)
        rows.append({
            "document": document.id,
            "source": document.source,
            "bundle": document.bundle,
            "state": str(document.state),
            "route": document.route,
            "id_acte": document.id_acte,
            "error": document.reason,
            "deliveries": [
                {"endpoint": d.endpoint, "state": str(d.state), "archive": d.artifact_name,
                 "envelope": d.envelope_name, "id_acte": d.id_acte, "reason": d.reason}
                for d in sorted(deliveries, key=lambda d: d.endpoint)
            ],
        })
    return sorted(rows, key=lambda row: (row["source"], row["bundle"]))


def run_demo(*, workspace: Path | None = None, keep: bool = False, as_json: bool = False,
             timeout: float = 120.0, transport: str = "soap") -> int:
    from bus.ledger import Ledger

    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; one of {', '.join(TRANSPORTS)}")
    created = workspace is None
    workspace = (workspace or Path(tempfile.mkdtemp(prefix="hent-demo-"))).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    os.environ["HENT_DEMO_WORKSPACE"] = str(workspace)
    try:
        run = _over_soap if transport == "soap" else _over_sftp
        config, idle = run(workspace, timeout)
        ledger = Ledger(config.bus.ledger)
        try:
            rows = _report(ledger)
        finally:
            ledger.close()
        _print(rows, workspace, as_json=as_json, kept=keep or not created, transport=transport)
        if not idle:
            print(f"demo: the bus did not finish within {timeout:.0f} s", flush=True)
            return 1
        return 0
    finally:
        if created and not keep:
            shutil.rmtree(workspace, ignore_errors=True)


def _over_soap(workspace: Path, timeout: float) -> tuple[Any, bool]:
    """The legality platform's SOAP simulator on a free loopback port."""
    from bus.config import load_config
    from bus.runtime import Runtime
    from routes.pipeline import Pipeline
    from simulators.legality import LegalitySimulator

    with LegalitySimulator(ack_delay=0.5) as platform:
        os.environ["HENT_DEMO_LEGALITY_URL"] = platform.url
        config = load_config(DEMO_CONFIG)
        drop_demo_bundles(workspace)
        idle = Runtime(config, Pipeline.for_runtime).run_until_idle(timeout=timeout)
        if idle:
            idle = _late_classification(config, workspace, platform, timeout)
    return config, idle


def _late_classification(config: Any, workspace: Path, platform: Any, timeout: float) -> bool:
    """A deliberation is prepared, then the préfecture publishes a new classification before the
    platform receives it: the ministry answers AnomalieActe ODT-VERIF-01."""
    import threading

    from bus.ledger import Ledger
    from bus.runtime import RetryPolicy, Runtime
    from routes.pipeline import Pipeline

    platform.inject("http500", operation="SubmitArchive", count=1)  # its first send fails: retried
    drop_deliberation(workspace / "drop" / "deliberations", "DEL2026_043", decision=date.today() - timedelta(days=1),
                      objet="Garantie d'emprunt accordée à Loire-Atlantique Habitations", annexes=0)
    runtime = Runtime(config, Pipeline.for_runtime, retry=RetryPolicy(first_delay=1.0), serve_http=False)
    outcome: dict[str, bool] = {}
    worker = threading.Thread(target=lambda: outcome.update(idle=runtime.run_until_idle(timeout=timeout)))
    worker.start()
    ledger = Ledger(config.bus.ledger)
    try:
        while worker.is_alive() and not any(
            d.bundle == "DEL2026_043.json" and d.state == "ROUTED" for d in ledger.documents(state="ROUTED")
        ):
            time.sleep(0.1)
    finally:
        ledger.close()
    platform.publish_classification(date.today())
    worker.join()
    return outcome.get("idle", False)


def _over_sftp(workspace: Path, timeout: float) -> tuple[Any, bool]:
    """An embedded SFTP server on a free loopback port serving ``workspace/sftp``: the finance
    software's outbox (/finances) and the legality platform's desk (/platform)."""
    from bus.config import load_config
    from bus.runtime import Runtime
    from routes.pipeline import Pipeline
    from simulators.legality_sftp import LegalityDesk
    from simulators.sftp_server import SftpServer

    root = workspace / "sftp"
    (root / "finances").mkdir(parents=True, exist_ok=True)
    client_key = new_client_key(workspace / "var" / "keys")
    with SftpServer(root, authorized_keys=[client_key], username="hent") as server, \
            LegalityDesk.for_root(root / "platform", interval=0.2) as desk:
        known_hosts = workspace / "var" / "keys" / "known_hosts"
        known_hosts.write_text(server.known_hosts_line() + "\n")
        os.environ.update(HENT_DEMO_SFTP_PORT=str(server.port), HENT_DEMO_SFTP_KNOWN_HOSTS=str(known_hosts),
                          HENT_DEMO_SFTP_KEY=str(workspace / "var" / "keys" / "id_ed25519"))
        config = load_config(DEMO_SFTP_CONFIG)
        drop_demo_bundles(workspace, finances=root / "finances")
        idle = Runtime(config, Pipeline.for_runtime).run_until_idle(timeout=timeout)
        if idle:
            # the préfecture publishes a new classification just before one more deliberation
            # reaches the ministry: it is rejected (ODT-VERIF-01); the ministry's 7-2 follows
            desk.platform.publish_classification(date.today())
            drop_deliberation(workspace / "drop" / "deliberations", "DEL2026_043",
                              decision=date.today() - timedelta(days=1), annexes=0,
                              objet="Garantie d'emprunt accordée à Loire-Atlantique Habitations")
            idle = Runtime(config, Pipeline.for_runtime, serve_http=False).run_until_idle(timeout=timeout)
        if idle:
            desk.publish_classification(date.today(), [entry.siren for entry in config.collectivites])
            idle = _read_answers(config, timeout)
    return config, idle


def _read_answers(config: Any, timeout: float) -> bool:
    """Run the bus until the platform's answer folder has been read (the 7-2 kept)."""
    from bus.ledger import Ledger
    from bus.runtime import Runtime
    from routes.pipeline import Pipeline

    runtime = Runtime(config, Pipeline.for_runtime, serve_http=False)
    runtime.start()
    ledger = Ledger(config.bus.ledger)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(ledger.classification(entry.siren) for entry in config.collectivites):
                return True
            time.sleep(0.2)
        return False
    finally:
        ledger.close()
        runtime.shutdown()


def new_client_key(folder: Path) -> Any:
    """A fresh Ed25519 key pair for the bus (OpenSSH format), its public half for the server."""
    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path = folder / "id_ed25519"
    path.touch(mode=0o600)
    path.write_bytes(private)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def _print(rows: list[dict[str, Any]], workspace: Path, *, as_json: bool, kept: bool, transport: str) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    print(f"Hent demo over {transport.upper()} — workspace {workspace}"
          f"{'' if kept else ' (removed afterwards; --keep to keep it)'}")
    for row in rows:
        print(f"\n{row['source']}/{row['bundle']}: {row['state']}")
        if row["id_acte"]:
            print(f"  expected IDActe  {row['id_acte']}")
        for delivery in row["deliveries"]:
            print(f"  → {delivery['endpoint']}: {delivery['state']}  {delivery['archive']}")
            if delivery["state"] == "REJECTED":
                print(f"      {delivery['reason']}")
        if row["error"]:
            for line in row["error"].splitlines():
                print(f"  ! {line}")
    states = [d["state"] for row in rows for d in row["deliveries"] if d["endpoint"] == "prefecture"]
    failed = sum(1 for row in rows if row["state"] == "FAILED")
    print(f"\n{len(rows)} document(s): {states.count('ACKNOWLEDGED')} acknowledged by the ministry, "
          f"{states.count('REJECTED')} rejected by it, {failed} failed here with a named error.")
    replies = f"{workspace / 'drop' / '*' / 'replies'}"
    if transport == "sftp":
        replies += f" and, over SFTP, {workspace / 'sftp' / 'finances' / 'replies'}"
    print(f"Archives sent (copies): {workspace / 'out' / 'archives'}   replies: {replies}")
