"""Vendor database rows (the contract mapping's JSON rows), the act's files (is the main document a
PDF?) and the names of files from outside."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bus.errors import HentError
from bus.names import plain_file_name, safe_name
from tests.hostile._corpus import CONTROL_VALUES, HUGE, WRONG_TYPES, attempt, deep_json, truncations
from transformers.actes_model import ActFile, CanonicalAct
from transformers.actes_rules import check_act
from transformers.decp_mapping import ContractMapping

ROOT = Path(__file__).resolve().parents[2]
ROW: dict[str, Any] = {
    "id": 12, "type_contrat": "M", "numero_marche": "2026-0042", "siren": "214400152",
    "siret_acheteur": "21440015200013", "reference_acte": "MAR2026_0042",
    "fichier_acte": "MAR2026_0042_acte_engagement.pdf", "date_signature": "2026-10-20", "nature": "MARCHE",
    "objet": "Réfection de la toiture", "cpv": "45261210-9", "procedure": "AOO", "lieu_code": "44162",
    "lieu_type": "COMMUNE", "duree_mois": 12, "date_notification": "2026-11-02", "date_publication": "2026-11-20",
    "date_debut_execution": None, "montant_ht": "125000.00", "subvention_publique": None, "forme_prix": "F",
    "types_prix": "REVISABLE", "techniques": None, "modalites_execution": "TRANCHES;BDC",
    "clauses_sociales": "CLAUSE;CRITERE", "clauses_environnementales": None, "numero_accord_cadre": None,
    "innovant": "N", "ccag": "TRAVAUX", "nombre_offres": 4, "avance": "O", "taux_avance": 0.05,
    "groupement": "SOLIDAIRE", "part_ue": None, "part_france": None, "sous_traitance": "N",
    "titulaires": json.dumps([{"siret": "55204599900869"}]), "avenants": None,
}
ROW_FIELDS = ("montant_ht", "date_signature", "titulaires", "avenants", "duree_mois", "cpv", "objet", "type_contrat",
              "taux_avance")
JSON_LISTS = {"titulaires-deep": "[" * 50_000 + "]" * 50_000, "titulaires-not-list": '{"siret": 1}',
              "titulaires-items-wrong": "[1, null, [], \"x\"]", "titulaires-huge-number": "[" + "9" * 5000 + "]",
              "titulaires-truncated": '[{"siret": "552'}


def row_cases() -> list[tuple[str, bytes]]:
    cases = list(truncations(json.dumps(ROW).encode(), 5))
    for field in ROW_FIELDS:
        for name, value in {**WRONG_TYPES, **CONTROL_VALUES, "huge": HUGE["huge-1mb"]}.items():
            row = {**ROW, field: value}
            cases.append((f"{field}={name}", json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass")))
    cases += [(name, json.dumps({**ROW, "titulaires": value}).encode()) for name, value in JSON_LISTS.items()]
    cases += [("row-deep", deep_json(50_000)), ("row-a-list", b"[1, 2]"), ("row-null", b"null"),
              ("row-nan", json.dumps({**ROW, "montant_ht": float("nan")}).encode()),
              ("row-infinity", json.dumps({**ROW, "montant_ht": float("inf")}).encode())]
    return cases


ROWS = row_cases()


@pytest.fixture(scope="module")
def contracts() -> ContractMapping:
    return ContractMapping.load(ROOT / "config" / "mappings" / "contrats-decp.yaml")


@pytest.mark.parametrize(("case", "data"), ROWS, ids=[c for c, _ in ROWS])
def test_a_hostile_database_row_maps_or_is_refused(contracts: ContractMapping, case: str, data: bytes) -> None:
    attempt("db-row", case, lambda: contracts.map("contrats#12.json", data),
            shown=lambda contract: f"mapped: {contract.id!r:.60}")


PDF_CONTENTS = {
    "empty": b"", "html-named-pdf": b"<html><body>not a pdf</body></html>", "zip": b"PK\x03\x04" + b"\0" * 100,
    "pdf-late-magic": b"\0" * 2000 + b"%PDF-1.4", "truncated-magic": b"%PD", "pdf-ok": b"%PDF-1.7\n%%EOF",
    "xml-named-pdf": b"<?xml version='1.0'?><a/>", "png": b"\x89PNG\r\n\x1a\n" + b"\0" * 20,
    "utf16-pdf": "%PDF-1.4".encode("utf-16"), "polyglot": b"%PDF-1.4\n<html>" + b"A" * 3000,
}
PDF_NAMES = ["acte.pdf", "acte.PDF", "acte", "acte.pdf.exe", "acte.", ".pdf", "acte.pdf ", "ACTE.Pdf", "acte.xml",
             "a" * 250 + ".pdf"]
PDFS = [(f"{content}|{name!r}", content, name) for content in PDF_CONTENTS for name in PDF_NAMES[:3]] + [
    (f"pdf-ok|{name!r}", "pdf-ok", name) for name in PDF_NAMES[3:]]


@pytest.mark.parametrize(("case", "content", "name"), PDFS, ids=[c for c, _, _ in PDFS])
def test_the_main_document_is_checked_as_a_pdf(tmp_path: Path, case: str, content: str, name: str) -> None:
    path = tmp_path / "main"
    path.write_bytes(PDF_CONTENTS[content])
    act = CanonicalAct(siren="214400152", departement="044", arrondissement=1, collectivite_nature="31",
                       decision_date=date(2026, 1, 5), numero_interne="DEL2026_001", nature=1, matieres=(3, 2),
                       objet="Objet", classification_date=date(2025, 3, 1),
                       main_document=ActFile(name, path, "99_DE"), return_emails=("a@mairie.example",))
    problems = attempt("pdf", case, lambda: check_act(act, today=date(2026, 2, 1)),
                       shown=lambda found: "; ".join(f"{p.rule}" for p in found) or "no problem")
    good = PDF_CONTENTS[content].startswith(b"%PDF-") and name.lower().endswith(".pdf")
    rules = {p.rule for p in problems if p.field == "main_document"}
    assert (not rules) == good, rules


NAMES = ["plan.pdf", "../plan.pdf", "a/../../b", "/etc/passwd", "C:\\x.pdf", "C:x.pdf", "\\\\srv\\s\\x", "a\\b",
         ".", "..", "...", "", " ", "CON", "con.pdf", "Com1.txt", "LPT9", "PRN.tar.gz", "AUX ", "NUL.xml",
         "a\x00b", "a\x01b", "a\x7fb", "tab\there", "\u202eevil.pdf", "x" * 255, "x" * 256, "é" * 128, "é" * 127,
         "a\udc80b", "ok name (1).pdf", "-rf", "~", "*.pdf", "a:b", "x\u200by.pdf", "\ufeffplan.pdf", "a\u2066b.pdf",
         "d\ufffdlib\u00e9ration.pdf", "e\u0301.pdf"]


@pytest.mark.parametrize("name", NAMES, ids=[repr(n)[:40] for n in NAMES])
def test_a_name_from_outside_is_plain_or_refused_with_the_file_name_rule(name: str) -> None:
    outcome = attempt("file-name", repr(name)[:60], lambda: safe_name(name, field="fichier"),
                      shown=lambda kept: f"kept {kept!r:.60}")
    if isinstance(outcome, HentError):
        assert outcome.rule == "file-name"
    plain = plain_file_name(name, "default.bin")
    assert safe_name(plain, field="made plain") == plain
