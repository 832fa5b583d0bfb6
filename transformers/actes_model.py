"""The canonical act: what every vendor export is mapped to, whatever its format.

Field names are plain English; where a field is one of the ACTES format's, its docstring
gives the official name so that a reader can check it against the specification.
"""

from __future__ import annotations

__all__ = ["NATURES", "NATURE_DEFAULT_TYPE", "ActFile", "CanonicalAct", "Collectivite"]

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

#: CodeNatureActe → TypeAbrege (standards.md §1.6)
NATURES: dict[int, str] = {1: "DE", 2: "AR", 3: "AI", 4: "CC", 5: "BF", 6: "AU"}

#: Default piece typology of the main document per nature (S2LOW, standards.md §1.6)
NATURE_DEFAULT_TYPE: dict[int, str] = {
    1: "99_DE",
    2: "99_AR",
    3: "99_AI",
    4: "99_DC",
    5: "99_BU",
    6: "99_AU",
}


@dataclass(frozen=True)
class ActFile:
    """One file of the act: the main document or an annex.

    ``source_name`` is the name the vendor gave it (for error messages), ``path`` where
    its bytes are (the spool, or a test's temporary folder), ``type_code`` its piece
    typology (``99_DE``, ``32_DP``...) or None for the nature's default.
    """

    source_name: str
    path: Path
    type_code: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class CanonicalAct:
    """An act to send for contrôle de légalité (message 1-1, standards.md §1.7)."""

    siren: str  #: insee:SIREN of the collectivité, 9 digits
    departement: str  #: actes:Departement, 3 characters ("034", "02A", "974")
    arrondissement: int  #: actes:Arrondissement, one digit
    collectivite_nature: str  #: IDCL/@actes:Nature, 2 digits ("31" commune...)
    decision_date: date  #: actes:Date
    numero_interne: str  #: actes:NumeroInterne
    nature: int  #: actes:CodeNatureActe, 1..6
    matieres: tuple[int, ...]  #: CodeMatiere1..5, at least two
    objet: str  #: actes:Objet
    classification_date: date  #: actes:ClassificationDateVersion
    main_document: ActFile  #: actes:Document
    annexes: tuple[ActFile, ...] = ()  #: actes:Annexes/actes:Annexe
    document_papier: bool = False  #: actes:DocumentPapier, O / N
    precedent_id_acte: str | None = None  #: PrecedentIdentifiantActe/@actes:IDActe
    return_emails: tuple[str, ...] = ()  #: AdressesRetour/Email, at least one
    referent_name: str | None = None  #: Referent/Nom
    referent_phone: str | None = None  #: Referent/Telephone
    referent_email: str | None = None  #: Referent/Email
    sidecar: str | None = field(default=None, compare=False)  #: the vendor file it was read from
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def nature_code(self) -> str:
        """The two-letter abbreviation (TypeAbrege) of the nature: DE, AR, AI, CC, BF, AU."""
        return NATURES[self.nature]

    @property
    def id_acte(self) -> str:
        """The IDActe the ministry will give this act: DDD-SIREN-YYYYMMDD-NUMERO-NN."""
        return (
            f"{self.departement}-{self.siren}-{self.decision_date:%Y%m%d}-"
            f"{self.numero_interne}-{self.nature_code}"
        )

    @property
    def idempotency_key(self) -> str:
        """SIREN + NumeroInterne + decision date: the same act is never sent twice."""
        return f"acte:{self.siren}:{self.numero_interne}:{self.decision_date.isoformat()}"


@dataclass(frozen=True)
class Collectivite:
    """What the configuration says of a collectivité (``collectivites:`` in the YAML)."""

    siren: str
    departement: str
    arrondissement: int
    nature: str  #: IDCL/@actes:Nature, 2 digits
    return_emails: tuple[str, ...] = ()
    classification_file: Path | None = None  #: a RetourClassification (7-2) to check against
    classification_date: date | None = None  #: ClassificationDateVersion when the sidecar lacks one
