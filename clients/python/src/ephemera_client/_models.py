"""What the API answers, as frozen dataclasses read tolerantly.

Fields a newer server adds are ignored, so an old client keeps working; fields an older
server does not send yet (``lock``, ``locked_fields``, ``config``) read as empty. A missing
core field or a wrong type raises :class:`ValueError`, which the client turns into
:class:`~ephemera_client.UnexpectedResponse`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _required(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in data:
        raise ValueError(f"the answer has no {name!r}")
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name!r} is {type(value).__name__}, not the expected type")
    return value


def _time(data: dict[str, Any], name: str) -> datetime:
    text = _required(data, name, str)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name!r} is not an ISO 8601 time: {text!r}") from None


def _string_list(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name!r} is not a list of strings")
    return list(value)


def _object(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{name!r} is not an object")
    return dict(value)


def _optional_str(data: dict[str, Any], name: str) -> str:
    value = data.get(name) or ""
    if not isinstance(value, str):
        raise ValueError(f"{name!r} is not a string")
    return value


@dataclass(frozen=True)
class IssuedToken:
    """One ephemeral token for one end-user session: hand ``token`` to the browser or app,
    which opens the Live session with it as its API key before ``new_session_expire_time``.

    ``lock`` says how the session's setup is held: ``"whole_setup"`` (all of ``config`` is
    fixed) or ``"fields"`` (only ``locked_fields``, as camelCase wire paths). ``config`` is the
    profile's ``LiveConnectConfig`` in the Python SDK's snake_case. ``grant_id`` names the
    portal's audit row; ``sandbox`` is true when the portal mints against a stand-in for
    Google. The token is left out of ``repr`` so it does not end up in logs by accident.
    """

    token: str = field(repr=False)
    expire_time: datetime
    new_session_expire_time: datetime
    uses: int
    profile: str
    model: str
    lock: str
    locked_fields: list[str]
    config: dict[str, Any]
    grant_id: str
    sandbox: bool

    @classmethod
    def from_json(cls, data: Any) -> IssuedToken:
        if not isinstance(data, dict):
            raise ValueError("the answer is not a JSON object")
        return cls(
            token=_required(data, "token", str),
            expire_time=_time(data, "expire_time"),
            new_session_expire_time=_time(data, "new_session_expire_time"),
            uses=_required(data, "uses", int),
            profile=_required(data, "profile", str),
            model=_required(data, "model", str),
            lock=_optional_str(data, "lock"),
            locked_fields=_string_list(data, "locked_fields"),
            config=_object(data, "config"),
            grant_id=str(_required(data, "grant_id", (str, int))),
            sandbox=bool(data.get("sandbox", False)),
        )


@dataclass(frozen=True)
class Profile:
    """A Live constraint profile the key may request tokens for, with its defaults: how many
    sessions a token opens (``uses``), how long it lives (``expire_seconds``) and how long a
    new session may start (``new_session_seconds``). ``lock``, ``locked_fields`` and
    ``config`` are as on :class:`IssuedToken`."""

    slug: str
    name: str
    description: str
    model: str
    uses: int
    expire_seconds: int
    new_session_seconds: int
    lock: str
    locked_fields: list[str]
    config: dict[str, Any]

    @classmethod
    def from_json(cls, data: Any) -> Profile:
        if not isinstance(data, dict):
            raise ValueError("a profile is not a JSON object")
        return cls(
            slug=_required(data, "slug", str),
            name=_required(data, "name", str),
            description=_optional_str(data, "description"),
            model=_required(data, "model", str),
            uses=_required(data, "uses", int),
            expire_seconds=_required(data, "expire_seconds", int),
            new_session_seconds=_required(data, "new_session_seconds", int),
            lock=_optional_str(data, "lock"),
            locked_fields=_string_list(data, "locked_fields"),
            config=_object(data, "config"),
        )
