"""`Connection`: the one public driver of the protocol, one per endpoint.

Sans-I/O, after h11: the owner reads bytes from wherever it likes and hands them to `receive_data`, which
returns events; it writes whatever `data_to_send` returns. No sockets, threads, clocks or pickle here, so
the whole protocol can be fuzzed, embedded and tested in one process.

    conn = Connection(Role.CLIENT, secret)
    sock.sendall(conn.data_to_send())                 # opening + Hello, sent at once
    for event in conn.receive_data(sock.recv(65536)):
        if isinstance(event, Established): conn.send(JobBatch(...)); sock.sendall(conn.data_to_send())

Any `ProtocolError` leaves the connection CLOSED; `data_to_send()` may still hold one last frame (a server
refusing a wrong secret has queued its `AuthFailed`), which the owner should flush before closing.

Large payloads need not be copied on their way through: `data_to_send_parts()` hands out the queued bytes
as a short list for `os.writev` / `socket.sendmsg` (large fields as the very objects the messages hold), and
`receive_buffer()` / `receive_into(n)` let the owner read the rest of a large incoming frame straight into
the buffer it is assembled in.
"""

from __future__ import annotations

import os
import struct

from . import channel, framing
from .codec import LATEST
from .errors import (
    AuthenticationError,
    DecodeError,
    DowngradeError,
    LocalProtocolError,
    ProtocolError,
    ProtocolMismatchError,
    RemoteProtocolError,
)
from .handshake import OPENING, TRANSITIONS, Role, State, Transcript, downgrade_refusal
from .messages import (
    MESSAGE_TYPES,
    Auth,
    AuthFailed,
    AuthOk,
    Bye,
    Closed,
    Established,
    Event,
    Hello,
    Message,
    ResultBatch,
    decode_message,
    encode_message,
)
from .relay import decode_raw_results
from .text import printable
from .version import __version__

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DOWNGRADE_REASON",
    "HANDSHAKE_MAX_FRAME_SIZE",
    "PROTOCOL_VERSIONS",
    "Closed",
    "Connection",
    "Established",
    "Event",
]

PROTOCOL_VERSIONS = (1, 2)
"""The protocol versions this implementation speaks (lowest, highest). docs/protocol.md, "Version 2",
lists what version 2 changes; a peer that speaks only version 1 gets version 1's behaviour."""

DOWNGRADE_REASON = "protocol downgrade detected: an opening was altered in transit"
"""The `AuthFailed` reason of a server that refused a downgraded handshake (docs/protocol.md, section 10)."""

HANDSHAKE_MAX_FRAME_SIZE = 4096
"""Frame size cap before the peer is authenticated."""

DEFAULT_MAX_FRAME_SIZE = 1 << 30
"""Default frame size cap after authentication (1 GiB); `max_frame_size=` changes it."""


_RESULTS = ResultBatch.TYPE
_HANDSHAKE_TYPES = frozenset((Hello.TYPE, Auth.TYPE, AuthOk.TYPE, AuthFailed.TYPE))
_PART_MIN = 64 * 1024  # queued parts this large are handed out uncopied; smaller neighbours are joined


class Connection:
    """One endpoint of a ppft protocol connection."""

    def __init__(
        self,
        role: Role,
        secret: bytes | str,
        *,
        versions: tuple[int, int] = PROTOCOL_VERSIONS,
        allow_plain: bool = False,
        aes_gcm: bool = False,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        nonce: bytes | None = None,
        comment: str = f"ppft {__version__}; not compatible with ppft 1.x",
        raw_results: bool = False,
        worker: bool = False,
        worker_secret: bytes | str | None = None,
    ) -> None:
        """`allow_plain`: agree to an unsealed channel (used only if the peer agrees too).
        `aes_gcm`: offer AES-256-GCM, which a sealed channel uses when the peer offers it too (else
        ChaCha20-Poly1305). Offer it only where AES runs in hardware: this layer cannot look, the owner can
        (`ppft_worker.runtime.cpufeatures.offer_aes_gcm`).
        `nonce`: a fixed nonce, for test vectors only; left out, 32 fresh random bytes.
        `raw_results`: result frames arrive as `RawResults` (checked, not decoded) instead of `ResultBatch`,
        for an owner that only passes them on (ppft_protocol.relay).
        `worker` (client role): this side dials in as a worker (Hello flag WORKER); with version 2 the server
        then checks its proof against the server's workers secret, which `secret` must be.
        `worker_secret` (server role): the secret a peer that dials in as a worker must prove (version 2);
        None: the same secret as everyone. Whether such a peer proved it is `peer_worker` once ESTABLISHED."""
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if not secret:
            raise LocalProtocolError("the secret must not be empty")
        if nonce is not None and len(nonce) != channel.NONCE_SIZE:
            raise LocalProtocolError(f"nonce must be {channel.NONCE_SIZE} bytes")
        self.role = role
        self.state = State.AWAIT_OPENING
        self.versions = versions
        self.version = 0
        self.sealed = False
        self.cipher = ""
        self.max_frame_size = max_frame_size
        self.peer_comment = ""
        self.raw_results = raw_results
        if isinstance(worker_secret, str):
            worker_secret = worker_secret.encode("utf-8")
        if worker_secret is not None and not worker_secret:
            raise LocalProtocolError("the workers secret must not be empty")
        self._worker_secret = worker_secret
        self.peer_worker = False
        """Server role: the peer dials in as a worker (its Hello has the WORKER flag, version >= 2), so its
        proof is checked against the workers secret. Proven only once the connection is ESTABLISHED."""
        self._decoder = framing.FrameDecoder(HANDSHAKE_MAX_FRAME_SIZE)
        self._decoder.single = True
        self._sealer: channel.Sealer | None = None
        self._opener: channel.Opener | None = None
        try:
            opening = framing.encode_opening(versions[0], versions[1], comment)
        except ValueError as exc:
            raise LocalProtocolError(f"cannot open a connection: {exc}; pass versions=(low, high)") from None
        # FLAG_SPEAKS_V2, the downgrade sentinel: a version-1 peer binds it into its proofs unread, so an
        # opening rewritten down to version 1 shows against it (section 10 of docs/protocol.md)
        flags = (
            (Hello.FLAG_ALLOW_PLAIN if allow_plain else 0)
            | (Hello.FLAG_AES_GCM if aes_gcm else 0)
            | (Hello.FLAG_SPEAKS_V2 if versions[1] >= 2 else 0)
            | (Hello.FLAG_WORKER if worker else 0)
        )
        if nonce is None:
            nonce = os.urandom(channel.NONCE_SIZE)
        self._transcript = Transcript(role, secret, nonce, flags, opening)
        self._out: list[bytes | memoryview] = [opening]
        self._out_large = False  # a part of at least _PART_MIN bytes is queued
        self._send_frame(Hello(nonce, flags))

    # -- public API ------------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Every byte queued for the peer since the last call (may be empty), joined into one object."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_large = False
        return bytes(data)

    def data_to_send_parts(self) -> list[bytes | memoryview]:
        """The same bytes as `data_to_send`, as a list of parts to write in order (empty when none).

        For `os.writev` or `socket.sendmsg`: a large payload field (64 KiB and more) is its own part, the
        very `bytes` or `memoryview` the message was given, never copied; the small parts between large
        ones are joined, so the list stays short (at most twice the large fields, plus one). A part may be
        a view of a buffer the caller passed in a message: keep that buffer unchanged until the part is
        written. Nothing large queued: one part, as `data_to_send` would give it.
        """
        out = self._out
        if not out:
            return []
        self._out = []
        if not self._out_large:
            return [out[0] if len(out) == 1 else b"".join(out)]
        self._out_large = False
        parts: list[bytes | memoryview] = []
        small: list[bytes | memoryview] = []
        for part in out:
            if len(part) < _PART_MIN:
                small.append(part)
                continue
            if small:
                parts.append(small[0] if len(small) == 1 else b"".join(small))
                small = []
            parts.append(part)
        if small:
            parts.append(small[0] if len(small) == 1 else b"".join(small))
        return parts

    def send(self, message: Message) -> None:
        """Queue `message` for the peer. Only handshake-free messages, and only once ESTABLISHED."""
        if self.state is not State.ESTABLISHED:
            name = type(message).__name__
            raise LocalProtocolError(f"cannot send {name}: the connection is {self.state.value}")
        if isinstance(message, (Hello, Auth, AuthOk, AuthFailed)):
            raise LocalProtocolError(f"{type(message).__name__} belongs to the handshake, which is over")
        self._send_frame(message)
        if isinstance(message, Bye):
            self.state = State.CLOSED

    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        """Events completed by `data`; `data` empty means the peer closed its end.

        Large payload fields of the events may be views of `data` (or of a buffer the decoder reuses once
        no view of it is left): pass bytes, or never reuse the buffer, and never write through the views.
        A large frame arriving over many calls is copied once, when its last piece lands; until then its
        pieces are held as views, so memory grows only with the bytes received.
        """
        if self.state is State.CLOSED:
            raise LocalProtocolError("receive_data on a closed connection")
        try:
            if not data:
                return self._eof()
            if self.state is State.AWAIT_OPENING:
                return self._receive_opening(data)
            return self._handle_frames(self._decoder.feed(data))
        except ProtocolError:
            self.state = State.CLOSED
            raise

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes from the peer may be read straight into, or None: then use `receive_data`.

        While the body of a large frame (64 KiB and more) is on its way, this is the part of the buffer it is
        assembled in that is still to be filled. Read into it (`os.readv(fd, [view])`,
        `sock.recv_into(view)`), release it, and pass the number of bytes read to `receive_into`: the body
        then reaches its message without the copy `receive_data` makes. The view ends where the body ends,
        so a read into it never takes bytes of the next frame.
        """
        if self.state is not State.ESTABLISHED:
            return None
        return self._decoder.recv_buffer()

    def receive_into(self, n: int) -> list[Event]:
        """Events completed by `n` bytes (more than 0) just read into the view `receive_buffer` gave.

        The end of the stream is still reported through `receive_data(b"")`."""
        if self.state is not State.ESTABLISHED:
            raise LocalProtocolError(f"receive_into on a connection that is {self.state.value}")
        if n <= 0:
            raise LocalProtocolError(f"receive_into({n}): pass the peer's end of stream to receive_data(b'')")
        try:
            frames = self._decoder.received_into(n)
        except ValueError as exc:
            raise LocalProtocolError(f"{exc}; call receive_buffer() before every receive_into()") from None
        try:
            return self._handle_frames(frames) if frames else []
        except ProtocolError:
            self.state = State.CLOSED
            raise

    # -- internals -------------------------------------------------------------------------------------

    def _send_frame(self, message: Message) -> None:
        try:
            parts = encode_message(message, self.version or LATEST)  # 0: the Hello, sent before the opening
        except (ValueError, OverflowError, struct.error) as exc:
            raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from None
        sealer = self._sealer
        if sealer is None:
            size = sum(map(len, parts))
            self._out.append(framing.encode_frame_header(message.TYPE, size))
            self._out.extend(parts)
            if size >= _PART_MIN and max(map(len, parts)) >= _PART_MIN:
                self._out_large = True
        else:
            size = sum(map(len, parts))
            header = framing.encode_frame_header(message.TYPE, size + channel.TAG_SIZE)
            self._out.append(header)
            if size >= _PART_MIN:
                self._out.append(sealer.seal_parts(header, parts, size))  # type: ignore[arg-type]
                self._out_large = True
            else:
                self._out.append(sealer.seal(header, parts[0] if len(parts) == 1 else b"".join(parts)))  # type: ignore[arg-type]

    def _advance(self, received: str) -> State:
        new = TRANSITIONS.get((self.role, self.state, received))
        if new is None:
            what = "the opening" if received == OPENING else received
            raise RemoteProtocolError(
                f"peer sent {what} while this {self.role.value} is in state {self.state.value}: "
                f"{'refused before authentication' if self.state is not State.ESTABLISHED else 'unexpected'}"
            )
        self.state = new
        return new

    def _eof(self) -> list[Event]:
        state = self.state
        self.state = State.CLOSED
        if state is State.AWAIT_OPENING and self.role is Role.SERVER and not self._decoder.in_frame:
            raise RemoteProtocolError(
                "peer closed the connection before sending its opening (a ppft 1.x client does this "
                "after a version mismatch: upgrade it to ppft >= 2)"
            )
        if state is not State.ESTABLISHED:
            raise RemoteProtocolError(f"peer closed the connection during the handshake ({state.value})")
        if self._decoder.in_frame:
            raise RemoteProtocolError(
                f"peer closed the connection in the middle of a frame ({self._decoder.buffered} bytes "
                f"of it received): the last frame is truncated"
            )
        return [Closed("peer closed the connection")]

    def _receive_opening(self, data: bytes | memoryview) -> list[Event]:
        text, rest = self._decoder.feed_opening(data)
        if text is None:
            return []
        opening = framing.parse_opening(text)
        comment = printable(opening.comment, framing.MAX_OPENING)  # shown to people, never acted on
        low = max(opening.min_version, self.versions[0])
        high = min(opening.max_version, self.versions[1])
        if low > high:
            raise ProtocolMismatchError(
                f"no common protocol version: this {self.role.value} speaks ppft-protocol "
                f"{self.versions[0]}-{self.versions[1]}, the peer speaks "
                f"{opening.min_version}-{opening.max_version} ({comment}); "
                f"upgrade the older side"
            )
        self.version = self._transcript.version = high
        self.peer_comment = comment
        self._transcript.peer_opening = framing.opening_bytes(text)
        self._advance(OPENING)
        return self._handle_frames(self._decoder.feed(rest)) if rest else []

    def _handle_frames(self, frames: list[tuple[int, memoryview]]) -> list[Event]:
        events: list[Event] = []
        decoder = self._decoder
        while frames:
            for ftype, frame_body in frames:
                state = self.state
                if state is State.ESTABLISHED:
                    body = frame_body
                    opener = self._opener
                    if opener is not None:
                        header = framing.encode_frame_header(ftype, len(body))
                        body = memoryview(opener.open(header, body))
                    if ftype in _HANDSHAKE_TYPES:
                        raise RemoteProtocolError(
                            f"peer sent {MESSAGE_TYPES[ftype].__name__} after the handshake was over; "
                            f"the connection is closed"
                        )
                    if ftype == _RESULTS and self.raw_results:
                        message: Message = decode_raw_results(body, self.version)
                    else:
                        message = decode_message(ftype, body, self.version)
                    events.append(message)
                    if isinstance(message, Bye):
                        self.state = State.CLOSED
                        events.append(Closed(printable(message.reason) or "peer said bye"))
                        return events
                elif state is State.CLOSED:
                    return events
                else:
                    event = self._handshake_frame(ftype, frame_body)
                    if event is not None:
                        events.append(event)
            if not decoder.single or self.state is State.CLOSED:
                break
            if self.state is State.ESTABLISHED:
                decoder.single = False  # from here on the cap is fixed: take frames in bulk
            frames = decoder.pending()
        return events

    def _handshake_frame(self, ftype: int, body: memoryview) -> Established | None:
        cls = MESSAGE_TYPES.get(ftype)
        if cls is None:
            raise DecodeError(
                f"unknown frame type 0x{ftype:02x} while this {self.role.value} is in state "
                f"{self.state.value}: the peer does not speak this protocol version"
            )
        # The state is checked before the body is even parsed: nothing but the expected handshake
        # message is looked at before the peer has proven the secret.
        self._advance(cls.__name__)
        message = decode_message(ftype, body)
        transcript = self._transcript
        if isinstance(message, Hello):
            transcript.peer = message
            self._check_downgrade(message)
            if self.role is Role.SERVER and self.version >= 2 and message.flags & Hello.FLAG_WORKER:
                self._expect_worker()
            if self.role is Role.CLIENT:
                self._send_frame(Auth(transcript.proof(Role.CLIENT)))
            return None
        if isinstance(message, Auth):
            if not channel.verify_proof(transcript.proof(Role.CLIENT), message.proof):
                self._send_frame(AuthFailed())
                self.state = State.CLOSED
                if self.peer_worker:
                    which = "the workers secret" if self._worker_secret is not None else "the secret"
                    raise AuthenticationError(
                        f"dial-in worker failed to prove it knows {which}: the secrets differ; nothing is "
                        f"sent to this peer"
                    )
                raise AuthenticationError(
                    "client failed to prove it knows the secret: the secrets differ; nothing from this "
                    "peer is accepted"
                )
            self._send_frame(AuthOk(transcript.proof(Role.SERVER)))
            return self._establish()
        if isinstance(message, AuthOk):
            if not channel.verify_proof(transcript.proof(Role.SERVER), message.proof):
                raise AuthenticationError(
                    "server failed to prove it knows the secret: the secrets differ (or something "
                    "impersonates the server); nothing was sent to it"
                )
            return self._establish()
        assert isinstance(message, AuthFailed)
        if message.reason == DOWNGRADE_REASON:
            raise DowngradeError(
                f"server refused the handshake: {DOWNGRADE_REASON} (it saw this client's opening offer "
                f"less than ppft-protocol {self.versions[0]}-{self.versions[1]}: something between the two "
                f"rewrote it, a man in the middle); nothing was sent to it"
            )
        if transcript.flags & Hello.FLAG_WORKER and self.version >= 2:
            raise AuthenticationError(
                f"server refused our proof ({printable(message.reason)}): this dial-in worker's secret is "
                f"not the ppserver's workers secret; give it that secret (ppft-worker -s, --secret-file or "
                f"PPFT_WORKERS_SECRET; ppserver --workers-secret), or the client secret if the ppserver "
                f"runs with --accept-workers"
            )
        raise AuthenticationError(
            f"server refused our proof ({printable(message.reason)}): the client's and the server's secrets "
            f"differ; use the same secret on both (secret=, ppserver -s, PPFT_SECRET or ~/.ppft/secret)"
        )

    def _check_downgrade(self, peer: Hello) -> None:
        """Refuse a downgraded handshake at the peer's Hello (handshake.py, rule 4); a server says why."""
        speaks_v2 = bool(peer.flags & Hello.FLAG_SPEAKS_V2)
        refusal = downgrade_refusal(self.role, self.versions, self.version, speaks_v2)
        if refusal is None:
            return
        if self.role is Role.SERVER:
            self._send_frame(AuthFailed(DOWNGRADE_REASON))
        self.state = State.CLOSED
        raise DowngradeError(refusal)

    def _expect_worker(self) -> None:
        """The peer dials in as a worker: its proof, ours and the session keys are those of the workers
        secret. The flag is bound into both proofs, so a client's proof can never pass as a worker's."""
        self.peer_worker = True
        if self._worker_secret is not None:
            self._transcript.use_secret(self._worker_secret)

    def _establish(self) -> Established:
        self.cipher, self._sealer, self._opener = self._transcript.session()
        self.sealed = bool(self.cipher)
        self._decoder.authenticated = True
        self._decoder.set_limit(self.max_frame_size)
        return Established(self.version, self.sealed, self.peer_comment, self.cipher)
