"""Read a classification file (RetourClassification, message 7-2, standards.md §1.10).

The ministry's files are read leniently: elements are matched by local name (a missing or
different namespace is tolerated), entries whose codes are not integers are skipped, and a
missing or malformed date gives ``date=None``.  Only a file that is not XML at all, or whose
root is not ``RetourClassification``, is refused.  Entities are never expanded and nothing
is fetched from the network.
"""

from __future__ import annotations

__all__ = ["Classification", "Matiere", "NatureInfo"]

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from lxml import etree

from bus.errors import DocumentError, Problem
from transformers import safe_xml


@dataclass(frozen=True)
class NatureInfo:
    """One NatureActe: CodeNatureActe, Libelle, TypeAbrege and its TypePJNatureActe codes."""

    code: int
    libelle: str
    abbrev: str
    type_codes: dict[str, str] = field(default_factory=dict)  #: CodeTypePJ -> Libelle


@dataclass(frozen=True)
class Matiere:
    """One node of the matières tree (Matiere1..Matiere5)."""

    code: int
    libelle: str
    children: dict[int, Matiere] = field(default_factory=dict)


@dataclass(frozen=True)
class Classification:
    """The natures, piece types and matières a préfecture accepts, as of ``date``."""

    date: date | None
    natures: dict[int, NatureInfo]
    matieres: dict[int, Matiere]
    source: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> Classification:
        """Parse the classification file at ``path``."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DocumentError(
                f"cannot read classification file: {exc.strerror}", path=str(path), rule="file-readable"
            ) from exc
        return cls.from_bytes(data, name=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str | None = None) -> Classification:
        """Parse a classification file held in memory; ``name`` is used in error messages."""
        root = safe_xml.parse(data, name=name, entities="keep")  # a platform's file: entities left unexpanded
        if etree.QName(root).localname != "RetourClassification":
            message = f"root element is {etree.QName(root).localname}, expected RetourClassification"
            raise DocumentError(
                message,
                problems=[Problem(message, file=name, rule="classification-root")],
                path=name,
                rule="classification-root",
            )
        when = None
        for element in _children(root, "DateClassification"):
            when = _date((element.text or "").strip())
        natures: dict[int, NatureInfo] = {}
        for holder in _children(root, "NaturesActes"):
            for element in _children(holder, "NatureActe"):
                nature = _nature(element)
                if nature is not None:
                    natures[nature.code] = nature
        matieres: dict[int, Matiere] = {}
        for holder in _children(root, "Matieres"):
            matieres.update(_matieres(holder, 1))
        return cls(date=when, natures=natures, matieres=matieres, source=name)

    def has_matieres(self, codes: tuple[int, ...]) -> bool:
        """True when ``codes`` (CodeMatiere1, CodeMatiere2, ...) is a path in the matières tree."""
        if not codes:
            return False
        level = self.matieres
        for code in codes:
            node = level.get(code)
            if node is None:
                return False
            level = node.children
        return True

    def type_codes_for(self, nature: int) -> set[str]:
        """The CodeTypePJ accepted for ``nature``; empty when the nature is unknown."""
        info = self.natures.get(nature)
        return set(info.type_codes) if info else set()


def _children(element: etree._Element, localname: str) -> Iterator[etree._Element]:
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child).localname == localname:
            yield child


def _attribute(element: etree._Element, localname: str) -> str | None:
    for key, value in element.attrib.items():
        if etree.QName(key).localname == localname:
            return str(value)
    return None


def _integer(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _nature(element: etree._Element) -> NatureInfo | None:
    code = _integer(_attribute(element, "CodeNatureActe"))
    if code is None:
        return None
    types: dict[str, str] = {}
    for child in _children(element, "TypePJNatureActe"):
        type_code = (_attribute(child, "CodeTypePJ") or "").strip()
        if type_code:
            types[type_code] = _attribute(child, "Libelle") or ""
    return NatureInfo(
        code=code,
        libelle=_attribute(element, "Libelle") or "",
        abbrev=(_attribute(element, "TypeAbrege") or "").strip(),
        type_codes=types,
    )


def _matieres(element: etree._Element, level: int) -> dict[int, Matiere]:
    found: dict[int, Matiere] = {}
    if level > 5:
        return found
    for child in _children(element, f"Matiere{level}"):
        code = _integer(_attribute(child, "CodeMatiere"))
        if code is None:
            continue
        found[code] = Matiere(
            code=code, libelle=_attribute(child, "Libelle") or "", children=_matieres(child, level + 1)
        )
    return found
