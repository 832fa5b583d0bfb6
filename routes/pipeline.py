"""The pipeline that runs routes: map the vendor's export, route it, build and validate.

One document, taken from a source connector, is mapped by each route that reads from
that source (a route's ``map`` names the vendor mapping), kept by the routes whose
``when`` it meets, and built once per endpoint of those routes into the artifact the
endpoint consumes (an ACTES archive for a folder, SFTP or Hent's SOAP contract).  The
artifacts go to the spool; the runtime records them and hands them to the endpoints.
"""

from __future__ import annotations

__all__ = ["Pipeline", "act_to_json"]

import dataclasses
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from bus.connector import ARCHIVE, CANONICAL, CANONICAL_RESPONSE, FILE
from bus.document import Answer, PlannedDelivery, PreparedDocument
from bus.errors import DocumentError, HentError, TransientError
from routes.decp_route import DecpBuilder, procurement_answer
from routes.router import condition_failures
from transformers.actes_canonical import build_canonical
from transformers.actes_in import parse_message
from transformers.actes_model import ActFile, CanonicalAct, Collectivite
from transformers.actes_out import build_archive
from transformers.actes_responses import (
    build_canonical_response,
    build_response_archive,
    read_response,
    response_members,
)
from transformers.actes_return import unpack_answer
from transformers.actes_validate import ActesValidator
from transformers.classification import Classification
from transformers.decp_model import contract_to_json
from transformers.mapping import Mapping
from transformers.text_policy import TextPolicy

#: the ministry's code for an act sent with an out-of-date classification date
ODT_VERIF_01 = "ODT-VERIF-01"
#: seconds a fetched classification is used before the ledger is asked again
CLASSIFICATION_TTL = 30.0


def act_to_json(act: CanonicalAct) -> dict[str, Any]:
    """The canonical act as the ledger keeps it (dates ISO, paths as strings)."""

    def convert(value: Any) -> Any:
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, ActFile):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return {f.name: convert(getattr(act, f.name)) for f in dataclasses.fields(act)}


class Pipeline:
    """Implements :class:`bus.document.Processor` for the routes of a configuration."""

    def __init__(
        self,
        config: Any,
        *,
        spool: Any,
        serials: Callable[[str, date], int],
        endpoint: Callable[[str], tuple[tuple[str, ...], Any]],
        today: Callable[[], date] = date.today,
        stored_classification: Callable[[str], tuple[str, bytes] | None] = lambda siren: None,
        previous_delivery: Callable[[str], Any] = lambda id_acte: None,
        refresh_classification: Callable[[str, str], int] = lambda endpoint, siren: 0,
        letters: Callable[[str, str], list[dict[str, Any]]] = lambda id_acte, code: [],
        record_response: Callable[[str, str, str, str], Any] = lambda delivery, message, document, code: None,
        earlier_publication: Callable[[str], Any] = lambda client_key: None,
    ) -> None:
        self.letters = letters  # (IDActe, letter code) → the letters received, oldest first (ledger rows)
        self.record_response = record_response  # (delivery, letter message, response document, code)
        self.previous_delivery = previous_delivery  # IDActe → the latest delivery of that act, or None
        self.refresh_classification = refresh_classification  # (endpoint, SIREN) → asks the platform (7-1)
        self.config = config
        self.stored_classification = stored_classification  # SIREN → (date, 7-2 bytes) fetched from the platform
        self._fetched: dict[str, tuple[float, str | None, Classification | None]] = {}
        self.spool = spool
        self.serials = serials
        self.endpoint = endpoint  # name → (the kinds it consumes, its config)
        self.today = today
        self.text_policy = TextPolicy(config.bus.text_policy)
        self.validator = ActesValidator()
        self.mappings: dict[str, Mapping] = {}
        for route in config.routes:
            if route.transform != "decp" and route.map is not None and str(route.map) not in self.mappings:
                self.mappings[str(route.map)] = Mapping.load(Path(route.map))
        self.decp = DecpBuilder(config.routes, spool=spool, endpoint=endpoint, earlier=earlier_publication)
        self.collectivites: dict[str, Collectivite] = {}
        self.classifications: dict[str, Classification] = {}
        for entry in config.collectivites:
            classification_file = Path(entry.classification) if entry.classification else None
            self.collectivites[entry.siren] = Collectivite(
                siren=entry.siren,
                departement=entry.departement,
                arrondissement=entry.arrondissement,
                nature=entry.nature,
                return_emails=tuple(entry.return_emails),
                classification_file=classification_file,
                classification_date=entry.classification_date,
            )
            if classification_file is not None:
                self.classifications[entry.siren] = Classification.from_file(classification_file)

    @classmethod
    def for_runtime(cls, runtime: Any) -> Pipeline:
        def stored(siren: str) -> tuple[str, bytes] | None:
            row = runtime.ledger.classification(siren)
            if row is None:
                return None
            with runtime.spool.open(row["sha256"]) as handle:
                return row["date"], handle.read()

        return cls(
            runtime.config,
            spool=runtime.spool,
            serials=runtime.ledger.next_envelope_serial,
            endpoint=lambda name: (runtime.endpoint_consumes(name), runtime.endpoint_config(name)),
            stored_classification=stored,
            previous_delivery=lambda id_acte: runtime.ledger.find_delivery(id_acte=id_acte),
            refresh_classification=lambda endpoint, siren: runtime.answers.refresh_classification(endpoint, siren),
            letters=runtime.ledger.letters_of,
            record_response=runtime.ledger.add_response,
            earlier_publication=lambda client_key: runtime.ledger.find_delivery(client_key=client_key),
        )

    def classification(self, siren: str) -> Classification | None:
        """The classification acts of ``siren`` are checked against: the newest one fetched from
        the platform (7-2, kept in the ledger) when there is one, else the configured file."""
        return self.fetched_classification(siren) or self.classifications.get(siren)

    def fetched_classification(self, siren: str) -> Classification | None:
        """The newest classification of ``siren`` fetched from the platform, if any."""
        now = time.monotonic()
        cached = self._fetched.get(siren)
        if cached is None or now - cached[0] > CLASSIFICATION_TTL:
            found = self.stored_classification(siren)
            if found is None:
                cached = (now, None, None)
            elif cached is not None and cached[1] == found[0]:
                cached = (now, cached[1], cached[2])
            else:
                cached = (now, found[0], Classification.from_bytes(found[1], name=f"7-2 of {siren}"))
            self._fetched[siren] = cached
        return cached[2]

    def _routes_from(self, source: str) -> list[Any]:
        return [route for route in self.config.routes if source in route.from_]

    def relays(self, source: str) -> bool:
        """Whether ``source`` feeds passthrough routes (its files go on unchanged, each alone)."""
        return any(route.transform == "passthrough" for route in self._routes_from(source))

    def answers(self, source: str) -> bool:
        """Whether ``source`` feeds response routes (the collectivité's answers to letters)."""
        return any(route.transform == "response" for route in self._routes_from(source))

    def bundle_members(self, source: str) -> Callable[[str, bytes], list[str]]:
        if self.relays(source):
            return lambda name, data: []
        if self.answers(source):
            return response_members
        routes = [r for r in self._routes_from(source) if r.map is not None]

        def members(name: str, data: bytes) -> list[str]:
            names: list[str] = []
            for route in routes:
                found = (self.decp.referenced_files(route, name, data) if route.transform == "decp"
                         else self.mappings[str(route.map)].referenced_files(name, data))
                names.extend(n for n in found if n not in names)
            return names

        return members

    def map(self, source: str, sidecar: str, data: bytes, files: dict[str, Path]) -> list[tuple[Any, Any]]:
        """Every (route, act) — (route, contract) for a decp route — this document takes; DocumentError when none."""
        routes = self._routes_from(source)
        if not routes:
            raise DocumentError(f"no route reads from connector {source!r}", path=sidecar, rule="route-match")
        taken: list[tuple[Any, Any]] = []
        mapped: dict[str, Any] = {}
        errors: dict[str, DocumentError] = {}
        refusals: list[str] = []
        for route in routes:
            key = f"{route.transform == 'decp'}:{route.map}"  # one map file may describe the act and the contract
            if route.map is None:
                errors[key] = DocumentError(f"route {route.name!r} has no map to read {sidecar} with",
                                            path=sidecar, field="map", rule="route-map")
            if key in errors:
                continue
            if key not in mapped:
                try:
                    mapped[key] = (self.decp.map(route, sidecar, data) if route.transform == "decp"
                                   else self.mappings[str(route.map)].map(sidecar, data, files, self.collectivites))
                except DocumentError as exc:
                    errors[key] = exc
                    continue
            failures = condition_failures(route.when, mapped[key], source)
            if failures:
                refusals.append(f"route {route.name!r}: " + "; ".join(failures))
            else:
                if route.transform == "decp":  # due for publication: its data must be right
                    self.decp.check(mapped[key])
                taken.append((route, mapped[key]))
        decp_errors = [exc for key, exc in errors.items() if key.startswith("True:")]
        if decp_errors:  # a contract the bus cannot read as such fails, even when its act could go
            raise decp_errors[0]
        if taken:
            return taken
        if errors:
            raise next(iter(errors.values()))
        raise DocumentError(
            f"{sidecar} matches no route: " + " | ".join(refusals),
            path=sidecar,
            field="when",
            rule="route-match",
        )

    def prepare(self, document: Any) -> PreparedDocument:
        if self.relays(document.source):
            return self._relay(document)
        if self.answers(document.source):
            return self._respond(document)
        sidecar_path = self.spool.path(document.sidecar_sha256)
        files = {name: self.spool.path(sha) for name, sha in document.files.items()}
        taken = self.map(document.source, document.bundle, sidecar_path.read_bytes(), files)
        contracts = [(route, contract) for route, contract in taken if route.transform == "decp"]
        acts = [(route, act) for route, act in taken if route.transform != "decp"]
        deliveries: list[PlannedDelivery] = []
        seen: set[str] = set()
        canonical: dict[str, Any] = {}
        act: CanonicalAct | None = None
        if acts:
            act = acts[0][1]
            deliveries.extend(self._plan_acts(acts, document.files, seen))
            canonical = act_to_json(act)
        for route, contract in contracts:
            deliveries.extend(self.decp.plan(route, contract, seen))
            canonical.setdefault("contract", contract_to_json(contract))
        lead = act if act is not None else contracts[0][1]  # what names the document: its act, else its DECP
        return PreparedDocument(
            route=taken[0][0].name,
            siren=lead.siren,
            id_acte=act.id_acte if act is not None else None,
            natural_key=lead.idempotency_key,
            canonical=canonical,
            deliveries=tuple(deliveries),
        )

    def _plan_acts(self, taken: list[tuple[Any, CanonicalAct]], shas: dict[str, str], seen: set[str],
                   ) -> list[PlannedDelivery]:
        """The act checked against the ledger and the platform's classification, then built once
        per kind of endpoint of its routes."""
        self._check_precedent(taken[0][1])
        self._recheck_refusal(taken[0][1])
        fetched = self.fetched_classification(taken[0][1].siren)
        if fetched is not None and fetched.date is not None:  # it dates the act (ClassificationDateVersion)
            taken = [(route, replace(act, classification_date=fetched.date)) for route, act in taken]
        deliveries: list[PlannedDelivery] = []
        built: dict[tuple[Any, ...], PlannedDelivery] = {}  # endpoints with the same options share one archive
        for route, route_act in taken:
            for endpoint in route.to:
                if endpoint in seen:
                    continue
                seen.add(endpoint)
                kinds, options = self.endpoint(endpoint)
                key = (route_act, ARCHIVE in kinds, getattr(options, "trigram", None),
                       getattr(options, "quadrigram", None), getattr(options, "max_archive_size", None))
                if key not in built:
                    built[key] = self._build(route.name, endpoint, route_act, shas)
                deliveries.append(replace(built[key], route=route.name, endpoint=endpoint))
        return deliveries

    def _check_precedent(self, act: CanonicalAct) -> None:
        """An act that replaces another (PrecedentIdentifiantActe) names one the ministry acknowledged:
        when this bus sent that one, it must have been acknowledged."""
        if not act.precedent_id_acte:
            return
        previous = self.previous_delivery(act.precedent_id_acte)
        if previous is not None and previous.state != "ACKNOWLEDGED":
            raise DocumentError(
                f"{act.sidecar}: PrecedentIdentifiantActe {act.precedent_id_acte} names an act the ministry has not "
                f"acknowledged (its delivery to {previous.endpoint} is {previous.state}): an act re-transmits an "
                "acknowledged one only", path=act.sidecar, field="precedent_id_acte", rule="precedent-acknowledged",
            )

    def _recheck_refusal(self, act: CanonicalAct) -> None:
        """Before an act the ministry refused is sent again, the refusal's cause is checked anew:
        after ODT-VERIF-01 (classification out of date) the platform is asked for the current
        classification first, so that the new attempt carries its date."""
        previous = self.previous_delivery(act.id_acte)
        if previous is None or previous.state != "REJECTED" or ODT_VERIF_01 not in (previous.reason or ""):
            return
        try:
            self.refresh_classification(previous.endpoint, act.siren)
        except HentError as exc:
            raise TransientError(
                f"act {act.id_acte} was refused for an out-of-date classification (ODT-VERIF-01); the current "
                f"classification could not be asked of {previous.endpoint} yet: {exc.message}",
                path=act.sidecar, field="classification_date", rule="classification-refresh",
            ) from exc
        self._fetched.pop(act.siren, None)  # read the ledger again

    def _respond(self, document: Any) -> PreparedDocument:
        """A response bundle: the collectivité's answer to a letter of the préfecture, built into an
        ACTES archive for each endpoint of its routes, and linked to the letter in the ledger."""
        files = {name: self.spool.path(sha) for name, sha in document.files.items()}
        request = read_response(document.bundle, self.spool.path(document.sidecar_sha256).read_bytes(), files)
        letter, letter_date = self._letter(request)
        collectivite = self.collectivites.get(request.siren)
        if collectivite is None:
            raise DocumentError(f"{document.bundle}: SIREN {request.siren} of act {request.id_acte} is not among the "
                                "configured collectivites", path=document.bundle, field="reponse.acte",
                                rule="collectivite-unknown")
        routes = self._unread_routes(document)
        deliveries: list[PlannedDelivery] = []
        today = self.today()
        for route in routes:
            for endpoint in route.to:
                kinds, options = self.endpoint(endpoint)
                if any(d.endpoint == endpoint for d in deliveries):
                    continue
                if ARCHIVE not in kinds and CANONICAL_RESPONSE in kinds:  # the platform builds the archive
                    with self.spool.writer(sync=False) as out:
                        name = build_canonical_response(
                            request, out, letter_date=letter_date, letter_id=letter["message_id"],
                            departement=collectivite.departement, shas=document.files, validator=self.validator,
                        )
                    deliveries.append(PlannedDelivery(
                        route=route.name, endpoint=endpoint, artifact_name=name, artifact_sha256=out.sha256,
                        artifact_kind=CANONICAL_RESPONSE, client_key=f"{request.id_acte}-{request.code}",
                        id_acte=request.id_acte,
                    ))
                    continue
                if ARCHIVE not in kinds:
                    raise DocumentError(f"endpoint {endpoint!r} takes {' or '.join(kinds)}: it cannot carry the "
                                        f"answer {request.code} of route {route.name!r}", rule="endpoint-kind")
                with self.spool.writer(sync=False) as out:
                    transmission = build_response_archive(
                        request, out, letter_date=letter_date, departement=collectivite.departement,
                        return_emails=collectivite.return_emails, nature_collectivite=collectivite.nature,
                        arrondissement=collectivite.arrondissement, quadrigram=options.quadrigram,
                        trigram=options.trigram, serial=self.serials(request.siren, today), generation_date=today,
                        validator=self.validator, max_size=options.max_archive_size,
                    )
                deliveries.append(PlannedDelivery(
                    route=route.name, endpoint=endpoint, artifact_name=transmission.archive_name,
                    artifact_sha256=out.sha256, artifact_kind=ARCHIVE, client_key=transmission.envelope_name,
                    id_acte=request.id_acte, envelope_name=transmission.envelope_name,
                ))
        self.record_response(letter["delivery_id"], letter["message_id"], document.id, request.code)
        return PreparedDocument(
            route=routes[0].name, siren=request.siren, id_acte=None, natural_key=None,
            canonical={"response": {"id_acte": request.id_acte, "code": request.code,
                                    "letter": {"code": request.letter_code, "name": letter["name"],
                                               "date": letter_date.isoformat()},
                                    "documents": [f.source_name for f in request.documents]}},
            deliveries=tuple(deliveries),
        )

    def _unread_routes(self, document: Any) -> list[Any]:
        """The routes a document no mapping reads takes: by their ``when: source`` only."""
        source = document.source
        routes = [r for r in self._routes_from(source) if not condition_failures(r.when, None, source)]
        if not routes:
            raise DocumentError(f"{document.bundle} from {document.source} matches no route (when: source)",
                                path=document.bundle, field="when", rule="route-match")
        return routes

    def _letter(self, request: Any) -> tuple[dict[str, Any], date]:
        """The letter a response answers (the one of its date, else the latest) and its DateCourrierPref."""
        found = []
        for letter in self.letters(request.id_acte, request.letter_code):
            with self.spool.open(letter["sha256"]) as handle:
                answer = self.read_answer(handle.read(), letter["name"])
            dated = (answer.summary.get("dates") or {}).get("DateCourrierPref")
            if dated:
                found.append((letter, date.fromisoformat(str(dated))))
        if request.letter_date is not None:
            found = [(letter, day) for letter, day in found if day == request.letter_date]
        if not found:
            when = f" of {request.letter_date}" if request.letter_date else ""
            raise DocumentError(
                f"{request.sidecar}: no letter {request.letter_code}{when} of the préfecture was received for act "
                f"{request.id_acte}: {request.code} answers one", path=request.sidecar, field="reponse.acte",
                rule="response-letter",
            )
        return found[-1]

    def _relay(self, document: Any) -> PreparedDocument:
        """A passthrough document: its one file, unchanged, to every endpoint of its routes."""
        deliveries: list[PlannedDelivery] = []
        taken = self._unread_routes(document)
        for route in taken:
            for endpoint in route.to:
                kinds, _ = self.endpoint(endpoint)
                if FILE not in kinds:
                    raise DocumentError(f"endpoint {endpoint!r} takes {' or '.join(kinds)}, not a file relayed "
                                        f"unchanged by route {route.name!r}", rule="endpoint-kind")
                if all(d.endpoint != endpoint for d in deliveries):
                    deliveries.append(PlannedDelivery(
                        route=route.name, endpoint=endpoint, artifact_name=document.bundle,
                        artifact_sha256=document.sidecar_sha256, artifact_kind=FILE,
                    ))
        return PreparedDocument(
            route=taken[0].name, siren=None, id_acte=None, natural_key=None,
            canonical={"file": {"name": document.bundle, "sha256": document.sidecar_sha256,
                                "size": self.spool.path(document.sidecar_sha256).stat().st_size}},
            deliveries=tuple(deliveries),
        )

    def _build(self, route: str, endpoint: str, act: CanonicalAct, shas: dict[str, str]) -> PlannedDelivery:
        kinds, options = self.endpoint(endpoint)
        if ARCHIVE not in kinds:
            if CANONICAL in kinds:
                return self._build_canonical(route, endpoint, act, shas)
            raise DocumentError(
                f"endpoint {endpoint!r} takes {' or '.join(kinds)}, not the ACTES archive route {route!r} builds",
                rule="endpoint-kind",
            )
        today = self.today()
        serial = self.serials(act.siren, today)
        with self.spool.writer(sync=False) as out:  # synced before it is sent anywhere
            transmission = build_archive(
                act,
                out,
                quadrigram=options.quadrigram,
                trigram=options.trigram,
                serial=serial,
                generation_date=today,
                today=today,
                text_policy=self.text_policy,
                max_size=options.max_archive_size,
                classification=self.classification(act.siren),
                validator=self.validator,
            )
        return PlannedDelivery(
            route=route,
            endpoint=endpoint,
            artifact_name=transmission.archive_name,
            artifact_sha256=out.sha256,
            artifact_kind=ARCHIVE,
            client_key=transmission.envelope_name,
            id_acte=transmission.id_acte,
            envelope_name=transmission.envelope_name,
        )

    def _build_canonical(self, route: str, endpoint: str, act: CanonicalAct, shas: dict[str, str]) -> PlannedDelivery:
        """For a platform that builds the archive itself (S2LOW, Pastell): the checked act as JSON."""
        with self.spool.writer(sync=False) as out:
            package = build_canonical(act, out, shas=shas, today=self.today(), text_policy=self.text_policy,
                                      classification=self.classification(act.siren), validator=self.validator)
        return PlannedDelivery(
            route=route, endpoint=endpoint, artifact_name=package.name, artifact_sha256=out.sha256,
            artifact_kind=CANONICAL, client_key=package.id_acte, id_acte=package.id_acte,
        )

    def read_answer(self, data: bytes, name: str | None) -> Answer:
        procurement = procurement_answer(data, name)
        if procurement is not None:
            return procurement
        message = parse_message(data, name)
        received = message.dates.get("DateReception")
        key = message.act_key
        act = None
        if key is not None and key.is_complete:
            assert key.siren and key.numero_interne and key.decision_date
            act = (key.siren, f"{key.decision_date:%Y%m%d}", key.numero_interne)
        return Answer(
            kind=message.kind,
            code=message.code,
            id_acte=message.id_acte,
            act=act,
            envelope_name=f"{message.envelope_name}.xml" if message.envelope_name else None,
            received_on=received.isoformat() if received else None,
            anomaly=message.anomaly_nature,
            detail=message.detail,
            summary=message.to_dict(),
        )

    def read_inbox(
        self, name: str, data: bytes, attachments: dict[str, bytes]
    ) -> list[tuple[str, bytes, dict[str, bytes]]]:
        """The messages an answer file holds (a ministry package opened, or the message itself)."""
        return [(m.name, m.data, m.attachments) for m in unpack_answer(name, data, attachments)]
