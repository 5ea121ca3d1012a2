"""A tiny authoritative DNS server on 127.0.0.1, UDP and TCP, serving what a test sets.

Built from dnspython's own wire code (``dns.message.from_wire``, ``make_response``,
``dns.rrset.from_text``), so the resolver under test talks real DNS, offline. Only the
question's exact name is answered; everything else is NXDOMAIN.
"""

import socketserver
import struct
import threading
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


@dataclass
class Zone:
    # name (no trailing dot) -> record type -> records in zone-file text, e.g. '"a" "b"'.
    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    rcodes: dict[str, int] = field(default_factory=dict)  # a forced answer code, e.g. SERVFAIL
    silent: bool = False  # drop every query: the resolver can only time out
    truncate_udp: bool = False  # answer UDP with TC set and nothing else, so TCP is needed
    queries: list[tuple[str, str, str]] = field(default_factory=list)  # (transport, name, type)


class LocalDnsServer:
    def __init__(self) -> None:
        self.zone = Zone()
        self._udp, self._tcp = self._bind_both()
        self.port = self._udp.server_address[1]
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
            for server in (self._udp, self._tcp)
        ]

    # --- what a test sets ----------------------------------------------------------------

    def txt(self, name: str, *records: tuple[str, ...] | str) -> None:
        """TXT records at ``name``; a tuple is one record of several strings."""
        texts = []
        for record in records:
            strings = (record,) if isinstance(record, str) else record
            texts.append(" ".join('"' + s.replace('"', '\\"') + '"' for s in strings))
        self.zone.records.setdefault(name, {})["TXT"] = texts

    def a(self, name: str, address: str) -> None:
        self.zone.records.setdefault(name, {})["A"] = [address]

    def fail(self, name: str, rcode: int = dns.rcode.SERVFAIL) -> None:
        self.zone.rcodes[name] = rcode

    # --- serving -----------------------------------------------------------------------

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.zone.queries.append((transport, name, rdtype))
        if self.zone.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if transport == "udp" and self.zone.truncate_udp:
            response.flags |= dns.flags.TC
        elif name in self.zone.rcodes:
            response.set_rcode(self.zone.rcodes[name])
        elif name not in self.zone.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif texts := self.zone.records[name].get(rdtype):
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", rdtype, *texts))
        return response.to_wire()

    def _bind_both(self):
        """A UDP and a TCP server on one free port (retried if TCP finds it taken)."""
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                reply = server.answer(data, "udp")
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                header = self.request.recv(2)
                if len(header) < 2:
                    return
                (length,) = struct.unpack("!H", header)
                data = b""
                while len(data) < length:
                    chunk = self.request.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = server.answer(data, "tcp")
                if reply is not None:
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        for _ in range(20):
            udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
            try:
                tcp = socketserver.ThreadingTCPServer(("127.0.0.1", udp.server_address[1]), Tcp)
            except OSError:
                udp.server_close()
                continue
            udp.daemon_threads = tcp.daemon_threads = True
            return udp, tcp
        raise RuntimeError("no free port for both UDP and TCP")

    def __enter__(self) -> "LocalDnsServer":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()
