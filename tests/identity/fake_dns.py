"""A DNS server on loopback for the domain-verification tests (UDP, TXT records only).

Queries are parsed and answers built with dnspython, the library the portal's
resolver uses, so the exchange on the wire is real DNS.
"""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class FakeDNS:
    def __init__(self):
        self.records: dict[str, list[str]] = {}  # name (no trailing dot) → TXT strings
        self.silent = False  # drop every query: the resolver times out
        self.queries: list[str] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FakeDNS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(wire)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            self.queries.append(name)
            if self.silent:
                continue
            response = dns.message.make_response(query)
            if name not in self.records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                values = [f'"{value}"' for value in self.records[name]]
                response.answer.append(
                    dns.rrset.from_text(question.name, 60, dns.rdataclass.IN, dns.rdatatype.TXT, *values)
                )
            self._socket.sendto(response.to_wire(), peer)
