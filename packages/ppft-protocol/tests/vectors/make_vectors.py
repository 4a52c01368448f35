#!/usr/bin/env python3
"""Writes the golden test vectors of ppft-protocol versions 1 and 2 (protocol-v1.json, protocol-v2.json).

Every input is fixed (the secret, both nonces, both openings' comments), so the output is the same on every
run: the opening bytes, every message type's frame, the whole handshake transcript in both directions with
the derived K_auth, proofs and session keys, and the frames after it: sealed with ChaCha20-Poly1305
(`handshake_sealed`), unsealed (`handshake_plain`), sealed with AES-256-GCM (`handshake_aes_gcm`, both
Hellos with FLAG_AES_GCM). Version 1's file is two ppft 2.0.0 peers (versions 1-1, no downgrade sentinel);
version 2's is two peers speaking 1-2, whose Hellos carry FLAG_SPEAKS_V2 and whose proofs bind both
openings, with the refusal of a downgrade to version 1 (`downgrade_to_version_1`). docs/protocol.md quotes
them; the tests check that the implementation reproduces every byte (and that the spec's formulas, computed
with `cryptography` and `hmac` directly, give the same keys, proofs and ciphertexts).

    python make_vectors.py           # rewrite protocol-v1/v2.json, output-v2.json and limits-v2.json
    python make_vectors.py --check   # exit 1 if a file differs from what the code produces

limits-v2.json holds those of version 2's limits on jobs: `JobLimits` and `Terminate`.
refs-v2.json holds those of version 2's objects shipped once (`put()`): `Put`, `Release` and `PutRefused`;
direct-v2.json those of its direct worker links: `Attach`, `Attached` and `EndDirect`.
output-v2.json holds the frames of version 2's output changes (docs/protocol.md, "Version 2"): a result batch
with stderr spans, the same batch as a version-1 connection carries it, `LiveOutput` and `WatchOutput`.

Regenerate only on a deliberate change of the wire format, which also needs a new protocol version, or to
add vectors: entries already in the file never change.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from ppft_protocol import (
    Auth,
    AuthenticationError,
    AuthFailed,
    AuthOk,
    Bye,
    Cancel,
    Connection,
    DowngradeError,
    FunctionBody,
    Heartbeat,
    Hello,
    Job,
    JobBatch,
    Message,
    NodeInfo,
    Result,
    ResultBatch,
    Role,
    StatsReply,
    StatsRequest,
    channel,
)
from ppft_protocol.framing import encode_frame_header, encode_opening
from ppft_protocol.messages import MESSAGE_TYPES, encode_message

PATH = Path(__file__).with_name("protocol-v1.json")
PATH_V2 = Path(__file__).with_name("protocol-v2.json")

SECRET = b"ppft golden-vector secret"
NONCE_C = bytes(range(0x00, 0x20))
NONCE_S = bytes(range(0x20, 0x40))
COMMENT_C = "golden client"
COMMENT_S = "golden server"

SOURCE = "def add(a, b):\n    return a + b\n"
DIGEST = hashlib.sha256(SOURCE.encode()).digest()
ARGS = b"\x80\x05K\x01K\x02\x86\x94."  # pickle.dumps((1, 2), 5)
VALUE = b"\x80\x05K\x03."  # pickle.dumps(3, 5)


def sample_messages() -> list[tuple[str, Message]]:
    """One or more of every message type, small enough to print, with their names in the vectors file."""
    return [
        ("hello", Hello(NONCE_C, 0)),
        ("hello-allow-plain", Hello(NONCE_S, Hello.FLAG_ALLOW_PLAIN)),
        ("auth", Auth(bytes(range(0x40, 0x60)))),
        ("auth-ok", AuthOk(bytes(range(0x60, 0x80)))),
        ("auth-failed", AuthFailed()),
        ("node-info", NodeInfo("server", 4, "2.0.0", "node1:60000")),
        ("function-body-source", FunctionBody(DIGEST, "add", (SOURCE,), ("math", "from os import path"))),
        ("function-body-pickled", FunctionBody(DIGEST, "<lambda>", (), (), b"\x80\x05pickled-callable")),
        ("job-batch", JobBatch((Job(1, DIGEST, ARGS, 5), Job(2, DIGEST, ARGS, 4)))),
        (
            "result-batch",
            ResultBatch(
                (
                    Result(1, True, VALUE, "hi\n", 0.5, 0.25),
                    Result(
                        2,
                        False,
                        b"",
                        "",
                        0.125,
                        0.0625,
                        "builtins.ZeroDivisionError",
                        "division by zero",
                        "Traceback (most recent call last):\nZeroDivisionError: division by zero\n",
                        b"\x80\x05exc",
                    ),
                )
            ),
        ),
        ("cancel", Cancel((1, 2, 3))),
        ("stats-request", StatsRequest()),
        ("stats-reply", StatsReply(10, 2.5, 4, 1)),
        ("heartbeat", Heartbeat()),
        ("bye", Bye("shutting down")),
    ]


def sealed_traffic(version: int = 1) -> list[tuple[str, Message]]:
    """What the two sides send after the sealed handshake, in order: (direction, message).

    Version 2's traffic keeps to messages whose layout version 2 leaves as it was: the vectors check the
    keys and the sealing, which a change of a job's or a result's layout would not touch."""
    if version >= 2:
        return [
            ("client-to-server", FunctionBody(DIGEST, "add", (SOURCE,), ())),
            ("server-to-client", Heartbeat()),
            ("client-to-server", Bye("done")),
        ]
    return [
        ("client-to-server", FunctionBody(DIGEST, "add", (SOURCE,), ())),
        ("client-to-server", JobBatch((Job(1, DIGEST, ARGS, 5),))),
        ("server-to-client", ResultBatch((Result(1, True, VALUE, "", 0.5, 0.25),))),
        ("client-to-server", Bye("done")),
    ]


_LATER_FIELDS = frozenset({"stderr_spans", "python", "page"})
"""Fields added by a later version: left out of a description while empty (version 1's stay as they were)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {
            name: _jsonable(getattr(value, name))
            for name in value._fields
            if name not in _LATER_FIELDS or getattr(value, name)
        }
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def describe(message: Message) -> dict[str, Any]:
    """A message's fields as JSON: byte strings as {"hex": ...}, named tuples as objects; a field that a
    later version added is left out while empty (so version 1's vectors stay as they were)."""
    return {
        name: _jsonable(getattr(message, name))
        for name in type(message).__match_args__
        if name not in _LATER_FIELDS or getattr(message, name)
    }


def message_entry(name: str, message: Message, version: int) -> dict[str, Any]:
    """One message vector of a version-2 file: its name, version, type, fields and frame in that version."""
    return {
        "name": name,
        "version": version,
        "message": type(message).__name__,
        "type": message.TYPE,
        "fields": describe(message),
        "frame": _frame(message, version).hex(),
    }


def _frame(message: Message, version: int = 1) -> bytes:
    """The frame of `message` in `version`'s layout (version 1's: the sample messages of protocol-v1.json)."""
    body = b"".join(encode_message(message, version))
    return encode_frame_header(message.TYPE, len(body)) + body


def _pieces(data: bytes, *, opening: bool) -> list[tuple[str, bytes]]:
    """Cut bytes into named pieces: the opening, then one piece per frame, named by its type."""
    pieces = []
    off = 0
    if opening:
        (length,) = struct.unpack_from(">Q", data, 0)
        pieces.append(("opening", data[: 8 + length]))
        off = 8 + length
    while off < len(data):
        length, ftype = struct.unpack_from(">IB", data, off)
        pieces.append((MESSAGE_TYPES[ftype].__name__, data[off : off + 5 + length]))
        off += 5 + length
    return pieces


def handshake(allow_plain: bool, aes_gcm: bool = False, versions: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    """The whole exchange of one fixed connection, both directions, with its keys and proofs.

    `aes_gcm`: both sides offer AES-256-GCM; the entry then also names the offers and the cipher (the
    entries without it predate AES-256-GCM and stay byte for byte what they were). `versions`: both sides'
    range; 1-1 gives version 1's vectors (ppft 2.0.0's), 1-2 version 2's, which also name the ranges and
    the openings their proofs bind."""
    options = {"allow_plain": allow_plain, "aes_gcm": aes_gcm, "versions": versions}
    client = Connection(Role.CLIENT, SECRET, nonce=NONCE_C, comment=COMMENT_C, **options)
    server = Connection(Role.SERVER, SECRET, nonce=NONCE_S, comment=COMMENT_S, **options)
    c2s: list[tuple[str, bytes]] = []
    s2c: list[tuple[str, bytes]] = []
    first = True
    while True:
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            break
        c2s += _pieces(to_server, opening=first)
        s2c += _pieces(to_client, opening=first)
        first = False
        if to_server:
            server.receive_data(to_server)
        if to_client:
            client.receive_data(to_client)
    flags = (Hello.FLAG_ALLOW_PLAIN if allow_plain else 0) | (Hello.FLAG_AES_GCM if aes_gcm else 0)
    if versions[1] >= 2:
        flags |= Hello.FLAG_SPEAKS_V2
    version = client.version
    assert version == server.version == versions[1]
    openings: tuple[bytes, ...] = ()
    if version >= 2:
        openings = (encode_opening(*versions, COMMENT_C), encode_opening(*versions, COMMENT_S))
    k_auth = channel.auth_key(SECRET)
    proofs = {
        role: channel.proof(k_auth, role, version, NONCE_C, NONCE_S, flags, flags, *openings).hex()
        for role in ("client", "server")
    }
    out: dict[str, Any] = {
        **({"versions_client": list(versions), "versions_server": list(versions)} if version >= 2 else {}),
        "allow_plain_client": allow_plain,
        "allow_plain_server": allow_plain,
        **({"aes_gcm_client": True, "aes_gcm_server": True, "cipher": client.cipher} if aes_gcm else {}),
        "flags_client": flags,
        "flags_server": flags,
        "version": version,
        "sealed": client.sealed,
        "k_auth": k_auth.hex(),
        "proof_client": proofs["client"],
        "proof_server": proofs["server"],
        "client_to_server": [{"piece": name, "hex": data.hex()} for name, data in c2s],
        "server_to_client": [{"piece": name, "hex": data.hex()} for name, data in s2c],
    }
    if client.sealed:
        key_c2s, key_s2c = channel.session_keys(SECRET, version, NONCE_C, NONCE_S, client.cipher)
        out["key_client_to_server"] = key_c2s.hex()
        out["key_server_to_client"] = key_s2c.hex()
    traffic = []
    counters = {"client-to-server": 0, "server-to-client": 0}
    for direction, message in sealed_traffic(version):
        sender = client if direction == "client-to-server" else server
        sender.send(message)
        wire = sender.data_to_send()
        plaintext = b"".join(encode_message(message))
        entry: dict[str, Any] = {
            "direction": direction,
            "message": type(message).__name__,
            "fields": describe(message),
            "plaintext_body": plaintext.hex(),
            "frame": wire.hex(),
        }
        if client.sealed:
            entry["counter"] = counters[direction]
            entry["nonce"] = struct.pack(">4xQ", counters[direction]).hex()
            entry["aad"] = wire[:5].hex()
        counters[direction] += 1
        traffic.append(entry)
    out["after_handshake"] = traffic
    return out


def build_vectors() -> dict[str, Any]:
    """Every vector, as the JSON document written to protocol-v1.json."""
    legacy = b"1.7.8"
    wrong_client = Connection(
        Role.CLIENT, b"not the secret", nonce=NONCE_C, comment=COMMENT_C, versions=(1, 1)
    )
    server = Connection(Role.SERVER, SECRET, nonce=NONCE_S, comment=COMMENT_S, versions=(1, 1))
    wrong_client.receive_data(server.data_to_send())
    try:
        server.receive_data(wrong_client.data_to_send())
    except AuthenticationError:
        refused = server.data_to_send()  # the one AuthFailed frame the server queued before closing
    else:
        raise AssertionError("the server accepted a wrong secret")
    return {
        "about": (
            "Golden test vectors of ppft-protocol version 1 (docs/protocol.md). Byte strings are hex. "
            "Generated by make_vectors.py from fixed inputs; the tests check the implementation against "
            "every byte."
        ),
        "inputs": {
            "secret": SECRET.hex(),
            "secret_text": SECRET.decode(),
            "nonce_client": NONCE_C.hex(),
            "nonce_server": NONCE_S.hex(),
            "comment_client": COMMENT_C,
            "comment_server": COMMENT_S,
            "versions_client": [1, 1],
            "versions_server": [1, 1],
        },
        "openings": {
            "client": encode_opening(1, 1, COMMENT_C).hex(),
            "server": encode_opening(1, 1, COMMENT_S).hex(),
            "range-2-5": encode_opening(2, 5, "").hex(),
            "legacy-1.x-server-version-message": (struct.pack(">Q", len(legacy)) + legacy).hex(),
        },
        "messages": [
            {
                "name": name,
                "message": type(message).__name__,
                "type": message.TYPE,
                "fields": describe(message),
                "frame": _frame(message, 1).hex(),
            }
            for name, message in sample_messages()
        ],
        "handshake_sealed": handshake(allow_plain=False),
        "handshake_plain": handshake(allow_plain=True),
        "handshake_aes_gcm": handshake(allow_plain=False, aes_gcm=True),
        "handshake_wrong_secret": {
            "client_secret": b"not the secret".hex(),
            "server_to_client_after_auth": refused.hex(),
        },
    }


def downgrade_to_version_1() -> dict[str, Any]:
    """Two 1-2 peers whose openings a man in the middle rewrote to 1-1: what the server answers.

    Version 1's proofs bind no opening, but both Hellos carry FLAG_SPEAKS_V2, so the server refuses at the
    client's Hello with one `AuthFailed` naming the downgrade (the client, seeing the server's sentinel,
    refuses on its own before sending its proof)."""
    forged = encode_opening(1, 1, COMMENT_C)
    client = Connection(Role.CLIENT, SECRET, nonce=NONCE_C, comment=COMMENT_C)
    server = Connection(Role.SERVER, SECRET, nonce=NONCE_S, comment=COMMENT_S)
    sent = client.data_to_send()
    (length,) = struct.unpack_from(">Q", sent, 0)
    hello = sent[8 + length :]
    server.data_to_send()  # the server's opening and Hello, not needed here
    try:
        server.receive_data(forged + hello)
    except DowngradeError:
        refused = server.data_to_send()
    else:
        raise AssertionError("the server accepted a downgraded opening")
    return {
        "client_to_server": [
            {"piece": "opening (rewritten from 1-2)", "hex": forged.hex()},
            {"piece": "Hello", "hex": hello.hex()},
        ],
        "server_to_client_after_hello": refused.hex(),
    }


def build_vectors_v2() -> dict[str, Any]:
    """Version 2's vectors, as the JSON document written to protocol-v2.json."""
    versions = (1, 2)
    return {
        "about": (
            "Golden test vectors of ppft-protocol version 2 (docs/protocol.md, Version 2): two peers that "
            "speak 1-2. Byte strings are hex. Generated by make_vectors.py from fixed inputs; the tests "
            "check the implementation against every byte."
        ),
        "inputs": {
            "secret": SECRET.hex(),
            "secret_text": SECRET.decode(),
            "nonce_client": NONCE_C.hex(),
            "nonce_server": NONCE_S.hex(),
            "comment_client": COMMENT_C,
            "comment_server": COMMENT_S,
            "versions_client": list(versions),
            "versions_server": list(versions),
        },
        "openings": {
            "client": encode_opening(*versions, COMMENT_C).hex(),
            "server": encode_opening(*versions, COMMENT_S).hex(),
        },
        "handshake_sealed": handshake(allow_plain=False, versions=versions),
        "handshake_plain": handshake(allow_plain=True, versions=versions),
        "handshake_aes_gcm": handshake(allow_plain=False, aes_gcm=True, versions=versions),
        "downgrade_to_version_1": downgrade_to_version_1(),
        "messages": [message_entry(*sample) for sample in version_2_messages()],
    }


def version_2_messages() -> list[tuple[str, Message, int]]:
    """The messages whose layout version 2 changed, as each version encodes them (docs/protocol.md,
    Version 2): `NodeInfo` with the address of a status page, and the same on a version-1 connection (no
    `page`)."""
    with_page = NodeInfo("server", 4, "2.0.0", "node1:60000", page="http://0.0.0.0:8080/")
    return [
        ("node-info-status-page", with_page, 2),
        ("node-info-no-status-page", NodeInfo("server", 4, "2.0.0", "node1:60000"), 2),
        ("node-info-status-page-on-version-1", with_page, 1),
    ]


def render(version: int = 1) -> str:
    document = build_vectors() if version == 1 else build_vectors_v2()
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def output_vectors() -> dict[str, Any]:
    """Version 2's output vectors, as the JSON document written to output-v2.json."""
    from ppft_protocol import LiveOutput, WatchOutput

    text = "step 1\nwarn \u2603\nstep 2\n"  # "warn ☃\n" went to stderr: bytes 7..16 of the UTF-8
    results = ResultBatch(
        (
            Result(1, True, VALUE, text, 0.5, 0.25, stderr_spans=((7, 16),)),
            Result(
                2, False, b"", "oops\n", 0.125, 0.0625, "builtins.ValueError", "bad", "tb\n", b"", ((0, 5),)
            ),
        )
    )
    samples: list[tuple[str, Message, int]] = [
        ("result-batch-stderr", results, 2),
        ("result-batch-stderr-on-version-1", results, 1),
        ("live-output", LiveOutput(((3, 1, 0, "step 1\n"), (3, 2, 7, "warn \u2603\n"))), 2),
        ("watch-output-on", WatchOutput(True), 2),
        ("watch-output-off", WatchOutput(False), 2),
        ("node-info-python", NodeInfo("server", 4, "2.0.0", "node1:60000", "CPython 3.13.0"), 2),
        ("node-info-python-on-version-1", NodeInfo("server", 4, "2.0.0", "node1:60000", "CPython 3.13.0"), 1),
    ]
    entries = [message_entry(*sample) for sample in samples]
    return {
        "about": (
            "Golden test vectors of ppft-protocol version 2's layout changes (docs/protocol.md, Version 2): "
            "stderr spans in results, LiveOutput and WatchOutput, NodeInfo's python. Byte strings are hex. "
            "Generated by make_vectors.py; a frame of version 1 is the same message as a version-1 "
            "connection encodes it (its fields are the message as sent; the spans and python are dropped "
            "on the wire)."
        ),
        "messages": entries,
    }


OUTPUT_PATH = Path(__file__).with_name("output-v2.json")


def render_output() -> str:
    return json.dumps(output_vectors(), indent=2, ensure_ascii=False) + "\n"


def _beside(filename: str) -> Any:
    """The module `filename` of this directory (the tests' vectors directory is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"ppft_{filename[:-3]}", Path(__file__).with_name(filename))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_limits() -> str:  # limits-v2.json, made by limits_vectors.py with `message_entry` from here
    return str(_beside("limits_vectors.py").render_limits(message_entry))


def render_buffers() -> str:  # buffers-v2.json, made by buffer_vectors.py
    return str(_beside("buffer_vectors.py").render_buffers())


def render_refs() -> str:  # refs-v2.json, made by refs_vectors.py with `message_entry` from here
    return str(_beside("refs_vectors.py").render_refs(message_entry))


def render_direct() -> str:  # direct-v2.json, made by direct_vectors.py with `message_entry` from here
    return str(_beside("direct_vectors.py").render_direct(message_entry))


LIMITS_PATH, BUFFERS_PATH = (Path(__file__).with_name(name) for name in ("limits-v2.json", "buffers-v2.json"))
REFS_PATH, DIRECT_PATH = (Path(__file__).with_name(name) for name in ("refs-v2.json", "direct-v2.json"))


def main(argv: list[str]) -> int:
    files = [(PATH, render(1)), (PATH_V2, render(2)), (OUTPUT_PATH, render_output())]
    files += [(BUFFERS_PATH, render_buffers()), (LIMITS_PATH, render_limits())]
    files += [(REFS_PATH, render_refs()), (DIRECT_PATH, render_direct())]
    if "--check" in argv:
        failed = 0
        for path, text in files:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                sys.stderr.write(f"{path} differs from what the implementation produces; run {argv[0]}\n")
                failed = 1
        return failed
    for path, text in files:
        path.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
