"""The version of writebehind, in a module of its own so that any part can read it without
importing the package (and everything the package imports)."""

__version__ = "0.2.0"
