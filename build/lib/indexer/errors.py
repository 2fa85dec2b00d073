"""The base of every error the libraries raise for the ``qac`` command to report."""


class QacError(Exception):
    """Base of every error qac reports as one line and exit code 2."""
