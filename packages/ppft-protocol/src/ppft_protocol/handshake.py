"""The handshake state machine: who may send what, in which state, before a connection is established.

Theory of operation
-------------------

A connection has two endpoints, the one that opened it (CLIENT) and the one that accepted it (SERVER).
Both speak first and at once, so the handshake costs two round trips on the wire:

    CLIENT                                         SERVER
      | -- opening (versions), Hello(nonce_c) -->    |
      | <-- opening (versions), Hello(nonce_s) --    |    both: highest common version, or mismatch
      | -- Auth(proof_c) ----------------------->    |    server checks proof_c in constant time
      | <-- AuthOk(proof_s) --- or AuthFailed ---    |    client checks proof_s
      |      ESTABLISHED: sealed frames both ways    |

Rules this file is the one home of:

1. Every transition is in `TRANSITIONS`: (role, state, what arrived) -> next state. Anything not in the
   table is a `RemoteProtocolError`, which is how "a job before authentication" is refused: no job, body or
   payload event can leave the machine before the state is ESTABLISHED.
2. The machine does not trust the peer to follow its role: a client that sends AuthOk, or a server that
   sends Auth, finds no entry and is refused.
3. A server whose peer fails to prove the secret answers with exactly one `AuthFailed` and then CLOSED;
   a client that receives `AuthFailed`, or a server proof that does not verify, is CLOSED as well.
4. No downgrade (`downgrade_refusal`): from version 2 on the proofs bind both openings, so a rewritten
   opening makes them disagree; version 1's cannot (ppft 2.0 computes them), so a side that speaks version
   2, agreed on version 1 and sees in the peer's Hello that it speaks version 2 too refuses at that Hello,
   before any proof: only a rewritten opening leads there. A server says so in its one `AuthFailed`.

The machine is pure: the `Connection` feeds it inputs and sends what it returns.

What the proofs bind is the `Transcript`: each proof is an HMAC, with a key derived from the secret, over
the prover's role, the agreed version, both nonces and both Hello flags (so the sentinel and the WORKER flag
are bound into it) and, from version 2 on, both openings as they crossed the wire (docs/protocol.md,
sections 5 and 10); the session keys of a sealed channel come from the secret and both nonces (`channel`).
The transcript computes; it decides nothing: `Connection` compares the proofs (in constant time) and says
what went wrong.
"""

from __future__ import annotations

from . import channel
from .messages import Hello

__all__ = ["OPENING", "TRANSITIONS", "Role", "State", "Transcript", "downgrade_refusal"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar


class _Constant:
    """A named constant compared by identity, with a string `value`: the part of `enum` this module uses.

    Not an `enum.Enum` because a local worker imports this module on its way to its first result, and
    `enum` is among the heavier imports it would make (`scripts/bench --only startup` races
    `ProcessPoolExecutor`'s fork). Members are made once, below their class, and pickle
    and copy as references to that member.
    """

    __slots__ = ("name", "value")

    name: str
    value: str

    def __init__(self, name: str, value: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__}.{self.name} is a constant: it cannot be changed")

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}: {self.value!r}>"

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __reduce__(self) -> tuple[object, tuple[object, str]]:
        return getattr, (type(self), self.name)


class Role(_Constant):
    """Which end of the connection this is: the side that dialled (CLIENT) or that accepted (SERVER)."""

    __slots__ = ()

    CLIENT: ClassVar[Role]
    SERVER: ClassVar[Role]


Role.CLIENT = Role("CLIENT", "client")
Role.SERVER = Role("SERVER", "server")


class State(_Constant):
    """Where a connection is in its life."""

    __slots__ = ()

    AWAIT_OPENING: ClassVar[State]  # our opening is sent; the peer's has not arrived
    AWAIT_HELLO: ClassVar[State]  # versions agreed; waiting for the peer's nonce
    AWAIT_AUTH: ClassVar[State]  # server: waiting for the client's proof
    AWAIT_AUTH_OK: ClassVar[State]  # client: proof sent, waiting for the verdict and the server's proof
    ESTABLISHED: ClassVar[State]  # both proofs verified: messages may flow
    CLOSED: ClassVar[State]  # finished, refused or broken: nothing more is accepted


State.AWAIT_OPENING = State("AWAIT_OPENING", "await-opening")
State.AWAIT_HELLO = State("AWAIT_HELLO", "await-hello")
State.AWAIT_AUTH = State("AWAIT_AUTH", "await-auth")
State.AWAIT_AUTH_OK = State("AWAIT_AUTH_OK", "await-auth-ok")
State.ESTABLISHED = State("ESTABLISHED", "established")
State.CLOSED = State("CLOSED", "closed")


OPENING = "opening"
"""The input name of the peer's opening line (every other input is a message class name)."""

TRANSITIONS: dict[tuple[Role, State, str], State] = {
    (Role.CLIENT, State.AWAIT_OPENING, OPENING): State.AWAIT_HELLO,
    (Role.CLIENT, State.AWAIT_HELLO, "Hello"): State.AWAIT_AUTH_OK,
    (Role.CLIENT, State.AWAIT_AUTH_OK, "AuthOk"): State.ESTABLISHED,
    (Role.CLIENT, State.AWAIT_AUTH_OK, "AuthFailed"): State.CLOSED,
    (Role.SERVER, State.AWAIT_OPENING, OPENING): State.AWAIT_HELLO,
    (Role.SERVER, State.AWAIT_HELLO, "Hello"): State.AWAIT_AUTH,
    (Role.SERVER, State.AWAIT_AUTH, "Auth"): State.ESTABLISHED,
}
"""(role, state, input) -> next state, for every state before ESTABLISHED."""


def downgrade_refusal(
    role: Role, versions: tuple[int, int], version: int, peer_speaks_v2: bool
) -> str | None:
    """Why this side, speaking `versions` and having agreed on `version`, must refuse a peer whose Hello
    says (or not) that it speaks version 2 or later; None when nothing was downgraded.

    Two ranges that both contain 1 and both reach 2 both contain 2: honestly agreed, such a pair never
    settles on version 1. The flag is in version 1's proofs, so it cannot be stripped unnoticed either."""
    if version >= 2 or versions[1] < 2 or not peer_speaks_v2:
        return None
    peer_side = "server" if role is Role.CLIENT else "client"
    return (
        f"the openings were altered in transit: this {role.value} speaks ppft-protocol "
        f"{versions[0]}-{versions[1]} and the {peer_side}'s Hello says it speaks version 2 or later, yet the "
        f"openings as received agree on version {version} only, so something between the two rewrote an "
        f"opening (a man in the middle); the connection is refused as a protocol downgrade, and nothing "
        f"from this peer is accepted"
    )


class Transcript:
    """The parts of one handshake that its proofs and session keys bind, from this side's point of view."""

    __slots__ = (
        "_auth_key",
        "_secret",
        "flags",
        "nonce",
        "opening",
        "peer",
        "peer_opening",
        "role",
        "version",
    )

    def __init__(self, role: Role, secret: bytes, nonce: bytes, flags: int, opening: bytes) -> None:
        self.role = role
        self.nonce = nonce  # ours
        self.flags = flags  # of our Hello
        self.opening = opening  # ours, as sent
        self.version = 0  # agreed once the peer's opening is read
        self.peer: Hello | None = None  # the peer's Hello, once it arrived
        self.peer_opening = b""  # as received
        self._secret = secret
        self._auth_key = channel.auth_key(secret)

    def use_secret(self, secret: bytes) -> None:
        """Prove and check with another secret from now on (the workers secret, for a dial-in worker)."""
        self._secret = secret
        self._auth_key = channel.auth_key(secret)

    def _sides(self) -> tuple[bytes, bytes, int, int]:
        """(client's nonce, server's nonce, client's flags, server's flags)."""
        peer = self.peer
        assert peer is not None
        if self.role is Role.CLIENT:
            return self.nonce, peer.nonce, self.flags, peer.flags
        return peer.nonce, self.nonce, peer.flags, self.flags

    def proof(self, role: Role) -> bytes:
        """The proof the side playing `role` must give."""
        nonce_c, nonce_s, flags_c, flags_s = self._sides()
        openings: tuple[bytes, bytes] = (b"", b"")
        if self.version >= 2:  # version 2's proofs bind both openings as they crossed the wire
            mine, theirs = self.opening, self.peer_opening
            openings = (mine, theirs) if self.role is Role.CLIENT else (theirs, mine)
        return channel.proof(
            self._auth_key, role.value, self.version, nonce_c, nonce_s, flags_c, flags_s, *openings
        )

    def session(self) -> tuple[str, channel.Sealer | None, channel.Opener | None]:
        """The channel both sides agreed on: (cipher, our sealer, our opener), or ("", None, None) unsealed
        (both allowed a plain channel)."""
        nonce_c, nonce_s, flags_c, flags_s = self._sides()
        both = flags_c & flags_s
        if both & Hello.FLAG_ALLOW_PLAIN:
            return "", None, None
        cipher = channel.AES_256_GCM if both & Hello.FLAG_AES_GCM else channel.CHACHA20_POLY1305
        c2s, s2c = channel.session_keys(self._secret, self.version, nonce_c, nonce_s, cipher)
        mine, theirs = (c2s, s2c) if self.role is Role.CLIENT else (s2c, c2s)
        return cipher, channel.Sealer(mine, cipher), channel.Opener(theirs, cipher)
