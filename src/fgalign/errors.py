"""One exception for bad user input: the CLI turns it into a clear message and exit code 2."""
from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: a file, a record, a field or an option that is not what was expected.

    The message names where (file, line/row, field) and what was expected, so that the user can fix it
    without reading our code.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None, row: int | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        self.path, self.line, self.row, self.field = path, line, row, field
        self.reason = message
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


def require_int(value: object, low: int, field: str, what: str = "an integer") -> None:
    """Refuse anything but an int >= low (a bool is not a count), naming the option."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InputError(f"expected {what} >= {low}, got {value!r}", field=field)
