"""One exception type for problems the user can fix: the UI shows its message, the CLI prints it and exits 2."""


class CaiError(Exception):
    """A clear, user-facing error (bad file, missing model, refused endpoint, ...)."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
