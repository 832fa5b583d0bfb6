"""The SFTP memory bench runs end to end on OpenSSH's sshd and prints its figures: a smoke test,
not a timing assertion (skipped without /usr/sbin/sshd, failed then when HENT_REQUIRE_SSHD=1)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench.sftp_memory import write_random_pdf
from tests.sshd import sshd_or_skip

REPO = Path(__file__).resolve().parents[2]
FIGURE = re.compile(r"(\w+): [\d.]+ (MB/s|MiB) \| baseline: [\d.]+ \2 \((.+)\) \| ratio: [\d.]+ \| target: (.+)")
NAMES = {f"{scenario}_{figure}" for scenario in ("passthrough", "actes")
         for figure in ("mbps_in", "mbps_out", "mbps_end_to_end", "peak_rss")}


def test_the_quick_bench_prints_every_figure_then_the_targets_met(tmp_path: Path) -> None:
    sshd_or_skip()
    # Given the bench's CI size (64 MiB relayed, a 16 MiB annex), as a command
    done = subprocess.run(
        [sys.executable, "bench/sftp_memory.py", "--quick", "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )
    # Then it succeeds and prints one line per figure, in the agreed format
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    figures = {m[1]: m for line in lines if (m := FIGURE.fullmatch(line))}
    assert set(figures) == NAMES, done.stdout
    # And the memory is compared with the idle bus against the target
    for scenario in ("passthrough", "actes"):
        peak = figures[f"{scenario}_peak_rss"]
        assert peak[2] == "MiB" and peak[3] == "idle bus"
        assert re.fullmatch(r"< 200 MiB: (met|NOT met)", peak[4]), peak[0]
    # And the last line counts the targets met
    assert re.fullmatch(r"targets met: [0-2]/2", lines[-1]), lines[-1]
    # And nothing is left behind without --keep
    assert list(tmp_path.iterdir()) == []


def test_the_big_annex_is_a_pdf_of_the_size_asked(tmp_path: Path) -> None:
    # When an annex of 300 000 bytes is written
    path = tmp_path / "annexe.pdf"
    write_random_pdf(path, 300_000, "seed", "Annexe 1")
    # Then it has that size, reads as a PDF, and its xref is where the trailer says
    data = path.read_bytes()
    assert len(data) == 300_000
    assert data.startswith(b"%PDF-1.4\n") and data.endswith(b"%%EOF\n")
    xref = int(data.rsplit(b"startxref\n", 1)[1].split(b"\n", 1)[0])
    assert data[xref:].startswith(b"xref\n0 7\n")
