"""The single source of this package's version (read by hatchling and at run time)."""

__version__ = "2.0.0"
