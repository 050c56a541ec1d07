"""The one exception type the command line turns into ``error: ...`` and exit status 2."""


class DmloptError(Exception):
    """Bad input or a refused action, explained in one line for the user.

    Raised for malformed study files, unknown losses, missing dataset folders, unreachable
    storage, or a second scoring of a test set. Anything else is a bug and keeps its traceback.
    """
