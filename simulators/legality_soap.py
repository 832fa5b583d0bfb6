"""SOAP 1.1 on the wire for the legality simulator: read a request, write a reply or a fault.

Document/literal wrapped, namespace ``urn:hent:legality:1`` (``schemas/legality/``): the
operation is the local name of the Body's first element, its parameters that element's
children.  Requests are parsed with no entity expansion, no DTD and no network.
"""

from __future__ import annotations

__all__ = [
    "LG_NS",
    "SOAP_ENV_NS",
    "WSSE_NS",
    "LegalityFault",
    "MalformedRequest",
    "SoapRequest",
    "Value",
    "fault_xml",
    "parse_request",
    "reply_xml",
]

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from lxml import etree

from simulators._xml import XmlRefused, parse_soap

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
LG_NS = "urn:hent:legality:1"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_PASSWORD_TEXT = "#PasswordText"

#: a reply field: text, bytes (written base64), a date, a nested element (a list of
#: fields), or None (left out)
Value = str | bytes | date | Sequence[tuple[str, "Value"]] | None

#: fault codes the client gets faultcode soap:Server for (retry later); the others are soap:Client
_SERVER_CODES = frozenset({"INTERNAL"})


class LegalityFault(Exception):
    """A fault the WSDL declares: detail ``lg:LegalityFault {Code, Message, TransactionId?}``."""

    def __init__(self, code: str, message: str, transaction_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transaction_id = transaction_id

    @property
    def faultcode(self) -> str:
        return "soap:Server" if self.code in _SERVER_CODES else "soap:Client"


class MalformedRequest(Exception):
    """Not a SOAP 1.1 request for this service: answered by a soap:Client fault with no detail."""


@dataclass(frozen=True)
class SoapRequest:
    """One request: the operation's name, its parameters, and the WS-Security credentials."""

    operation: str
    body: etree._Element
    username: str | None = None
    password: str | None = None
    password_type_ok: bool = True
    client: str | None = None  #: the subject of the TLS client certificate, over mutual TLS

    def text(self, name: str) -> str | None:
        """The first parameter named ``name``, stripped; None when absent."""
        element = self.body.find(f"{{{LG_NS}}}{name}")
        return None if element is None else (element.text or "").strip()

    def texts(self, name: str) -> list[str]:
        """Every parameter named ``name`` (a repeated one), stripped."""
        return [(e.text or "").strip() for e in self.body.iterfind(f"{{{LG_NS}}}{name}")]

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise MalformedRequest(f"{self.operation}: {name} is required")
        return value

    def binary(self, name: str) -> bytes:
        """A base64Binary parameter, decoded; MalformedRequest when absent or not base64."""
        try:
            return base64.b64decode("".join(self.required(name).split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedRequest(f"{self.operation}: {name} is not base64") from exc


def parse_request(data: bytes) -> SoapRequest:
    """The operation and parameters of a SOAP 1.1 request; MalformedRequest otherwise."""
    try:
        root = parse_soap(data)
    except XmlRefused as exc:
        raise MalformedRequest(f"not XML: {exc.message}") from exc
    if root.tag != f"{{{SOAP_ENV_NS}}}Envelope":
        raise MalformedRequest("not a SOAP 1.1 Envelope")
    body = root.find(f"{{{SOAP_ENV_NS}}}Body")
    operation = None if body is None else next((e for e in body if isinstance(e.tag, str)), None)
    if operation is None:
        raise MalformedRequest("the SOAP Body is empty")
    name = etree.QName(operation)
    if name.namespace != LG_NS:
        raise MalformedRequest(f"{name.localname} is not in the namespace {LG_NS}")
    token = root.find(f"{{{SOAP_ENV_NS}}}Header/{{{WSSE_NS}}}Security/{{{WSSE_NS}}}UsernameToken")
    username = password = None
    type_ok = True
    if token is not None:
        username = token.findtext(f"{{{WSSE_NS}}}Username")
        element = token.find(f"{{{WSSE_NS}}}Password")
        if element is not None:
            password = element.text or ""
            type_ok = element.get("Type", _PASSWORD_TEXT).endswith(_PASSWORD_TEXT)
    return SoapRequest(name.localname, operation, username, password, type_ok)


def _envelope() -> tuple[etree._Element, etree._Element]:
    envelope = etree.Element(f"{{{SOAP_ENV_NS}}}Envelope", nsmap={"soap": SOAP_ENV_NS, "lg": LG_NS})
    return envelope, etree.SubElement(envelope, f"{{{SOAP_ENV_NS}}}Body")


def _fill(parent: etree._Element, fields: Sequence[tuple[str, Value]]) -> None:
    for name, value in fields:
        if value is None:
            continue
        element = etree.SubElement(parent, f"{{{LG_NS}}}{name}")
        if isinstance(value, bytes):
            element.text = base64.b64encode(value).decode("ascii")
        elif isinstance(value, date):
            element.text = value.isoformat()
        elif isinstance(value, str):
            element.text = value
        else:
            _fill(element, value)


def _tostring(envelope: etree._Element) -> bytes:
    data: bytes = etree.tostring(envelope, encoding="utf-8", xml_declaration=True)
    return data


def reply_xml(operation: str, fields: Sequence[tuple[str, Value]]) -> bytes:
    """``<lg:{operation}Response>`` holding ``fields`` in order."""
    envelope, body = _envelope()
    _fill(etree.SubElement(body, f"{{{LG_NS}}}{operation}Response"), fields)
    return _tostring(envelope)


def fault_xml(faultcode: str, faultstring: str, detail: LegalityFault | None = None) -> bytes:
    """A SOAP 1.1 Fault; with ``detail``, its ``lg:LegalityFault`` element."""
    envelope, body = _envelope()
    fault = etree.SubElement(body, f"{{{SOAP_ENV_NS}}}Fault")
    etree.SubElement(fault, "faultcode").text = faultcode
    etree.SubElement(fault, "faultstring").text = faultstring
    if detail is not None:
        holder = etree.SubElement(etree.SubElement(fault, "detail"), f"{{{LG_NS}}}LegalityFault")
        _fill(holder, [("Code", detail.code), ("Message", detail.message), ("TransactionId", detail.transaction_id)])
    return _tostring(envelope)
