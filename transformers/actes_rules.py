"""The rules an act must follow before it becomes an ACTES archive (standards.md §1.3-1.8).

:func:`check_act` lists every rule a :class:`~transformers.actes_model.CanonicalAct`
breaks — identifiers, dates, matières against the classification, Objet and referent text
in ISO-8859-1, e-mails, and each file's name, extension, content and piece type — as
:class:`~bus.errors.Problem` objects naming the sidecar (or the file), the field and the
rule.  :func:`transformers.actes_out.build_archive` runs it before building anything.
"""

from __future__ import annotations

__all__ = ["check_act"]

import re
from datetime import date
from typing import Protocol

from bus.errors import DocumentError, Problem

from .actes_model import NATURE_DEFAULT_TYPE, NATURES, ActFile, CanonicalAct
from .actes_validate import extension_kind, sniff_kind
from .classification import Classification
from .text_policy import TextPolicy, check_latin1, to_latin1

NUMERO_INTERNE = re.compile(r"[A-Z0-9][A-Z0-9_]{0,13}[A-Z0-9]")
SIREN = re.compile(r"[0-9]{9}")
DEPARTEMENT = re.compile(r"[09][0-9][AB0-9]")
COLLECTIVITE_NATURE = re.compile(r"[0-9]{2}")
TYPE_CODE = re.compile(r"[A-Z0-9_]{5}")
ID_ACTE = re.compile(r"[09][0-9][AB0-9]-[0-9]{9}-[0-9]{8}-[a-zA-Z0-9_]{1,15}-(DE|AR|AI|CC|BF|AU)")
EMAIL = re.compile(r"[_a-zA-Z0-9\-]+(\.[_a-zA-Z0-9\-]+)*@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*\.[a-zA-Z]{2,6}")


class _Bad(Protocol):
    def __call__(self, ok: bool, field: str, rule: str, message: str, file: str = ...) -> None: ...


def check_act(
    act: CanonicalAct,
    *,
    today: date,
    classification: Classification | None = None,
    text_policy: TextPolicy = TextPolicy.TRANSLITERATE,
) -> list[Problem]:
    """Every rule ``act`` breaks, each a Problem naming the file, the field and the rule.

    Rules (field): siren-pattern, departement-pattern, arrondissement-range,
    collectivite-nature-pattern, decision-date-future, numero-interne-pattern, nature-range,
    matieres-count, matiere-range (matieres[i]), matieres-unknown, objet-length, objet-newline,
    referent-newline (referent_name, referent_phone), the text policy's latin-1, xml-char, control-char,
    lone-surrogate, replacement-char, bidi-control, zero-width (objet, referent_*), idacte-pattern,
    classification-date-outdated,
    return-emails-required, email-pattern; per file (main_document, annexes[i]): file-missing,
    file-extension, file-empty, file-type-mismatch, file-name-duplicate, main-document-type,
    annex-type, type-code-pattern / type-code-unknown (<field>.type_code).
    """
    src = act.sidecar or act.main_document.source_name
    problems: list[Problem] = []

    def bad(ok: bool, field: str, rule: str, message: str, file: str = src) -> None:
        if not ok:
            problems.append(Problem(message, file=file, field=field, rule=rule))

    bad(bool(SIREN.fullmatch(act.siren)), "siren", "siren-pattern", f"SIREN {act.siren!r} must be 9 digits")
    bad(
        bool(DEPARTEMENT.fullmatch(act.departement)),
        "departement",
        "departement-pattern",
        f"Departement {act.departement!r} must be 3 characters such as 034, 02A, 974",
    )
    bad(
        type(act.arrondissement) is int and 0 <= act.arrondissement <= 9,
        "arrondissement",
        "arrondissement-range",
        f"Arrondissement {act.arrondissement!r} must be one digit 0-9",
    )
    bad(
        bool(COLLECTIVITE_NATURE.fullmatch(act.collectivite_nature)),
        "collectivite_nature",
        "collectivite-nature-pattern",
        f"IDCL Nature {act.collectivite_nature!r} must be 2 digits",
    )
    bad(
        act.decision_date <= today,
        "decision_date",
        "decision-date-future",
        f"decision date {act.decision_date} is in the future (today is {today})",
    )
    bad(
        bool(NUMERO_INTERNE.fullmatch(act.numero_interne)),
        "numero_interne",
        "numero-interne-pattern",
        f"NumeroInterne {act.numero_interne!r} must be 2-15 of A-Z, 0-9, _ without a leading or trailing _",
    )
    nature_ok = act.nature in NATURES
    bad(nature_ok, "nature", "nature-range", f"CodeNatureActe {act.nature!r} must be 1 to 6")
    _check_matieres(act, classification, bad)
    _check_text(act, text_policy, src, problems, bad)
    if act.precedent_id_acte is not None:
        bad(
            bool(ID_ACTE.fullmatch(act.precedent_id_acte)),
            "precedent_id_acte",
            "idacte-pattern",
            f"PrecedentIdentifiantActe {act.precedent_id_acte!r} is not an IDActe DDD-SIREN-YYYYMMDD-NUMERO-NN",
        )
    if classification is not None and classification.date is not None:
        bad(
            act.classification_date == classification.date,
            "classification_date",
            "classification-date-outdated",
            f"ClassificationDateVersion {act.classification_date} differs from the classification "
            f"in force ({classification.date}); the préfecture would refuse it",
        )
    bad(
        bool(act.return_emails),
        "return_emails",
        "return-emails-required",
        "at least one return e-mail address (AdressesRetour) is required",
    )
    for index, email in enumerate(act.return_emails):
        bad(
            bool(EMAIL.fullmatch(email)),
            f"return_emails[{index}]",
            "email-pattern",
            f"{email!r} is not an e-mail",
        )
    if act.referent_email:
        bad(
            bool(EMAIL.fullmatch(act.referent_email)),
            "referent_email",
            "email-pattern",
            f"{act.referent_email!r} is not an e-mail",
        )
    _check_files(act, classification if nature_ok else None, nature_ok, problems, bad)
    return problems


def _check_matieres(act: CanonicalAct, classification: Classification | None, bad: _Bad) -> None:
    codes = act.matieres
    bad(2 <= len(codes) <= 5, "matieres", "matieres-count", f"{len(codes)} matière code(s); 2 to 5 are needed")
    valid = True
    for index, code in enumerate(codes):
        ok = type(code) is int and code >= 0
        valid = valid and ok
        bad(
            ok,
            f"matieres[{index}]",
            "matiere-range",
            f"CodeMatiere{index + 1} {code!r} must be an integer >= 0",
        )
    if classification is not None and valid and codes:
        bad(
            classification.has_matieres(tuple(codes)),
            "matieres",
            "matieres-unknown",
            f"matière {'.'.join(map(str, codes))} is not in the classification of {classification.date}",
        )


def _check_text(act: CanonicalAct, policy: TextPolicy, src: str, problems: list[Problem], bad: _Bad) -> None:
    for field in ("objet", "referent_name", "referent_phone"):
        value = getattr(act, field)
        if value:
            problems.extend(check_latin1(value, policy=policy, field=field, file=src))
    try:
        objet = to_latin1(act.objet, policy=policy, field="objet")
    except DocumentError:
        objet = act.objet
    bad(
        1 <= len(objet) <= 499,
        "objet",
        "objet-length",
        f"Objet has {len(objet)} characters; 1 to 499 are allowed",
    )
    bad("\n" not in objet and "\r" not in objet, "objet", "objet-newline", "Objet must be on one line")
    for field in ("referent_name", "referent_phone"):
        value = getattr(act, field)
        bad(
            not value or ("\n" not in value and "\r" not in value),
            field,
            "referent-newline",
            f"the referent's {field.removeprefix('referent_')} must be on one line",
        )


def _check_files(
    act: CanonicalAct,
    classification: Classification | None,
    nature_ok: bool,
    problems: list[Problem],
    bad: _Bad,
) -> None:
    allowed_codes = classification.type_codes_for(act.nature) if classification else None
    main_kind = None
    entries = [
        ("main_document", act.main_document),
        *((f"annexes[{i}]", a) for i, a in enumerate(act.annexes)),
    ]
    seen: set[str] = set()
    for field, file in entries:
        name = file.source_name
        bad(name not in seen, field, "file-name-duplicate", "another file of the act has the same name", name)
        seen.add(name)
        kind = _file_kind(file, field, bad)
        if field == "main_document":
            main_kind = kind
            budget = act.nature == 5 and tuple(act.matieres[:2]) == (7, 1)
            allowed = " or XML" if budget else " (XML only for nature 5, matière 7.1)"
            bad(
                kind in (None, "pdf") or (kind == "xml" and budget),
                field,
                "main-document-type",
                f"the act document must be PDF{allowed}, not {kind}",
                name,
            )
        elif main_kind == "xml":
            bad(
                kind in (None, "pdf"),
                field,
                "annex-type",
                f"with an XML act, annexes must be PDF, not {kind}",
                name,
            )
        if file.type_code is not None:
            bad(
                bool(TYPE_CODE.fullmatch(file.type_code)),
                f"{field}.type_code",
                "type-code-pattern",
                f"piece type {file.type_code!r} must be 5 of A-Z, 0-9, _ (such as 99_DE)",
                name,
            )
        code = file.type_code or (NATURE_DEFAULT_TYPE[act.nature] if nature_ok else None)
        if allowed_codes is not None and code is not None:
            bad(
                code in allowed_codes,
                f"{field}.type_code",
                "type-code-unknown",
                f"piece type {code} is not allowed for nature {act.nature} by the classification",
                name,
            )


def _file_kind(file: ActFile, field: str, bad: _Bad) -> str | None:
    """The file's kind (pdf, xml, png, jpeg) when extension and content agree, else None and a problem."""
    name = file.source_name
    try:
        with file.path.open("rb") as stream:
            head = stream.read(1024)
    except OSError as exc:
        bad(False, field, "file-missing", f"cannot read {file.path}: {exc.strerror}", name)
        return None
    by_name, by_content = extension_kind(name), sniff_kind(head)
    bad(
        by_name is not None,
        field,
        "file-extension",
        "extension must be .pdf, .xml, .png, .jpg or .jpeg",
        name,
    )
    bad(bool(head), field, "file-empty", "the file is empty", name)
    if by_name is None or not head:
        return None
    bad(
        by_content == by_name,
        field,
        "file-type-mismatch",
        f"the name says {by_name} but the content is {by_content or 'not PDF, XML, PNG or JPEG'}",
        name,
    )
    return by_name if by_content == by_name else None
