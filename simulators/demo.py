"""``run_bus.py demo``: realistic bundles in a workspace, the bus run on them, a report.

With nothing but Python: the deliberation, HR and finance software drop their exports
(a broken deliberation among them), the bus runs on the embedded default until every
delivery is final, and each document's fate is printed — state, archive name, or the
named error that the software got back in its ``replies/`` folder.
"""

from __future__ import annotations

__all__ = ["run_demo", "DEMO_CONFIG", "drop_demo_bundles"]

import json
import os
import shutil
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from simulators.backoffice import drop_contract, drop_deliberation, drop_hr_decision

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


def drop_demo_bundles(workspace: Path, today: date | None = None) -> None:
    """The four bundles of the demo: three good ones and a broken deliberation."""
    today = today or date.today()
    drop = workspace / "drop"
    drop_deliberation(drop / "deliberations", "DEL2026_042", decision=today - timedelta(days=3), annexes=2,
                      objet="Cession de la parcelle BK 112 — rue de la Solidarité, à l’euro symbolique")
    drop_hr_decision(drop / "rh", "AR2026_0187", decision=today - timedelta(days=1))
    drop_contract(drop / "finances", "MAR2026_0031", signed=today - timedelta(days=7))
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
                 "envelope": d.envelope_name, "reason": d.reason}
                for d in deliveries
            ],
        })
    return sorted(rows, key=lambda row: (row["source"], row["bundle"]))


def run_demo(*, workspace: Path | None = None, keep: bool = False, as_json: bool = False,
             timeout: float = 120.0) -> int:
    from bus.config import load_config
    from bus.ledger import Ledger
    from bus.runtime import Runtime
    from routes.pipeline import Pipeline

    created = workspace is None
    workspace = (workspace or Path(tempfile.mkdtemp(prefix="hent-demo-"))).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    os.environ["HENT_DEMO_WORKSPACE"] = str(workspace)
    try:
        drop_demo_bundles(workspace)
        config = load_config(DEMO_CONFIG)
        runtime = Runtime(config, Pipeline.for_runtime)
        idle = runtime.run_until_idle(timeout=timeout)
        ledger = Ledger(config.bus.ledger)
        try:
            rows = _report(ledger)
        finally:
            ledger.close()
        _print(rows, workspace, as_json=as_json, kept=keep or not created)
        if not idle:
            print(f"demo: the bus did not finish within {timeout:.0f} s", flush=True)
            return 1
        return 0
    finally:
        if created and not keep:
            shutil.rmtree(workspace, ignore_errors=True)


def _print(rows: list[dict[str, Any]], workspace: Path, *, as_json: bool, kept: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    print(f"Hent demo — workspace {workspace}{'' if kept else ' (removed afterwards; --keep to keep it)'}")
    for row in rows:
        print(f"\n{row['source']}/{row['bundle']}: {row['state']}")
        if row["id_acte"]:
            print(f"  expected IDActe  {row['id_acte']}")
        for delivery in row["deliveries"]:
            print(f"  → {delivery['endpoint']}: {delivery['state']}  {delivery['archive']}")
        if row["error"]:
            for line in row["error"].splitlines():
                print(f"  ! {line}")
    routed = sum(1 for row in rows if row["state"] == "ROUTED")
    print(f"\n{len(rows)} document(s): {routed} delivered, {len(rows) - routed} failed with a named error.")
    print(f"Archives: {workspace / 'out' / 'prefecture'}   replies: {workspace / 'drop' / '*' / 'replies'}")
