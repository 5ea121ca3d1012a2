"""What a Live constraint profile means on the wire, asked of the google-genai SDK itself.

Validation uses the SDK's own ``LiveConnectConfig`` model, and the preview runs the SDK's
real ``auth_tokens.create`` over a local in-memory transport, so neither can drift from what
the SDK sends to Google.
"""

import enum
import json
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx2
import pydantic
from google import genai
from google.genai import types

# The caller's own transport settings, not a constraint on the Live session.
FORBIDDEN_CONFIG_FIELDS = frozenset({"http_options"})

# Ranges the SDK does not check but Gemini enforces; checked at the top level and inside
# generation_config, where LiveConnectConfig accepts the same names.
NUMERIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "top_k": (1, None),
    "max_output_tokens": (1, None),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}

_PYDANTIC_MESSAGES = {
    "extra_forbidden": "is not a Live setting",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "model_attributes_type": "must be an object",
}


class LiveConfigError(ValueError):
    """A config that the SDK or Gemini would refuse; ``messages`` name the field paths."""

    def __init__(self, messages: list[str]):
        super().__init__("; ".join(messages))
        self.messages = messages


def _path(location: tuple) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after", "function-before", "union_tag"):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or "config"


def _format_number(value: float) -> str:
    return f"{value:g}"


def _range_problems(config: types.LiveConnectConfig) -> list[str]:
    problems = []
    scopes = [("", config)]
    if config.generation_config is not None:
        scopes.append(("generation_config.", config.generation_config))
    for prefix, scope in scopes:
        for name, (low, high) in NUMERIC_RANGES.items():
            value = getattr(scope, name, None)
            if value is None:
                continue
            if low is not None and value < low:
                problems.append(f"{prefix}{name}: must be ≥ {_format_number(low)}")
            if high is not None and value > high:
                problems.append(f"{prefix}{name}: must be ≤ {_format_number(high)}")
    return problems


def _enum_problems(value: Any, path: str) -> list[str]:
    """The SDK accepts unknown enum names with a warning; Gemini would refuse them."""
    if isinstance(value, enum.Enum):
        members = type(value).__members__
        if value.name not in members:
            allowed = ", ".join(name for name in members if not name.endswith("_UNSPECIFIED"))
            return [f"{path}: {value.value!r} is not one of {allowed}"]
        return []
    if isinstance(value, pydantic.BaseModel):
        problems = []
        for name in type(value).model_fields:
            child = getattr(value, name)
            if child is not None:
                problems += _enum_problems(child, f"{path}.{name}" if path else name)
        return problems
    if isinstance(value, list | tuple):
        problems = []
        for index, item in enumerate(value):
            problems += _enum_problems(item, f"{path}[{index}]")
        return problems
    return []


def validate_live_config(config: Any) -> dict[str, Any]:
    """Validate a LiveConnectConfig as JSON; return it normalised to the SDK's snake_case.

    Raises LiveConfigError with one plain message per problem, each led by its field path.
    """
    if not isinstance(config, dict):
        raise LiveConfigError(["config: must be a JSON object"])
    forbidden = sorted(
        key for key in config if key in FORBIDDEN_CONFIG_FIELDS or key == "httpOptions"
    )
    if forbidden:
        raise LiveConfigError([f"{key}: is not a Live setting" for key in forbidden])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown enum values warn here; reported below
        try:
            parsed = types.LiveConnectConfig.model_validate(config)
        except pydantic.ValidationError as error:
            raise LiveConfigError(
                [
                    f"{_path(item['loc'])}: {_PYDANTIC_MESSAGES.get(item['type'], item['msg'])}"
                    for item in error.errors()
                ]
            ) from None
    problems = _enum_problems(parsed, "") + _range_problems(parsed)
    if problems:
        raise LiveConfigError(problems)
    return parsed.model_dump(mode="json", exclude_none=True)


def lockable_field_names() -> frozenset[str]:
    """Names ``lock_additional_fields`` may list: Live setup fields and generation fields."""
    live = set(types.LiveConnectConfig.model_fields) - FORBIDDEN_CONFIG_FIELDS
    return frozenset(live | set(types.GenerationConfig.model_fields))


# --- the wire preview --------------------------------------------------------------------


@dataclass(frozen=True)
class WirePreview:
    """What the SDK sends to ``POST /v1alpha/auth_tokens`` for one profile."""

    body: dict[str, Any] | None
    locked_fields: list[str] = field(default_factory=list)
    whole_setup_locked: bool = False
    warnings: list[str] = field(default_factory=list)


def token_config(
    *,
    model: str,
    config: dict[str, Any],
    lock_additional_fields: list[str] | None,
    uses: int,
    expire_time: datetime,
    new_session_expire_time: datetime,
) -> types.CreateAuthTokenConfig:
    """The SDK config for one token; the gateway sends exactly this."""
    return types.CreateAuthTokenConfig(
        uses=uses,
        expire_time=expire_time,
        new_session_expire_time=new_session_expire_time,
        live_connect_constraints=types.LiveConnectConstraints(
            model=model, config=types.LiveConnectConfig.model_validate(config)
        ),
        lock_additional_fields=lock_additional_fields,
    )


def _capture_request_body(create_config: types.CreateAuthTokenConfig) -> dict[str, Any] | None:
    captured: list[bytes] = []

    def answer_locally(request: httpx2.Request) -> httpx2.Response:
        captured.append(request.read())
        return httpx2.Response(200, json={"name": "auth_tokens/preview"})

    with httpx2.Client(transport=httpx2.MockTransport(answer_locally)) as transport:
        client = genai.Client(
            api_key="preview-only",
            http_options=types.HttpOptions(
                api_version="v1alpha", base_url="http://preview.invalid", httpx_client=transport
            ),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK marks every create as experimental
            client.auth_tokens.create(config=create_config)
    return json.loads(captured[0]) if captured and captured[0] else None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _lookup(setup: dict[str, Any], name: str) -> tuple[bool, Any]:
    for candidate in (name, _camel(name), re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()):
        if candidate in setup:
            return True, setup[candidate]
    return False, None


def _list_warnings(setup: dict[str, Any], mask: list[str]) -> list[str]:
    """Masks that reach into lists of objects (tools, safety settings…) may be refused."""
    found = []
    for path in mask:
        value: Any = setup
        for part in path.split("."):
            present, value = _lookup(value, part) if isinstance(value, dict) else (False, None)
            if not present:
                break
        if isinstance(value, list) and any(isinstance(item, dict) for item in value):
            found.append(
                f"The lock on '{path}' reaches into a list of objects; Google has refused such "
                "field masks (js-genai #1492). Consider locking the whole setup instead."
            )
    return found


def wire_preview(create_config: types.CreateAuthTokenConfig) -> WirePreview:
    """The body, the effective lock and any warnings for one token config (see token_config)."""
    body = _capture_request_body(create_config)
    setup = (body or {}).get("bidiGenerateContentSetup") or {}
    locked = locked_fields(body)
    if setup and "fieldMask" not in (body or {}):
        return WirePreview(body=body, locked_fields=locked, whole_setup_locked=True)
    return WirePreview(body=body, locked_fields=locked, warnings=_list_warnings(setup, locked))


def locked_fields(body: dict[str, Any] | None) -> list[str]:
    """The fields a token locks, read off the body the SDK sent (or would send).

    With a mask, its distinct paths (the SDK repeats a field named twice); without one, the
    whole setup replaces the client's, listed by its top-level fields.
    """
    body = body or {}
    if body.get("fieldMask"):
        return list(dict.fromkeys(body["fieldMask"].split(",")))
    return sorted(body.get("bidiGenerateContentSetup") or {})
