"""Module data read by a bound method, a class the job names, a recursive function and Template/Executor."""

import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)

DISCOUNTS = {"vip": 0.5}
MEMO_LIMIT = [3]


class Shop:
    def __init__(self, name):
        self.name = name

    def price(self, amount, kind):
        return amount * DISCOUNTS.get(kind, 1.0)


class Ledger:
    def total(self, amounts):
        return sum(amounts) * DISCOUNTS["vip"]


def depth(n):
    return 0 if n <= MEMO_LIMIT[0] else 1 + depth(n - 1)


def use_ledger(amounts):
    return Ledger().total(amounts)


shop = Shop("corner")
print(job_server.submit(shop.price, (10, "vip"))())
DISCOUNTS["vip"] = 0.25
print(job_server.submit(shop.price, (10, "vip"))())
print(job_server.submit(use_ledger, ([4, 4],))())
print(job_server.submit(depth, (10,))())
MEMO_LIMIT[0] = 8
print(job_server.submit(depth, (10,))())
job_server.destroy()
