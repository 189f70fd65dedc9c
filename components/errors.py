"""The one error type for bad user input.

Steps raise ``BadInput`` with a message that names the file, line or parameter;
the CLI prints it without a traceback and exits with status 2, and KFP components
let it fail the task with the same message.
"""


class BadInput(ValueError):
    """Input a user must fix (a file, a line, a parameter), not a bug."""
