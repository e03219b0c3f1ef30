"""The registry of noise mechanisms: look a mechanism up by name or by its query."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, TypeVar

_MECHANISMS: Dict[str, Any] = {}
_T = TypeVar("_T")


def register_mechanism(mechanism_class: _T) -> _T:
    """Class decorator: registers one instance of a `NoiseMechanism` subclass under its name.

    Registering a name twice replaces the earlier mechanism (so a user can override one).
    """
    instance = mechanism_class()
    _MECHANISMS[instance.name] = instance
    return mechanism_class


def unregister_mechanism(name: str) -> None:
    """Removes a registered mechanism (for tests and for users replacing one); no-op if absent."""
    _MECHANISMS.pop(name, None)


def mechanism_names() -> Tuple[str, ...]:
    """Names of the registered noise mechanisms, in registration order (gaussian, laplace)."""
    return tuple(_MECHANISMS)


def get_mechanism(name: str):
    """The registered mechanism called `name`; ValueError naming the choices otherwise."""
    try:
        return _MECHANISMS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"`mechanism` must be one of {mechanism_names()}, got {name!r}."
        ) from None


def mechanism_of_query(query: Any) -> Optional[Any]:
    """The mechanism whose query `query` is (unwrapping no schedule), or None for another query.

    When several match (a mechanism whose query class subclasses another's), the one with
    the most specific query class wins.
    """
    owners = [m for m in _MECHANISMS.values() if m.owns_query(query)]
    if not owners:
        return None
    mro = type(query).__mro__
    return min(owners, key=lambda m: mro.index(m.query_class) if m.query_class in mro else len(mro))
