"""A stand-in for the finance software's database: a ``contrats`` table, its contracts' PDFs beside it.

The table has the columns ``config/mappings/contrats-decp.yaml`` reads (one row per contract or
avenant, lists as JSON text), and the columns Hent writes its outcomes to: the row's state
(``hent_etat``: NOUVEAU, then CLAIMED, TAKEN or ERROR), the act's (``acte_etat``, ``id_acte``,
``acte_erreur``, ``acte_date``) and the DECP's (``decp_etat``, ``decp_id``, ``decp_erreur``,
``decp_date``).  ``config/examples/finance-db-to-procurement.yaml`` reads it; the tests and
``run_bus.py demo`` fill it.  Works on any SQLAlchemy URL (a SQLite file, PostgreSQL).
"""

from __future__ import annotations

__all__ = ["OUTCOME_COLUMNS", "FinanceDatabase"]

from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, select, update

from simulators.backoffice import _pdf, contract_row

#: where Hent writes back, per route of the example configuration
OUTCOME_COLUMNS = ("hent_etat", "acte_etat", "id_acte", "acte_erreur", "acte_date",
                   "decp_etat", "decp_id", "decp_erreur", "decp_date", "hent_erreur")
_TEXT_COLUMNS = ("type_contrat", "reference_acte", "numero_marche", "siren", "siret_acheteur", "nature", "objet",
                 "cpv", "procedure", "lieu_code", "lieu_type", "date_signature", "date_notification",
                 "date_publication", "montant_ht", "forme_prix", "types_prix", "techniques", "modalites_execution",
                 "clauses_sociales", "clauses_environnementales", "innovant", "ccag", "avance", "taux_avance",
                 "groupement", "part_ue", "part_france", "sous_traitance", "titulaires", "avenants", "fichier_acte")


class FinanceDatabase:
    """The vendor's ``contrats`` table at ``url``, its PDFs in ``files_dir``."""

    def __init__(self, url: str, files_dir: Path, *, table: str = "contrats") -> None:
        self.engine = create_engine(url)
        self.files_dir = files_dir
        metadata = MetaData()
        self.table = Table(
            table, metadata,
            Column("id", Integer, primary_key=True),
            *(Column(name, Text) for name in _TEXT_COLUMNS),
            Column("duree_mois", Integer), Column("nombre_offres", Integer),
            *(Column(name, String(200)) for name in OUTCOME_COLUMNS),
        )
        metadata.create_all(self.engine)

    def add(self, numero: str, *, signed: date, row_id: int | None = None, **columns: Any) -> int:
        """A new contract row (state NOUVEAU) and its PDF; its id."""
        row = contract_row(numero, signed=signed, **columns)
        if row_id is not None:
            row["id"] = row_id
        self.files_dir.mkdir(parents=True, exist_ok=True)
        (self.files_dir / str(row["fichier_acte"])).write_bytes(
            _pdf(f"Acte d'engagement {row['numero_marche']}", str(row["objet"])))
        with self.engine.begin() as conn:
            conn.execute(self.table.insert().values(**row, hent_etat="NOUVEAU"))
        return int(row["id"])  # type: ignore[call-overload]

    def rows(self) -> dict[int, dict[str, Any]]:
        """Every row by id, as the vendor sees it now."""
        with self.engine.connect() as conn:
            return {r.id: dict(r._mapping) for r in conn.execute(select(self.table).order_by(self.table.c.id))}

    def set(self, row_id: int, **columns: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.id == row_id).values(**columns))

    def close(self) -> None:
        self.engine.dispose()
