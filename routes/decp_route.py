"""The procurement side of the pipeline: a contract's données essentielles (DECP) and the platform's receipts.

A ``transform: decp`` route maps the vendor's export to a :class:`CanonicalContract` with its own
mapping (``transformers/decp_mapping.py``), checks it, builds the DECP once per format (XML by
default, JSON with ``decp_format: json``) and hands it to the endpoints that take that format: the
procurement platform over SOAP (``type: procurement``) or an SFTP or folder drop.  The same source
document may also take an act route: a contract goes to the préfecture as an act AND, from the
publication threshold, to the procurement platform (``when: {montant_min: 40000}``), two deliveries
of one document.

One DECP is one publication: its idempotency key (``decp:<buyer SIRET>:<id>:<modification id>``: a
contract id is unique for its buyer only) is the
delivery's client key, asked of the platform before anything is sent again; a DECP already
published or on its way from another document of this bus is refused (rule ``decp-unique``).

The platform's answers (Hent's procurement contract, ``schemas/procurement/``) are read here into
the runtime's :class:`Answer`: a ``Receipt`` acknowledges the publication (code ``decp-receipt``),
a ``Rejection`` refuses it (code ``decp-rejection``) with the errors the platform names.
"""

from __future__ import annotations

__all__ = ["DECP_KINDS", "RECEIPT", "REJECTION", "DecpBuilder", "procurement_answer"]

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from bus.connector import DECP_JSON, DECP_XML
from bus.document import Answer, PlannedDelivery
from bus.errors import DocumentError
from transformers import safe_xml
from transformers.decp import build_json, build_xml, check_contract, file_name
from transformers.decp_mapping import ContractMapping
from transformers.decp_model import CanonicalContract, decp_key
from transformers.procurement_receipt import read_procurement_answer
from transformers.safe_xml import XmlRefused

#: a route's decp_format → the artifact kind it builds
DECP_KINDS = {"xml": DECP_XML, "json": DECP_JSON}
#: the answers of the procurement platform, as the runtime knows them (Answer.kind)
RECEIPT = "DecpReceipt"
REJECTION = "DecpRejection"
_NAMESPACE = "urn:hent:procurement:1"


class DecpBuilder:
    """Maps, checks and builds the DECP of the ``decp`` routes of a configuration."""

    def __init__(self, routes: list[Any], *, spool: Any, endpoint: Callable[[str], tuple[tuple[str, ...], Any]],
                 earlier: Callable[[str], Any] = lambda client_key: None) -> None:
        self.spool = spool
        self.endpoint = endpoint  # name → (the kinds it consumes, its config)
        self.earlier = earlier  # client key → the latest delivery with it, or None
        self.mappings: dict[str, ContractMapping] = {}
        for route in routes:
            if route.transform == "decp" and route.map is not None and str(route.map) not in self.mappings:
                self.mappings[str(route.map)] = ContractMapping.load(Path(route.map))

    def referenced_files(self, route: Any, sidecar: str, data: bytes) -> list[str]:
        return self.mappings[str(route.map)].referenced_files(sidecar, data)

    def map(self, route: Any, sidecar: str, data: bytes) -> CanonicalContract:
        """The contract the vendor's export describes (DocumentError naming field and rule)."""
        return self.mappings[str(route.map)].map(sidecar, data)

    def check(self, contract: CanonicalContract) -> None:
        """The rules of a publication (:func:`transformers.decp.check_contract`), once the contract
        is due for one (its route's ``when`` met: under the threshold, nothing is published)."""
        check_contract(contract)

    def plan(self, route: Any, contract: CanonicalContract, done: set[str]) -> list[PlannedDelivery]:
        """A delivery of the contract's DECP to each endpoint of ``route`` not in ``done`` (built once
        per format, the same bytes for every endpoint)."""
        self._check_unique(contract)
        kind = DECP_KINDS[route.decp_format]
        built: tuple[str, str] | None = None
        planned = []
        for endpoint in route.to:
            if endpoint in done:
                continue
            done.add(endpoint)
            kinds, _ = self.endpoint(endpoint)
            if kind not in kinds:
                raise DocumentError(
                    f"endpoint {endpoint!r} takes {' or '.join(kinds)}, not the DECP as {route.decp_format} that "
                    f"route {route.name!r} builds", field="decp_format", rule="endpoint-kind")
            if built is None:
                data = build_xml(contract) if route.decp_format == "xml" else build_json(contract)
                with self.spool.writer(sync=False) as out:  # synced before it is sent anywhere
                    out.write(data)
                built = (file_name(contract, route.decp_format), out.sha256)
            planned.append(PlannedDelivery(
                route=route.name, endpoint=endpoint, artifact_name=built[0], artifact_sha256=built[1],
                artifact_kind=kind, client_key=contract.idempotency_key,
            ))
        return planned

    def _check_unique(self, contract: CanonicalContract) -> None:
        """A publication is made once: not again while an earlier one is on its way or published."""
        earlier = self.earlier(contract.idempotency_key)
        if earlier is None or earlier.state in ("FAILED", "REJECTED"):
            return
        raise DocumentError(
            f"the DECP of contract {contract.id} (modification {contract.modification_id}) is already "
            f"{str(earlier.state).lower()} through delivery {earlier.id}: a modification is published with "
            "its own modification id", field="id", rule="decp-unique")


def procurement_answer(data: bytes, name: str | None) -> Answer | None:
    """The platform's receipt or rejection as an :class:`Answer`, or None when ``data`` is not one."""
    try:
        root = safe_xml.parse(data, name=name, entities="keep")  # read_procurement_answer refuses a DOCTYPE
    except XmlRefused:
        return None
    if etree.QName(root).namespace != _NAMESPACE:
        return None
    read = read_procurement_answer(data, name or "answer.xml")
    client_key = (decp_key(read.buyer_id, read.decp_id, read.modification_id)
                  if read.buyer_id and read.decp_id is not None and read.modification_id is not None else None)
    summary: dict[str, Any] = {
        "kind": read.kind, "decp_id": read.decp_id, "buyer": read.buyer_id, "modification_id": read.modification_id,
        "file": read.file_name, "publication_id": read.publication_id, "errors": list(read.errors),
        "received_at": _iso(read.received_at), "published_at": _iso(read.published_at),
    }
    if read.kind == "receipt" or read.duplicate:  # a duplicate: published already, by an earlier submission
        detail = f"published as {read.publication_id}" if read.publication_id else "received"
        if read.duplicate:
            detail = f"already {detail} (this submission was refused as a duplicate)"
        return Answer(kind=RECEIPT, code="decp-receipt", client_key=client_key, detail=detail,
                      received_on=_iso(read.received_at), summary=summary)
    return Answer(kind=REJECTION, code="decp-rejection", client_key=client_key,
                  detail="; ".join(read.errors) or "refused with no reason given", summary=summary)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat() if hasattr(value, "isoformat") else str(value)
