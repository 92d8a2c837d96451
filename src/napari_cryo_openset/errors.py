"""User-facing errors.

Every problem caused by the user's input (a file, a parameter) raises a subclass of
:class:`CryoOpensetError` whose message names the input and says what was expected. The CLI
prints such messages as one line and exits non-zero; widgets show them as notifications.
"""

from __future__ import annotations


class CryoOpensetError(ValueError):
    """A problem with user input: the message is meant to be shown to the user as is."""


class TomogramError(CryoOpensetError):
    """A tomogram file cannot be read or written as requested."""


class PicksError(CryoOpensetError):
    """A picks file (STAR/CSV) or picks table is malformed."""


class ParameterError(CryoOpensetError):
    """A parameter value is out of range or inconsistent with the data."""


class OutputError(CryoOpensetError):
    """An output cannot be written (folder missing or read-only, disk full, a folder in the way).

    ``path`` is the user's output path, never a hidden temporary name; ``reason`` says what went
    wrong. :meth:`moved` names another path (a file written inside a temporary folder is
    reported under the folder it is swapped into).
    """

    def __init__(self, path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot write '{self.path}': {reason}")

    def moved(self, old_prefix, new_prefix) -> OutputError:
        """The same error for ``path`` under ``new_prefix`` instead of ``old_prefix``."""
        old, new = str(old_prefix), str(new_prefix)
        path = new + self.path[len(old):] if self.path.startswith(old) else self.path
        return OutputError(path, self.reason)


def known_fields(cls, data: dict) -> dict:
    """The items of ``data`` that name fields of the dataclass ``cls``.

    Parameter dataclasses read back from bundles and dataset files with this: a file written
    by a newer version may carry settings this version does not know; they are ignored.
    """
    names = set(cls.__dataclass_fields__)
    return {k: v for k, v in data.items() if k in names}
