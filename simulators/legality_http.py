"""The legality simulator's HTTP side: one handler for the SOAP service, its WSDL and the
control API (see :mod:`simulators.legality` for the routes).  HTTP/1.0: one request per
connection, so that a dropped or hung call never holds a kept-alive socket.  Over TLS, the
handshake is made in the connection's thread (a failed one is logged at DEBUG and closed):
the server and the handler's helpers are :mod:`simulators._http_sim`'s.
"""

from __future__ import annotations

__all__ = ["LegalityHandler", "LegalityServer"]

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from simulators._http_sim import BaseSimHandler, QuietHTTPServer
from simulators.legality_soap import LegalityFault, MalformedRequest, fault_xml, parse_request, reply_xml

if TYPE_CHECKING:
    from simulators.legality import LegalitySimulator

log = logging.getLogger("simulators.legality")


class LegalityServer(QuietHTTPServer):
    simulator: LegalitySimulator


class LegalityHandler(BaseSimHandler):
    server: LegalityServer
    server_version = "HentLegalitySimulator/1"

    def _handle(self, method: str) -> None:
        body = self._body() if method == "POST" else b""
        if body is None:
            return
        if method == "GET" and self.path in ("/soap?wsdl", "/soap?WSDL"):
            self._send(200, self.server.simulator.wsdl_text().encode("utf-8"), "text/xml; charset=utf-8")
        elif method == "GET" and self.path == "/legality.xsd":
            self._send(200, self.server.simulator.xsd_bytes(), "text/xml; charset=utf-8")
        elif method == "DELETE" or self.path.startswith("/control/"):
            self._control(method, self.path, body)
        elif method == "POST" and self.path == "/soap":
            self._soap(body)
        else:
            self._send(404, b"not found", "text/plain")

    def _fault(self, faultcode: str, faultstring: str, detail: LegalityFault | None = None) -> None:
        self._send(500, fault_xml(faultcode, faultstring, detail), "text/xml; charset=utf-8")

    def _soap(self, body: bytes) -> None:
        simulator = self.server.simulator
        try:
            request = parse_request(body)
        except MalformedRequest as exc:
            simulator._count_call("?")
            self._fault("soap:Client", f"malformed request: {exc}")
            return
        request = replace(request, client=_client_subject(self.connection))
        answering, fault = self._apply_faults(request.operation)
        if not answering:
            return
        kind = fault.kind if fault else None
        if kind == "http500":
            self._send(500, b"Internal Server Error (injected)", "text/plain")
            return
        if kind == "soapfault":
            injected = LegalityFault("INTERNAL", "internal error (injected)")
            self._fault(injected.faultcode, injected.message, injected)
            return
        if not simulator._authorised(request):
            denied = LegalityFault("AUTH", "a valid WS-Security UsernameToken (PasswordText) is required")
            self._fault(denied.faultcode, denied.message, denied)
            return
        try:
            reply = reply_xml(request.operation, simulator._dispatch(request))
        except LegalityFault as refused:
            reply, status = fault_xml(refused.faultcode, refused.message, refused), 500
        except MalformedRequest as exc:
            reply, status = fault_xml("soap:Client", f"malformed request: {exc}"), 500
        except Exception as exc:  # the simulator answers like a server, it does not die
            log.exception("%s failed", request.operation)
            internal = LegalityFault("INTERNAL", f"{type(exc).__name__}: {exc}")
            reply, status = fault_xml(internal.faultcode, internal.message, internal), 500
        else:
            status = 200
        if kind == "lost_reply":
            self._drop()
            return
        self._send(status, reply, "text/xml; charset=utf-8")


def _client_subject(connection: Any) -> str | None:
    """``CN=...`` of the client certificate a mutual-TLS connection presented, else None."""
    getpeercert = getattr(connection, "getpeercert", None)
    certificate = getpeercert() if getpeercert is not None else None
    if not certificate:
        return None
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C"}
    names = [f"{short.get(key, key)}={value}" for rdn in certificate.get("subject", ()) for key, value in rdn]
    return ",".join(names) or None
