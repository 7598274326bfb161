"""Exceptions of the crash database. Their messages are one line meant for a terminal."""


class DatabaseError(Exception):
    """The database cannot be reached or used; the message says what is wrong and what to do."""

    user_facing = True  # a command line shows the message alone (fuzzer/cli/group.py)

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        # Raised `from None` so the CLI shows one line; the driver's error stays here for debugging.
        self.cause = cause


class NotFound(LookupError):
    """A record asked for by id does not exist."""
