"""What a Live constraint profile means on the wire, asked of the google-genai SDK itself.

Validation uses the SDK's own ``LiveConnectConfig`` model, and the preview runs the SDK's
real ``auth_tokens.create`` over a local in-memory transport, so neither can drift from what
the SDK sends to Google.
"""

import enum
import functools
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2
import pydantic
from google import genai
from google.genai import types

# The caller's own transport settings, not a constraint on the Live session.
FORBIDDEN_CONFIG_FIELDS = frozenset({"http_options"})

# A Live session answers in exactly one of these (the SDK's Modality also has IMAGE and VIDEO,
# which Live never produces).
RESPONSE_MODALITIES = ("AUDIO", "TEXT")

# The prebuilt voices, with Google's one-word character for each. The SDK takes any string
# (``PrebuiltVoiceConfig.voice_name``), so this list is the only check: it is the 30 voices of
# the "Voice options" table in Google's speech-generation guide
# (https://ai.google.dev/gemini-api/docs/speech-generation#voices), which the Live guide says
# native-audio models share (https://ai.google.dev/gemini-api/docs/live-guide). Add a voice
# here when Google adds one; the form and the validation both read it.
LIVE_VOICES: tuple[tuple[str, str], ...] = (
    ("Zephyr", "Bright"),
    ("Puck", "Upbeat"),
    ("Charon", "Informative"),
    ("Kore", "Firm"),
    ("Fenrir", "Excitable"),
    ("Leda", "Youthful"),
    ("Orus", "Firm"),
    ("Aoede", "Breezy"),
    ("Callirrhoe", "Easy-going"),
    ("Autonoe", "Bright"),
    ("Enceladus", "Breathy"),
    ("Iapetus", "Clear"),
    ("Umbriel", "Easy-going"),
    ("Algieba", "Smooth"),
    ("Despina", "Smooth"),
    ("Erinome", "Clear"),
    ("Algenib", "Gravelly"),
    ("Rasalgethi", "Informative"),
    ("Laomedeia", "Upbeat"),
    ("Achernar", "Soft"),
    ("Alnilam", "Firm"),
    ("Schedar", "Even"),
    ("Gacrux", "Mature"),
    ("Pulcherrima", "Forward"),
    ("Achird", "Friendly"),
    ("Zubenelgenubi", "Casual"),
    ("Vindemiatrix", "Gentle"),
    ("Sadachbia", "Lively"),
    ("Sadaltager", "Knowledgeable"),
    ("Sulafat", "Warm"),
)
_VOICES_BY_KEY = {name.lower(): name for name, _ in LIVE_VOICES}

# The languages of the "Supported languages" table of Google's Live guide
# (https://ai.google.dev/gemini-api/docs/live-guide), as BCP-47 codes for
# ``speech_config.language_code``. The form offers these; the Advanced JSON may name another
# well-formed code (native-audio models also pick the language themselves).
LIVE_LANGUAGES: tuple[tuple[str, str], ...] = (
    ("ar-XA", "Arabic (generic)"),
    ("bn-IN", "Bengali (India)"),
    ("cmn-CN", "Chinese, Mandarin (China)"),
    ("nl-NL", "Dutch (Netherlands)"),
    ("en-AU", "English (Australia)"),
    ("en-IN", "English (India)"),
    ("en-GB", "English (United Kingdom)"),
    ("en-US", "English (United States)"),
    ("fr-CA", "French (Canada)"),
    ("fr-FR", "French (France)"),
    ("de-DE", "German (Germany)"),
    ("gu-IN", "Gujarati (India)"),
    ("hi-IN", "Hindi (India)"),
    ("id-ID", "Indonesian (Indonesia)"),
    ("it-IT", "Italian (Italy)"),
    ("ja-JP", "Japanese (Japan)"),
    ("kn-IN", "Kannada (India)"),
    ("ko-KR", "Korean (South Korea)"),
    ("ml-IN", "Malayalam (India)"),
    ("mr-IN", "Marathi (India)"),
    ("pl-PL", "Polish (Poland)"),
    ("pt-BR", "Portuguese (Brazil)"),
    ("ru-RU", "Russian (Russia)"),
    ("es-ES", "Spanish (Spain)"),
    ("es-US", "Spanish (United States)"),
    ("ta-IN", "Tamil (India)"),
    ("te-IN", "Telugu (India)"),
    ("th-TH", "Thai (Thailand)"),
    ("tr-TR", "Turkish (Turkey)"),
    ("vi-VN", "Vietnamese (Vietnam)"),
)
# BCP-47's shape (language, then script/region/variant subtags), not its registry.
_BCP47 = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")

# Ranges the SDK does not check but Gemini enforces; checked at the top level and inside
# generation_config, where LiveConnectConfig accepts the same names.
INT32_MAX = 2**31 - 1  # topK and maxOutputTokens are int32 on the wire
NUMERIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "top_k": (1, INT32_MAX),
    "max_output_tokens": (1, INT32_MAX),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}

# The SDK types top_k as a float; Gemini's topK is an integer and refuses 1.5.
WHOLE_NUMBERS = frozenset({"top_k"})


def _non_finite_paths(value: Any, path: str = "") -> list[str]:
    """NaN and Infinity: Python's JSON reads them, PostgreSQL's jsonb and Gemini refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path or "config"]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _non_finite_paths(item, _join(path, key))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _non_finite_paths(item, f"{path}[{i}]")]
    return []


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


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
    return str(int(value)) if value == int(value) else f"{value:g}"


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
            if name in WHOLE_NUMBERS and value != int(value):
                problems.append(f"{prefix}{name}: must be a whole number")
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


def _modality_problems(config: types.LiveConnectConfig) -> list[str]:
    """Live answers in one modality, audio or text; the SDK takes any list of Modality."""
    problems = []
    scopes = [("", config)]
    if config.generation_config is not None:
        scopes.append(("generation_config.", config.generation_config))
    for prefix, scope in scopes:
        modalities = scope.response_modalities
        if modalities is None:
            continue
        path = f"{prefix}response_modalities"
        names = [getattr(item, "value", item) for item in modalities]
        for index, name in enumerate(names):
            if name not in types.Modality.__members__:
                continue  # an unknown name: _enum_problems reports it
            if name not in RESPONSE_MODALITIES:
                problems.append(
                    f"{path}[{index}]: {name} is not a Live response modality; choose AUDIO or TEXT"
                )
        if len(names) != 1:
            problems.append(f"{path}: name exactly one response modality, AUDIO or TEXT")
    return problems


def _walk(value: Any, path: str):
    """Every SDK model inside a parsed config, with its field path."""
    if isinstance(value, pydantic.BaseModel):
        yield path, value
        for name in type(value).model_fields:
            child = getattr(value, name)
            if child is not None:
                yield from _walk(child, f"{path}.{name}" if path else name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def _speech_problems(config: types.LiveConnectConfig) -> list[str]:
    """Voices Google has (the SDK takes any name) and language codes shaped like BCP-47."""
    problems = []
    voices = ", ".join(name for name, _ in LIVE_VOICES)
    for path, model in _walk(config, ""):
        voice = getattr(model, "voice_name", None)
        known = voice is None or voice.lower() in _VOICES_BY_KEY
        if isinstance(model, types.PrebuiltVoiceConfig) and not known:
            problems.append(
                f"{path}.voice_name: '{voice}' is not a prebuilt voice; choose one of {voices}"
            )
        code = getattr(model, "language_code", None)
        well_formed = code is None or _BCP47.fullmatch(code)
        if isinstance(model, types.SpeechConfig) and not well_formed:
            problems.append(
                f"{path}.language_code: '{code}' is not a BCP-47 language code such as en-US"
            )
    return problems


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
    non_finite = _non_finite_paths(config)
    if non_finite:
        raise LiveConfigError([f"{path}: must be a finite number" for path in non_finite])
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
    problems = _enum_problems(parsed, "")
    problems += _range_problems(parsed) + _modality_problems(parsed) + _speech_problems(parsed)
    if problems:
        raise LiveConfigError(problems)
    return parsed.model_dump(mode="json", exclude_none=True)


def lockable_field_names() -> frozenset[str]:
    """Names ``lock_additional_fields`` may list: Live setup fields and generation fields."""
    live = set(types.LiveConnectConfig.model_fields) - FORBIDDEN_CONFIG_FIELDS
    return frozenset(live | set(types.GenerationConfig.model_fields))


# --- the wire preview --------------------------------------------------------------------


# The two ways a token binds a client's setup (the API's ``lock``): the token's setup replaces
# the client's, or only the field mask's paths are the token's.
LOCK_WHOLE_SETUP = "whole_setup"
LOCK_FIELDS = "fields"


@functools.cache
def setup_field_names() -> tuple[str, ...]:
    """Every top-level field of a Live session's setup (BidiGenerateContentSetup), camelCase.

    Read off the SDK's models so the list moves with the SDK: ``LiveClientSetup`` is the
    setup message, and ``LiveConnectConfig`` fields that are not generation settings go to the
    setup as they are (``realtime_input_config``, which ``LiveClientSetup`` lacks).
    """
    setup = types.LiveClientSetup.model_fields
    generation = set(types.GenerationConfig.model_fields)
    direct = {
        name: model_field
        for name, model_field in types.LiveConnectConfig.model_fields.items()
        if name not in generation and name not in FORBIDDEN_CONFIG_FIELDS
    }
    return tuple(sorted(f.alias or _camel(name) for name, f in {**direct, **setup}.items()))


@dataclass(frozen=True)
class WirePreview:
    """What the SDK sends to ``POST /v1alpha/auth_tokens`` for one profile.

    ``locked_fields`` is what the client cannot change (with the whole setup locked: every
    setup field, since the client's own setup is replaced); ``set_fields`` is what the
    profile's setup itself sets, top level.
    """

    body: dict[str, Any] | None
    locked_fields: list[str] = field(default_factory=list)
    lock: str = LOCK_FIELDS
    warnings: list[str] = field(default_factory=list)
    set_fields: list[str] = field(default_factory=list)


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


def _camel_path(path: str) -> str:
    return ".".join(_camel(part) for part in path.split("."))


def _lookup(setup: dict[str, Any], name: str) -> tuple[bool, Any]:
    for candidate in (name, _camel(name), re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()):
        if candidate in setup:
            return True, setup[candidate]
    return False, None


def _reaches_into_list(setup: dict[str, Any], path: str) -> bool:
    """Whether a mask path goes below a list, or names a list of objects.

    Google has refused such masks with ``400 field_mask is invalid for
    BidiGenerateContentSetup`` (js-genai #1492, docs/reference/gemini-ephemeral-tokens.md):
    ``tools`` with tools set, ``systemInstruction.parts``, ``safetySettings``. A list of plain
    values (``generationConfig.responseModalities``) is fine, and so is a listed field the
    profile leaves unset (``tools`` then means "the client may bring none").
    """
    value: Any = setup
    for part in path.split("."):
        if isinstance(value, list):
            return True
        present, value = _lookup(value, part) if isinstance(value, dict) else (False, None)
        if not present:
            return False
    return isinstance(value, list) and any(isinstance(item, dict) for item in value)


def _mask(body: dict[str, Any] | None) -> list[str]:
    mask = (body or {}).get("fieldMask") or ""
    return [path for path in mask.split(",") if path]


def refused_lock_paths(body: dict[str, Any] | None) -> list[str]:
    """The paths of a body's field mask that Google refuses (see _reaches_into_list)."""
    setup = (body or {}).get("bidiGenerateContentSetup") or {}
    return [path for path in dict.fromkeys(_mask(body)) if _reaches_into_list(setup, path)]


def lock_refusal(path: str, listed_name: str | None = None) -> str:
    """The one message for a refused lock, in the form, the preview and the API alike."""
    fix = (
        f"Take '{listed_name}' off the list, or lock the whole setup."
        if listed_name
        else "Lock the whole setup instead."
    )
    return (
        f"Google refuses a lock on '{path}': it reaches into a list of objects (field_mask is "
        f"invalid for BidiGenerateContentSetup, js-genai #1492). {fix}"
    )


def lock_problems(
    *, model: str, config: dict[str, Any], lock_additional_fields: list[str] | None
) -> dict[str, list[str]]:
    """Refusals of the mask the SDK would build, keyed by the profile field that causes them.

    The mask is the SDK's own: the fields the config sets, then one path per listed name
    (``generationConfig.<name>`` for generation fields), in that order. A path the config
    already locks is the lock mode's doing; one only a listed name adds is the list's.
    """
    if lock_additional_fields is None:
        return {}
    stamp = datetime(2000, 1, 1, tzinfo=UTC)
    body = _capture_request_body(
        token_config(
            model=model,
            config=config,
            lock_additional_fields=lock_additional_fields,
            uses=1,
            expire_time=stamp,
            new_session_expire_time=stamp,
        )
    )
    mask = _mask(body)
    from_config = mask[: len(mask) - len(lock_additional_fields)]
    listed = dict(zip(mask[len(from_config) :], lock_additional_fields, strict=False))
    by_config = {_camel_path(path) for path in from_config}
    problems: dict[str, list[str]] = {}
    for path in refused_lock_paths(body):
        if path in from_config:
            problems.setdefault("lock_mode", []).append(lock_refusal(path))
        elif _camel_path(path) in by_config:
            continue  # the same field, spelled as listed: reported once, above
        else:
            problems.setdefault("lock_additional_fields", []).append(
                lock_refusal(path, listed[path])
            )
    return problems


def wire_preview(create_config: types.CreateAuthTokenConfig) -> WirePreview:
    """The body, the effective lock and any warnings for one token config (see token_config)."""
    body = _capture_request_body(create_config)
    common = {
        "body": body,
        "lock": lock_of(body),
        "locked_fields": locked_fields(body),
        "set_fields": sorted((body or {}).get("bidiGenerateContentSetup") or {}),
    }
    if common["lock"] == LOCK_WHOLE_SETUP:
        return WirePreview(**common)
    return WirePreview(**common, warnings=[lock_refusal(path) for path in refused_lock_paths(body)])


def lock_of(body: dict[str, Any] | None) -> str:
    """How a token binds the client's setup, read off the body the SDK sent (or would send).

    A setup without a field mask replaces the client's whole setup; a mask locks its paths;
    a body with no setup locks nothing, which is a field lock of no fields.
    """
    body = body or {}
    if body.get("bidiGenerateContentSetup") and "fieldMask" not in body:
        return LOCK_WHOLE_SETUP
    return LOCK_FIELDS


def locked_fields(body: dict[str, Any] | None) -> list[str]:
    """The setup fields a client cannot change under a token, read off its body.

    With a mask, its distinct paths (the SDK repeats a field named twice). With the whole
    setup locked, every setup field: Google replaces the client's setup with the token's, so
    even a field the profile leaves unset (``tools``) is dropped from what the client sends.
    """
    body = body or {}
    if lock_of(body) == LOCK_WHOLE_SETUP:
        return list(setup_field_names())
    return list(dict.fromkeys(_mask(body)))
