"""One exception type for every problem the user can fix (bad file, bad option, bad data).

The CLI turns it into one line on stderr and exit code 2; library callers can catch it.
"""


class LandscapeError(Exception):
    """A problem with the user's input, explained in one line."""


class LandscapeWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. fewer samples than asked for).
    The CLI prints it as one 'warning:' line; library callers see a Python warning."""
