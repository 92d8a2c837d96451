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


def known_fields(cls, data: dict) -> dict:
    """The items of ``data`` that name fields of the dataclass ``cls``.

    Parameter dataclasses read back from bundles and dataset files with this: a file written
    by a newer version may carry settings this version does not know; they are ignored.
    """
    names = set(cls.__dataclass_fields__)
    return {k: v for k, v in data.items() if k in names}
