"""An endpoint that builds the ACTES archive itself (S2LOW, Pastell) is sent the checked act as
JSON (``hent-canonical-act/1``), its files named by sha256 in the spool; as strict as an archive."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import yaml

from bus.config import load_config
from bus.ledger import Ledger
from bus.runtime import Runtime
from connectors.memory_outbound import MemoryOutbound
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation
from tests.harness import write_config

TODAY = date.today()


def canonical_config(tmp_path: Path, endpoint: str) -> Path:
    path = write_config(tmp_path)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {"type": "memory", "takes": "canonical-act"}
    config["connectors"][endpoint] = {"type": "folder", "path": str(tmp_path / "copies"), "create": True,
                                      "trigram": "HNT", "quadrigram": "TACT"}
    config["routes"][0]["to"] = ["prefecture", endpoint]
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def test_the_canonical_act_names_its_files_by_sha256_with_texts_after_the_policy(tmp_path: Path) -> None:
    # Given a route to a platform that takes the canonical act, and to a folder that takes archives
    config = canonical_config(tmp_path, "copies")
    MemoryOutbound.sent.pop("prefecture", None)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_201", decision=TODAY - timedelta(days=1),
                      annexes=1, objet="Cession — parcelle « BK 112 » à l’euro symbolique")
    runtime = Runtime(load_config(config), Pipeline.for_runtime, serve_http=False)
    assert runtime.run_until_idle(timeout=60)
    # Then the platform got one JSON document, the folder one archive
    [artifact] = MemoryOutbound.sent["prefecture"]
    assert artifact.kind == "canonical-act" and artifact.blob is not None
    assert len(list((tmp_path / "copies").glob("*.tar.gz"))) == 1
    act = json.loads(artifact.path.read_bytes())
    id_acte = f"044-214400152-{TODAY - timedelta(days=1):%Y%m%d}-DEL2026_201-DE"
    assert (act["format"], act["id_acte"], artifact.client_key, artifact.name) == (
        "hent-canonical-act/1", id_acte, id_acte, f"{id_acte}.json")
    assert (act["nature"], act["nature_code"], act["classification"]) == (1, "DE", "3.2")
    # the subject is what the archive would carry: in ISO-8859-1's repertoire after the policy
    act["objet"].encode("iso-8859-1")
    assert act["objet"] == "Cession - parcelle « BK 112 » à l'euro symbolique"
    # and every file is in the spool under its sha256, with its ACTES name and piece type
    files = [act["main_document"], *act["annexes"]]
    assert [f["name"] for f in files] == [f"99_DE-{id_acte}-1-1_1.pdf", f"21_RP-{id_acte}-1-1_2.pdf"]
    for described in files:
        data = artifact.blob(described["sha256"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == described["sha256"] and len(data) == described["size"]
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        delivery = next(d for d in ledger.deliveries() if d.endpoint == "prefecture")
        assert (delivery.state, delivery.id_acte, delivery.artifact_kind) == ("DELIVERED", id_acte, "canonical-act")
    finally:
        ledger.close()


def test_an_act_that_breaks_a_rule_never_reaches_a_platform_that_takes_the_canonical_act(tmp_path: Path) -> None:
    config = canonical_config(tmp_path, "copies")
    MemoryOutbound.sent.pop("prefecture", None)
    drop_deliberation(tmp_path / "drop" / "deliberations", "_BAD_", decision=TODAY)
    runtime = Runtime(load_config(config), Pipeline.for_runtime, serve_http=False)
    assert runtime.run_until_idle(timeout=60)
    assert "prefecture" not in MemoryOutbound.sent
    reply = json.loads((tmp_path / "drop" / "deliberations" / "replies" / "_BAD_.1.json").read_text())
    assert reply["state"] == "FAILED" and "numero-interne-pattern" in reply["reason"]
