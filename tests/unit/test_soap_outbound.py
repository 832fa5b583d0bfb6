"""The SOAP endpoint offline: configuration, WSDL loading, error mapping, send's outcomes, secrets.

zeep runs for real; only the HTTP layer is a stub (a requests adapter that answers as the
platform would, or raises as the network would), so nothing here opens a socket.
"""

# ruff: noqa: E501  (the exact error texts are asserted whole)

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from pydantic import ValidationError
from requests.adapters import BaseAdapter

from bus import registry
from bus.config import load_config
from bus.connector import AnsweringEndpoint, Artifact
from bus.errors import ConfigError, DocumentError, HentError, TransientError
from bus.secrets import MASK, Secret
from connectors import soap_outbound
from connectors._soap_common import (
    DuplicateSubmission,
    OfflineTransport,
    RemoteFetchRefused,
    TransientAlert,
    build_session,
    load_client,
)
from connectors.soap_outbound import DEFAULT_WSDL, SoapOutbound, SoapOutboundConfig

NS = "urn:hent:legality:1"
PASSWORD = "s3cret-Legality-pw"
Answer = tuple[int, bytes] | BaseException


def envelope(body: str) -> bytes:
    return (f'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
            f"<s:Body>{body}</s:Body></s:Envelope>").encode()


def fault(code: str, message: str = "refused", transaction_id: str | None = None, side: str = "Client") -> tuple[int, bytes]:
    extra = f"<lg:TransactionId>{transaction_id}</lg:TransactionId>" if transaction_id else ""
    return 500, envelope(
        f"<s:Fault><faultcode>s:{side}</faultcode><faultstring>{message}</faultstring><detail>"
        f'<lg:LegalityFault xmlns:lg="{NS}"><lg:Code>{code}</lg:Code><lg:Message>{message}</lg:Message>{extra}'
        "</lg:LegalityFault></detail></s:Fault>"
    )


def ok(operation: str, inner: str = "") -> tuple[int, bytes]:
    return 200, envelope(f'<{operation}Response xmlns="{NS}">{inner}</{operation}Response>')


SUBMITTED = ok("SubmitArchive", "<TransactionId>T-1</TransactionId><Status>POSTED</Status>")
FOUND = ok("FindSubmission", "<TransactionId>T-0</TransactionId><Status>ACKNOWLEDGED</Status>")
NOT_FOUND = ok("FindSubmission")


class Platform(BaseAdapter):
    """A scripted platform: per operation, the answers of its successive calls (the last one repeats)."""

    def __init__(self, script: dict[str, list[Answer]]) -> None:
        super().__init__()
        self.script = script
        self.calls: list[tuple[str, bytes]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        operation = str(request.headers.get("SOAPAction", "")).strip('"').rpartition("#")[2]
        body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
        self.calls.append((operation, body))
        answers = self.script[operation]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        response = requests.Response()
        response.status_code, response._content = answer
        html = response._content.lstrip().startswith(b"<html")
        response.headers["Content-Type"] = "text/html" if html else "text/xml; charset=utf-8"
        response.url, response.request = str(request.url), request
        return response

    def close(self) -> None:
        pass

    def operations(self) -> list[str]:
        return [operation for operation, _ in self.calls]


def connector(**options: Any) -> SoapOutbound:
    return SoapOutbound("prefecture", SoapOutboundConfig.model_validate({"endpoint": "http://127.0.0.1:9/soap", **options}))


@pytest.fixture
def platform() -> Iterator[Callable[..., tuple[SoapOutbound, Platform]]]:
    made: list[SoapOutbound] = []

    def make(script: dict[str, list[Answer]], **options: Any) -> tuple[SoapOutbound, Platform]:
        endpoint = connector(**options)
        stub = Platform(script)
        endpoint.connect()
        endpoint._client().transport.session.mount("http://", stub)
        made.append(endpoint)
        return endpoint, stub

    yield make
    for endpoint in made:
        endpoint.close()


@pytest.fixture
def archive(tmp_path: Path) -> Artifact:
    path = tmp_path / "spooled"
    path.write_bytes(b"\x1f\x8b archive bytes")
    return Artifact(name="HNT-EACT--214400152--20240301-1.tar.gz", path=path, sha256="0" * 64, kind="actes-archive",
                    client_key="EACT--214400152--20240301-1.xml",
                    meta={"id_acte": "044-214400152-20240212-DEL2024_012-DE"})


def lost() -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted."))


def refused() -> requests.exceptions.ConnectionError:
    reason = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/soap", reason))  # type: ignore[arg-type]


# -------------------------------------------------------------------- configuration


def test_the_defaults_are_safe_and_the_connector_is_registered() -> None:
    config = SoapOutboundConfig()
    assert (config.wsdl, config.endpoint, config.connect_timeout, config.read_timeout, config.verify_tls) == (
        DEFAULT_WSDL, None, 10.0, 60.0, True)
    assert registry.connector_class("soap", "outbound") is SoapOutbound
    assert SoapOutbound.consumes == ("actes-archive",)
    assert isinstance(connector(), AnsweringEndpoint)
    assert all(field.description for field in SoapOutboundConfig.model_fields.values())


def config_problems(tmp_path: Path, endpoint_yaml: str) -> list[str]:
    (tmp_path / "in").mkdir(exist_ok=True)
    main = tmp_path / "main.yaml"
    main.write_text(
        "connectors:\n"
        "  src: {type: folder, path: in}\n"
        f"  tdt: {{type: soap, {endpoint_yaml}}}\n"
        "routes:\n"
        "  - {name: r, from: src, to: tdt}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(main)
    return [str(problem).replace(str(tmp_path) + "/", "") for problem in caught.value.problems]


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("endpoint: ftp://tdt.example/soap",
         "main.yaml:3: connectors.tdt.endpoint: endpoint must be an http:// or https:// URL, got 'ftp://tdt.example/soap' [soap-endpoint]"),
        ("wsdl: nowhere.wsdl", "main.yaml:3: connectors.tdt.wsdl: file not found: nowhere.wsdl [missing-file]"),
        ("read_timeout: 0s", "main.yaml:3: connectors.tdt.read_timeout: input should be greater than 0, got 0.0 [value]"),
        ("connect_timeout: soon",
         "main.yaml:3: connectors.tdt.connect_timeout: invalid duration 'soon': write a number of seconds or a value like 500ms, 30s, 5m, 1h [duration]"),
        ("client_key: main.yaml", "main.yaml:3: connectors.tdt: client_key needs client_cert (mutual TLS) [soap-tls]"),
        ("username: hent", "main.yaml:3: connectors.tdt: username and password go together (WS-Security UsernameToken) [soap-credentials]"),
        ("trigram: TOOLONG", "main.yaml:3: connectors.tdt.trigram: string should match pattern '^[A-Za-z0-9]{3}$', got 'TOOLONG' [value]"),
        ("verify_ssl: false", "main.yaml:3: connectors.tdt.verify_ssl: unknown key 'verify_ssl' (did you mean 'verify_tls'?) [unknown-key]"),
    ],
)
def test_configuration_mistakes_are_named_with_their_line(tmp_path: Path, written: str, problem: str) -> None:
    assert config_problems(tmp_path, written) == [problem]


def test_a_password_written_in_the_yaml_is_refused_and_never_echoed(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, f"username: hent, password: {PASSWORD}")
    assert problems == ["main.yaml:3: connectors.tdt.password: a secret must not be written in the YAML: use "
                        "${ENV_VAR} or ${file:/path} [secret-in-yaml]"]


def test_the_password_never_shows_in_repr_str_dump_or_errors(platform: Callable[..., tuple[SoapOutbound, Platform]],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    config = SoapOutboundConfig(endpoint="http://127.0.0.1:9/soap", username="hent", password=Secret(PASSWORD))
    for text in (repr(config), str(config), str(config.model_dump()), config.model_dump_json()):
        assert PASSWORD not in text and MASK in text
    endpoint, stub = platform({"FindSubmission": [fault("AUTH", f"bad password {PASSWORD} for hent")]},
                              username="hent", password=Secret(PASSWORD))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TransientAlert) as caught:
        endpoint.lookup("key")
    assert PASSWORD.encode() in stub.calls[0][1]  # the UsernameToken went out...
    assert PASSWORD not in str(caught.value) and MASK in str(caught.value)  # ...but is in no error
    assert PASSWORD not in caplog.text  # nor in any log line, zeep's DEBUG ones included


# -------------------------------------------------------------------- the WSDL, local and once


def test_the_wsdl_is_read_once_from_local_files(platform: Callable[..., tuple[SoapOutbound, Platform]]) -> None:
    endpoint, _ = platform({"FindSubmission": [NOT_FOUND]})
    for _ in range(3):
        endpoint.connect()
        assert endpoint.lookup("key") is None
        endpoint.close()
    loads = endpoint._client().transport.loads
    assert [Path(url).name for url in loads] == ["legality.wsdl", "legality.xsd"]


def test_a_wsdl_importing_a_remote_schema_is_refused_without_any_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[str] = []
    monkeypatch.setattr(requests.Session, "get", lambda self, url, **kw: fetched.append(url))
    monkeypatch.setattr(requests.Session, "request", lambda self, method, url, **kw: fetched.append(url))
    wsdl = tmp_path / "remote.wsdl"
    wsdl.write_text(DEFAULT_WSDL.read_text(encoding="utf-8").replace(
        'schemaLocation="legality.xsd"', 'schemaLocation="http://schemas.example/legality.xsd"'), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        connector(wsdl=str(wsdl)).connect()
    assert caught.value.rule == "soap-wsdl-remote"
    assert str(caught.value) == (
        f"{wsdl}: connector 'prefecture': {wsdl} imports the remote document http://schemas.example/legality.xsd; "
        "documents are never fetched over the network: copy it beside the WSDL and import it by relative path "
        "[soap-wsdl-remote]")
    assert fetched == []


def test_the_transport_itself_refuses_remote_documents() -> None:
    transport = OfflineTransport(requests.Session(), 1.0, 1.0)
    for url in ("http://schemas.example/a.xsd", "HTTPS://schemas.example/a.xsd"):
        with pytest.raises(RemoteFetchRefused):
            transport.load(url)
    with pytest.raises(RemoteFetchRefused):
        transport._load_remote_data("http://schemas.example/a.xsd")
    assert transport.load(str(DEFAULT_WSDL)).startswith(b"<?xml")


def test_a_wsdl_with_a_dtd_or_broken_xml_is_a_config_error(tmp_path: Path) -> None:
    for name, text in (("dtd.wsdl", '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><x>&e;</x>'),
                       ("broken.wsdl", "<definitions")):
        wsdl = tmp_path / name
        wsdl.write_text(text, encoding="utf-8")
        transport = OfflineTransport(requests.Session(), 1.0, 1.0)
        with pytest.raises(ConfigError, match=f"cannot load the WSDL {wsdl}") as caught:
            load_client(wsdl, connector="prefecture", transport=transport, endpoint=None)
        assert caught.value.rule == "soap-wsdl"


def test_the_endpoint_overrides_the_wsdl_address_and_tls_options_reach_the_session(tmp_path: Path) -> None:
    assert connector()._client().address == "http://127.0.0.1:9/soap"
    assert SoapOutbound("x", SoapOutboundConfig())._client().address == "http://127.0.0.1:8088/soap"
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    session = build_session(verify_tls=True, ca_file=cert, client_cert=cert, client_key=key)
    assert (session.verify, session.cert) == (str(cert), (str(cert), str(key)))
    assert build_session(verify_tls=False, ca_file=None, client_cert=None, client_key=None).verify is False


def test_verify_tls_false_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    SoapOutbound("x", SoapOutboundConfig(endpoint="https://tdt.example/soap", verify_tls=False)).connect()
    assert "TLS verification is off for https://tdt.example/soap" in caplog.text


# -------------------------------------------------------------------- errors at the boundary


@pytest.mark.parametrize(
    ("answer", "kind", "rule"),
    [
        (fault("INVALID_ARCHIVE", "missing file 99_AU"), DocumentError, "soap-fault-INVALID_ARCHIVE"),
        (fault("UNKNOWN_TRANSACTION"), DocumentError, "soap-fault-UNKNOWN_TRANSACTION"),
        (fault("NOT_CANCELLABLE"), DocumentError, "soap-fault-NOT_CANCELLABLE"),
        (fault("AUTH"), TransientAlert, "soap-fault-AUTH"),
        (fault("INTERNAL", side="Server"), TransientError, "soap-fault-INTERNAL"),
        (fault("SOMETHING_NEW", side="Server"), TransientError, "soap-fault-SOMETHING_NEW"),
        (fault("SOMETHING_NEW", side="Client"), DocumentError, "soap-fault-SOMETHING_NEW"),
        ((500, envelope("<nothing/>")), TransientError, "soap-fault-unknown"),
        ((500, b"<html>Internal Server Error</html>"), TransientError, "soap-http-500"),
        ((500, b""), TransientError, "soap-http-500"),
        ((503, b"<html>down for maintenance</html>"), TransientError, "soap-http-503"),
        ((401, b""), TransientAlert, "soap-http-401"),
        ((403, b"<html>forbidden</html>"), TransientAlert, "soap-http-403"),
        ((404, b"<html>no such page</html>"), TransientError, "soap-http-404"),
        ((413, b"<html>too large</html>"), DocumentError, "soap-http-413"),
        ((200, b"not xml at all"), TransientError, "soap-answer"),
        ((200, b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><x>&e;</x>'), TransientError, "soap-answer"),
        (ok("GetStatus", "<Transaction><Bogus/></Transaction>"), TransientError, "soap-answer"),
        (requests.exceptions.ConnectTimeout("connect timed out"), TransientError, "soap-connect"),
        (refused(), TransientError, "soap-connect"),
        (requests.exceptions.ReadTimeout("read timed out"), TransientError, "soap-timeout"),
        (lost(), TransientError, "soap-connection-lost"),
        (requests.exceptions.ChunkedEncodingError("truncated"), TransientError, "soap-transfer"),
        (requests.exceptions.SSLError("certificate verify failed"), TransientAlert, "soap-tls"),
    ],
)
def test_every_failure_becomes_one_of_the_bus_errors(
    platform: Callable[..., tuple[SoapOutbound, Platform]], answer: Answer, kind: type[HentError], rule: str
) -> None:
    endpoint, _ = platform({"GetStatus": [answer]})
    with pytest.raises(kind) as caught:
        endpoint.statuses(["T-1"])
    error = caught.value
    assert type(error) is kind and error.rule == rule and error.connector == "prefecture"
    assert str(error).startswith("connector 'prefecture': GetStatus")
    assert error.__cause__ is not None and type(error.__cause__).__module__.split(".")[0] in ("zeep", "requests")


def test_a_fault_message_says_what_failed_and_what_to_do(platform: Callable[..., tuple[SoapOutbound, Platform]]) -> None:
    endpoint, _ = platform({"CancelAct": [fault("NOT_CANCELLABLE", "the act is not acknowledged")]})
    with pytest.raises(DocumentError) as caught:
        endpoint.cancel("T-1", "044-214400152-20240212-DEL2024_012-DE")
    assert str(caught.value) == ("connector 'prefecture': CancelAct refused by the platform (NOT_CANCELLABLE: the act "
                                 "is not acknowledged): fix the document, then replay it [soap-fault-NOT_CANCELLABLE]")


# -------------------------------------------------------------------- send: every outcome


def test_a_submission_ends_sent_with_the_transaction_id(platform: Callable[..., tuple[SoapOutbound, Platform]],
                                                       archive: Artifact) -> None:
    endpoint, stub = platform({"SubmitArchive": [SUBMITTED]})
    assert endpoint.send(archive) == soap_outbound.SendResult("SENT", remote_id="T-1")
    body = stub.calls[0][1]
    for part in (b"<ns0:ArchiveName>HNT-EACT--214400152--20240301-1.tar.gz<", b"<ns0:ClientKey>EACT--214400152",
                 b"<ns0:ExpectedIDActe>044-214400152-20240212-DEL2024_012-DE<", b"<ns0:Archive>H4sgYXJjaGl2ZSBieXRlcw=="):
        assert part in body


@pytest.mark.parametrize(
    ("script", "expected", "calls"),
    [
        ({"SubmitArchive": [fault("DUPLICATE", "already received", "T-7")], "FindSubmission": [FOUND]},
         soap_outbound.SendResult("SENT", "T-0", "already received"), ["SubmitArchive", "FindSubmission"]),
        ({"SubmitArchive": [fault("DUPLICATE", "already received", "T-7")], "FindSubmission": [NOT_FOUND]},
         soap_outbound.SendResult("SENT", "T-7", "already received under another submission: followed instead of "
                                  "sending it again"), ["SubmitArchive", "FindSubmission"]),
        ({"SubmitArchive": [requests.exceptions.ReadTimeout("read timed out")], "FindSubmission": [FOUND]},
         soap_outbound.SendResult("SENT", "T-0", "recorded by the platform though its answer was lost"),
         ["SubmitArchive", "FindSubmission"]),
        ({"SubmitArchive": [lost()], "FindSubmission": [FOUND]},
         soap_outbound.SendResult("SENT", "T-0", "recorded by the platform though its answer was lost"),
         ["SubmitArchive", "FindSubmission"]),
        ({"SubmitArchive": [(502, b"")], "FindSubmission": [FOUND]},
         soap_outbound.SendResult("SENT", "T-0", "recorded by the platform though its answer was lost"),
         ["SubmitArchive", "FindSubmission"]),
    ],
)
def test_duplicates_and_lost_answers_are_looked_up_never_sent_again(
    platform: Callable[..., tuple[SoapOutbound, Platform]], archive: Artifact, script: dict[str, list[Answer]],
    expected: Any, calls: list[str]
) -> None:
    endpoint, stub = platform(script)
    assert endpoint.send(archive) == expected
    assert stub.operations() == calls
    assert b"<ns0:ClientKey>EACT--214400152--20240301-1.xml<" in stub.calls[-1][1]


def test_an_unknown_outcome_not_found_is_retried_with_the_same_bytes(
    platform: Callable[..., tuple[SoapOutbound, Platform]], archive: Artifact
) -> None:
    endpoint, stub = platform({"SubmitArchive": [requests.exceptions.ReadTimeout("x"), SUBMITTED],
                               "FindSubmission": [NOT_FOUND]})
    with pytest.raises(TransientError) as caught:
        endpoint.send(archive)
    assert caught.value.rule == "soap-timeout"
    assert endpoint.send(archive).remote_id == "T-1"
    assert stub.operations() == ["SubmitArchive", "FindSubmission", "SubmitArchive"]
    assert stub.calls[0][1] == stub.calls[2][1]


def test_a_failed_lookup_is_transient_and_says_both_failures(
    platform: Callable[..., tuple[SoapOutbound, Platform]], archive: Artifact
) -> None:
    endpoint, _ = platform({"SubmitArchive": [lost()], "FindSubmission": [(503, b"")]})
    with pytest.raises(TransientError) as caught:
        endpoint.send(archive)
    assert caught.value.rule == "soap-lookup"
    assert str(caught.value) == (
        "connector 'prefecture': SubmitArchive: connection to the platform lost; retried later; looking the "
        "submission up by its client key failed too (connector 'prefecture': FindSubmission answered with HTTP 503: "
        "retried later; check the endpoint URL if it lasts): it will be looked up again before anything is sent "
        "[soap-lookup]")


@pytest.mark.parametrize("failure", [refused(), requests.exceptions.ConnectTimeout("x"), (401, b"")])
def test_a_request_that_never_left_or_was_refused_is_not_looked_up(
    platform: Callable[..., tuple[SoapOutbound, Platform]], archive: Artifact, failure: Answer
) -> None:
    endpoint, stub = platform({"SubmitArchive": [failure]})
    with pytest.raises(TransientError):
        endpoint.send(archive)
    assert stub.operations() == ["SubmitArchive"]


def test_document_refusals_and_unknown_duplicates_fail_the_delivery(
    platform: Callable[..., tuple[SoapOutbound, Platform]], archive: Artifact
) -> None:
    endpoint, _ = platform({"SubmitArchive": [fault("INVALID_ARCHIVE", "AnomalieEnveloppe: missing file")]})
    with pytest.raises(DocumentError, match="AnomalieEnveloppe: missing file"):
        endpoint.send(archive)
    endpoint, _ = platform({"SubmitArchive": [fault("DUPLICATE")], "FindSubmission": [NOT_FOUND]})
    with pytest.raises(DocumentError) as caught:
        endpoint.send(archive)
    assert caught.value.rule == "soap-duplicate-unknown" and not isinstance(caught.value, DuplicateSubmission)


def test_what_send_refuses_before_sending(platform: Callable[..., tuple[SoapOutbound, Platform]],
                                         archive: Artifact, tmp_path: Path) -> None:
    endpoint, stub = platform({"SubmitArchive": [SUBMITTED]}, max_archive_size=4)
    with pytest.raises(DocumentError, match="more than max_archive_size"):
        endpoint.send(archive)
    with pytest.raises(DocumentError, match="has no expected IDActe"):
        endpoint.send(Artifact(name="a.tar.gz", path=archive.path, sha256="0", kind="actes-archive", client_key="k"))
    with pytest.raises(TransientError, match="cannot read a.tar.gz from the spool"):
        endpoint.send(Artifact(name="a.tar.gz", path=tmp_path / "gone", sha256="0", kind="actes-archive",
                               client_key="k", meta={"id_acte": "x"}))
    assert stub.calls == []
    with pytest.raises(ValidationError):
        SoapOutboundConfig(max_archive_size=0)


# -------------------------------------------------------------------- answers


def transaction(remote_id: str, status: str, extra: str = "") -> str:
    return f"<Transaction><TransactionId>{remote_id}</TransactionId><Status>{status}</Status>{extra}</Transaction>"


def test_statuses_are_asked_by_batches_of_fifty_and_mapped(platform: Callable[..., tuple[SoapOutbound, Platform]]) -> None:
    answer = ok("GetStatus", "".join([
        transaction("T-1", "POSTED"), transaction("T-2", "TRANSMITTED"),
        transaction("T-3", "ACKNOWLEDGED", "<IDActe>X</IDActe><DateReception>2024-03-01</DateReception>"
                    "<MessageName>ar.xml</MessageName><Message>PEFSQWN0ZS8+</Message>"),
        transaction("T-4", "REJECTED", "<Detail>AnomalieActe ODT-VERIF-01</Detail>"),
        transaction("T-5", "CANCELLED"), transaction("T-6", "SOMETHING_ELSE"),
    ]))
    endpoint, stub = platform({"GetStatus": [answer]})
    ids = [f"T-{n}" for n in range(1, 121)]
    found = endpoint.statuses(ids)
    assert [s.state for s in found[:7]] == ["IN_TRANSIT", "IN_TRANSIT", "ACKNOWLEDGED", "REJECTED", "CANCELLED",
                                           "UNKNOWN", "UNKNOWN"]
    assert (found[2].message, found[2].message_name) == (b"<ARActe/>", "ar.xml")
    assert found[3].detail == "AnomalieActe ODT-VERIF-01"
    assert [s.remote_id for s in found] == ids
    assert [body.count(b"<ns0:TransactionId>") for _, body in stub.calls] == [50, 50, 20]
    assert endpoint.statuses([]) == [] and len(stub.calls) == 3


def test_messages_not_yet_known_are_fetched_with_their_attachments(
    platform: Callable[..., tuple[SoapOutbound, Platform]]
) -> None:
    listed = ok("ListMessages", "".join(
        f"<Message><MessageId>M{n}</MessageId><Code>2-1</Code><Name>courrier-{n}.xml</Name><Date>2024-03-02</Date></Message>"
        for n in (1, 2)))
    fetched = ok("GetMessage", "<MessageId>M2</MessageId><Code>2-1</Code><Name>courrier-2.xml</Name>"
                 "<Content>PGxldHRyZS8+</Content><Attachment><Name>lettre.pdf</Name><Content>JVBERg==</Content>"
                 "</Attachment><Attachment><Name>lettre.pdf</Name><Content>JVBERi0=</Content></Attachment>")
    endpoint, stub = platform({"ListMessages": [listed], "GetMessage": [fetched]})
    [message] = endpoint.messages("T-1", {"M1"})
    assert (message.remote_id, message.message_id, message.name, message.data) == ("T-1", "M2", "courrier-2.xml",
                                                                                   b"<lettre/>")
    assert message.attachments == {"lettre.pdf": b"%PDF", "lettre-2.pdf": b"%PDF-"}
    assert stub.operations() == ["ListMessages", "GetMessage"]
    assert endpoint.messages("T-1", {"M1", "M2"}) == []


def test_cancel_and_classification(platform: Callable[..., tuple[SoapOutbound, Platform]]) -> None:
    endpoint, stub = platform({
        "CancelAct": [ok("CancelAct", "<TransactionId>T-1</TransactionId><Status>CANCELLED</Status>")],
        "RequestClassification": [ok("RequestClassification", "<Code>7-2</Code><Name>classif.xml</Name>"
                                                               "<Content>PFJldG91ckNsYXNzaWZpY2F0aW9uLz4=</Content>")],
    })
    assert endpoint.cancel("T-1", "X").state == "CANCELLED"
    assert endpoint.classification("214400152", "2019-04-18") == ("classif.xml", b"<RetourClassification/>")
    assert b"<ns0:CurrentDate>2019-04-18</ns0:CurrentDate>" in stub.calls[-1][1]
    endpoint.classification("214400152", None)
    assert b"CurrentDate" not in stub.calls[-1][1]
    with pytest.raises(DocumentError, match="is not a date like 2024-03-01"):
        endpoint.classification("214400152", "18/04/2019")


def test_receipts_are_named_as_the_platform_names_them_made_plain(
    platform: Callable[..., tuple[SoapOutbound, Platform]]
) -> None:
    def receipt(name: str | None, kind: str, content: str) -> str:
        named = f"<Name>{name}</Name>" if name is not None else "<Name></Name>"
        return f"<Receipt>{named}<Kind>{kind}</Kind><Content>{content}</Content></Receipt>"

    endpoint, stub = platform({"GetReceipts": [
        ok("GetReceipts", receipt("044-X-DE-tampon.pdf", "stamped-act", "JVBERi0x")
           + receipt("../../etc/annexe-tampon.pdf", "stamped-annex", "JVBERi0y")
           + receipt("annexe-tampon.pdf", "stamped-annex", "JVBERi0z")
           + receipt("C:\\tmp\\..", "stamped-annex", "JVBERi00")
           + receipt("vide.pdf", "stamped-annex", "")
           + receipt(None, "bordereau", "JVBERi01")),
        ok("GetReceipts"),
        fault("UNKNOWN_TRANSACTION", "no transaction T-9", "T-9"),
    ]})
    assert endpoint.receipts("T-1") == {
        "044-X-DE-tampon.pdf": b"%PDF-1", "annexe-tampon.pdf": b"%PDF-2", "annexe-tampon-2.pdf": b"%PDF-3",
        "T-1-stamped-annex.pdf": b"%PDF-4", "T-1-bordereau.pdf": b"%PDF-5",
    }
    assert b"<ns0:TransactionId>T-1</ns0:TransactionId>" in stub.calls[0][1]
    assert endpoint.receipts("T-1") == {}  # not acknowledged yet
    with pytest.raises(DocumentError, match=r"GetReceipts refused by the platform \(UNKNOWN_TRANSACTION"):
        endpoint.receipts("T-9")


def test_reachable_answers_without_raising(platform: Callable[..., tuple[SoapOutbound, Platform]]) -> None:
    endpoint, stub = platform({"FindSubmission": [NOT_FOUND, refused()]})
    assert endpoint.reachable() == (True, "http://127.0.0.1:9/soap")
    ready, why = endpoint.reachable()
    assert not ready and "connection to the platform refused or unreachable" in why
    missing = SoapOutbound("x", SoapOutboundConfig.model_construct(wsdl=Path("/nonexistent.wsdl"), endpoint=None))
    assert missing.reachable() == (False, "connector 'x': WSDL file not found: /nonexistent.wsdl")
