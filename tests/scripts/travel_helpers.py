"""A module of the user's, next to their script (imported by uses_own_module.py): its data travels too."""

RATES = {"eur": 2}
ROUNDING = 2


def convert(amount):
    return round(amount * RATES["eur"] * factor(), ROUNDING)


def factor():
    return 1.5
