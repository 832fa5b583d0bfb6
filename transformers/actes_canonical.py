"""The canonical act as an artifact, for the platforms that build the ACTES archive themselves.

S2LOW and Pastell take an act's metadata and its files, not an archive: an endpoint that
consumes ``canonical-act`` is sent one JSON document (``hent-canonical-act/1``) naming the
act's fields and its files by their sha256 in the spool.  It is as strict as the archive: the
act is checked by :func:`transformers.actes_rules.check_act`, its Acte message (1-1) built and
validated against the ACTES schema, and every text is given as it would be in the archive —
after the text policy, in ISO-8859-1's repertoire — so that no connector has to decide.

Fields: ``format``, ``id_acte``, ``siren``, ``departement``, ``arrondissement``,
``collectivite_nature``, ``nature`` (1..6), ``nature_code`` (DE, AR...), ``numero_interne``,
``decision_date`` (ISO), ``matieres`` (list of ints), ``classification`` ("3.2"),
``classification_date``, ``objet``, ``document_papier``, ``precedent_id_acte``,
``return_emails``, ``main_document`` and ``annexes``: ``{name, source_name, type_code,
sha256, size}`` where ``name`` is the file's ACTES name (``99_DE-…-1-1_1.pdf``) and
``type_code`` its piece type, the nature's default filled in.
"""

from __future__ import annotations

__all__ = ["FORMAT", "CanonicalPackage", "build_canonical"]

import json
from dataclasses import dataclass
from datetime import date
from typing import Any, BinaryIO

from bus.errors import DocumentError, ValidationFailed

from .actes_model import NATURE_DEFAULT_TYPE, ActFile, CanonicalAct
from .actes_out import build_acte_xml, file_names_for, message_name
from .actes_rules import check_act
from .actes_validate import ActesValidator, default_validator
from .classification import Classification
from .text_policy import TextPolicy, to_latin1

FORMAT = "hent-canonical-act/1"


@dataclass(frozen=True)
class CanonicalPackage:
    """What was written: the artifact's name and the act's expected IDActe."""

    name: str
    id_acte: str


def build_canonical(
    act: CanonicalAct,
    out: BinaryIO,
    *,
    shas: dict[str, str],
    today: date,
    text_policy: TextPolicy = TextPolicy.TRANSLITERATE,
    classification: Classification | None = None,
    validator: ActesValidator | None = None,
) -> CanonicalPackage:
    """Check the act, validate its Acte message, write its JSON to ``out``.

    ``shas`` gives the sha256 of each file by its source name (the spool's key).
    """
    problems = check_act(act, today=today, classification=classification, text_policy=text_policy)
    if problems:
        raise ValidationFailed(f"{len(problems)} problem(s) in act {act.numero_interne}", problems=problems,
                               path=act.sidecar, field=problems[0].field, rule=problems[0].rule)
    names = file_names_for(act)
    message = message_name(act)
    problems = (validator or default_validator()).validate_xml(build_acte_xml(act, names, text_policy=text_policy),
                                                               message)
    if problems:
        raise ValidationFailed(f"{len(problems)} schema problem(s) in the Acte message", problems=problems,
                               path=message, field=problems[0].field, rule=problems[0].rule)

    def described(file: ActFile) -> dict[str, Any]:
        sha = file.sha256 or shas.get(file.source_name)
        if sha is None:
            raise DocumentError(f"{file.source_name} is not in the spool", path=file.source_name, rule="file-missing")
        return {"name": names[file.source_name], "source_name": file.source_name,
                "type_code": file.type_code or NATURE_DEFAULT_TYPE[act.nature], "sha256": sha,
                "size": file.path.stat().st_size}

    document = {
        "format": FORMAT,
        "id_acte": act.id_acte,
        "siren": act.siren,
        "departement": act.departement,
        "arrondissement": act.arrondissement,
        "collectivite_nature": act.collectivite_nature,
        "nature": act.nature,
        "nature_code": act.nature_code,
        "numero_interne": act.numero_interne,
        "decision_date": act.decision_date.isoformat(),
        "matieres": list(act.matieres),
        "classification": ".".join(str(m) for m in act.matieres),
        "classification_date": act.classification_date.isoformat(),
        "objet": to_latin1(act.objet, policy=text_policy, field="objet", file=act.sidecar),
        "document_papier": act.document_papier,
        "precedent_id_acte": act.precedent_id_acte,
        "return_emails": list(act.return_emails),
        "main_document": described(act.main_document),
        "annexes": [described(annex) for annex in act.annexes],
    }
    out.write(json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8"))
    return CanonicalPackage(name=f"{act.id_acte}.json", id_acte=act.id_acte)
