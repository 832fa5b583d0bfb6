"""Property-based fuzzing, one target per parser of outside input, each bounded (all together
well under a minute): whatever the bytes, the parser returns or raises a HentError."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.errors import HentError
from bus.names import name_problem, plain_file_name, safe_name
from connectors._s2low_common import read_answer, read_status
from transformers import safe_xml
from transformers.actes_in import parse_message
from transformers.actes_return import unpack_answer
from transformers.decp_mapping import ContractMapping
from transformers.sidecar import Sidecar

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[2]

#: XML-looking bytes: fragments of markup, declarations and entities glued together
_PIECES = st.sampled_from([
    b"<a>", b"</a>", b"<b x='1'>", b"</b>", b"<c/>", b"<?xml version='1.0'?>", b"<!DOCTYPE a [", b"]>",
    b'<!ENTITY e "ee">', b'<!ENTITY x SYSTEM "file:///etc/passwd">', b"&e;", b"&x;", b"&#0;", b"&#x1F600;",
    b"<![CDATA[", b"]]>", b"<!--", b"-->", b"\xff\xfe", b"\xc3\xa9", b"\x00", b"text", b"<actes:ARActe ", b">",
    b'xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216"', b'actes:IDActe="034-1-2-3-DE"',
])
XMLISH = st.one_of(st.lists(_PIECES, max_size=40).map(b"".join), st.binary(max_size=300))


def refused_or_returned(call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except HentError as exc:
        assert str(exc).strip()


@FUZZ
@given(XMLISH)
def test_fuzz_safe_xml(data: bytes) -> None:
    refused_or_returned(lambda: safe_xml.parse(data, name="f.xml", max_depth=20))


@FUZZ
@given(XMLISH)
def test_fuzz_ministry_messages(data: bytes) -> None:
    message = parse_message(data, "f.xml")
    assert message.raw == data


@FUZZ
@given(st.binary(max_size=600), st.sampled_from(["a.tar.gz", "a.xml", "a.tgz"]))
def test_fuzz_answer_packages(data: bytes, name: str) -> None:
    refused_or_returned(lambda: unpack_answer(name, b"\x1f\x8b" + data if name != "a.xml" else data))


@FUZZ
@given(st.one_of(XMLISH, st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))),
       st.sampled_from(["json", "csv", "xml"]), st.sampled_from([None, "latin-1", "utf-8"]))
def test_fuzz_sidecars(data: bytes, kind: str, encoding: str | None) -> None:
    sidecar = Sidecar("s", data, kind, encoding=encoding, delimiter=";")
    assert sidecar.context is not None or sidecar.problems


_ROW_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=12)
_CONTRACTS = ContractMapping.load(ROOT / "config" / "mappings" / "contrats-decp.yaml")


@FUZZ
@given(st.dictionaries(st.sampled_from(["id", "type_contrat", "montant_ht", "date_signature", "titulaires",
                                        "avenants", "objet", "cpv", "duree_mois", "siren", "nature"]), _ROW_VALUES))
def test_fuzz_database_rows(row: dict[str, object]) -> None:
    import json

    refused_or_returned(lambda: _CONTRACTS.map("row.json", json.dumps(row).encode()))


@FUZZ
@given(st.binary(max_size=200) | st.sampled_from([b"OK\n", b"KO\n", b"OK\n4\n<a>", b"OK\n-1\n"]).flatmap(
    lambda head: st.binary(max_size=100).map(lambda tail: head + tail)))
def test_fuzz_s2low_answers(body: bytes) -> None:
    refused_or_returned(lambda: read_answer(body, connector="tdt", operation="send"))
    refused_or_returned(lambda: read_status(body, connector="tdt", operation="status"))


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_file_names(name: str) -> None:
    plain = plain_file_name(name, "default")
    assert name_problem(plain) is None, (name, plain)
    refused_or_returned(lambda: safe_name(name, field="f"))
