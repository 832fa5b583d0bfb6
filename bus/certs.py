"""What the bus reads of the client certificates its endpoints present: when they expire."""

from __future__ import annotations

__all__ = ["certificate_expiry", "describe_certificate"]

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509


def _load(path: Path) -> x509.Certificate | None:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        try:
            return x509.load_der_x509_certificate(data)
        except ValueError:
            return None


def certificate_expiry(path: Path) -> datetime | None:
    """When the (first) certificate of a PEM or DER file expires; None if it cannot be read."""
    certificate = _load(path)
    return certificate.not_valid_after_utc if certificate is not None else None


def describe_certificate(path: Path, now: datetime | None = None) -> str:
    """``CN=..., expires 2027-01-31 (in 62 days)`` — or why it cannot be read."""
    certificate = _load(path)
    if certificate is None:
        return f"{path}: not a PEM or DER certificate"
    now = now or datetime.now(UTC)
    expiry = certificate.not_valid_after_utc
    days = (expiry - now).days
    when = f"expired {-days} days ago" if expiry < now else f"in {days} days"
    return f"{certificate.subject.rfc4514_string()}, expires {expiry:%Y-%m-%d} ({when})"
