"""The one exception type a user is meant to see: its message is printed on one line by the CLI."""


class MarsError(Exception):
    """A problem the user can fix (bad input, missing file, wrong configuration).

    The command-line front end prints ``mars-synth: error: <message>`` and exits
    non-zero; library callers can catch it like any exception. Messages say what
    was wrong and, where possible, what to do next.
    """
