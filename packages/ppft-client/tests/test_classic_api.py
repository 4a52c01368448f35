"""ppft 1.7's classic API on local workers: the seed example and every submit option."""

from __future__ import annotations

import io
import json
import math
import os
import threading
from contextlib import redirect_stdout

import pytest

import ppft_client
from ppft_client import DestroyedServerError, Template


def add_one(x):
    return x + 1


def uses_helper(x):
    return helper_square(x) + 1


def helper_square(x):
    return x * x


def uses_math(x):
    return math.floor(x)


def uses_alias(x):
    return j.dumps(x)  # noqa: F821 - `j` comes from modules=("import json as j",)


def uses_from_import(p):
    return path.basename(p)  # noqa: F821 - from modules=("from os import path",)


def uses_globals(x):
    return json.dumps(helper_square(x))


def worker_pid(_=None):
    return os.getpid()


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm2(self):
        return self.x * self.x + self.y * self.y


def call_norm(p):
    return p.norm2()


def apply(f, x):
    return f(x)


def test_seed_example(make_server):
    job_server = make_server()
    f1 = job_server.submit(math.sin, (math.pi / 2,), (), ("math",))
    f2 = job_server.submit(min, (3.2, 10.0, 7.5), (), ())
    f3 = job_server.submit(sum, ([1, 2, 3],), (), ())
    assert (f1(), f2(), f3()) == (1.0, 3.2, 6)
    out = io.StringIO()
    with redirect_stdout(out):
        job_server.print_stats()
    text = out.getvalue()
    assert "job count | % of all jobs | job time sum | time per job | job server" in text
    assert "     3 |        100.00 |" in text and "| local" in text
    assert "0 active tasks" in text


def test_autodetect_uses_usable_cpus(make_server):
    server = make_server()
    assert server.get_ncpus() == len(os.sched_getaffinity(0))
    assert server.get_active_nodes() == {"local": server.get_ncpus()}


def test_depfuncs_are_shipped(make_server):
    server = make_server(2)
    assert [server.submit(uses_helper, (i,), (helper_square,))() for i in range(3)] == [1, 2, 5]


def test_modules_by_name_alias_and_from_line(make_server):
    server = make_server(2)
    assert server.submit(uses_math, (2.7,), (), ("math",))() == 2
    assert server.submit(uses_alias, ([1],), (), ("import json as j",))() == "[1]"
    assert server.submit(uses_from_import, ("/a/b.txt",), (), ("from os import path",))() == "b.txt"


def test_globals_auto_imports_what_the_function_uses(make_server):
    server = make_server(1)
    assert server.submit(uses_globals, (3,), globals=globals())() == "9"


def test_user_class_instance_in_args_and_bound_method(make_server):
    server = make_server(2)
    assert server.submit(call_norm, (Point(3, 4),), (Point,))() == 25
    assert server.submit(Point(1, 2).norm2)() == 5


def test_function_passed_as_argument(make_server):
    server = make_server(1)
    assert server.submit(apply, (add_one, 41))() == 42
    assert server.submit(apply, (lambda v: v * 3, 5))() == 15


def test_lambda_and_closure(make_server):
    server = make_server(1)
    k = 10
    assert server.submit(lambda x: x + k, (1,))() == 11
    f = lambda x: x + 1  # noqa: E731
    g = f
    f = lambda x: x * 2  # noqa: E731 - the same name, another body: each ships its own code
    assert (server.submit(g, (5,))(), server.submit(f, (5,))()) == (6, 10)


def test_callback_gets_callbackargs_and_value_off_the_io_thread(make_server):
    server = make_server(2)
    seen = []
    threads = set()
    lock = threading.Lock()

    def callback(tag, value):
        with lock:
            seen.append((tag, value))
            threads.add(threading.current_thread().name)

    jobs = [server.submit(add_one, (i,), callback=callback, callbackargs=(f"t{i}",)) for i in range(20)]
    server.wait()
    assert sorted(seen) == sorted((f"t{i}", i + 1) for i in range(20))
    assert threads == {"ppft-callbacks"}
    assert all(job.finished for job in jobs)


def test_groups_and_wait_group(make_server):
    server = make_server(2)
    a = [server.submit(add_one, (i,), group="a") for i in range(50)]
    b = [server.submit(add_one, (i,), group="b") for i in range(50)]
    server.wait("a")
    assert all(job.finished for job in a)
    assert {job.group for job in a} == {"a"} and {job.group for job in b} == {"b"}
    server.wait()
    assert [job() for job in b] == list(range(1, 51))


def test_template(make_server):
    server = make_server(2)
    t = Template(server, uses_helper, (helper_square,))
    assert [t.submit(i)() for i in range(4)] == [1, 2, 5, 10]


def test_tids_are_distinct(make_server):
    server = make_server(1)
    jobs = [server.submit(add_one, (i,)) for i in range(10)]
    assert len({job.tid for job in jobs}) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"args": [1]}, "args argument must be a tuple"),
        ({"depfuncs": [add_one]}, "depfuncs argument must be a tuple"),
        ({"modules": ["math"]}, "modules argument must be a tuple"),
        ({"modules": (math,)}, "modules argument must be a list of strings"),
        ({"callbackargs": [1]}, "callbackargs argument must be a tuple"),
        ({"globals": [1]}, "globals argument must be a dictionary"),
    ],
)
def test_classic_type_errors(make_server, kwargs, message):
    server = make_server(0)
    with pytest.raises(TypeError, match=message):
        server.submit(add_one, **kwargs)


def test_constructor_type_errors():
    with pytest.raises(TypeError, match="ncpus must have 'int' type"):
        ppft_client.Server("two")
    with pytest.raises(ValueError, match="ncpus must be"):
        ppft_client.Server(-1)
    with pytest.raises(TypeError, match="ppservers argument must be a tuple"):
        ppft_client.Server(1, ppservers=["a:1"])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: ppft_client.Server(-1),
            ValueError,
            "ncpus must be an integer >= 0 (0: no local worker, every job runs on the ppservers) or "
            "'autodetect', not -1",
        ),
        (
            lambda: ppft_client.Server("two"),
            TypeError,
            "ncpus must have 'int' type (the number of local worker processes) or be 'autodetect', "
            "not str 'two'",
        ),
        (
            lambda: ppft_client.Server(1, ppservers=["a:1"]),
            TypeError,
            "ppservers argument must be a tuple, not list: write ppservers=('host:port',) for one server",
        ),
        (
            lambda: ppft_client.Server(1, secret=1234),
            TypeError,
            "secret must be of a string type (str or bytes), not int; or leave it out to use $PPFT_SECRET or "
            "~/.ppft/secret",
        ),
        (
            lambda: ppft_client.Server(0, ppservers=("127.0.0.1:35000:1",)),
            ValueError,
            "ppservers entry '127.0.0.1:35000:1': more than one ':' yet not an IPv6 address",
        ),
        (
            lambda: ppft_client.Executor(-2),
            ValueError,
            "max_workers must be >= 0 (0: no local worker, every job runs on the ppservers) or None (one per "
            "CPU), not -2",
        ),
    ],
)
def test_constructor_errors_say_what_was_wrong_and_what_to_do(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_zero_local_workers_is_valid():
    server = ppft_client.Server(0)
    try:
        assert server.get_ncpus() == 0
    finally:
        server.destroy()


def test_set_ncpus_up_down_and_zero_holds_jobs(make_server):
    server = make_server(1)
    assert server.submit(add_one, (1,))() == 2
    server.set_ncpus(3)
    assert server.get_ncpus() == 3
    pids = {server.submit(worker_pid, (i,))() for i in range(200)}
    assert len(pids) >= 1
    server.set_ncpus(0)
    held = server.submit(add_one, (5,))
    assert not held.wait(0.5)  # no worker: the job waits, it is not lost
    server.set_ncpus(2)
    assert held.result(timeout=30) == 6
    assert server.get_ncpus() == 2


def test_restart_gives_each_job_a_fresh_worker(make_server):
    server = make_server(1, restart=True)
    pids = [server.submit(worker_pid, (i,))() for i in range(4)]
    assert len(set(pids)) == 4


def test_insert_queues_a_serialized_job(make_server):
    from ppft_client.shipping.functions import function_body, pickle_args

    server = make_server(1)
    job = server.insert(function_body(add_one), pickle_args((41,), 5))
    assert job() == 42


def test_destroyed_server_refuses_jobs(make_server):
    server = make_server(1)
    server.destroy()
    with pytest.raises(DestroyedServerError):
        server.submit(add_one, (1,))


def test_stats_count_jobs(make_server):
    server = make_server(2)
    for job in [server.submit(add_one, (i,)) for i in range(30)]:
        job()
    stats = server.get_stats()
    assert stats["local"].njobs == 30
    assert stats["local"].time >= 0.0
    assert stats["local"].ncpus == 2


SCALE = 10
OFFSETS = (1, 2, 3)


def _scaled(x):
    return x * SCALE


def _scaled_plus(x):
    return _scaled(x) + sum(OFFSETS)


def uses_module_helpers_without_depfuncs(x):
    return _scaled_plus(x)


def test_same_module_helpers_and_constants_travel_without_depfuncs(make_server):
    server = make_server(1)
    assert server.submit(uses_module_helpers_without_depfuncs, (2,))() == 26


def test_rebinding_a_module_constant_ships_its_new_value(make_server):
    global SCALE
    server = make_server(1)
    assert server.submit(_scaled, (3,))() == 30
    SCALE = 100
    try:
        assert server.submit(_scaled, (3,))() == 300
    finally:
        SCALE = 10
