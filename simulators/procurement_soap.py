"""SOAP 1.1 on the wire for the procurement simulator, and its HTTP handler.

Document/literal wrapped, namespace ``urn:hent:procurement:1`` (``schemas/procurement/``): the
operation is the local name of the Body's first element, its parameters that element's
children.  Requests are parsed with no entity expansion, no DTD and no network.  The handler
serves ``POST /soap``, ``GET /soap?wsdl``, ``GET /procurement.xsd`` and the ``/control/``
routes of :mod:`simulators._http_sim`, and applies the injected faults (see
:mod:`simulators.procurement`).
"""

from __future__ import annotations

__all__ = ["PR_NS", "SOAP_ENV_NS", "MalformedRequest", "ProcurementFault", "ProcurementHandler",
           "ProcurementServer", "SoapRequest", "Value", "fault_xml", "parse_request", "reply_xml"]

import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from lxml import etree

from simulators._http_sim import BaseSimHandler, QuietHTTPServer
from simulators._xml import XmlRefused, parse_soap

if TYPE_CHECKING:
    from simulators.procurement import ProcurementSimulator

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
PR_NS = "urn:hent:procurement:1"
_WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
#: a reply field: text, bytes (written base64), a datetime, a nested element, or None (left out)
Value = str | bytes | datetime | Sequence[tuple[str, "Value"]] | None
log = logging.getLogger("simulators.procurement")


class ProcurementFault(Exception):
    """A fault the WSDL declares: detail ``pr:ProcurementFault {Code, Message, TransactionId?}``."""

    def __init__(self, code: str, message: str, transaction_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.transaction_id = code, message, transaction_id

    @property
    def faultcode(self) -> str:
        return "soap:Server" if self.code == "INTERNAL" else "soap:Client"


class MalformedRequest(Exception):
    """Not a SOAP 1.1 request for this service: a soap:Client fault with no detail."""


@dataclass(frozen=True)
class SoapRequest:
    """One request: the operation's name, its parameters and the WS-Security UsernameToken."""

    operation: str
    body: etree._Element
    username: str | None = None
    password: str | None = None

    def text(self, name: str) -> str | None:
        element = self.body.find(f"{{{PR_NS}}}{name}")
        return None if element is None else (element.text or "").strip()

    def texts(self, name: str) -> list[str]:
        return [(e.text or "").strip() for e in self.body.iterfind(f"{{{PR_NS}}}{name}")]

    def required(self, name: str) -> str:
        value = self.text(name)
        if not value:
            raise ProcurementFault("INVALID_REQUEST", f"{self.operation}: {name} is required")
        return value

    def binary(self, name: str) -> bytes:
        try:
            return base64.b64decode("".join(self.required(name).split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProcurementFault("INVALID_REQUEST", f"{self.operation}: {name} is not base64") from exc


def parse_request(data: bytes) -> SoapRequest:
    """The operation and parameters of a SOAP 1.1 request; MalformedRequest otherwise."""
    try:
        root = parse_soap(data)
    except XmlRefused as exc:
        raise MalformedRequest(f"not XML: {exc.message}") from exc
    body = root.find(f"{{{SOAP_ENV_NS}}}Body") if root.tag == f"{{{SOAP_ENV_NS}}}Envelope" else None
    operation = None if body is None else next((e for e in body if isinstance(e.tag, str)), None)
    if operation is None:
        raise MalformedRequest("not a SOAP 1.1 Envelope with an operation in its Body")
    name = etree.QName(operation)
    if name.namespace != PR_NS:
        raise MalformedRequest(f"{name.localname} is not in the namespace {PR_NS}")
    token = root.find(f"{{{SOAP_ENV_NS}}}Header/{{{_WSSE_NS}}}Security/{{{_WSSE_NS}}}UsernameToken")
    username = None if token is None else token.findtext(f"{{{_WSSE_NS}}}Username")
    password = None if token is None else token.findtext(f"{{{_WSSE_NS}}}Password")
    return SoapRequest(name.localname, operation, username, password)


def _envelope() -> tuple[etree._Element, etree._Element]:
    envelope = etree.Element(f"{{{SOAP_ENV_NS}}}Envelope", nsmap={"soap": SOAP_ENV_NS, "pr": PR_NS})
    return envelope, etree.SubElement(envelope, f"{{{SOAP_ENV_NS}}}Body")


def _fill(parent: etree._Element, fields: Sequence[tuple[str, Value]]) -> None:
    for name, value in fields:
        if value is None:
            continue
        element = etree.SubElement(parent, f"{{{PR_NS}}}{name}")
        if isinstance(value, bytes):
            element.text = base64.b64encode(value).decode("ascii")
        elif isinstance(value, datetime):
            element.text = value.isoformat(timespec="seconds")
        elif isinstance(value, str):
            element.text = value
        else:
            _fill(element, value)


def _tostring(envelope: etree._Element) -> bytes:
    data: bytes = etree.tostring(envelope, encoding="utf-8", xml_declaration=True)
    return data


def reply_xml(operation: str, fields: Sequence[tuple[str, Value]]) -> bytes:
    """``<pr:{operation}Response>`` holding ``fields`` in order."""
    envelope, body = _envelope()
    _fill(etree.SubElement(body, f"{{{PR_NS}}}{operation}Response"), fields)
    return _tostring(envelope)


def fault_xml(faultcode: str, faultstring: str, detail: ProcurementFault | None = None) -> bytes:
    """A SOAP 1.1 Fault; with ``detail``, its ``pr:ProcurementFault`` element."""
    envelope, body = _envelope()
    fault = etree.SubElement(body, f"{{{SOAP_ENV_NS}}}Fault")
    etree.SubElement(fault, "faultcode").text = faultcode
    etree.SubElement(fault, "faultstring").text = faultstring
    if detail is not None:
        holder = etree.SubElement(etree.SubElement(fault, "detail"), f"{{{PR_NS}}}ProcurementFault")
        _fill(holder, [("Code", detail.code), ("Message", detail.message), ("TransactionId", detail.transaction_id)])
    return _tostring(envelope)


class ProcurementServer(QuietHTTPServer):
    simulator: ProcurementSimulator


class ProcurementHandler(BaseSimHandler):
    server: ProcurementServer
    server_version = "HentProcurementSimulator/1"

    def _handle(self, method: str) -> None:
        body = self._body() if method == "POST" else b""
        if body is None:
            return
        simulator = self.server.simulator
        if method == "GET" and self.path in ("/soap?wsdl", "/soap?WSDL"):
            self._send(200, simulator.wsdl_text().encode("utf-8"), "text/xml; charset=utf-8")
        elif method == "GET" and self.path == "/procurement.xsd":
            self._send(200, simulator.xsd_bytes(), "text/xml; charset=utf-8")
        elif method == "DELETE" or self.path.startswith("/control/"):
            self._control(method, self.path, body)
        elif method == "POST" and self.path == "/soap":
            self._soap(body)
        else:
            self._send(404, b"not found", "text/plain")

    def _soap(self, body: bytes) -> None:
        simulator = self.server.simulator
        try:
            request = parse_request(body)
        except MalformedRequest as exc:
            simulator._count_call("?")
            self._send(500, fault_xml("soap:Client", f"malformed request: {exc}"), "text/xml; charset=utf-8")
            return
        answering, fault = self._apply_faults(request.operation)
        if not answering:
            return
        kind = fault.kind if fault else None
        if kind == "http500":
            self._send(500, b"Internal Server Error (injected)", "text/plain")
            return
        status = 500
        try:
            if kind == "soapfault":
                raise ProcurementFault("INTERNAL", "internal error (injected)")
            if not simulator._authorised(request):
                raise ProcurementFault("AUTH", "a valid WS-Security UsernameToken is required")
            reply, status = reply_xml(request.operation, simulator._dispatch(request)), 200
        except ProcurementFault as refused:
            reply = fault_xml(refused.faultcode, refused.message, refused)
        except Exception as exc:  # the simulator answers like a server, it does not die
            log.exception("%s failed", request.operation)
            internal = ProcurementFault("INTERNAL", f"{type(exc).__name__}: {exc}")
            reply = fault_xml(internal.faultcode, internal.message, internal)
        if kind == "lost_reply":  # done and recorded, but the answer never leaves
            self._drop()
            return
        self._send(status, reply, "text/xml; charset=utf-8")
