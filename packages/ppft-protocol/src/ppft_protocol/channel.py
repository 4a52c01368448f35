"""Key derivation, handshake proofs and the sealed channel.

Keys (docs/protocol.md, "Keys"):

* ``K_auth = HKDF-SHA256(ikm=secret, salt="ppft-protocol", info="auth", L=32)``
* a proof: ``HMAC-SHA256(K_auth, "ppft-auth/" || role || version:u16 || nonce_c || nonce_s || flags_c ||
  flags_s)``, and from version 2 on ``|| opening_c || opening_s`` too (both openings as they crossed the
  wire, length included), with role ``"client"`` or ``"server"``: it binds both nonces (no replay), the
  version and, from version 2, the version ranges both sides offered (no downgrade), the flags (no silent
  switch to an unsealed channel, and the downgrade sentinel that guards version 1) and the role (a proof
  cannot be reflected back).
* per-direction session keys: ``HKDF-SHA256(ikm=secret, salt=nonce_c || nonce_s,
  info="ppft-seal/" || version:u16 || "/client-to-server" or "/server-to-client", L=32)`` for
  ChaCha20-Poly1305; for AES-256-GCM the same with ``"/aes-256-gcm"`` appended to `info`, so the two ciphers
  never share a key (and ChaCha20's keys are what they were before AES-256-GCM existed).

HKDF is RFC 5869 over HMAC-SHA256 (RFC 2104), both a handful of lines here, checked against the RFCs' test
vectors, the standard library's `hmac` and `cryptography`'s HKDF in the tests. They are written here rather
than imported so that a local worker, which never seals its pipe, starts without loading `cryptography`'s
native module (a larger import than all the rest of its start-up) nor `hashlib`/`hmac`, which load OpenSSL and
read its configuration (`scripts/bench --only startup` times that start): the SHA-256 is the interpreter's own
(`ppft_protocol.cpython.sha256`), `hashlib`'s only where it has none. `cryptography` is imported only when a
channel is sealed.

A sealed frame's body is ``AEAD(key, nonce, plaintext, aad=frame header)``, the AEAD being ChaCha20-Poly1305,
or AES-256-GCM when both Hellos said their side has AES hardware (the faster of the two there:
`scripts/bench --only payload` shows sealing's cost); the nonce is 4 zero bytes and a 64-bit big-endian
counter, one counter per direction, starting at 0 with the first frame after the handshake. The receiver
expects exactly the next counter, so a replayed, dropped, reordered, altered or truncated frame fails to open
and raises `IntegrityError`.
"""

from __future__ import annotations

import struct

from .cpython import compare_digest as _compare_digest
from .cpython import sha256 as _sha256
from .errors import IntegrityError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object

__all__ = [
    "AES_256_GCM",
    "CHACHA20_POLY1305",
    "CIPHERS",
    "NONCE_SIZE",
    "TAG_SIZE",
    "Opener",
    "Sealer",
    "auth_key",
    "hkdf_sha256",
    "hmac_sha256",
    "proof",
    "session_keys",
    "verify_proof",
]

NONCE_SIZE = 32
"""Bytes of each side's handshake nonce."""

TAG_SIZE = 16
_IN_PLACE = 64 * 1024  # frames this large are sealed and opened in place (`Sealer.seal_parts`, `Opener.open`)
"""Bytes a sealed frame adds to its plaintext (the Poly1305 or GCM tag)."""

CHACHA20_POLY1305 = "chacha20-poly1305"
"""The default cipher of a sealed channel (RFC 8439): fast everywhere, in software too."""

AES_256_GCM = "aes-256-gcm"
"""The cipher of a sealed channel whose two ends both announced AES hardware (Hello.FLAG_AES_GCM)."""

CIPHERS = (CHACHA20_POLY1305, AES_256_GCM)
"""Every cipher a sealed channel may use, by the names `Established.cipher` reports."""

_U16 = struct.Struct(">H")
_COUNTER = struct.Struct(">4xQ")
_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """RFC 2104 HMAC with SHA-256: what `hmac.new(key, message, hashlib.sha256).digest()` gives."""
    if len(key) > _BLOCK:
        key = _sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = _sha256(key.translate(_IPAD))
    inner.update(message)
    outer = _sha256(key.translate(_OPAD))
    outer.update(inner.digest())
    return outer.digest()


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256: extract, then expand to `length` bytes."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF-SHA256 output length must be 1..8160 bytes")
    prk = hmac_sha256(salt or bytes(32), ikm)
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes([counter]))
        out += block
        counter += 1
    return out[:length]


def auth_key(secret: bytes) -> bytes:
    """K_auth: the key both sides' proofs are made with."""
    return hkdf_sha256(secret, b"ppft-protocol", b"auth")


def proof(
    key: bytes,
    role: str,
    version: int,
    nonce_c: bytes,
    nonce_s: bytes,
    flags_c: int,
    flags_s: int,
    opening_c: bytes = b"",
    opening_s: bytes = b"",
) -> bytes:
    """The 32-byte proof that the side playing `role` knows the secret behind `key`.

    From version 2 on, `opening_c` and `opening_s` are both openings exactly as they crossed the wire (the
    8-byte length and the text), the client's first: the proof then binds the version ranges both sides
    offered, so an opening rewritten in transit makes the two sides' proofs disagree. Version 1's proofs
    bind no opening (ppft 2.0 computes them so): pass none."""
    if (version >= 2) != bool(opening_c and opening_s):
        raise ValueError(
            f"a version-{version} proof binds {'both openings' if version >= 2 else 'no opening'}: "
            f"pass {'opening_c and opening_s' if version >= 2 else 'neither opening'}"
        )
    transcript = b"".join(
        (
            b"ppft-auth/",
            role.encode("ascii"),
            _U16.pack(version),
            nonce_c,
            nonce_s,
            bytes((flags_c, flags_s)),
            opening_c,
            opening_s,
        )
    )
    return hmac_sha256(key, transcript)


def verify_proof(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison of two proofs."""
    return _compare_digest(expected, received)  # what `hmac.compare_digest` is


def session_keys(
    secret: bytes, version: int, nonce_c: bytes, nonce_s: bytes, cipher: str = CHACHA20_POLY1305
) -> tuple[bytes, bytes]:
    """(client-to-server key, server-to-client key) for a sealed channel using `cipher`.

    Each cipher has its own `info`, so a key is never used with two ciphers; ChaCha20-Poly1305's `info` has
    no suffix, as in the protocol's first release, whose golden vectors it still reproduces."""
    if cipher not in CIPHERS:
        raise ValueError(f"unknown cipher {cipher!r}: use one of {', '.join(CIPHERS)}")
    salt = nonce_c + nonce_s
    prefix = b"ppft-seal/" + _U16.pack(version)
    suffix = b"" if cipher == CHACHA20_POLY1305 else b"/" + cipher.encode("ascii")
    c2s = hkdf_sha256(secret, salt, prefix + b"/client-to-server" + suffix)
    s2c = hkdf_sha256(secret, salt, prefix + b"/server-to-client" + suffix)
    return c2s, s2c


class _AEAD(Protocol):
    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...
    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


def _aead(key: bytes, cipher: str) -> _AEAD:
    if cipher == AES_256_GCM:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

        aead: _AEAD = AESGCM(key)
    elif cipher == CHACHA20_POLY1305:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: PLC0415

        aead = ChaCha20Poly1305(key)
    else:
        raise ValueError(f"unknown cipher {cipher!r}: use one of {', '.join(CIPHERS)}")
    return aead


_GCM_SLACK = 15  # AES's block size less one: what `update_into` asks beyond the bytes it writes

_in_place = [True]
"""Whether this `cryptography` seals and opens a frame in its own buffer (`encrypt_into`/`decrypt_into` with
overlapping input and output). cryptography 51 refuses overlapping buffers with a ValueError, before it
touches them: then every large frame takes the copying path, as with a release that has no `*_into`."""


class Sealer:
    """Seals the frames of one direction, numbering them with a counter nonce."""

    __slots__ = ("_aead", "_gcm_key", "cipher", "counter")

    def __init__(self, key: bytes, cipher: str = CHACHA20_POLY1305) -> None:
        self._aead = _aead(key, cipher)
        self._gcm_key = key if cipher == AES_256_GCM else b""  # large frames: `_seal_gcm_parts`
        self.cipher = cipher
        self.counter = 0

    def seal(self, header: bytes, plaintext: bytes) -> bytes:
        """Ciphertext and tag of the next frame; `header` (with the sealed length) is authenticated too."""
        nonce = _COUNTER.pack(self.counter)
        self.counter += 1
        return self._aead.encrypt(nonce, plaintext, header)

    def seal_parts(self, header: bytes, parts: list[bytes | memoryview], size: int) -> bytes | bytearray:
        """`seal(header, b"".join(parts))` for a large frame (`size` bytes of plaintext): the parts are
        copied once into the buffer that is then sealed in place, instead of joined and then encrypted into
        a second copy (the cipher's `encrypt_into`, where this `cryptography` has it). With AES-256-GCM the
        parts are encrypted one after the other into the sealed frame, never joined (`_seal_gcm_parts`)."""
        if self._gcm_key:
            return self._seal_gcm_parts(header, parts, size)
        into = getattr(self._aead, "encrypt_into", None) if _in_place[0] else None
        if into is None:
            return self.seal(header, b"".join(parts))
        nonce = _COUNTER.pack(self.counter)
        buf = bytearray(size + TAG_SIZE)
        view = memoryview(buf)
        off = 0
        for part in parts:
            end = off + len(part)
            view[off:end] = part
            off = end
        try:
            into(nonce, view[:size], header, view)
        except ValueError:  # this `cryptography` refuses overlapping buffers (from 51): copy, as before
            _in_place[0] = False
            view.release()
            return self.seal(header, b"".join(parts))
        self.counter += 1
        view.release()
        return buf

    def _seal_gcm_parts(self, header: bytes, parts: list[bytes | memoryview], size: int) -> bytearray:
        """AES-256-GCM's `seal` of the joined parts, made by its incremental form (the same bytes: GCM is
        a stream cipher and a tag over the header and the ciphertext), each part encrypted straight into
        the frame: a 16 MiB frame costs one pass over it where joining, then encrypting, cost two and an
        allocation (about 3.9 against 5.8 ms, `cryptography` 51 on this project's 2-core machine)."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

        encryptor = Cipher(algorithms.AES(self._gcm_key), modes.GCM(_COUNTER.pack(self.counter))).encryptor()
        encryptor.authenticate_additional_data(header)
        buf = bytearray(size + TAG_SIZE + _GCM_SLACK)  # `update_into` wants a block's slack past its data
        view = memoryview(buf)
        off = 0
        for part in parts:
            off += encryptor.update_into(part, view[off:])
        off += len(encryptor.finalize())  # nothing, for GCM
        view[off : off + TAG_SIZE] = encryptor.tag
        view.release()
        del buf[off + TAG_SIZE :]  # the slack: a shrink in place, no copy
        self.counter += 1
        return buf


class Opener:
    """Opens the frames of one direction, accepting only the next counter in sequence."""

    __slots__ = ("_aead", "_invalid", "cipher", "counter")

    def __init__(self, key: bytes, cipher: str = CHACHA20_POLY1305) -> None:
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415 - a sealed channel's, as `_aead`

        self._aead = _aead(key, cipher)
        self._invalid = InvalidTag  # looked up once: an import statement per frame costs microseconds
        self.cipher = cipher
        self.counter = 0

    def open(self, header: bytes, sealed: bytes | memoryview) -> bytes | memoryview:
        """The plaintext of the next frame, or `IntegrityError`. A large frame in a writable buffer is
        opened in place: the plaintext is then a view of that buffer (whose bytes are no longer the sealed
        frame; a frame that fails authentication leaves them garbled, and the connection closes)."""
        nonce = _COUNTER.pack(self.counter)
        try:
            if isinstance(sealed, memoryview) and not sealed.readonly and len(sealed) >= _IN_PLACE:
                into = getattr(self._aead, "decrypt_into", None) if _in_place[0] else None
                if into is not None:  # a large frame is opened where it lies: no copy of it
                    plain = sealed[: len(sealed) - TAG_SIZE]
                    try:
                        into(nonce, sealed, header, plain)
                    except ValueError:  # overlapping buffers refused (cryptography 51): decrypt below
                        _in_place[0] = False
                    else:
                        self.counter += 1
                        return plain
            plaintext = self._aead.decrypt(nonce, sealed, header)  # type: ignore[arg-type]
        except self._invalid:
            raise IntegrityError(
                f"sealed frame #{self.counter} failed authentication: it was altered, replayed, reordered "
                f"or truncated in transit (or the peer's keys differ); the connection is closed"
            ) from None
        self.counter += 1
        return plaintext
