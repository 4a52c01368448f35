"""`submit`'s classic type checks and the pickling of a job's arguments and results
(`ppft_client.shipping.arguments`): pure, in-process, no workers."""

from __future__ import annotations

import pickle
import sys
import types

import pytest

from ppft_client.shipping import ShippingError, check_submit_args, pickle_args, unpickle


def add_one(x):
    return x + 1


class Base:
    pass


# -- submit's argument checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"func": 3}, "func argument must be a function"),
        ({"args": [1]}, "args argument must be a tuple"),
        ({"depfuncs": [add_one]}, "depfuncs argument must be a tuple"),
        ({"modules": ["math"]}, "modules argument must be a tuple"),
        ({"callbackargs": [1]}, "callbackargs argument must be a tuple"),
        ({"globals": [1]}, "globals argument must be a dictionary"),
        ({"modules": ("math", 3)}, "modules argument must be a list of strings"),
        ({"depfuncs": (add_one, 3)}, "depfuncs argument must be a tuple of functions and classes"),
        ({"callback": 3}, "callback argument must be callable or None"),
    ],
)
def test_submit_checks_raise_ppfts_type_errors(kwargs, message):
    call = {
        "func": add_one,
        "args": (),
        "depfuncs": (),
        "modules": (),
        "callback": None,
        "callbackargs": (),
        "globals": None,
    }
    call.update(kwargs)
    with pytest.raises(TypeError, match=message):
        check_submit_args(**call)


def test_submit_checks_accept_valid_arguments():
    check_submit_args(add_one, (1,), (abs, Base), ("math",), print, (1,), {"a": 1})


# -- arguments and results ------------------------------------------------------------------------------


def test_pickle_args_uses_the_stdlib_pickle_for_plain_data():
    args = (1, "two", [3.0], {"four": b"4"})
    assert pickle_args(args, 5) == pickle.dumps(args, 5)


def test_pickle_args_sends_main_classes_by_value():
    main_class = type("MainThing", (), {"__module__": "__main__", "x": 7})
    data = pickle_args((main_class(),), 5)
    assert b"dill" in data
    (thing,) = unpickle(data)
    assert (type(thing).__name__, thing.x) == ("MainThing", 7)


def test_pickle_args_of_unpicklable_arguments_raises_shipping_error():
    with pytest.raises(ShippingError, match="arguments cannot be sent"):
        pickle_args(((i for i in range(2)),), 5)


def test_unpickle_reads_a_dill_pickle_that_names_builtin():
    import dill

    main_globals = vars(sys.modules["__main__"])
    func = types.FunctionType(compile("lambda x: x + 1", "<test>", "eval").co_consts[0], main_globals)
    data = dill.dumps(func, protocol=5)  # names __builtin__ or __main__.__dict__, by dill's state
    assert unpickle(data)(1) == 2


def test_unpickle_accepts_a_memoryview():
    assert unpickle(memoryview(pickle.dumps((1, 2)))) == (1, 2)
