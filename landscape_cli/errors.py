"""One exception type for every problem the user can fix (bad file, bad option, bad data).

The CLI turns it into one line on stderr and exit code 2; library callers can catch it.
"""


class LandscapeError(Exception):
    """A problem with the user's input, explained in one line."""


class ParameterError(LandscapeError):
    """A bad value of one of the library's parameters. The message starts with the parameter's name
    (`batch_size must be ...`); the CLI shows its flag instead (`--batch-size must be ...`)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param} {message}")
        self.param = param
        self.detail = message

    def for_cli(self) -> str:
        return f"--{self.param.replace('_', '-')} {self.detail}"


class LandscapeWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. fewer samples than asked for).
    The CLI prints it as one 'warning:' line; library callers see a Python warning."""


class ParameterWarning(LandscapeWarning):
    """A warning about one of the library's parameters (`samples 100 is more than ...`); the CLI names the
    flag instead."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param} {message}")
        self.param = param
        self.detail = message

    def for_cli(self) -> str:
        return f"--{self.param.replace('_', '-')} {self.detail}"
