"""ppft-protocol: the sans-I/O wire protocol of ppft.

Framing, versioning, the HMAC-SHA256 handshake, the sealed channel (ChaCha20-Poly1305, or AES-256-GCM when
both ends have AES hardware) and the message schema, as a state machine that takes bytes in and gives events
and bytes out (see `Connection`). It does no I/O, starts no thread, reads no clock and never unpickles: the
worker, client and server packages do the I/O.
The full specification, with byte layouts and test vectors, is docs/protocol.md.
"""

from .bodies import BodyLedger, check_digest, function_digest
from .buffers import Pickled, is_pickled, split_pickled
from .channel import AES_256_GCM, CHACHA20_POLY1305
from .connection import DEFAULT_MAX_FRAME_SIZE, HANDSHAKE_MAX_FRAME_SIZE, PROTOCOL_VERSIONS, Connection
from .errors import (
    AuthenticationError,
    DecodeError,
    DowngradeError,
    FrameTooLarge,
    IntegrityError,
    LegacyPeerError,
    LocalProtocolError,
    PPFTError,
    ProtocolError,
    ProtocolMismatchError,
    RemoteProtocolError,
)
from .framing import READ_SIZE, READ_SIZE_BULK, next_read_size
from .handshake import Role, State
from .messages import (
    Attach,
    Attached,
    Auth,
    AuthFailed,
    AuthOk,
    Blob,
    Bye,
    Cancel,
    Closed,
    EndDirect,
    Established,
    Event,
    FunctionBody,
    Heartbeat,
    Hello,
    Job,
    JobBatch,
    JobLimits,
    LiveOutput,
    Message,
    NodeInfo,
    Put,
    PutRefused,
    Release,
    Result,
    ResultBatch,
    StatsReply,
    StatsRequest,
    Terminate,
    WatchOutput,
)
from .relay import RawResults, ResultRecords
from .text import printable
from .version import __version__

__all__ = [
    "AES_256_GCM",
    "CHACHA20_POLY1305",
    "DEFAULT_MAX_FRAME_SIZE",
    "HANDSHAKE_MAX_FRAME_SIZE",
    "PROTOCOL_VERSIONS",
    "READ_SIZE",
    "READ_SIZE_BULK",
    "Attach",
    "Attached",
    "Auth",
    "AuthFailed",
    "AuthOk",
    "AuthenticationError",
    "Blob",
    "BodyLedger",
    "Bye",
    "Cancel",
    "Closed",
    "Connection",
    "DecodeError",
    "DowngradeError",
    "EndDirect",
    "Established",
    "Event",
    "FrameTooLarge",
    "FunctionBody",
    "Heartbeat",
    "Hello",
    "IntegrityError",
    "Job",
    "JobBatch",
    "JobLimits",
    "LegacyPeerError",
    "LiveOutput",
    "LocalProtocolError",
    "Message",
    "NodeInfo",
    "PPFTError",
    "Pickled",
    "ProtocolError",
    "ProtocolMismatchError",
    "Put",
    "PutRefused",
    "RawResults",
    "Release",
    "RemoteProtocolError",
    "Result",
    "ResultBatch",
    "ResultRecords",
    "Role",
    "State",
    "StatsReply",
    "StatsRequest",
    "Terminate",
    "WatchOutput",
    "__version__",
    "check_digest",
    "function_digest",
    "is_pickled",
    "next_read_size",
    "printable",
    "split_pickled",
]
