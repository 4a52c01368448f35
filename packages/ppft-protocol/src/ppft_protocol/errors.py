"""The exceptions of the ppft package family.

`PPFTError` is the one root every ppft package raises from, so a caller can catch "anything ppft" in one
clause. Below it, the protocol's errors follow h11: `LocalProtocolError` means *we* misused the API (a bug on
this side); `RemoteProtocolError` and its subclasses mean the *peer* sent something wrong, so the caller
knows whom to blame and that closing the connection is the answer. Every message says what was wrong and,
where there is something to do, what to do.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "DecodeError",
    "DowngradeError",
    "FrameTooLarge",
    "IntegrityError",
    "LegacyPeerError",
    "LocalProtocolError",
    "PPFTError",
    "ProtocolError",
    "ProtocolMismatchError",
    "RemoteProtocolError",
]


class PPFTError(Exception):
    """Root of every exception raised by the ppft packages."""


class ProtocolError(PPFTError):
    """Something about the wire protocol went wrong; the connection cannot be used any more."""


class LocalProtocolError(ProtocolError):
    """This side misused the protocol API (for example sent a job before the handshake finished)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol."""


class DecodeError(RemoteProtocolError):
    """Bytes that do not decode: unknown frame type, a field running past its frame, bad UTF-8, ..."""


class FrameTooLarge(RemoteProtocolError):
    """A frame header announced more bytes than the current cap allows; refused before buffering."""

    def __init__(self, size: int, limit: int, authenticated: bool) -> None:
        phase = "after authentication" if authenticated else "before authentication"
        hint = (
            "raise max_frame_size on both sides if such payloads are expected"
            if authenticated
            else "an unauthenticated peer may only send small handshake frames"
        )
        super().__init__(f"peer announced a frame of {size} bytes, over the {limit}-byte cap {phase}; {hint}")
        self.size = size
        self.limit = limit


class ProtocolMismatchError(RemoteProtocolError):
    """The two sides share no protocol version (or the peer does not speak the ppft protocol at all)."""


class LegacyPeerError(ProtocolMismatchError):
    """The peer is a ppft/pp 1.x process, whose wire protocol this implementation does not speak."""


class AuthenticationError(RemoteProtocolError):
    """The handshake failed: the two sides do not hold the same secret."""


class DowngradeError(RemoteProtocolError):
    """The two openings, as received, agree on a lower protocol version than both sides speak: something
    between them rewrote an opening (a man in the middle), and the connection is refused."""


class IntegrityError(RemoteProtocolError):
    """A sealed frame failed authentication: tampered, replayed, reordered or truncated in transit."""
