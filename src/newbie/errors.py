"""User-facing errors: the CLI prints str(error) as one line and exits 2."""


class NewbieError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""


class CheckpointError(NewbieError):
    """A model folder or weights file that is missing, damaged or does not match the architecture."""
