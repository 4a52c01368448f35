"""The value types of the protocol behave as the frozen dataclasses, enums and typing.NamedTuples they
replace (hand-written so a local worker starts without `dataclasses`, `enum`, `typing` and `hashlib`):
immutable, compared and hashed by value, positional, picklable; and the HMAC behind the handshake is the
standard library's."""

from __future__ import annotations

import copy
import hashlib
import hmac
import pickle

import pytest

from ppft_protocol import (
    Bye,
    Closed,
    Established,
    FunctionBody,
    Heartbeat,
    Hello,
    Job,
    JobBatch,
    Result,
    Role,
    State,
    StatsReply,
    StatsRequest,
)
from ppft_protocol.channel import hmac_sha256

DIGEST = hashlib.sha256(b"f").digest()


def test_message_fields_cannot_be_assigned_or_deleted() -> None:
    bye = Bye("done")
    with pytest.raises(AttributeError, match="immutable"):
        bye.reason = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del bye.reason
    with pytest.raises(AttributeError):
        bye.extra = 1  # type: ignore[attr-defined]
    assert bye.reason == "done"


def test_messages_compare_and_hash_by_type_and_fields() -> None:
    assert Hello(b"n" * 32, 1) == Hello(b"n" * 32, 1)
    assert Hello(b"n" * 32, 1) != Hello(b"n" * 32, 0)
    assert hash(StatsReply(1, 2.0, 3, 4)) == hash(StatsReply(1, 2.0, 3, 4))
    assert Heartbeat() != StatsRequest()  # same (empty) fields, different messages
    assert Bye("x") != Closed("x")
    assert len({Heartbeat(), Heartbeat(), Bye(), Bye("")}) == 2


def test_message_constructors_take_their_fields_in_order_or_by_name() -> None:
    body = FunctionBody(digest=DIGEST, name="f", imports=("math",))
    assert body == FunctionBody(DIGEST, "f", (), ("math",), b"")
    assert FunctionBody.__match_args__ == ("digest", "name", "sources", "imports", "pickled")
    assert StatsReply.__match_args__ == ("jobs_done", "job_time", "workers", "clients")


def test_message_repr_names_its_fields() -> None:
    assert repr(StatsReply(1, 2.5, 3, 4)) == "StatsReply(jobs_done=1, job_time=2.5, workers=3, clients=4)"
    assert (
        repr(Established(1, False, "c"))
        == "Established(version=1, sealed=False, peer_comment='c', cipher='')"
    )


def test_messages_and_events_pickle_and_copy() -> None:
    batch = JobBatch((Job(1, DIGEST, b"args"),))
    for value in (batch, Bye("x"), Established(1, True, "p"), Closed("gone")):
        assert pickle.loads(pickle.dumps(value)) == value
        assert copy.copy(value) == value


def test_messages_match_positionally() -> None:
    match StatsReply(1, 2.0, 3, 4):
        case StatsReply(done, seconds, workers, clients):
            assert (done, seconds, workers, clients) == (1, 2.0, 3, 4)
        case _:
            pytest.fail("StatsReply did not match its own fields")


def test_job_and_result_are_named_tuples() -> None:
    job = Job(3, DIGEST, b"a")
    assert job == (3, DIGEST, b"a", 5)
    assert job._fields == ("job_id", "digest", "args", "pickle_protocol")
    assert job._replace(job_id=4).job_id == 4
    result = Result(3, True, b"v")
    job_id, ok, value, *rest = result
    assert (job_id, ok, value, rest) == (3, True, b"v", ["", 0.0, 0.0, "", "", "", b"", ()])
    assert type(result._replace(output="o")) is Result
    assert pickle.loads(pickle.dumps(result)) == result


def test_roles_and_states_are_constants_with_string_values() -> None:
    assert Role.CLIENT.value == "client" and Role.SERVER.value == "server"
    assert State.ESTABLISHED.value == "established"
    assert State.ESTABLISHED is not State.CLOSED
    assert pickle.loads(pickle.dumps(State.AWAIT_AUTH)) is State.AWAIT_AUTH
    assert copy.deepcopy(Role.SERVER) is Role.SERVER
    assert repr(Role.CLIENT) == "<Role.CLIENT: 'client'>"
    with pytest.raises(AttributeError):
        State.CLOSED.value = "open"  # type: ignore[misc]


@pytest.mark.parametrize("key_size", [0, 1, 32, 63, 64, 65, 200])
def test_hmac_sha256_is_the_standard_librarys(key_size: int) -> None:
    key = bytes(range(key_size % 256)) * (key_size // 256 + 1)
    key = key[:key_size]
    for message in (b"", b"abc", bytes(1000)):
        assert hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()
