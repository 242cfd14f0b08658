"""`comsl translate`: not implemented yet."""

from comsl.errors import ComSLError


def register(sub) -> None:
    p = sub.add_parser("translate", help="(not available yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise ComSLError("'comsl translate' is not available yet in this version")
