"""The one way Hent parses XML that comes from outside: hardened, bounded, with named errors.

Sidecars, the ministry's messages, classification files, DECP documents, the procurement
platform's answers and SOAP fault details all go through :func:`parse`: no entity expansion,
no DTD loaded, no network, no huge tree (libxml2's own limits on text nodes and depth stay on),
at most ``max_bytes`` and ``max_depth``.  What it refuses is an :class:`XmlRefused` (a
:class:`~bus.errors.DocumentError`) naming the file and the rule:

- ``xml-too-large``: more bytes than allowed, or a text node over libxml2's limit;
- ``xml-too-deep``: elements nested deeper than allowed;
- ``xml-entities-forbidden``: a DOCTYPE declaring entities or naming an external DTD
  (billion laughs, XXE, quadratic blow-up), unless the caller keeps them unexpanded
  (``entities="keep"``: lenient readers of the platforms' messages note them instead);
- ``xml-well-formed``: anything else libxml2 cannot read.

zeep parses SOAP answers itself; :data:`ZEEP_SETTINGS` are the matching options
(``connectors/_soap_common.py``).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_BYTES", "DEFAULT_MAX_DEPTH", "XmlRefused", "declares_entities", "parse", "parser",
]

import re
from typing import Any, Literal

from lxml import etree

from bus.errors import DocumentError, Problem

DEFAULT_MAX_BYTES = 64 << 20  #: bytes of one XML document (an ACTES message is a few KiB)
DEFAULT_MAX_DEPTH = 100  #: nesting of elements (real documents stay under 15)
_LIBXML_DEPTH = re.compile(r"Excessive depth|depth in document", re.IGNORECASE)
_LIBXML_SIZE = re.compile(r"too long|huge|Resource limit|Memory allocation", re.IGNORECASE)
_ENTITY_MARK = re.compile(rb"<!\x00?E\x00?N\x00?T\x00?I\x00?T\x00?Y|<\x00!\x00E\x00N\x00T\x00I\x00T\x00Y")


class XmlRefused(DocumentError):
    """An XML document :func:`parse` refused; ``detail`` is what libxml2 (or the bound) said."""

    def __init__(self, message: str, *, name: str | None, rule: str, detail: str,
                 line: int | None = None) -> None:
        problem = Problem(message, file=name, line=line, rule=rule)
        super().__init__(message, problems=[problem], path=name, line=line, rule=rule)
        self.detail = detail


def parser(*, encoding: str | None = None, recover: bool = False) -> etree.XMLParser:
    """An lxml parser with the hardened options (for what :func:`parse` does not cover)."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, encoding=encoding, recover=recover)


def declares_entities(root: etree._Element) -> bool:
    """Whether the document of ``root`` declares entities or names an external DTD."""
    docinfo = root.getroottree().docinfo
    dtd = docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        return True
    return bool(docinfo.system_url or docinfo.public_id)


def parse(
    data: bytes,
    *,
    name: str | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    encoding: str | None = None,
    recover: bool = False,
    entities: Literal["refuse", "keep"] = "refuse",
) -> etree._Element:
    """The root element of ``data`` (the file ``name``), or :class:`XmlRefused` with its rule.

    ``recover`` reads what libxml2 can of a malformed document (lenient readers only);
    ``entities="keep"`` accepts entity declarations, never expanding them.
    """
    if not isinstance(data, bytes | bytearray):
        raise XmlRefused(f"not XML bytes but {type(data).__name__}", name=name, rule="xml-well-formed",
                         detail=type(data).__name__)
    if len(data) > max_bytes:
        raise XmlRefused(f"{len(data)} bytes of XML, more than the {max_bytes} allowed: ask the sender for a "
                         "smaller document", name=name, rule="xml-too-large", detail=f"{len(data)} bytes")
    try:
        root = etree.fromstring(bytes(data), parser(encoding=encoding, recover=recover))
    except etree.XMLSyntaxError as exc:
        raise _refusal(exc.msg or str(exc), exc.lineno, name, data, entities) from exc
    except (ValueError, LookupError) as exc:  # an unknown encoding, an unreadable declaration
        raise XmlRefused(f"not well-formed XML: {exc}", name=name, rule="xml-well-formed", detail=str(exc)) from exc
    if root is None:  # recover found nothing to keep
        raise XmlRefused("not well-formed XML: nothing could be read", name=name, rule="xml-well-formed",
                         detail="nothing could be read")
    if entities == "refuse" and declares_entities(root):
        raise _entities(name)
    depth = _depth(root, max_depth)
    if depth > max_depth:
        raise XmlRefused(f"elements nested deeper than {max_depth} levels: ask the sender for a flatter document",
                         name=name, rule="xml-too-deep", detail=f"depth over {max_depth}")
    return root


def _refusal(message: str, line: int | None, name: str | None, data: bytes, entities: str) -> XmlRefused:
    if entities == "refuse" and _ENTITY_MARK.search(data[:1 << 20]):
        return _entities(name)
    if _LIBXML_DEPTH.search(message):
        return XmlRefused(f"elements nested too deep ({message}): ask the sender for a flatter document",
                          name=name, rule="xml-too-deep", detail=message, line=line)
    if _LIBXML_SIZE.search(message):
        return XmlRefused(f"a value is too large ({message}): ask the sender for a smaller document",
                          name=name, rule="xml-too-large", detail=message, line=line)
    return XmlRefused(f"not well-formed XML: {message}", name=name, rule="xml-well-formed", detail=message, line=line)


def _entities(name: str | None) -> XmlRefused:
    return XmlRefused("the document declares XML entities or an external DTD (<!DOCTYPE ...>); they are refused, "
                      "never expanded or fetched: ask for the document without a DOCTYPE", name=name,
                      rule="xml-entities-forbidden", detail="DOCTYPE with entities")


def _depth(root: Any, limit: int) -> int:
    """The nesting depth of ``root`` (1: no child), counted up to ``limit + 1``."""
    depth = deepest = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest
