"""The outbound HTTP helper refuses private, loopback, link-local, CGNAT and metadata
addresses in every spelling, after each redirect too, and opens no connection to them."""

from __future__ import annotations

import ipaddress
import socket
import time
import types
from typing import Any

import pytest

from notifications import outbound
from tests.notifications.support import Answer, ConnectionCounter, HTTPReceiver, free_port


class SocketSpy:
    """The socket module as the helper sees it, counting the sockets it creates."""

    def __init__(self) -> None:
        self.created = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        spy = self

        def counting_socket(*args: Any, **kwargs: Any) -> socket.socket:
            spy.created += 1
            return socket.socket(*args, **kwargs)

        module = types.SimpleNamespace(**{name: getattr(socket, name) for name in dir(socket)})
        module.socket = counting_socket
        monkeypatch.setattr(outbound, "socket", module)


def _settle(counter: ConnectionCounter) -> int:
    time.sleep(0.2)  # let the listener's thread accept anything that did connect
    return counter.accepted


BYPASSES = [
    "http://127.0.0.1:{port}/",
    "http://127.1:{port}/",
    "http://0x7f000001:{port}/",
    "http://2130706433:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://0x7f.0.0.1:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[64:ff9b::127.0.0.1]:{port}/",
    "http://[2002:7f00:1::]:{port}/",
    "http://[::127.0.0.1]:{port}/",
    "http://localhost:{port}/",
    "http://LOCALHOST.:{port}/",
    "http://[::1]:{port}/",
    "http://0.0.0.0:{port}/",
    "http://0:{port}/",
    "https://127.1:{port}/",
]


@pytest.mark.parametrize("template", BYPASSES)
def test_loopback_in_any_spelling_is_refused_without_a_connection(
    template: str, counter: ConnectionCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SocketSpy()
    spy.install(monkeypatch)
    with pytest.raises(outbound.AddressRefused):
        outbound.post(template.format(port=counter.port), body=b"{}", headers={})
    assert spy.created == 0
    assert _settle(counter) == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://168.63.129.16/machine",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",  # 169.254.169.254 as one number
        "http://100.64.0.1/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://192.0.2.10/",
        "http://[64:ff9b::a9fe:a9fe]/",
    ],
)
def test_private_and_metadata_addresses_are_refused_before_any_socket(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SocketSpy()
    spy.install(monkeypatch)
    with pytest.raises(outbound.AddressRefused):
        outbound.post(url, body=b"{}", headers={})
    assert spy.created == 0


def test_redirect_to_loopback_is_refused_without_a_connection(
    receiver: HTTPReceiver, counter: ConnectionCounter
) -> None:
    # The receiver itself is allowed (it is the test's); the listener's port is not.
    receiver.answer(Answer(302, headers={"Location": f"http://127.0.0.1:{counter.port}/admin"}))
    with pytest.raises(outbound.AddressRefused, match="loopback"):
        outbound.post(receiver.url, body=b"{}", headers={})
    assert len(receiver.requests) == 1
    assert _settle(counter) == 0


def test_redirect_to_metadata_in_another_spelling_is_refused(receiver: HTTPReceiver) -> None:
    receiver.answer(Answer(307, headers={"Location": "http://0xa9fea9fe/latest/meta-data/"}))
    with pytest.raises(outbound.AddressRefused, match="metadata"):
        outbound.post(receiver.url, body=b"{}", headers={})


def test_at_most_three_redirects(receiver: HTTPReceiver) -> None:
    receiver.answer(Answer(307, headers={"Location": "/again"}))
    with pytest.raises(outbound.TooManyRedirects):
        outbound.post(receiver.url, body=b"{}", headers={})
    assert len(receiver.requests) == 4


def test_redirects_are_followed_and_307_keeps_the_body(receiver: HTTPReceiver) -> None:
    receiver.answer(
        Answer(307, headers={"Location": "/second"}),
        Answer(303, headers={"Location": "/third"}),
        Answer(200, body=b"done"),
    )
    response = outbound.post(receiver.url, body=b'{"a":1}', headers={"Content-Type": "x/y"})
    assert response.status == 200
    assert response.body == b"done"
    assert [(r.method, r.path, r.body) for r in receiver.requests] == [
        ("POST", "/hook", b'{"a":1}'),
        ("POST", "/second", b'{"a":1}'),
        ("GET", "/third", b""),
    ]
    assert "Content-Type" not in receiver.requests[2].headers


def test_a_name_is_sent_as_the_host_header_while_the_checked_address_is_dialled(
    receiver: HTTPReceiver,
) -> None:
    response = outbound.post(f"http://localhost:{receiver.port}/hook?x=1", body=b"{}", headers={})
    assert response.status == 200
    request = receiver.requests[0]
    assert request.headers["Host"] == f"localhost:{receiver.port}"
    assert request.path == "/hook?x=1"
    assert request.headers["User-Agent"] == outbound.USER_AGENT


def test_a_name_resolving_to_a_refused_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, counter: ConnectionCounter
) -> None:
    # What a rebinding DNS server would answer: the helper connects only to what it checked.
    def resolver(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(outbound.AddressRefused, match=r"hooks\.example\.com"):
        outbound.post(f"http://hooks.example.com:{counter.port}/", body=b"", headers={})
    assert _settle(counter) == 0


def test_response_size_is_capped(receiver: HTTPReceiver) -> None:
    receiver.answer(Answer(200, body=b"x" * 300_000))
    response = outbound.request("GET", receiver.url, max_bytes=1000)
    assert response.truncated
    assert len(response.body) == 1000


def test_a_slow_receiver_times_out_as_a_temporary_error(receiver: HTTPReceiver) -> None:
    receiver.answer(Answer(200, delay=2))
    started = time.monotonic()
    with pytest.raises(outbound.OutboundTimeout) as error:
        outbound.post(receiver.url, body=b"{}", headers={}, timeout=0.3)
    assert error.value.temporary
    assert time.monotonic() - started < 1.5


def test_a_closed_port_is_a_temporary_connection_error(settings) -> None:
    port = free_port()
    settings.ASM_OUTBOUND_ALLOW_TARGETS = frozenset({("127.0.0.1", port)})
    with pytest.raises(outbound.OutboundConnectionError) as error:
        outbound.post(f"http://127.0.0.1:{port}/", body=b"{}", headers={})
    assert error.value.temporary


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com:25/",
        "http://user:pass@example.com/",
        "http:///nohost",
        "http://exa mple.com/",
        "http://[fe80::1%25eth0]/",
        "http://1.2.3.4.5/",
    ],
)
def test_urls_the_helper_does_not_take(url: str) -> None:
    with pytest.raises(outbound.InvalidURL):
        outbound.parse_url(url) if "1.2.3.4.5" not in url else outbound.check_url(url)


def test_the_private_setting_allows_private_networks_only(settings) -> None:
    assert settings.ASM_OUTBOUND_ALLOW_PRIVATE is False
    settings.ASM_OUTBOUND_ALLOW_PRIVATE = True
    for allowed in ("10.1.2.3", "172.20.0.5", "192.168.0.10", "100.64.0.1", "fd12::1"):
        assert outbound.address_refusal(ipaddress.ip_address(allowed)) is None
    assert outbound.address_refusal(ipaddress.ip_address("::ffff:10.0.0.1")) is None
    for refused in ("127.0.0.1", "169.254.169.254", "fd00:ec2::254", "fe80::1", "0.0.0.0"):  # noqa: S104
        assert outbound.address_refusal(ipaddress.ip_address(refused)) is not None


def test_public_addresses_pass() -> None:
    for address in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "1.1.1.1"):
        assert outbound.address_refusal(ipaddress.ip_address(address)) is None


def test_an_allowed_test_target_does_not_open_its_other_spellings(settings) -> None:
    settings.ASM_OUTBOUND_ALLOW_TARGETS = frozenset({("127.0.0.1", 8080)})
    assert outbound.address_refusal(ipaddress.ip_address("127.0.0.1"), port=8080) is None
    assert outbound.address_refusal(ipaddress.ip_address("127.0.0.1"), port=8081) is not None
    mapped = ipaddress.ip_address("::ffff:127.0.0.1")
    assert outbound.address_refusal(mapped, port=8080) is not None
