"""``demo``, ``validate``, ``inspect`` and ``status``, run as a user runs them."""

# ruff: noqa: E501  (the exact texts are asserted whole, one per line)

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import run_cli

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "cli"
ARCHIVE_NAME = re.compile(r"^HNT-TACT--214400152--\d{8}-\d+\.tar\.gz$")
BROKEN_ERROR = (
    "_A_.json: numero_interne: NumeroInterne '_A_' must be 2-15 of A-Z, 0-9, _ "
    "without a leading or trailing _ [numero-interne-pattern]"
)
SECRET = "s3cr3t-Pa55-w0rd-from-env"
#: each file of ../shared/reference/actes/samples: saved name, then the kind, code, IDActe and errors it reads to
INSPECT_CASES = [
    (
        "pastell__034-491011698-20171207-CL20171227_06-DE-1-2.xml",
        "ARActe",
        "1-2",
        "034-491011698-20171207-CL20171227_06-DE",
        [],
    ),
    ("stela__044-214400152----1-3_1.xml", "AnomalieActe", "1-3", None, []),
    ("pastell__999-1234----7-2_1.xml", "RetourClassification", "7-2", None, []),
    ("stela__exemple_codes_matieres.xml", "RetourClassification", "7-2", None, []),
    ("stela__EACT--SPREF0441-214400152-20181012-9.xml", "EnveloppeMISILLCL", "ENV", None, []),
    # the act itself, as a collectivité sends it, is not a message from the ministry: read leniently
    (
        "pastell__034-491011698-20171207-CL20171227_06-DE-1-1_0.xml",
        "Unknown",
        None,
        None,
        ["root element 'Acte' is not a message the ministry sends"],
    ),
]


run_bus = run_cli


@dataclass(frozen=True)
class Demo:
    workspace: Path
    result: subprocess.CompletedProcess[str]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.result.stdout.splitlines()]

    @property
    def env(self) -> dict[str, str]:
        """What ``status -c config/demo.yaml`` needs to find the demo's ledger."""
        return {"HENT_DEMO_WORKSPACE": str(self.workspace)}

    def archives(self) -> list[Path]:
        """The copies the demo keeps of the archives it sent (the archives endpoint's folder)."""
        return sorted((self.workspace / "out" / "archives").glob("*.tar.gz"))

    def archive_of(self, bundle: str) -> Path:
        """The archive built for ``bundle`` (serials follow the processing order, not the bundles)."""
        (row,) = [row for row in self.rows if row["bundle"] == bundle]
        return self.workspace / "out" / "archives" / row["deliveries"][0]["archive"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """One run of ``run_bus.py demo --keep --json`` for the whole module."""
    workspace = tmp_path_factory.mktemp("demo")
    result = run_bus("demo", "--workspace", str(workspace), "--keep", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return Demo(workspace, result)




def acte_message(archive: Path) -> tuple[str, bytes]:
    """The ``..._0.xml`` Acte message of an archive: (its name, its bytes)."""
    with tarfile.open(archive, "r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("_0.xml"))
        stream = tar.extractfile(member)
        assert stream is not None
        return member.name, stream.read()


# -- demo ----------------------------------------------------------------------------------
def test_demo_reports_acknowledged_rejected_and_failed_documents(demo: Demo) -> None:
    # Given the demo run with --json (the fixture)
    rows = demo.rows

    # Then it printed one JSON object per document: four routed, each sent to the platform and
    # kept as a copy (the same archive)...
    assert len(rows) == 5
    routed = [row for row in rows if row["state"] == "ROUTED"]
    failed = [row for row in rows if row["state"] == "FAILED"]
    assert sorted(row["bundle"] for row in routed) == [
        "AR2026_0187.csv", "DEL2026_042.json", "DEL2026_043.json", "MAR2026_0031.xml",
    ]
    for row in routed:
        copy, sent = row["deliveries"]
        assert (copy["endpoint"], copy["state"], sent["endpoint"]) == ("archives", "DELIVERED", "prefecture")
        assert ARCHIVE_NAME.match(sent["archive"]) and copy["archive"] == sent["archive"], row
        # the three acts are acknowledged by the ministry with their IDActe...
        if row["bundle"] != "DEL2026_043.json":
            assert sent["state"] == "ACKNOWLEDGED" and sent["id_acte"] == row["id_acte"]
        else:  # ...and the one prepared before the new classification is rejected
            assert sent["state"] == "REJECTED" and "ODT-VERIF-01" in sent["reason"]
    # ... and the broken deliberation failed with the sidecar, the field and the rule named
    assert [(row["bundle"], row["error"], row["deliveries"]) for row in failed] == [("_A_.json", BROKEN_ERROR, [])]


def test_demo_writes_the_archives_the_replies_and_the_error_note(demo: Demo) -> None:
    # Given the demo's workspace after the run
    deliberations = demo.workspace / "drop" / "deliberations"
    archive_names = {d["archive"] for row in demo.rows for d in row["deliveries"]}

    # Then the archives' folder holds exactly the four archives reported
    assert {p.name for p in demo.archives()} == archive_names
    assert len(archive_names) == 4
    # and the software got the ministry's answers verbatim beside their summaries
    replies = sorted(p.name for p in (deliberations / "replies").iterdir())
    assert "DEL2026_042.2.1-2.xml" in replies and "DEL2026_043.2.1-3.xml" in replies
    # and the deliberation software got a negative reply for the broken bundle
    reply = json.loads((deliberations / "replies" / "_A_.1.json").read_text(encoding="utf-8"))
    assert (reply["bundle"], reply["state"], reply["reason"]) == ("_A_.json", "FAILED", BROKEN_ERROR)
    # and the broken bundle sits in error/ beside a note saying what to fix
    note = (deliberations / "error" / "_A_.json.error.txt").read_text(encoding="utf-8")
    assert BROKEN_ERROR in note.splitlines()
    assert note.splitlines()[-1] == "Fix what is named above, then drop the corrected bundle again."


# -- validate --------------------------------------------------------------------------------
def test_validate_accepts_every_archive_the_demo_built(demo: Demo) -> None:
    # Given the three archives of the demo
    archives = [str(p) for p in demo.archives()]

    # When they are validated
    result = run_bus("validate", *archives)

    # Then each is valid and validate exits 0
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [f"{name}: valid" for name in archives]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        pytest.param(
            lambda xml: re.sub(
                rb"<actes:Objet>.*?</actes:Objet>", b"<actes:Objet>" + b"A" * 600 + b"</actes:Objet>", xml
            ),
            ":5: /actes:Acte/actes:Objet: Element 'actes:Objet': [facet 'maxLength'] The value has a length of '600'; "
            "this exceeds the allowed maximum length of '499'. [xsd]",
            id="objet-of-600-characters",
        ),
        pytest.param(
            lambda xml: re.sub(rb"\s*<actes:CodeMatiere2 [^>]*/>", b"", xml),
            ":4: /actes:Acte/actes:Objet: Element 'actes:Objet': This element is not expected. "
            "Expected is ( actes:CodeMatiere2 ). [xsd]",
            id="codematiere2-missing",
        ),
    ],
)
def test_validate_reports_a_broken_acte_with_its_line_and_path(
    demo: Demo, tmp_path: Path, breakage: Any, expected: str
) -> None:
    # Given the Acte message of the demo's deliberation (matière 3.2), broken
    name, xml = acte_message(demo.archive_of("DEL2026_042.json"))
    broken = breakage(xml)
    assert broken != xml
    path = tmp_path / name
    path.write_bytes(broken)

    # When it is validated
    result = run_bus("validate", str(path))

    # Then validate exits 1 and names the file as given, the line and the element path
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{path}{expected}"]


def test_validate_reports_only_the_real_mistake_of_an_archive_whose_acte_is_invalid(demo: Demo, tmp_path: Path) -> None:
    # Given a demo archive rebuilt with an Objet of 600 characters (same name, same files)
    archive = demo.archive_of("DEL2026_042.json")
    name, xml = acte_message(archive)
    rebuilt = tmp_path / archive.name
    with tarfile.open(archive, "r:gz") as source, tarfile.open(rebuilt, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member)
            if member.name == name:
                broken = re.sub(
                    rb"<actes:Objet>.*?</actes:Objet>", b"<actes:Objet>" + b"A" * 600 + b"</actes:Objet>", xml
                )
                member.size = len(broken)
                target.addfile(member, io.BytesIO(broken))
            else:
                target.addfile(member, data)

    # When it is validated
    result = run_bus("validate", str(rebuilt))

    # Then the one mistake is reported, not the act's PDFs as "unexpected",
    # under the archive's path as given, then the member, its line and the element path
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1, result.stdout
    assert "/actes:Acte/actes:Objet" in result.stdout
    assert result.stdout.splitlines() == [
        f"{rebuilt}: {name}:5: /actes:Acte/actes:Objet: Element 'actes:Objet': [facet 'maxLength'] The value has a "
        "length of '600'; this exceeds the allowed maximum length of '499'. [xsd]"
    ]


# -- inspect ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("saved_name", "kind", "code", "id_acte", "errors"), INSPECT_CASES)
def test_inspect_reads_each_real_ministry_message(
    reference_dir: Path,
    tmp_path: Path,
    saved_name: str,
    kind: str,
    code: str | None,
    id_acte: str | None,
    errors: list[str],
) -> None:
    # Given a real message under the name the ministry gave it
    ministry_name = saved_name.split("__", 1)[1]
    path = tmp_path / ministry_name
    path.write_bytes((reference_dir / "actes" / "samples" / saved_name).read_bytes())

    # When it is inspected
    result = run_bus("inspect", str(path))

    # Then inspect exits 0 with the parsed message as JSON
    assert result.returncode == 0, result.stderr
    message = json.loads(result.stdout)
    assert (message["kind"], message["code"], message["id_acte"], message["filename"]) == (
        kind,
        code,
        id_acte,
        ministry_name,
    )
    assert message["errors"] == errors


def test_every_reference_sample_has_an_inspect_case(reference_dir: Path) -> None:
    # Given the samples folder, When listed, Then each file is one of the cases above
    cases = {saved_name for saved_name, *_ in INSPECT_CASES}
    assert {p.name for p in (reference_dir / "actes" / "samples").iterdir()} <= cases


def test_inspect_says_when_the_file_does_not_exist(tmp_path: Path) -> None:
    # Given a file name that does not exist
    missing = tmp_path / "044-214400152----1-3_1.xml"

    # When it is inspected
    result = run_bus("inspect", str(missing))

    # Then inspect exits 1 with one line naming the file, not a traceback
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(missing) in result.stderr
    assert result.stderr.splitlines() == [f"{missing}: cannot read: No such file or directory"]


# -- status ----------------------------------------------------------------------------------
def test_status_lists_the_five_documents_of_the_demo(demo: Demo) -> None:
    # Given the demo's ledger, When status is asked
    result = run_bus("status", "-c", "config/demo.yaml", env=demo.env)

    # Then each document is listed with its deliveries, and the failure with its reason
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "5 document(s)"
    documents = [line for line in lines if not line.startswith(" ")]
    assert len(documents) == 6  # five documents and the count
    assert sum("ROUTED" in line for line in documents) == 4
    assert f"    ! {BROKEN_ERROR}" in lines
    archives = [line.split()[-1] for line in lines if line.startswith("    → prefecture")]
    assert len(archives) == 4 and all(ARCHIVE_NAME.match(name) for name in archives)


def test_status_filters_by_state(demo: Demo) -> None:
    # Given the demo's ledger, When status is asked for FAILED documents only
    result = run_bus("status", "-c", "config/demo.yaml", "--state", "FAILED", env=demo.env)

    # Then only the broken deliberation is listed
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "1 document(s)"
    assert "FAILED    deliberations/_A_.json" in lines[0]
    assert lines[1:-1] == [f"    ! {BROKEN_ERROR}"]


def test_status_json_prints_one_object_per_document(demo: Demo) -> None:
    # Given the demo's ledger, When status is asked as JSON
    result = run_bus("status", "-c", "config/demo.yaml", "--json", env=demo.env)

    # Then each line is one JSON object, one per document, matching what the demo reported
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted((row["document"], row["state"], row["bundle"]) for row in rows) == sorted(
        (row["document"], row["state"], row["bundle"]) for row in demo.rows
    )
    failed = [row for row in rows if row["state"] == "FAILED"]
    assert [(row["bundle"], row["reason"], row["deliveries"]) for row in failed] == [("_A_.json", BROKEN_ERROR, [])]


def test_status_on_an_unreachable_ledger_never_prints_its_password() -> None:
    # Given a configuration whose PostgreSQL ledger nobody listens for, its password from the environment
    config = str((FIXTURES / "status-unreachable" / "main.yaml").relative_to(REPO))

    # When status is asked, at DEBUG
    result = run_bus("--log-level", "DEBUG", "status", "-c", config, env={"HENT_TEST_SECRET": SECRET})

    # Then it fails, and the password is nowhere in what it printed
    assert result.returncode != 0
    assert "ledger unavailable" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_status_on_an_unreachable_ledger_says_so_in_one_line() -> None:
    # Given a configuration whose PostgreSQL ledger nobody listens for
    config = str((FIXTURES / "status-unreachable" / "main.yaml").relative_to(REPO))

    # When status is asked
    result = run_bus("status", "-c", config, env={"HENT_TEST_SECRET": SECRET})

    # Then it exits 1 with the reason, not a Python traceback
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "ledger unavailable or busy" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_demo_logs_one_json_object_per_line_with_the_documents_context(tmp_path: Path) -> None:
    # Given the demo, its logs asked as JSON at INFO
    result = run_bus("--log-format", "json", "--log-level", "INFO", "demo", "--workspace", str(tmp_path), "--json")
    assert result.returncode == 0, result.stdout + result.stderr

    # Then every line of stderr is a JSON object with time, level, logger and message
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    # and the records about documents and deliveries carry their id, route, connector and state
    documents = {row["document"]: row for row in (json.loads(line) for line in result.stdout.splitlines())}
    routed = [r for r in records if r["level"] == "INFO" and r.get("state") == "ROUTED"]
    assert {r["document_id"] for r in routed} == {d for d, row in documents.items() if row["state"] == "ROUTED"}
    assert all(r["route"] == documents[r["document_id"]]["route"] for r in routed)
    [failed] = [r for r in records if r.get("state") == "FAILED"]
    assert (failed["level"], failed["connector"], failed["document_id"]) == (
        "ERROR", "deliberations", next(d for d, row in documents.items() if row["state"] == "FAILED"))
    answered = [r for r in records if r.get("state") in ("ACKNOWLEDGED", "REJECTED")]
    assert len(answered) == 4 and all(r["connector"] == "prefecture" and r["delivery_id"] for r in answered)
    retried = [r for r in records if r["level"] == "WARNING" and "attempt 1 failed" in r["message"]]
    assert retried and retried[0]["state"] == "PENDING" and retried[0]["document_id"] in documents
    # and no person, no e-mail address, no objet of an act is in them
    for personal in ("Hélène Le Bihan", "Gaëlle Riou", "actes@saint-herblain.fr", "Garantie d'emprunt",
                     "Cession de la parcelle"):
        assert personal not in result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_replay_shows_its_progress_on_a_terminal_and_nothing_in_a_script(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging
    import sys

    import run_bus as cli

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setenv("HENT_DEMO_WORKSPACE", str(demo.workspace))
    try:
        for stderr, shown in ((_Terminal(), True), (io.StringIO(), False)):
            # Given the demo's dead letter, and stderr a terminal, then a pipe
            stdout = io.StringIO()
            monkeypatch.setattr(sys, "stdout", stdout)
            monkeypatch.setattr(sys, "stderr", stderr)
            # When every dead letter is replayed (dry run: the ledger is left as it is)
            assert cli.main(["replay", "--all-failed", "--dry-run", "-c", str(REPO / "config" / "demo.yaml")]) == 0
            # Then the terminal saw the progress, erased before the result; the pipe nothing at all
            assert stdout.getvalue().startswith("would replay document ")
            erased = "\r" + " " * len("would replay 0/1") + "\r"
            assert stderr.getvalue() == (f"\rwould replay 0/1{erased}" if shown else "")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
