"""One exception type for every problem the user can fix (bad file, bad option, bad data).

The CLI turns it into one line on stderr and exit code 2; library callers can catch it.
"""

import re


class LandscapeError(Exception):
    """A problem with the user's input, explained in one line."""


class ParameterError(LandscapeError):
    """A bad value of the library's own parameters, named as Python names them (`top_k and bottom_k must be
    non-negative`); the CLI shows the flags instead (`--top-k and --bottom-k ...`). A message that does not
    name its parameter is prefixed with it (`batch_size` + `must be at least 1`)."""

    def __init__(self, params: str | tuple[str, ...], message: str) -> None:
        names = (params,) if isinstance(params, str) else tuple(params)
        named = any(re.search(rf"(?<![\w-]){re.escape(n)}\b", message) for n in names)
        text = message if named else f"{names[0]} {message}"
        super().__init__(text)
        self.params = names
        self.param = names[0]
        self.text = text

    def for_cli(self) -> str:
        return _flags(self.text, self.params)


def _flags(text: str, names: tuple[str, ...]) -> str:
    for name in names:
        text = re.sub(rf"(?<![\w-]){re.escape(name)}\b", "--" + name.replace("_", "-"), text)
    return text


class LandscapeWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. fewer samples than asked for).
    The CLI prints it as one 'warning:' line; library callers see a Python warning."""


class ParameterWarning(LandscapeWarning):
    """A warning about one of the library's parameters (`samples 100 is more than ...`); the CLI names the
    flag instead."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param} {message}")
        self.text = f"{param} {message}"
        self.params = (param,)

    def for_cli(self) -> str:
        return _flags(self.text, self.params)
