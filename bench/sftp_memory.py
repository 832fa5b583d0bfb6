"""SFTP memory: MB/s in and out, and the bus's peak RSS, carrying big files over SFTP.

Two scenarios, each with the real bus as a subprocess (``python run_bus.py --log-level
WARNING run -c CONFIG``, stopped with SIGTERM at the end) and OpenSSH's sshd on 127.0.0.1:

pass-through
    a file of ``--size`` MiB of random bytes dropped in an SFTP source (``pattern: "*.bin"``)
    and relayed unchanged (``transform: passthrough``) to an SFTP endpoint folder;
ACTES
    a deliberation bundle (the JSON sidecar of ``simulators.backoffice.drop_deliberation``)
    whose annex is a PDF of ``--annex`` MiB of random samples (incompressible), mapped with
    ``config/mappings/deliberations-json.yaml``, built into an archive and sent to an SFTP
    endpoint (no ``answers:``: it ends DELIVERED).

For each: MB/s in (claim → document RECEIVED: download, fsync, copy into the spool), MB/s
out (delivery PENDING → DELIVERED: connect, upload, size check, rename), the bus's peak RSS
(``VmHWM`` of ``/proc/<pid>/status`` before SIGTERM; ``VmRSS`` sampled every 0.1 s as a
cross-check).  Baselines made in the same run: a bare paramiko loop (get the same file to
local disk, put it to the endpoint folder, 256 KiB chunks) for the rates, the idle bus's own
VmHWM (started, polled once, nothing to do) for the memory.  Target (issue): peak RSS
< 200 MiB for both.  Exit 0 whether the targets are met or not (the figures are the
product); 1 on an error (timeout, bus crash: the tail of the bus log is printed).

    python -m bench.sftp_memory [--size 1024] [--annex 140] [--quick] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/sftp_memory.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import date, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import paramiko  # noqa: E402
import yaml  # noqa: E402

from bench._common import measure_in_workdir  # noqa: E402
from bench._sshd import SSHD, SshServer, start_sshd  # noqa: E402
from bench._sshd import stop as stop_sshd  # noqa: E402
from bus.config import load_config  # noqa: E402
from bus.ledger import DeliveryState, DocumentState, Ledger  # noqa: E402
from bus.spool import Spool  # noqa: E402
from simulators.backoffice import SIREN  # noqa: E402
from simulators.pdf import make_pdf  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MAPPING = REPO / "config" / "mappings" / "deliberations-json.yaml"
CLASSIFICATION = REPO / "config" / "classifications" / "demo-classification-7-2.xml"
MIB = 1 << 20
GIB = 1 << 30
MB = 1_000_000  #: MB/s are decimal megabytes per second
CHUNK = 256 * 1024  #: the bare loop's chunk
WRITE_CHUNK = MIB  #: generated files are written this much at a time, never held whole
TARGET_MIB = 200.0
POLL = 0.5  #: the sources' poll, seconds
SAMPLE = 0.1  #: VmRSS sampling and progress polling, seconds
NUMERO = "BMEM_00001"


class BenchError(Exception):
    """The bench could not measure: the bus crashed, a document failed, time ran out."""


# -- the files ------------------------------------------------------------------------------


def write_random(path: Path, size: int, seed: str) -> None:
    """``size`` random bytes (seeded), written ``WRITE_CHUNK`` at a time."""
    rng = random.Random(seed)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            out.write(rng.randbytes(min(WRITE_CHUNK, left)))
            left -= WRITE_CHUNK


def _pdf_parts(count: int, title: str) -> tuple[bytes, Callable[[int], bytes]]:
    """The bytes of a one-page PDF before its image's ``count`` samples, and after them (given
    the offset where the samples start)."""
    text = f"BT /F1 11 Tf 56 780 Td ({title}) Tj ET\nq 480 0 0 120 56 560 cm /Im1 Do Q".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> /XObject << /Im1 6 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream",
    ]
    head = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(head))
        head += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    offsets.append(len(head))
    head += (b"6 0 obj\n<< /Type /XObject /Subtype /Image /Width %d /Height 1 /ColorSpace /DeviceGray "
             b"/BitsPerComponent 8 /Length %d >>\nstream\n" % (count, count))

    def tail(samples_end: int) -> bytes:
        out = bytearray(b"\nendstream\nendobj\n")
        xref = samples_end + len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1)
        for offset in offsets:
            out += b"%010d 00000 n \n" % offset
        out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(offsets) + 1, xref)
        return bytes(out)

    return bytes(head), tail


def write_random_pdf(path: Path, size: int, seed: str, title: str) -> int:
    """A valid one-page PDF of about ``size`` bytes, nearly all of it an image of random grey
    samples (incompressible, like a scanned annex), streamed to ``path``; its size."""
    count = size - 1024
    for _ in range(4):  # the digits of the count move the overhead: converge on ``size``
        head, tail = _pdf_parts(count, title)
        total = len(head) + count + len(tail(len(head) + count))
        if total == size:
            break
        count += size - total
    head, tail = _pdf_parts(count, title)
    rng = random.Random(seed)
    with open(path, "wb") as out:
        out.write(head)
        left = count
        while left > 0:
            out.write(rng.randbytes(min(WRITE_CHUNK, left)))
            left -= WRITE_CHUNK
        out.write(tail(len(head) + count))
    return path.stat().st_size


def write_deliberation(folder: Path, numero: str, annex_size: int, decision: date) -> int:
    """A deliberation bundle as ``drop_deliberation`` writes it (the sidecar last, under its
    name only once complete), with a big random annex; the bundle's bytes."""
    main, annex = f"{numero}.pdf", f"{numero}_annexe1.pdf"
    (folder / main).write_bytes(make_pdf([f"Délibération {numero}", "Plan local d'urbanisme"]))
    write_random_pdf(folder / annex, annex_size, f"annex:{numero}", f"Annexe 1 {numero}")
    sidecar = {  # the shape of simulators.backoffice.drop_deliberation's sidecar
        "collectivite": {"siren": SIREN, "nom": "Commune de Saint-Herblain"},
        "seance": {"id": f"CM-{decision:%Y-%m}", "date": decision.isoformat()},
        "numero": numero,
        "objet": "Approbation du plan local d'urbanisme et de ses annexes graphiques",
        "classification": "3.2",
        "type": "DELIBERATION",
        "envoi_papier": False,
        "redacteur": {"nom": "Maëlle Le Goff", "telephone": "02 28 25 20 00", "email": "m.legoff@saint-herblain.fr"},
        "fichier": main,
        "annexes": [{"fichier": annex, "type": "21_RP"}],
    }
    hidden = folder / f".{numero}.json.tmp"
    hidden.write_bytes(json.dumps(sidecar, ensure_ascii=False, indent=2).encode())
    return sum((folder / name).stat().st_size for name in (main, annex, hidden.name))


# -- the configuration ----------------------------------------------------------------------


def _sftp(server: SshServer, path: Path, **extra: Any) -> dict[str, Any]:
    return {"type": "sftp", "host": server.host, "port": server.port, "username": server.user,
            "key_file": str(server.key_file), "known_hosts": str(server.known_hosts), "path": str(path),
            "timeout": "60s", **extra}


def write_bus_config(root: Path, server: SshServer, scenario: str, source: Path, endpoint: Path,
                     largest: int = 0) -> Path:
    """One source, one route, one endpoint; the bus's other settings are the product's defaults
    (lease 60 s, sweep 30 s, 2 workers), metrics off (no port to share).  The source's size limits
    are the product's (1 GiB a file, 2 GiB a bundle), raised to let a ``largest`` file through."""
    limits = {"max_file_bytes": max(GIB, largest), "max_document_bytes": max(2 * GIB, largest + 64 * MIB)}
    quick = {"min_age": "0s", "stable": False}
    pattern = "*.bin" if scenario == "passthrough" else "*.json"
    endpoint_extra: dict[str, Any] = {"trigram": "HNT", "quadrigram": "TACT"} if scenario == "actes" else {}
    route: dict[str, Any] = {"name": scenario, "from": "source", "to": "endpoint"}
    if scenario == "passthrough":
        route["transform"] = "passthrough"
    else:
        route["map"] = str(MAPPING)
    config = {
        "bus": {"state_dir": str(root / f"var-{scenario}"), "metrics": {"enabled": False}},
        "collectivites": [{"siren": SIREN, "departement": "044", "arrondissement": 1, "nature": "31",
                           "return_emails": ["actes@saint-herblain.fr"], "classification": str(CLASSIFICATION),
                           "classification_date": "2025-01-15"}],
        "connectors": {
            "source": _sftp(server, source, pattern=pattern, poll=f"{POLL}s", ready=quick,
                            local_work_dir=str(root / f"work-{scenario}"), limits=limits),
            "endpoint": _sftp(server, endpoint, **endpoint_extra),
        },
        "routes": [route],
    }
    path = root / f"hent-{scenario}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


# -- the bare loop --------------------------------------------------------------------------


@contextmanager
def bare_sftp(server: SshServer) -> Iterator[paramiko.SFTPClient]:
    """An SFTP client as a hand-written script opens one: the same key, the host key pinned."""
    known = paramiko.HostKeys(str(server.known_hosts)).lookup(f"[{server.host}]:{server.port}")
    if not known:
        raise BenchError(f"{server.known_hosts} does not pin [{server.host}]:{server.port}")
    transport = paramiko.Transport((server.host, server.port))
    try:
        transport.connect(hostkey=next(iter(known.values())), username=server.user,
                          pkey=paramiko.PKey.from_path(server.key_file))
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        with sftp:
            yield sftp
    finally:
        transport.close()


def bare_copy(server: SshServer, remote: Path, local: Path, target: Path) -> tuple[float, float]:
    """Get ``remote`` to ``local``, then put it to ``target``, 256 KiB at a time; no fsync; the
    seconds of each, the connection set up beforehand.

    The get prefetches with paramiko's default (no limit on the requests in flight: the SSH
    channel's window bounds the bytes), as ``SFTPClient.get`` does; the put is pipelined, as
    the bus's upload.  The bus's download passes ``max_concurrent_prefetch_requests=64``
    instead, which paramiko (up to 5.x at least) gets wrong: see bench/README.md."""
    with bare_sftp(server) as sftp:
        size = sftp.stat(str(remote)).st_size or 0
        began = time.perf_counter()
        with sftp.open(str(remote), "rb") as handle, open(local, "wb") as out:
            handle.prefetch(size)
            while data := handle.read(CHUNK):
                out.write(data)
        got = time.perf_counter()
        with open(local, "rb") as source, sftp.open(str(target), "wb") as handle:
            handle.set_pipelined(True)
            while data := source.read(CHUNK):
                handle.write(data)
        if sftp.stat(str(target)).st_size != size:
            raise BenchError(f"the bare loop's put of {target} is incomplete")
        put = time.perf_counter()
    local.unlink()
    target.unlink()
    return got - began, put - got


# -- the bus process ------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in KiB ({} once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


class Bus:
    """``python run_bus.py --log-level WARNING run -c CONFIG``, its log in a file, its VmRSS sampled."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "run_bus.py", "--log-level", "WARNING", "run", "-c", str(config)],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )
        self.max_rss_kib = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = proc_status(self.process.pid).get("VmRSS", 0)
            self.max_rss_kib = max(self.max_rss_kib, rss)
            self._stop.wait(SAMPLE)

    def hwm_kib(self) -> int:
        self.check_alive()
        return proc_status(self.process.pid)["VmHWM"]

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"the bus exited with {self.process.returncode}\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            text = []
        return f"--- last {len(text)} lines of {self.log} ---\n" + "\n".join(text)

    def stop(self) -> int:
        """SIGTERM, wait (30 s), SIGKILL if it lingers: by its PID only; its exit code."""
        self._stop.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._sampler.join(timeout=1)
        return self.process.returncode


# -- one scenario ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one scenario observed: wall-clock times (``time.time()``), bytes, memory (KiB)."""

    placed: float  #: the sidecar (or the relayed file) appeared under its name
    claimed: float | None  #: the claim began (its local folder's name carries the time); None: unseen
    downloaded: float | None  #: the last byte of the biggest file landed locally (its mtime)
    received: float  #: the document RECEIVED in the ledger (every file in the spool)
    routed: float  #: the delivery created PENDING (ROUTED, same transaction)
    delivered: float  #: the delivery DELIVERED (after the final rename at the endpoint)
    bundle_bytes: int
    sent_bytes: int  #: the file relayed, or the archive built
    idle_hwm_kib: int
    peak_hwm_kib: int
    max_rss_kib: int
    exit_code: int


def _wait_for(what: str, predicate: Callable[[], bool], bus: Bus, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        bus.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}\n{bus.tail()}")
        time.sleep(SAMPLE)


def run_scenario(
    config_path: Path, log: Path, *, source: Path, endpoint: Path, work: Path, biggest: str,
    bundle_bytes: int, place: Callable[[], None], timeout: float,
) -> Outcome:
    """Start the bus, let it poll once idle, place the drop, wait for DELIVERED, stop it."""
    config = load_config(config_path)
    bus = Bus(config_path, log)
    try:
        _wait_for("the bus's first poll", lambda: (source / ".hent-work").is_dir(), bus, 60)
        time.sleep(POLL + 0.5)  # one more poll, with nothing to do
        idle = bus.hwm_kib()
        ledger = Ledger(config.bus.ledger)
        try:
            placed = time.time()
            place()
            claims_dir = work / "claims"
            claimed: float | None = None
            downloaded: float | None = None
            deadline = time.monotonic() + timeout
            while True:
                bus.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"timed out after {timeout:.0f} s: the delivery is not DELIVERED\n{bus.tail()}")
                for claim in (claims_dir.iterdir() if claims_dir.is_dir() else ()):
                    stamp = claim.name.split("-", 1)[0]  # the claim id: <time.time_ns()>-<uuid>
                    if claim.name.startswith(".") or not stamp.isdigit():
                        continue
                    claimed = min(claimed or float("inf"), int(stamp) / 1e9)
                    try:
                        downloaded = (claim / biggest).stat().st_mtime
                    except FileNotFoundError:
                        pass  # still its .part
                documents = ledger.documents()
                deliveries = ledger.deliveries()
                for kind, rows in (("document", documents), ("delivery", deliveries)):
                    for row in rows:
                        if row.state == "FAILED":
                            raise BenchError(f"{kind} {row.id} FAILED: {row.reason}\n{bus.tail()}")
                done = [d for d in deliveries if d.state == DeliveryState.DELIVERED]
                if done and documents and documents[0].state == DocumentState.ROUTED:
                    [delivery] = done
                    assert delivery.artifact_name and delivery.artifact_sha256 and delivery.final_at
                    sent = Spool(config.bus.spool).path(delivery.artifact_sha256).stat().st_size
                    final = endpoint / delivery.artifact_name
                    if final.is_file() and final.stat().st_size == sent:
                        break
                time.sleep(SAMPLE)
            peak = bus.hwm_kib()
        finally:
            ledger.close()
    finally:
        exit_code = bus.stop()
    if exit_code != 0:
        raise BenchError(f"the bus exited with {exit_code} after SIGTERM\n{bus.tail()}")
    return Outcome(
        placed=placed, claimed=claimed, downloaded=downloaded,
        received=documents[0].created_at.timestamp(), routed=delivery.created_at.timestamp(),
        delivered=delivery.final_at.timestamp(), bundle_bytes=bundle_bytes, sent_bytes=sent,
        idle_hwm_kib=idle, peak_hwm_kib=peak, max_rss_kib=bus.max_rss_kib, exit_code=exit_code,
    )


# -- the measure ----------------------------------------------------------------------------


def _rate(size: int, seconds: float) -> float:
    return size / MB / max(seconds, 1e-6)


def measure_passthrough(args: argparse.Namespace, root: Path, server: SshServer) -> dict[str, Any]:
    size = args.size * MIB
    source, endpoint = server.root / "relay-in", server.root / "relay-out"
    for folder in (source, endpoint):
        folder.mkdir(parents=True)
    name = f"relay-{args.size}MiB.bin"
    hidden = source / f".{name}.tmp"
    write_random(hidden, size, f"passthrough:{args.size}")
    bare_get, bare_put = bare_copy(server, hidden, root / f"bare-{name}", endpoint / f".bare-{name}")
    config = write_bus_config(root, server, "passthrough", source, endpoint, largest=size)
    outcome = run_scenario(
        config, root / "bus-passthrough.log", source=source, endpoint=endpoint, work=root / "work-passthrough",
        biggest=name, bundle_bytes=size, place=lambda: os.replace(hidden, source / name), timeout=args.timeout,
    )
    return {"size": size, "bare_get_s": bare_get, "bare_put_s": bare_put, "outcome": outcome}


def measure_actes(args: argparse.Namespace, root: Path, server: SshServer) -> dict[str, Any]:
    source, endpoint = server.root / "acts-in", server.root / "acts-out"
    for folder in (source, endpoint):
        folder.mkdir(parents=True)
    annex = f"{NUMERO}_annexe1.pdf"
    bundle = write_deliberation(source, NUMERO, args.annex * MIB, date.today() - timedelta(days=1))
    size = (source / annex).stat().st_size
    bare_get, bare_put = bare_copy(server, source / annex, root / f"bare-{annex}", endpoint / f".bare-{annex}")
    config = write_bus_config(root, server, "actes", source, endpoint, largest=bundle)
    outcome = run_scenario(
        config, root / "bus-actes.log", source=source, endpoint=endpoint, work=root / "work-actes",
        biggest=annex, bundle_bytes=bundle,
        place=lambda: os.replace(source / f".{NUMERO}.json.tmp", source / f"{NUMERO}.json"), timeout=args.timeout,
    )
    return {"size": size, "bare_get_s": bare_get, "bare_put_s": bare_put, "outcome": outcome}


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    if not SSHD.is_file():
        raise BenchError(f"OpenSSH server not found: {SSHD} (apt-get install openssh-server)")
    began = time.monotonic()
    server, sshd = start_sshd(root / "sshd")
    try:
        passthrough = measure_passthrough(args, root, server)
        actes = measure_actes(args, root, server)
    finally:
        stop_sshd(sshd)
    return {"passthrough": passthrough, "actes": actes, "wall_s": time.monotonic() - began}


# -- the report -----------------------------------------------------------------------------


def _figure(name: str, value: float, unit: str, baseline: float, what: str, target: str) -> str:
    ratio = value / baseline if baseline else float("nan")
    return (f"{name}: {value:.1f} {unit} | baseline: {baseline:.1f} {unit} ({what}) | ratio: {ratio:.2f} "
            f"| target: {target}")


def report(result: dict[str, Any], args: argparse.Namespace) -> tuple[list[str], list[str], int, int]:
    """The context lines (``#``), the figure lines, and how many targets were met of how many."""
    notes = [f"# sftp_memory: pass-through {args.size} MiB, ACTES annex {args.annex} MiB; MB/s = 10^6 bytes/s; "
             f"RSS in MiB"]
    figures: list[str] = []
    met = total = 0
    for scenario, label in (("passthrough", "pass-through"), ("actes", "ACTES")):
        part = result[scenario]
        o: Outcome = part["outcome"]
        size, bare_get, bare_put = part["size"], part["bare_get_s"], part["bare_put_s"]
        start = o.claimed if o.claimed is not None else o.placed
        claim_note = "claim" if o.claimed is not None else "drop (the claim was not seen)"
        end_to_end = o.delivered - o.placed
        notes.append(
            f"# {label}: dropped → claimed {start - o.placed:.2f} s; {claim_note} → RECEIVED "
            f"{o.received - start:.2f} s for {o.bundle_bytes / MIB:.1f} MiB"
            + (f" (download {o.downloaded - start:.2f} s = {_rate(size, o.downloaded - start):.1f} MB/s, "
               f"then fsync, spool copy and ledger {o.received - o.downloaded:.2f} s)" if o.downloaded else "")
        )
        notes.append(
            f"# {label}: RECEIVED → ROUTED {o.routed - o.received:.2f} s"
            + (f" (archive built: {o.sent_bytes / MIB:.1f} MiB, {_rate(o.sent_bytes, o.routed - o.received):.1f} MB/s)"
               if scenario == "actes" else "")
            + f"; ROUTED → DELIVERED {o.delivered - o.routed:.2f} s for {o.sent_bytes / MIB:.1f} MiB; "
            f"end to end (drop → DELIVERED) {end_to_end:.2f} s, bare get + put {bare_get + bare_put:.2f} s"
        )
        growth = (o.peak_hwm_kib - o.idle_hwm_kib) * 1024
        if growth > max(0.5 * size, 32 * MIB):
            notes.append(f"# {label}: the bus grew by {growth / MIB:.0f} MiB carrying a {size / MIB:.0f} MiB file: "
                         "something holds the file (or most of it) in memory")
        notes.append(
            f"# {label}: bus VmHWM idle {o.idle_hwm_kib / 1024:.1f} MiB, at the end {o.peak_hwm_kib / 1024:.1f} MiB; "
            f"VmRSS sampled every {SAMPLE} s peaked at {o.max_rss_kib / 1024:.1f} MiB; exit code after SIGTERM "
            f"{o.exit_code}"
        )
        bare_what = "bare paramiko" + (" on the annex" if scenario == "actes" else "")
        figures.append(_figure(f"{scenario}_mbps_in", _rate(o.bundle_bytes, o.received - start), "MB/s",
                               _rate(size, bare_get), f"{bare_what} get", "none (report)"))
        figures.append(_figure(f"{scenario}_mbps_out", _rate(o.sent_bytes, o.delivered - o.routed), "MB/s",
                               _rate(size, bare_put), f"{bare_what} put", "none (report)"))
        figures.append(_figure(f"{scenario}_mbps_end_to_end", _rate(o.bundle_bytes, end_to_end), "MB/s",
                               _rate(size, bare_get + bare_put), f"{bare_what} get + put", "none (report)"))
        peak = o.peak_hwm_kib / 1024
        ok = peak < TARGET_MIB
        met, total = met + ok, total + 1
        figures.append(_figure(f"{scenario}_peak_rss", peak, "MiB", o.idle_hwm_kib / 1024, "idle bus",
                               f"< {TARGET_MIB:.0f} MiB: {'met' if ok else 'NOT met'}"))
    notes.append(f"# wall time {result['wall_s']:.1f} s (files written, bare loops, both buses)")
    return notes, figures, met, total


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sftp_memory",
        description="MB/s in and out and the bus's peak RSS carrying a big file over SFTP (pass-through) and an "
        "act with a big annex (ACTES); target: peak RSS < 200 MiB",
    )
    parser.add_argument("--size", type=int, default=1024, help="MiB of the pass-through file (default 1024)")
    parser.add_argument("--annex", type=int, default=140, help="MiB of the ACTES annex (default 140)")
    parser.add_argument("--quick", action="store_true", help="64 MiB and 16 MiB: checks that it runs (CI)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each scenario may take (default 900)")
    parser.add_argument("--workdir", type=Path, help="where to work (a fresh folder is made inside)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (files, ledgers, bus logs)")
    parser.set_defaults(json=False)  # bench._common reports failures as text
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.annex = 64, 16
    if args.size < 1 or args.annex < 1:
        parser.error("--size and --annex are at least 1 MiB")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure_in_workdir("sftp_memory", args, measure)
    if result is None:
        return 1
    notes, figures, met, total = report(result, args)
    print("\n".join([*notes, *figures, f"targets met: {met}/{total}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
