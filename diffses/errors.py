"""User-facing errors: raised for bad input, printed without a traceback by the CLIs."""


class UserError(Exception):
    """A mistake in the user's input (flag, file, id); the message says what to do."""
