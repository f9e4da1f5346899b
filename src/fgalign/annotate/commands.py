"""`fgalign annotate init|users|serve|stats|export|migrate`: the admin side of the annotation app (CLI only).

Each sub-command (and each `users` action) parses its own dataclass (options.py) with tyro, like every
other stage, so `fgalign annotate users add --help` shows the options of `add`; `run(argv)` dispatches to
the code in admin.py and users.py (which import options.py, never this module).
"""
from __future__ import annotations

import sys

import tyro

from fgalign.annotate.options import (ExportConfig, InitConfig, MigrateConfig, ServeConfig, StatsConfig,
                                      UserAddConfig, UserLinkConfig, UserListConfig, UserNameConfig)
from fgalign.errors import InputError

SUBCOMMANDS = {"init": InitConfig, "users": None, "serve": ServeConfig, "stats": StatsConfig,
               "export": ExportConfig, "migrate": MigrateConfig}
USER_ACTIONS = {"add": UserAddConfig, "link": UserLinkConfig, "list": UserListConfig, "remove": UserNameConfig,
                "logout": UserNameConfig}
USERS_DOC = "Accounts: add NAME [--reviewer], link NAME, list, remove NAME, logout NAME."
USER_DOCS = {"add": UserAddConfig.__doc__, "link": UserLinkConfig.__doc__, "list": UserListConfig.__doc__,
             "remove": "No more logins for NAME: sessions ended, open items back to the queue (submissions kept).",
             "logout": "End every session of NAME (they need a new link)."}


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0]


def usage() -> str:
    return ("usage: fgalign annotate {init,users,serve,stats,export,migrate} [OPTIONS]\n\n"
            + "\n".join(f"  {name:<7} {_first_line(USERS_DOC if cls is None else cls.__doc__)}"
                        for name, cls in SUBCOMMANDS.items()))


def users_usage() -> str:
    return ("usage: fgalign annotate users {add,link,list,remove,logout} [OPTIONS]\n\n"
            + "\n".join(f"  {name:<7} {_first_line(doc)}" for name, doc in USER_DOCS.items()))


def run_users(argv: list[str]) -> int:
    from fgalign.annotate import users

    if not argv or argv[0] in ("-h", "--help"):
        print(users_usage())
        return 0
    action, rest = argv[0], argv[1:]
    if action not in USER_ACTIONS:
        raise InputError(f"unknown users action '{action}'\n\n{users_usage()}")
    cfg = tyro.cli(USER_ACTIONS[action], args=rest, prog=f"fgalign annotate users {action}",
                   description=USER_DOCS[action])
    {"add": users.add, "link": users.link, "list": users.list_, "remove": users.remove,
     "logout": users.logout}[action](cfg)
    return 0


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        raise InputError(f"unknown sub-command '{name}'\n\n{usage()}")
    if name == "users":
        return run_users(rest)
    cfg = tyro.cli(SUBCOMMANDS[name], args=rest, prog=f"fgalign annotate {name}",
                   description=SUBCOMMANDS[name].__doc__)
    from fgalign.annotate import admin

    {"init": admin.init, "serve": admin.serve, "stats": admin.stats, "export": admin.export,
     "migrate": admin.migrate}[name](cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
