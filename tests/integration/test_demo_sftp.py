"""``run_bus.py demo --transport sftp``: the same five documents as the SOAP demo, the platform
reached through the embedded SFTP server, the finance software's contract taken from its SFTP
outbox and its answer put back in its SFTP reply folder, the ministry's 7-2 read and kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bus.config import load_config
from bus.ledger import Ledger
from tests.harness import ROOT, run_cli
from tests.integration.test_cli_tools import ARCHIVE_NAME, BROKEN_ERROR

pytestmark = pytest.mark.integration


def test_the_demo_over_sftp_acknowledges_rejects_and_fails_as_over_soap(tmp_path: Path) -> None:
    # When the demo runs over SFTP
    result = run_cli("demo", "--transport", "sftp", "--workspace", str(tmp_path), "--keep", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {row["bundle"]: row for row in map(json.loads, result.stdout.splitlines())}
    # Then the five documents end as in the SOAP demo
    assert rows["_A_.json"]["state"] == "FAILED" and rows["_A_.json"]["error"] == BROKEN_ERROR
    for bundle in ("AR2026_0187.csv", "DEL2026_042.json", "MAR2026_0031.xml", "DEL2026_043.json"):
        copy, sent = rows[bundle]["deliveries"]
        assert copy["state"] == "DELIVERED" and ARCHIVE_NAME.match(sent["archive"])
        if bundle == "DEL2026_043.json":
            assert sent["state"] == "REJECTED" and "ODT-VERIF-01" in sent["reason"]
        else:
            assert sent["state"] == "ACKNOWLEDGED" and sent["id_acte"] == rows[bundle]["id_acte"]
    # and the contract, taken from the SFTP outbox, got its ARActe back in the SFTP reply folder
    sftp = tmp_path / "sftp"
    assert [p.name for p in (sftp / "finances" / "done").iterdir()][0].startswith("MAR2026_0031")
    replies = sorted(p.name for p in (sftp / "finances" / "replies").iterdir())
    assert any(name.endswith(".1-2.xml") for name in replies), replies
    # and every answer the platform wrote was read and moved to done/, none set aside
    outbox = sftp / "platform" / "outbox"
    assert len(list((outbox / "done").iterdir())) == 5 and list((outbox / "error").iterdir()) == []
    # and the ministry's new classification is kept in the ledger
    os.environ["HENT_DEMO_WORKSPACE"] = str(tmp_path)
    os.environ.update(HENT_DEMO_SFTP_PORT="22", HENT_DEMO_SFTP_KEY=str(tmp_path / "var" / "keys" / "id_ed25519"),
                      HENT_DEMO_SFTP_KNOWN_HOSTS=str(tmp_path / "var" / "keys" / "known_hosts"))
    try:
        ledger = Ledger(load_config(ROOT / "config" / "demo-sftp.yaml").bus.ledger)
    finally:
        for name in ("HENT_DEMO_WORKSPACE", "HENT_DEMO_SFTP_PORT", "HENT_DEMO_SFTP_KEY", "HENT_DEMO_SFTP_KNOWN_HOSTS"):
            os.environ.pop(name, None)
    try:
        assert ledger.classification("214400152") is not None
    finally:
        ledger.close()
