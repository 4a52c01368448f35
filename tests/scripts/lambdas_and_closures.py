"""Functions pickled by value (lambdas, closures, decorated functions) read module data fresh too."""

import functools
import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)

RATES = {"eur": 2}
OPS = {}


def traced(func):
    @functools.wraps(func)
    def wrapper(*args):
        return ("traced", func(*args))

    return wrapper


@traced
def convert(amount, currency):
    return amount * RATES[currency]


def make_scaler(factor):
    def scale(x):
        return x * factor * RATES["eur"]

    return scale


def add(a, b):
    return a + b + RATES["eur"]


OPS["add"] = add
OPS["mul"] = lambda a, b: a * b


def apply(op, a, b):
    return OPS[op](a, b)


to_eur = lambda x: x * RATES["eur"]  # noqa: E731

print(job_server.submit(to_eur, (5,))())
RATES["eur"] = 3
print(job_server.submit(to_eur, (5,))())
print(job_server.submit(convert, (5, "eur"))())
scale = make_scaler(2)
print(job_server.submit(scale, (5,))())
RATES["eur"] = 4
print(job_server.submit(scale, (5,))())
print(job_server.submit(apply, ("add", 1, 2))(), job_server.submit(apply, ("mul", 3, 4))())
job_server.destroy()
