"""The command table: what a command is, and how command modules register theirs.

What this module owns: :class:`Command` (name, Redis arity, write flag,
handler) and :func:`registrar`, the decorator factory each ``cmd_*`` module
uses to fill its table::

    TABLE: Dict[bytes, Command] = {}
    command = registrar(TABLE)

    @command("get", 2)
    def get(db: Keyspace, args: List[bytes]) -> Reply: ...

Arity follows Redis: positive = exactly that many arguments counting the
name, negative = at least that many.  A handler gets the keyspace (with
``now_ms`` set and ``prop`` empty) and the arguments; it returns its reply or
raises CommandError before changing anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

from titan.store.keyspace import Keyspace
from titan.store.reply import Reply

__all__ = ["Command", "Handler", "registrar"]

Handler = Callable[[Keyspace, List[bytes]], Reply]


@dataclass(frozen=True)
class Command:
    """One command: ``name`` in lower case as Redis prints it in errors."""

    name: str
    arity: int
    write: bool
    handler: Handler

    def arity_ok(self, argc: int) -> bool:
        """True when ``argc`` arguments (the name included) fit the arity."""
        arity = self.arity
        return argc == arity if arity > 0 else argc >= -arity


def registrar(table: Dict[bytes, Command]) -> Callable[..., Callable[[Handler], Handler]]:
    """A decorator factory registering handlers into ``table`` under upper-case names."""

    def command(name: str, arity: int, *, write: bool = False) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            table[name.upper().encode("ascii")] = Command(name, arity, write, handler)
            return handler

        return register

    return command
