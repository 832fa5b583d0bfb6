"""Stand-ins for the back-office software: they drop bundles as real vendors export them.

Three vendors, the three formats of ``config/mappings/``: deliberation software (JSON),
HR software (latin-1 CSV, ``;``, dd/mm/yyyy) and finance software (XML, namespaced).
Each bundle is a sidecar and the PDFs it names, written the way a careful exporter does
(files first, the sidecar last).  Used by ``run_bus.py demo``, the tests and the bench.
"""

from __future__ import annotations

__all__ = ["drop_deliberation", "drop_hr_decision", "drop_contract", "contract_row", "drop_contract_row", "SIREN",
           "SIRET", "write_bundle"]

import json
from datetime import date
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from simulators.pdf import make_pdf

SIREN = "214400152"  # a commune of Loire-Atlantique (044), as in the ministry's samples
SIRET = "21440015200013"  # its town hall (the buyer of its contracts)


def write_bundle(folder: Path, sidecar: str, sidecar_bytes: bytes, files: dict[str, bytes]) -> Path:
    """Write the files, then the sidecar (its appearance announces a complete bundle)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    path = folder / sidecar
    path.write_bytes(sidecar_bytes)
    return path


def _pdf(title: str, *lines: str, size: int = 0) -> bytes:
    return make_pdf([title, "", *lines], pad_to=size)


def drop_deliberation(
    folder: Path,
    numero: str,
    *,
    decision: date,
    objet: str = "Cession de la parcelle cadastrée BK 112, rue de la Solidarité",
    classification: str = "3.2",
    annexes: int = 1,
    siren: str = SIREN,
    pdf_size: int = 0,
    annex_size: int = 0,
    omit: tuple[str, ...] = (),
) -> Path:
    """A deliberation from the séance software: ``<numero>.json`` and its PDFs."""
    main = f"{numero}.pdf"
    files = {main: _pdf(f"Délibération {numero}", objet, f"Séance du {decision:%d/%m/%Y}", size=pdf_size)}
    annex_list = []
    for n in range(1, annexes + 1):
        name = f"{numero}_annexe{n}.pdf"
        files[name] = _pdf(f"Annexe {n} à la délibération {numero}", size=annex_size)
        annex_list.append({"fichier": name, "type": "21_RP"} if n == 1 else {"fichier": name})
    sidecar = {
        "collectivite": {"siren": siren, "nom": "Commune de Saint-Herblain"},
        "seance": {"id": f"CM-{decision:%Y-%m}", "date": decision.isoformat()},
        "numero": numero,
        "objet": objet,
        "classification": classification,
        "type": "DELIBERATION",
        "envoi_papier": False,
        "redacteur": {"nom": "Maëlle Le Goff", "telephone": "02 28 25 20 00", "email": "m.legoff@saint-herblain.fr"},
        "fichier": main,
        "annexes": annex_list,
    }
    for name in omit:
        files.pop(name, None)
    return write_bundle(folder, f"{numero}.json", json.dumps(sidecar, ensure_ascii=False, indent=2).encode(), files)


def drop_hr_decision(
    folder: Path,
    numero: str,
    *,
    decision: date,
    objet: str = "Nomination de Mme Hélène Le Bihan au grade d'adjoint administratif principal de 2e classe",
    siren: str = SIREN,
) -> Path:
    """An individual decision from the HR software: a latin-1 ``;`` CSV and two PDFs."""
    main, avis = f"{numero}.pdf", f"{numero}_avis_CAP.pdf"
    files = {main: _pdf(f"Arrêté {numero}", objet), avis: _pdf("Avis de la commission administrative paritaire")}
    header = ("siren;numero_arrete;date_signature;type_acte;code_matiere;objet;matricule;gestionnaire;"
              "courriel_gestionnaire;papier;fichier_pdf;pieces_jointes;date_nomenclature;courriels_retour")
    row = ";".join([
        siren, numero, f"{decision:%d/%m/%Y}", "ARRETE_INDIVIDUEL", "4.1", objet, "004512", "Gaëlle Riou",
        "g.riou@saint-herblain.fr", "N", main, avis, "", "",
    ])
    data = f"{header}\r\n{row}\r\n".encode("latin-1")
    return write_bundle(folder, f"{numero}.csv", data, files)


def drop_contract(
    folder: Path,
    numero: str,
    *,
    signed: date,
    objet: str = "Marché de travaux de rénovation énergétique du groupe scolaire Jules Verne — lot 2",
    siren: str = SIREN,
) -> Path:
    """A contract from the finance software: an XML sidecar and its PDFs."""
    main, ccap = f"{numero}_acte_engagement.pdf", f"{numero}_CCAP.pdf"
    files = {main: _pdf(f"Acte d'engagement {numero}", objet), ccap: _pdf("CCAP", objet)}
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<fin:export xmlns:fin="urn:example:finances:export:2" version="2.3">
  <fin:contrat>
    <fin:acheteur siren={quoteattr(siren)} libelle="Commune de Saint-Herblain"/>
    <fin:reference>{escape(numero)}</fin:reference>
    <fin:numeroMarche>2026-T-0031</fin:numeroMarche>
    <fin:dateSignature>{signed.isoformat()}</fin:dateSignature>
    <fin:objet>{escape(objet)}</fin:objet>
    <fin:nomenclatureActes>1.1</fin:nomenclatureActes>
    <fin:montantHT>412850.00</fin:montantHT>
    <fin:redacteur>
      <fin:nom>Yann Kervella</fin:nom>
      <fin:courriel>commande.publique@saint-herblain.fr</fin:courriel>
    </fin:redacteur>
    <fin:documents>
      <fin:document role="principal" fichier={quoteattr(main)}/>
      <fin:document role="annexe" fichier={quoteattr(ccap)} typologie="11_AP"/>
    </fin:documents>
  </fin:contrat>
</fin:export>
"""
    return write_bundle(folder, f"{numero}.xml", xml.encode("utf-8"), files)


def contract_row(
    numero: str,
    *,
    signed: date,
    montant: str = "125000.00",
    objet: str = "Travaux de rénovation énergétique du groupe scolaire Jules Verne — lot 2 : menuiseries",
    siret: str = SIRET,
    avenants: list[dict[str, object]] | None = None,
    **columns: object,
) -> dict[str, object]:
    """A row of the finance software's ``contrats`` table (the columns config/mappings/contrats-decp.yaml
    reads), as the database hands it over: dates as ISO text, lists as JSON text."""
    row: dict[str, object] = {
        "id": int("".join(c for c in numero if c.isdigit()) or 0),
        "type_contrat": "M",
        "reference_acte": numero.replace("-", "_").upper(),
        "numero_marche": numero,
        "siren": siret[:9],
        "siret_acheteur": siret,
        "nature": "MARCHE",
        "objet": objet,
        "cpv": "45421100-5",
        "procedure": "AOO",
        "lieu_code": "44800",
        "lieu_type": "CP",
        "duree_mois": 10,
        "date_signature": signed.isoformat(),
        "date_notification": signed.isoformat(),
        "date_publication": signed.isoformat(),
        "montant_ht": montant,
        "forme_prix": "F",
        "types_prix": "FERME",
        "techniques": None,
        "modalites_execution": "TRANCHES",
        "clauses_sociales": "CLAUSE",
        "clauses_environnementales": "CRITERE",
        "innovant": "non",
        "ccag": "TRAVAUX",
        "nombre_offres": 4,
        "avance": "oui",
        "taux_avance": "0.05",
        "groupement": "AUCUN",
        "part_ue": None,
        "part_france": None,
        "sous_traitance": "non",
        "titulaires": json.dumps([{"siret": "55204599900869"}]),
        "avenants": json.dumps(avenants) if avenants else None,
        "fichier_acte": f"{numero}_acte_engagement.pdf",
    }
    row.update(columns)
    return row


def drop_contract_row(folder: Path, row: dict[str, object], name: str | None = None) -> Path:
    """The row exported as a JSON sidecar (``<name or numero_marche>.json``) beside its contract's PDF
    (a folder export of the table)."""
    files = {str(row["fichier_acte"]): _pdf(f"Acte d'engagement {row['numero_marche']}", str(row["objet"]))}
    data = json.dumps(row, ensure_ascii=False, indent=2).encode()
    return write_bundle(folder, f"{name or row['numero_marche']}.json", data, files)
