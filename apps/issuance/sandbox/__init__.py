"""The sandbox stand-in for Google: the token mint over HTTP and, over TLS, the Live API.

``app`` holds the ASGI application and its state, ``live`` the Live WebSocket, ``tls`` the
local certificate authority, ``server`` the listeners run in a thread.
"""

from apps.issuance.sandbox.app import Faults, SandboxState
from apps.issuance.sandbox.server import SandboxServer

__all__ = ["Faults", "SandboxServer", "SandboxState"]
