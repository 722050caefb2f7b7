"""The data errors, and the exit codes the command line gives them.

Every loader raises one of three :class:`DataError` subclasses, each with a
one-line message that names the file and says what to do about it:

| exception | meaning | exit code |
|---|---|---|
| :class:`DatasetNotFound` | the files are not under the data root | :data:`EXIT_MISSING_DATA` (3) |
| :class:`CorruptDataset` | the files are there but damaged or malformed | :data:`EXIT_BAD_DATA` (4) |
| :class:`UnreadableDataset` | the files are there but this user may not read them | :data:`EXIT_BAD_DATA` (4) |

Each also derives from the matching built-in (``FileNotFoundError``,
``ValueError``, ``PermissionError``), so ``except ValueError`` around
:func:`spreadcon.data.load` keeps working. Exit code 2 stays what argparse
and the settings checks use (a bad argument), and 1 what Python gives an
uncaught exception, so a script can tell "fetch the data" from "fix the
command" from "a bug".

Example:
    >>> err = DatasetNotFound("mnist: expected /data/MNIST/raw/train-images-idx3-ubyte; get it with ...")
    >>> exit_code(err), isinstance(err, FileNotFoundError)
    (3, True)
    >>> exit_code(CorruptDataset("x")), exit_code(UnreadableDataset("y"))
    (4, 4)
"""

from __future__ import annotations

#: Exit status of every subcommand (``data``, ``run``, ``reproduce``) when a dataset is missing.
EXIT_MISSING_DATA = 3
#: Exit status when a dataset is present but damaged, malformed or unreadable.
EXIT_BAD_DATA = 4


class DataError(Exception):
    """Base of the data errors; ``str(e)`` is one line naming the file and the fix."""


class DatasetNotFound(DataError, FileNotFoundError):
    """A dataset is not under the data root; the message says where to get it."""


class CorruptDataset(DataError, ValueError):
    """A dataset file exists but cannot be used (bad archive, truncated file, bad lines or columns)."""


class UnreadableDataset(DataError, PermissionError):
    """A dataset file or folder exists but cannot be read by this user; the message names it."""


def exit_code(error: DataError) -> int:
    """The exit status for ``error``: :data:`EXIT_MISSING_DATA` or :data:`EXIT_BAD_DATA`."""
    return EXIT_MISSING_DATA if isinstance(error, DatasetNotFound) else EXIT_BAD_DATA
