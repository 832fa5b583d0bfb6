"""XSD validation of an Acte: the lxml path the bus takes beside the xmlschema path, per second.

The Acte is the ``..._0.xml`` message of an archive built by the bare loop
(:class:`bench.actes_throughput.BareLoop`: a deliberation with one annex, ISO-8859-1), valid
against ``schemas/actes/actes.xsd``.  Both sides start from its bytes, with their schema
compiled once (compile times are printed apart):

lxml
    ``transformers.actes_validate.default_validator().validate_xml(data, name)``: what the
    bus runs on every message it builds (a hardened parser: no entities, no network, no DTD;
    ``XMLSchema.validate``; the error log turned into problems);
xmlschema
    ``xmlschema.XMLSchema(actes.xsd).iter_errors(data)``, every error collected, the pure-Python
    validator (it parses with ElementTree).

Rounds alternate for ``--seconds`` each; the median validations/s are compared.  Informative:
no target; the line says which is faster.

    python -m bench.xsd_validation [--seconds 2] [--rounds 3] [--quick] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/xsd_validation.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import date, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import xmlschema  # noqa: E402

from bench._common import Figure, report  # noqa: E402
from bench.actes_throughput import SCHEMA, BareLoop, write_bundles  # noqa: E402
from transformers.actes_validate import MESSAGE_NAME, ActesValidator  # noqa: E402


def an_acte(root: Path) -> tuple[str, bytes]:
    """The name and bytes of a valid Acte message, built by the bare loop."""
    today = date.today()
    [bundle] = write_bundles(root, "X", 1, decision=today - timedelta(days=3), pdf_size=4096, annex_size=4096, seed=0)
    archive = BareLoop(today).process(bundle, root)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if MESSAGE_NAME.fullmatch(member.name):
                stream = tar.extractfile(member)
                assert stream is not None
                return member.name, stream.read()
    raise RuntimeError(f"no Acte message in {archive}")


def rate(validate: Callable[[], int], seconds: float) -> float:
    """Validations per second over about ``seconds``; raises if one finds an error."""
    count = 0
    began = time.perf_counter()
    deadline = began + seconds
    while True:
        if validate():
            raise RuntimeError("the Acte does not validate")
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - began)


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    name, data = an_acte(root)
    began = time.perf_counter()
    validator = ActesValidator()
    lxml_compile = time.perf_counter() - began
    began = time.perf_counter()
    schema = xmlschema.XMLSchema(str(SCHEMA))
    xmlschema_compile = time.perf_counter() - began
    sides: dict[str, Callable[[], int]] = {
        "lxml": lambda: len(validator.validate_xml(data, name)),
        "xmlschema": lambda: len(list(schema.iter_errors(data))),
    }
    for validate in sides.values():  # warm, and both must find the Acte valid
        rate(validate, 0.05)
    rates: dict[str, list[float]] = {side: [] for side in sides}
    order = list(sides)
    for number in range(args.rounds):
        random.Random(number).shuffle(order)
        for side in order:
            rates[side].append(rate(sides[side], args.seconds))
    return {
        "bench": "xsd_validation", "acte_bytes": len(data), "rounds": args.rounds, "seconds": args.seconds,
        "lxml_per_s": statistics.median(rates["lxml"]), "xmlschema_per_s": statistics.median(rates["xmlschema"]),
        "compile_s": {"lxml": lxml_compile, "xmlschema": xmlschema_compile},
        "versions": {"xmlschema": xmlschema.__version__},
    }


def figures(result: dict[str, Any]) -> list[Figure]:
    lxml, other = result["lxml_per_s"], result["xmlschema_per_s"]
    faster = f"lxml {lxml / other:.0f}x faster" if lxml >= other else f"xmlschema {other / lxml:.1f}x faster"
    return [Figure("xsd_validation", lxml, "validations/s", other, "xmlschema, the same Acte, schema compiled once",
                   note=f"informative: {faster}")]


def notes(result: dict[str, Any]) -> list[str]:
    compile_s = result["compile_s"]
    return [f"# xsd_validation: an Acte of {result['acte_bytes']} bytes, from its bytes (parse + validate), "
            f"{result['rounds']} round(s) of {result['seconds']:g} s per side, median; schema compiled once: lxml "
            f"{compile_s['lxml'] * 1000:.0f} ms, xmlschema {result['versions']['xmlschema']} "
            f"{compile_s['xmlschema'] * 1000:.0f} ms"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.xsd_validation",
        description="XSD validations of an Acte per second: lxml (the bus's path) beside xmlschema",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per side and round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, median (default 3)")
    parser.add_argument("--quick", action="store_true", help="one round of 0.3 s: checks that it runs (CI)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workdir", type=Path, help="where to work (a fresh folder is made inside)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 0.3, 1
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return report("xsd_validation", parse_args(argv), measure, figures, notes)


if __name__ == "__main__":
    sys.exit(main())
