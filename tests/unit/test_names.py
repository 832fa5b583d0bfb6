"""Names from outside: what bus.names refuses beyond paths and controls, and how it makes one plain."""

from __future__ import annotations

import pytest

from bus.errors import DocumentError
from bus.names import name_problem, plain_file_name, safe_name


@pytest.mark.parametrize(("name", "said"), [
    ("facture\u202efdp.exe", "U+202E"),  # shows as "factureexe.pdf"
    ("a\u2066b.pdf", "U+2066"),
    ("plan\u200b.pdf", "U+200B"),
    ("\ufeffplan.pdf", "U+FEFF"),
    ("d\ufffdlib.pdf", "U+FFFD"),
])
def test_names_that_show_as_another_or_were_decoded_wrongly_are_refused(name: str, said: str) -> None:
    problem = name_problem(name)
    assert problem is not None and said in problem
    with pytest.raises(DocumentError) as refused:
        safe_name(name, field="fichier")
    assert refused.value.rule == "file-name" and refused.value.field == "fichier"


@pytest.mark.parametrize("name", ["délibération n°12.pdf", "e\u0301te\u0301.pdf", "plan (1).pdf", "Ünïcödé.xml"])
def test_accented_and_combining_names_are_plain(name: str) -> None:
    assert name_problem(name) is None


def test_a_platform_name_made_plain_loses_its_invisible_characters() -> None:
    assert plain_file_name("lettre\u202efdp.exe", "x") == "lettre_fdp.exe"
    assert plain_file_name("\ufeff\u200bavis\ufffd.pdf", "x") == "__avis_.pdf"
    assert safe_name(plain_file_name("a\u2066\u2069b", "x"), field="f") == "a__b"
