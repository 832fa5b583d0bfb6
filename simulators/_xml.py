"""What the simulators receive is XML from the bus (or from a test playing a hostile bus): it is
parsed by :func:`transformers.safe_xml.parse`, like everything Hent receives, so the simulators
cannot be hurt by it either (no entity expansion, no DTD, no network, bounded size and depth).

A SOAP request carries the archive as one base64 text node, up to the HTTP layer's 200 MiB
(``_http_sim.MAX_BODY``), past libxml2's 10 MB limit on a text node: :func:`parse_soap` reads
such a request again with huge text nodes allowed (the same options otherwise; libxml2 still
bounds the depth, at 2048), once ``safe_xml`` has refused it for its size alone.  A SOAP message
holding a DOCTYPE is refused either way (SOAP 1.1 §3 forbids one).
"""

from __future__ import annotations

__all__ = ["MAX_SOAP_BYTES", "XmlRefused", "parse", "parse_soap"]

from lxml import etree

from transformers.safe_xml import XmlRefused, declares_entities, parse

MAX_SOAP_BYTES = 200 * 1024 * 1024  #: the HTTP simulators' MAX_BODY


def parse_soap(data: bytes, *, name: str = "SOAP request") -> etree._Element:
    """The root of a SOAP request; :class:`XmlRefused` (a DOCTYPE, malformed, too large or too deep)."""
    try:
        root = parse(data, name=name, max_bytes=MAX_SOAP_BYTES)
    except XmlRefused as exc:
        if exc.rule != "xml-too-large" or len(data) > MAX_SOAP_BYTES:
            raise
        root = _parse_huge_text(data, name)
    if root.getroottree().docinfo.doctype or declares_entities(root):
        raise XmlRefused("a SOAP message must not hold a DOCTYPE", name=name, rule="xml-entities-forbidden",
                         detail="DOCTYPE")
    return root


def _parse_huge_text(data: bytes, name: str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=True)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(f"not well-formed XML: {exc.msg}", name=name, rule="xml-well-formed", detail=str(exc),
                         line=exc.lineno) from exc
