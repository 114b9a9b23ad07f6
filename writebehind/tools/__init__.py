"""The tools shipped with writebehind, the command line's: ``python -m writebehind demo`` and
``python -m writebehind bench``. Nothing in the library imports them."""
