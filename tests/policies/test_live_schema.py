"""The config validator and the wire preview, checked against the real SDK on the wire."""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google import genai
from google.genai import types

from apps.policies.live_schema import (
    LOCK_WHOLE_SETUP,
    LiveConfigError,
    token_config,
    validate_live_config,
    wire_preview,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TIMES = {
    "expire_time": NOW + timedelta(minutes=30),
    "new_session_expire_time": NOW + timedelta(minutes=1),
}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"bogus": 1}, ["bogus: is not a Live setting"]),
        ({"temperature": "hot"}, ["temperature: must be a number"]),
        ({"temperature": 2.5}, ["temperature: must be ≤ 2"]),
        ({"generation_config": {"temperature": 5}}, ["generation_config.temperature: must be ≤ 2"]),
        ({"top_p": -0.1}, ["top_p: must be ≥ 0"]),
        (
            {"response_modalities": ["TXT"]},
            ["response_modalities[0]: 'TXT' is not one of TEXT, IMAGE, AUDIO, VIDEO"],
        ),
        ({"response_modalities": "AUDIO"}, ["response_modalities: must be a list"]),
        ({"http_options": {"base_url": "http://evil"}}, ["http_options: is not a Live setting"]),
        ({"speech_config": {"voice_config": 3}}, ["speech_config.voice_config: must be an object"]),
        (
            {"generation_config": {"temperature": 3, "bogus": True}},
            ["generation_config.bogus: is not a Live setting"],
        ),
        (["not", "an", "object"], ["config: must be a JSON object"]),
    ],
)
def test_bad_configs_are_refused_with_the_field_path(config, expected):
    with pytest.raises(LiveConfigError) as caught:
        validate_live_config(config)

    assert caught.value.messages == expected


@pytest.mark.parametrize(
    ("config", "normalised"),
    [
        ({}, {}),
        ({"responseModalities": ["AUDIO"]}, {"response_modalities": ["AUDIO"]}),
        (
            {"temperature": 0.7, "session_resumption": {}, "system_instruction": "Be brief."},
            {"temperature": 0.7, "session_resumption": {}, "system_instruction": "Be brief."},
        ),
        (
            {"generation_config": {"temperature": 2, "top_k": 40}},
            {"generation_config": {"temperature": 2.0, "top_k": 40.0}},
        ),
    ],
)
def test_good_configs_are_normalised_to_snake_case(config, normalised):
    assert validate_live_config(config) == normalised


class _CaptureHandler(BaseHTTPRequestHandler):
    """Stands in for Google: records what the SDK sends, answers like the mint endpoint."""

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        self.server.captured.append(
            {
                "path": self.path,
                "api_key": self.headers.get("x-goog-api-key"),
                "body": json.loads(self.rfile.read(length)) if length else None,
            }
        )
        payload = b'{"name": "auth_tokens/captured"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def google_stand_in():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CaptureHandler)
    server.captured = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


CASES = {
    "whole setup": None,
    "fields set": [],
    "fields set plus": ["temperature", "system_instruction"],
}


@pytest.mark.parametrize("lock", CASES.values(), ids=CASES.keys())
def test_preview_equals_what_the_sdk_sends_over_http(google_stand_in, lock):
    config = validate_live_config(
        {
            "response_modalities": ["TEXT"],
            "temperature": 0.7,
            "session_resumption": {},
            "system_instruction": "You are a tutor.",
        }
    )
    arguments = {
        "model": "gemini-2.0-flash-live-001",
        "config": config,
        "lock_additional_fields": lock,
        "uses": 1,
        **TIMES,
    }
    client = genai.Client(
        api_key="test-key",
        http_options=types.HttpOptions(
            api_version="v1alpha", base_url=f"http://127.0.0.1:{google_stand_in.server_port}"
        ),
    )

    token = client.auth_tokens.create(config=token_config(**arguments))
    preview = wire_preview(token_config(**arguments))

    (sent,) = google_stand_in.captured
    assert token.name == "auth_tokens/captured"
    assert sent["path"] == "/v1alpha/auth_tokens"
    assert preview.body == sent["body"]
    assert sent["body"]["bidiGenerateContentSetup"]["model"] == "models/gemini-2.0-flash-live-001"
    if lock is None:
        assert "fieldMask" not in sent["body"]
        assert preview.lock == LOCK_WHOLE_SETUP
    else:
        mask = sent["body"]["fieldMask"].split(",")
        assert "generationConfig.temperature" in mask
        assert preview.locked_fields == list(dict.fromkeys(mask))


def test_preview_matches_the_reference_capture_for_fields_set():
    preview = wire_preview(
        token_config(
            model="gemini-2.0-flash-live-001",
            config={"response_modalities": ["TEXT"], "temperature": 0.7, "session_resumption": {}},
            lock_additional_fields=[],
            uses=1,
            **TIMES,
        )
    )

    assert preview.body["fieldMask"] == (
        "model,generationConfig.responseModalities,generationConfig.temperature,sessionResumption"
    )
    assert preview.body["expireTime"] == "2030-01-01T12:30:00+00:00"


def test_locking_a_list_of_objects_warns():
    preview = wire_preview(
        token_config(
            model="gemini-2.0-flash-live-001",
            config={"tools": [{"google_search": {}}]},
            lock_additional_fields=["tools"],
            uses=1,
            **TIMES,
        )
    )

    assert preview.locked_fields == ["model", "tools"]
    assert len(preview.warnings) == 1
    assert "js-genai #1492" in preview.warnings[0]


def test_whole_setup_lock_never_warns_about_masks():
    preview = wire_preview(
        token_config(
            model="gemini-2.0-flash-live-001",
            config={"tools": [{"google_search": {}}]},
            lock_additional_fields=None,
            uses=1,
            **TIMES,
        )
    )

    assert preview.lock == LOCK_WHOLE_SETUP
    assert preview.warnings == []
