"""`ppft_worker.runtime.cpufeatures`: AES hardware read from /proc/cpuinfo (x86 "flags", arm64 "Features"),
assumed on macOS, denied elsewhere and when unreadable; PPFT_CIPHER overriding it; never an exception."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppft_worker.runtime import cpufeatures

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Some CPU @ 2.00GHz
flags\t\t: fpu vme de pse tsc msr pae sse sse2 pclmulqdq ssse3 aes avx vaes vpclmulqdq
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme
"""
X86_NO_AES = X86.replace(" aes ", " ").replace("vaes ", "")
ARM64 = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
"""
ARM64_NO_AES = ARM64.replace(" aes pmull", "")
NO_FLAGS = "processor\t: 0\nmodel name\t: something without a flags line\n"


@pytest.fixture(autouse=True)
def fresh_detection(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test detects anew, without PPFT_CIPHER, and leaves the process's cache as it found it."""
    monkeypatch.setattr(cpufeatures, "_detected", None)
    monkeypatch.setattr(cpufeatures, "_warned", set())
    monkeypatch.delenv("PPFT_CIPHER", raising=False)
    yield


def _linux_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "cpuinfo"
    if text is not None:
        path.write_text(text)
    monkeypatch.setattr(cpufeatures, "_CPUINFO", str(path))
    monkeypatch.setattr(sys, "platform", "linux")


@pytest.mark.parametrize(
    "text, expected",
    [(X86, True), (X86_NO_AES, False), (ARM64, True), (ARM64_NO_AES, False), (NO_FLAGS, False), ("", False)],
    ids=["x86-aes", "x86-without", "arm64-aes", "arm64-without", "no-flags-line", "empty"],
)
def test_linux_reads_aes_from_the_flags_or_features_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, expected: bool
) -> None:
    _linux_with(monkeypatch, tmp_path, text)
    assert cpufeatures.has_aes_hardware() is expected


def test_vaes_alone_is_not_aes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _linux_with(monkeypatch, tmp_path, "flags\t\t: sse2 vaes vpclmulqdq\n")
    assert cpufeatures.has_aes_hardware() is False


def test_unreadable_cpuinfo_means_no_aes_and_no_exception(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _linux_with(monkeypatch, tmp_path, None)  # the file does not exist
    assert cpufeatures.has_aes_hardware() is False


@pytest.mark.parametrize("machine, expected", [("arm64", True), ("x86_64", True), ("ppc", False)])
def test_macos_has_aes_on_its_two_architectures(
    monkeypatch: pytest.MonkeyPatch, machine: str, expected: bool
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(cpufeatures.os, "uname", lambda: type("U", (), {"machine": machine})())
    assert cpufeatures.has_aes_hardware() is expected


@pytest.mark.parametrize("platform", ["win32", "freebsd14", "cygwin"])
def test_other_systems_are_not_assumed_to_have_aes(monkeypatch: pytest.MonkeyPatch, platform: str) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert cpufeatures.has_aes_hardware() is False


def test_detection_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _linux_with(monkeypatch, tmp_path, X86)
    assert cpufeatures.has_aes_hardware() is True
    (tmp_path / "cpuinfo").write_text(X86_NO_AES)
    assert cpufeatures.has_aes_hardware() is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the real /proc/cpuinfo")
def test_this_machine_matches_its_proc_cpuinfo() -> None:
    with open("/proc/cpuinfo") as f:
        first_flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    assert cpufeatures.has_aes_hardware() is ("aes" in first_flags.partition(":")[2].split())


# -- PPFT_CIPHER -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["chacha20", "ChaCha20-Poly1305", " chacha20 "])
def test_ppft_cipher_chacha20_never_offers_aes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    _linux_with(monkeypatch, tmp_path, X86)
    monkeypatch.setenv("PPFT_CIPHER", value)
    assert cpufeatures.offer_aes_gcm() is False


@pytest.mark.parametrize("value", ["aes-256-gcm", "aes"])
def test_ppft_cipher_aes_offers_it_without_detected_hardware(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    _linux_with(monkeypatch, tmp_path, X86_NO_AES)
    monkeypatch.setenv("PPFT_CIPHER", value)
    assert cpufeatures.offer_aes_gcm() is True


@pytest.mark.parametrize("text, expected", [(X86, True), (X86_NO_AES, False)])
@pytest.mark.parametrize("value", [None, "", "auto"])
def test_ppft_cipher_unset_or_auto_follows_the_hardware(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None, text: str, expected: bool
) -> None:
    _linux_with(monkeypatch, tmp_path, text)
    if value is not None:
        monkeypatch.setenv("PPFT_CIPHER", value)
    assert cpufeatures.offer_aes_gcm() is expected


def test_unknown_ppft_cipher_warns_once_and_follows_the_hardware(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _linux_with(monkeypatch, tmp_path, X86)
    monkeypatch.setenv("PPFT_CIPHER", "rot13")
    caplog.set_level(logging.WARNING, logger="ppft.cpufeatures")
    assert cpufeatures.offer_aes_gcm() is True
    assert cpufeatures.offer_aes_gcm() is True
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "PPFT_CIPHER=rot13" in warnings[0] and "chacha20, aes-256-gcm or auto" in warnings[0]


def test_ppft_cipher_is_read_at_every_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _linux_with(monkeypatch, tmp_path, X86)
    assert cpufeatures.offer_aes_gcm() is True
    monkeypatch.setenv("PPFT_CIPHER", "chacha20")
    assert cpufeatures.offer_aes_gcm() is False
