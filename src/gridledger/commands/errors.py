"""The one error type of the command line, in its own module so that ``cli.py`` (which imports
every command module) and the command modules (which raise it) do not import each other."""


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""
