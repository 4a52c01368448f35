"""Whether this machine seals with AES-256-GCM at hardware speed: what a sealed link offers in its Hello.

The protocol layer is sans-I/O and cannot look at the processor, so the I/O layers (the client's link to a
ppserver, the ppserver's sessions, dial-in workers) ask `offer_aes_gcm()` and pass the answer as
`Connection(aes_gcm=...)`. A link uses AES-256-GCM only when both ends offer it; else ChaCha20-Poly1305. With
AES instructions, AES-256-GCM seals several times faster than ChaCha20-Poly1305
(`scripts/bench --only payload` shows sealed against unsealed, with `PPFT_CIPHER` choosing the cipher);
without them it is slower and its table-driven fallbacks may leak through cache timing, so nothing is offered
where the hardware is not known to be there.

`PPFT_CIPHER` in the environment overrides the detection: `chacha20` never offers AES-256-GCM (tests, or
users who want ChaCha20 whatever the hardware), `aes-256-gcm` always offers it (a machine with AES
hardware this module cannot see), `auto` or unset detects.

This module never raises: a machine it cannot read simply gets ChaCha20-Poly1305.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["has_aes_hardware", "offer_aes_gcm"]

log = logging.getLogger("ppft.cpufeatures")

_CPUINFO = "/proc/cpuinfo"
_FLAG_KEYS = ("flags", "Features")  # x86's line of CPU flags, arm64's
_CHACHA20 = ("chacha20", "chacha20-poly1305")
_AES = ("aes", "aes-256-gcm", "aes-gcm")
_AUTO = ("", "auto")

_detected: bool | None = None
_warned: set[str] = set()


def _cpuinfo_has_aes(path: str) -> bool:
    """Whether the first flags line of a Linux /proc/cpuinfo lists "aes" (read up to that line only)."""
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep and key.strip() in _FLAG_KEYS:
                return "aes" in value.split()
    return False


def _detect() -> bool:
    if sys.platform.startswith("linux"):
        try:
            return _cpuinfo_has_aes(_CPUINFO)
        except OSError as exc:
            log.debug("cannot read %s (%s): AES hardware not assumed", _CPUINFO, exc)
            return False
    if sys.platform == "darwin":
        # Every Mac that runs a supported Python has it: Apple silicon, and Intel Macs since 2010 (AES-NI).
        return os.uname().machine in ("arm64", "x86_64")
    return False


def has_aes_hardware() -> bool:
    """Whether this processor runs AES in hardware (detected once per process, cached)."""
    global _detected
    if _detected is None:
        _detected = _detect()
    return _detected


def offer_aes_gcm() -> bool:
    """Whether a sealed link from or to this process should offer AES-256-GCM: `PPFT_CIPHER`, else the
    hardware. Read at every connection, so a test (or a user) can change it without a restart."""
    choice = os.environ.get("PPFT_CIPHER", "").strip().lower()
    if choice in _CHACHA20:
        return False
    if choice in _AES:
        return True
    if choice not in _AUTO and choice not in _warned:
        _warned.add(choice)
        log.warning(
            "PPFT_CIPHER=%s is not a cipher ppft knows: use chacha20, aes-256-gcm or auto; detecting the "
            "hardware instead",
            choice,
        )
    return has_aes_hardware()
