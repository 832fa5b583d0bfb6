"""The ministry's messages, as the legality simulator writes them (standards.md §1.5, §1.9).

Each function returns one message (or, :func:`enveloppe_misillcl`, the envelope the ministry
packs its messages with), ISO-8859-1 with its declaration, built with lxml in the
ACTES namespace like the ministry's own files.  Messages that echo what the collectivité sent
(``ActeRecu``, ``EnveloppeRecue``) copy the received element's attributes and children
verbatim, so an echo is as valid as what was received.  Each must validate against the
ministry's ``actesv1_1.xsd`` (checked by the tests, never read here).
"""

from __future__ import annotations

__all__ = [
    "ACTES_NS",
    "FOLLOWUP_CODES",
    "RESPONSE_ACKS",
    "anomalie_acte",
    "anomalie_enveloppe",
    "ar_acte",
    "ar_reponse",
    "enveloppe_misillcl",
    "followup_message",
    "reponse_sans_changement",
    "retour_classification",
]

import copy
from collections.abc import Sequence
from datetime import date

from lxml import etree

from simulators._xml import parse

ACTES_NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
INSEE_NS = "http://xml.insee.fr/schema"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_NSMAP = {"actes": ACTES_NS, "insee": INSEE_NS, "xsi": XSI_NS}
_DECLARATION = b'<?xml version="1.0" encoding="ISO-8859-1"?>\n'

#: follow-up code → root element; which of them carry a letter (a PDF attachment)
FOLLOWUP_CODES: dict[str, str] = {
    "2-1": "CourrierSimple",
    "3-1": "DemandePieceComplementaire",
    "3-5": "ARPieceComplementaire",
    "4-1": "LettreObservations",
    "4-5": "ARReponseRejetLettreObservations",
    "5-1": "DefereTA",
    "6-2": "ARAnnulation",
}

#: the collectivité's answer to a letter → the ministry's acknowledgment of it (type ARReponseCL);
#: the other answers (2-2, 3-2, 4-2) get none
RESPONSE_ACKS: dict[str, str] = {"3-3": "3-5", "3-4": "3-5", "4-3": "4-5", "4-4": "4-5"}


def _q(name: str) -> str:
    return f"{{{ACTES_NS}}}{name}"


def _root(tag: str) -> etree._Element:
    root = etree.Element(_q(tag), nsmap=_NSMAP)
    root.set(f"{{{XSI_NS}}}schemaLocation", f"{ACTES_NS} actesv1_1.xsd")
    return root


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, _q(tag))
    if text is not None:
        element.text = text
    return element


def _serialize(root: etree._Element) -> bytes:
    body: bytes = etree.tostring(root, encoding="ISO-8859-1", xml_declaration=False, pretty_print=True)
    return _DECLARATION + body


def _echo(parent: etree._Element, tag: str, received: etree._Element) -> etree._Element:
    """``<actes:tag>`` holding a copy of ``received``'s attributes and element children."""
    echo = _sub(parent, tag)
    for name, value in received.attrib.items():
        if not name.startswith(f"{{{XSI_NS}}}"):
            echo.set(name, value)
    for child in received:
        if isinstance(child.tag, str):
            echo.append(copy.deepcopy(child))
    for element in echo.iter():
        if element.text is not None and not element.text.strip() and len(element):
            element.text = None
        element.tail = None
    return echo


def ar_acte(acte: etree._Element, id_acte: str, received: date, classification_date: date) -> bytes:
    """ARActe (1-2): the act is received, under ``id_acte``."""
    root = _root("ARActe")
    root.set(_q("IDActe"), id_acte)
    root.set(_q("DateReception"), received.isoformat())
    _echo(root, "ActeRecu", acte)
    _sub(root, "ClassificationDateVersionEnCours", classification_date.isoformat())
    return _serialize(root)


def ar_reponse(code: str, id_acte: str, letter_date: date, received: date) -> bytes:
    """ARPieceComplementaire (3-5) for a 3-3/3-4, ARReponseRejetLettreObservations (4-5) for a 4-3/4-4:
    the answer to the letter of ``letter_date`` about ``id_acte`` is received on ``received``."""
    return followup_message(RESPONSE_ACKS[code], id_acte, received, letter_date=letter_date)


def anomalie_acte(
    acte: etree._Element, nature: str, detail: str, day: date, classification_date: date
) -> bytes:
    """AnomalieActe (1-3): the act is refused; ``nature`` is three digits."""
    root = _root("AnomalieActe")
    _sub(root, "Date", day.isoformat())
    _sub(root, "Nature", nature)
    _sub(root, "Detail", detail)
    _echo(root, "ActeRecu", acte)
    _sub(root, "ClassificationDateVersionEnCours", classification_date.isoformat())
    return _serialize(root)


def anomalie_enveloppe(envelope: etree._Element, nature: str, detail: str, day: date) -> bytes:
    """AnomalieEnveloppe: the whole archive is refused; echoes the received envelope."""
    root = _root("AnomalieEnveloppe")
    _sub(root, "Date", day.isoformat())
    _sub(root, "Nature", nature)
    _sub(root, "Detail", detail)
    _echo(root, "EnveloppeRecue", envelope)
    return _serialize(root)


def enveloppe_misillcl(
    departement: str, siren: str, forms: Sequence[str], *, arrondissement: int = 1,
    referent: str | None = "Préfecture (simulateur Hent)",
) -> bytes:
    """EnveloppeMISILLCL: the ministry's envelope around its messages to the collectivité ``siren``.

    The sender is the sous-préfecture ``departement`` (three characters) / ``arrondissement``
    (one digit); ``forms`` are the XML messages it carries, one ``Formulaire`` each, as the
    schema's ``FormulairesEnvoyes`` ("liste des fichiers XML envoyés") wants — a letter (PDF)
    travels beside and is named by its message, like the documents of an act.
    """
    if not forms:
        raise ValueError("an EnveloppeMISILLCL lists at least one message")
    root = _root("EnveloppeMISILLCL")
    emetteur = _sub(root, "Emetteur")
    sous_pref = _sub(emetteur, "IDSousPref")
    sous_pref.set(_q("Departement"), departement)
    sous_pref.set(_q("Arrondissement"), str(arrondissement))
    if referent:
        _sub(_sub(emetteur, "Referent"), "Nom", referent)
    listed = _sub(root, "FormulairesEnvoyes")
    for name in forms:
        _sub(_sub(listed, "Formulaire"), "NomFichier", name)
    _sub(root, "Destinataire").set(f"{{{INSEE_NS}}}SIREN", siren)
    return _serialize(root)


def followup_message(
    code: str, id_acte: str, day: date, *, attachment: str | None = None, letter_date: date | None = None
) -> bytes:
    """A follow-up from the préfecture (2-1, 3-1, 3-5, 4-1, 4-5, 5-1, 6-2).

    ``attachment`` is the file name of the letter (PDF) that 2-1, 3-1, 4-1 and 5-1 name;
    ``letter_date`` the date of the préfecture's letter that a 3-5 or 4-5 acknowledges.
    """
    kind = FOLLOWUP_CODES[code]
    root = _root(kind)
    if code in ("3-5", "4-5"):
        root.set(_q("DateReception"), day.isoformat())
        infos = _sub(root, "InfosCourrierPref")
        infos.set(_q("IDActe"), id_acte)
        infos.set(_q("DateCourrierPref"), (letter_date or day).isoformat())
        return _serialize(root)
    root.set(_q("IDActe"), id_acte)
    if code == "6-2":
        root.set(_q("DateReception"), day.isoformat())
        return _serialize(root)
    if code == "5-1":
        _sub(root, "DateDepot", day.isoformat())
        _sub(root, "NatureIllegalite", "Incompétence de l'autorité signataire (simulateur Hent)")
        pieces = _sub(root, "PiecesJointes")
        if attachment:
            _sub(_sub(pieces, "PieceJointe"), "NomFichier", attachment)
        return _serialize(root)
    root.set(_q("DateCourrierPref"), day.isoformat())
    if code == "3-1":
        _sub(root, "DescriptionPieces", "Merci de transmettre le rapport de présentation et l'avis du comité.")
    elif code == "4-1":
        _sub(root, "Motif", "Observations sur la procédure suivie (simulateur Hent).")
    _sub(_sub(root, "Document"), "NomFichier", attachment or "courrier.pdf")
    return _serialize(root)


def reponse_sans_changement(classification_date: date) -> bytes:
    """ReponseClassificationSansChangement (7-3): the collectivité's classification is current."""
    root = _root("ReponseClassificationSansChangement")
    _sub(root, "DateClassification", classification_date.isoformat())
    return _serialize(root)


def retour_classification(data: bytes, classification_date: date) -> bytes:
    """RetourClassification (7-2): ``data`` verbatim when it already carries that date, else
    the same file with its ``DateClassification`` set to ``classification_date``."""
    root = parse(data, name="classification")  # XmlRefused (a DocumentError) when it cannot be read
    element = root.find(_q("DateClassification"))
    if element is None:
        element = etree.Element(_q("DateClassification"))
        root.insert(0, element)
    if (element.text or "").strip() == classification_date.isoformat():
        return data
    element.text = classification_date.isoformat()
    return _serialize(root)
