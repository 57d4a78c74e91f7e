"""The pure DHCP decisions (RFC 2131 §4.3), table by table: no sockets, a clock passed in."""

from __future__ import annotations

import os
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from netns import write_site

from rootfs.config.dhcp import BootFiles
from rootfs.config.site import Site, load_site
from rootfs.errors import UserError
from rootfs.netboot.dhcp.leases import Lease, LeaseTable
from rootfs.netboot.dhcp.packet import (
    BOOTREQUEST,
    DHCPACK,
    DHCPDECLINE,
    DHCPDISCOVER,
    DHCPINFORM,
    DHCPNAK,
    DHCPOFFER,
    DHCPRELEASE,
    DHCPREQUEST,
    FLAG_BROADCAST,
    OPT_BOOTFILE,
    OPT_BROADCAST,
    OPT_CLIENT_ARCH,
    OPT_CLIENT_ID,
    OPT_DNS,
    OPT_DOMAIN,
    OPT_HOSTNAME,
    OPT_LEASE_TIME,
    OPT_MAX_SIZE,
    OPT_MESSAGE_TYPE,
    OPT_PARAM_REQUEST,
    OPT_RELAY_AGENT,
    OPT_REQUESTED_IP,
    OPT_ROOT_PATH,
    OPT_ROUTER,
    OPT_SERVER_ID,
    OPT_SUBNET_MASK,
    OPT_TFTP_SERVER,
    OPT_USER_CLASS,
    OPT_VENDOR,
    OPT_VENDOR_CLASS,
    ZERO,
    Packet,
    decode_untrusted,
    encode,
)
from rootfs.netboot.dhcp.responder import Link, Outcome, Responder, Send, sanitize_hostname

SERVER = IPv4Address("192.168.232.1")
LINK = Link("eth0", SERVER, IPv4Network("192.168.232.0/24"))
PC1_MAC, PC1_IP = "52:54:00:e8:00:11", IPv4Address("192.168.232.11")
PC2_MAC, PC2_IP = "52:54:00:e8:00:12", IPv4Address("192.168.232.12")
STRANGER = "52:54:00:e8:00:99"
NOW = 1_700_000_000.0
ROOT = b"192.168.232.1:/tftpboot/192.168.232.11,vers=3,tcp"
IPXE_URL = b"http://192.168.232.1/boot.ipxe"


def site(tmp_path: Path, *, dhcp: str = "", extra: dict[str, str] | None = None) -> Site:
    root = write_site(
        tmp_path / "site",
        {"pc1": (PC1_MAC, str(PC1_IP)), "pc2": (PC2_MAC, str(PC2_IP))},
        interface="eth0",
        dhcp=dhcp,
        host_extra=extra,
    )
    return load_site(root, environ=os.environ)


@pytest.fixture
def responder(tmp_path: Path) -> Responder:
    return Responder(site(tmp_path), LeaseTable())


def request(
    mac: str = PC1_MAC,
    mtype: int | None = DHCPDISCOVER,
    *options: tuple[int, bytes],
    **fields: object,
) -> Packet:
    opts = ((OPT_MESSAGE_TYPE, bytes([mtype])),) if mtype is not None else ()
    return Packet(
        op=BOOTREQUEST,
        xid=7,
        chaddr=bytes.fromhex(mac.replace(":", "")),
        options=(*opts, *options),
        **fields,  # type: ignore[arg-type]
    )


def handle(r: Responder, packet: Packet, now: float = NOW, **kw: object) -> Outcome:
    """Through the wire and back, as the server does, so encodable replies are part of the test."""
    outcome = r.handle(decode_untrusted(encode(packet, 1472)), link=LINK, now=now, **kw)  # type: ignore[arg-type]
    if outcome.reply is not None:
        data = encode(outcome.reply, outcome.max_size)
        assert len(data) <= outcome.max_size
        decoded = decode_untrusted(data)  # what fits: all of it, or the first options
        assert decoded.options == outcome.reply.options[: len(decoded.options)] or (
            decoded.options[-1][0] == OPT_RELAY_AGENT
        )
    return outcome


def selecting(mac: str, ip: IPv4Address, server: IPv4Address = SERVER) -> Packet:
    return request(mac, DHCPREQUEST, (OPT_SERVER_ID, server.packed), (OPT_REQUESTED_IP, ip.packed))


# -- the DORA of a reserved host ----------------------------------------------------------


def test_discover_offers_reservation_with_boot_options(responder: Responder) -> None:
    out = handle(responder, request())
    reply = out.reply
    assert reply is not None and reply.message_type == DHCPOFFER
    assert (reply.yiaddr, reply.siaddr, reply.file) == (PC1_IP, SERVER, b"pxelinux.0")
    assert reply.get(OPT_SERVER_ID) == SERVER.packed
    assert reply.get(OPT_LEASE_TIME) == (86400).to_bytes(4, "big")
    assert reply.get(58) == (43200).to_bytes(4, "big") and reply.get(59) == (75600).to_bytes(
        4, "big"
    )
    assert reply.get(OPT_SUBNET_MASK) == IPv4Address("255.255.255.0").packed
    assert reply.get(OPT_ROUTER) == SERVER.packed and reply.get(OPT_DNS) == SERVER.packed
    assert reply.get(OPT_HOSTNAME) == b"pc1" and reply.get(OPT_DOMAIN) == b"lab.test"
    assert reply.get(OPT_ROOT_PATH) == ROOT
    assert reply.get(OPT_BROADCAST) == IPv4Address("192.168.232.255").packed
    assert (
        reply.get(OPT_TFTP_SERVER) == b"192.168.232.1" and reply.get(OPT_BOOTFILE) == b"pxelinux.0"
    )
    assert reply.get(OPT_VENDOR) is None  # not a PXE client
    assert (out.send, out.commit, out.host) == (Send.BROADCAST, (), "pc1")


def test_request_selecting_acks_and_commits_lease(responder: Responder) -> None:
    handle(responder, request())
    out = handle(responder, selecting(PC1_MAC, PC1_IP))
    assert out.reply is not None and out.reply.message_type == DHCPACK
    assert out.reply.yiaddr == PC1_IP and out.reply.get(OPT_ROOT_PATH) == ROOT
    assert out.commit == (Lease(PC1_IP, PC1_MAC, NOW + 86400, NOW),)
    assert responder.leases.by_mac(PC1_MAC) == out.commit[0]


CLIENT_ID = (OPT_CLIENT_ID, b"\xff\x00\x01\x02\x03odd id")  # any bytes, kept as they are


def test_client_identifier_is_echoed_in_offer_ack_and_nak(responder: Responder) -> None:
    offer = handle(responder, request(PC1_MAC, DHCPDISCOVER, CLIENT_ID))
    ack = handle(responder, request(PC1_MAC, DHCPREQUEST, CLIENT_ID, (OPT_SERVER_ID, SERVER.packed),
                                    (OPT_REQUESTED_IP, PC1_IP.packed)))  # fmt: skip
    wrong = IPv4Address("192.168.232.50")
    nak = handle(responder, request(PC1_MAC, DHCPREQUEST, CLIENT_ID, (OPT_SERVER_ID, SERVER.packed),
                                    (OPT_REQUESTED_IP, wrong.packed)))  # fmt: skip
    for out, mtype in ((offer, DHCPOFFER), (ack, DHCPACK), (nak, DHCPNAK)):
        assert out.reply is not None and out.reply.message_type == mtype
        assert out.reply.get(OPT_CLIENT_ID) == CLIENT_ID[1]
    assert ack.reply is not None and ack.reply.yiaddr == PC1_IP  # still the MAC's reservation
    plain = handle(responder, request(PC1_MAC, DHCPDISCOVER))
    assert plain.reply is not None and plain.reply.get(OPT_CLIENT_ID) is None  # nothing invented


def test_client_identifier_survives_a_reply_at_its_size_limit(responder: Responder) -> None:
    """Options are left off a reply that would exceed 576 bytes; the echo never is."""
    long_id = (OPT_CLIENT_ID, bytes(range(200)))
    limit = (OPT_MAX_SIZE, (576).to_bytes(2, "big"))
    out = handle(responder, request(PC1_MAC, DHCPDISCOVER, long_id, limit))
    assert out.reply is not None
    assert decode_untrusted(encode(out.reply, out.max_size)).get(OPT_CLIENT_ID) == long_id[1]


def test_request_for_another_server_is_silent(responder: Responder) -> None:
    out = handle(responder, selecting(PC1_MAC, PC1_IP, IPv4Address("192.168.232.250")))
    assert out.reply is None and out.commit == ()


def test_request_for_wrong_address_is_nakked_by_broadcast(responder: Responder) -> None:
    out = handle(responder, selecting(PC1_MAC, IPv4Address("192.168.232.50")))
    assert out.reply is not None and out.reply.message_type == DHCPNAK
    assert out.reply.yiaddr == ZERO and out.send is Send.BROADCAST and out.commit == ()


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (PC1_IP, DHCPACK),
        (IPv4Address("192.168.232.77"), DHCPNAK),
        (IPv4Address("10.1.1.1"), DHCPNAK),
    ],
)
def test_init_reboot(responder: Responder, requested: IPv4Address, expected: int) -> None:
    """RFC 2131 §4.3.2 INIT-REBOOT: option 50 and no server id."""
    out = handle(responder, request(PC1_MAC, DHCPREQUEST, (OPT_REQUESTED_IP, requested.packed)))
    assert out.reply is not None and out.reply.message_type == expected


def test_renewing_is_unicast_to_ciaddr(responder: Responder) -> None:
    out = handle(responder, request(PC1_MAC, DHCPREQUEST, ciaddr=PC1_IP))
    assert out.reply is not None and out.reply.message_type == DHCPACK
    assert (out.send, out.destination, out.port) == (Send.UNICAST, PC1_IP, 68)
    assert out.reply.ciaddr == PC1_IP and len(out.commit) == 1


def test_relayed_discover_goes_to_relay_port_67(responder: Responder) -> None:
    relay = IPv4Address("192.168.232.2")
    out = handle(responder, request(PC1_MAC, DHCPDISCOVER, (OPT_RELAY_AGENT, b"\x01\x02ab"),
                                    giaddr=relay, hops=1))  # fmt: skip
    assert (out.send, out.destination, out.port) == (Send.RELAY, relay, 67)
    assert out.reply is not None and out.reply.giaddr == relay
    assert out.reply.options[-1] == (OPT_RELAY_AGENT, b"\x01\x02ab")  # RFC 3046 §2.2: last
    nak = handle(responder, replace(selecting(PC1_MAC, IPv4Address("192.168.232.9")), giaddr=relay))
    assert nak.reply is not None and nak.reply.message_type == DHCPNAK
    assert nak.send is Send.RELAY and nak.reply.flags & FLAG_BROADCAST  # RFC 2131 §4.1


def test_relay_from_unknown_subnet_or_wrong_link_is_ignored(responder: Responder) -> None:
    out = handle(responder, request(giaddr=IPv4Address("10.9.9.9")))
    assert out.reply is None and "no configured subnet" in out.reason
    other = Link("eth1", IPv4Address("10.5.0.1"), IPv4Network("10.5.0.0/24"))
    out = responder.handle(request(), link=other, now=NOW)
    assert out.reply is None and "asked from 10.5.0.0/24" in out.reason


def test_huge_relay_option_is_refused(responder: Responder) -> None:
    out = handle(responder, request(PC1_MAC, DHCPDISCOVER, (OPT_RELAY_AGENT, bytes(400)),
                                    giaddr=IPv4Address("192.168.232.2")))  # fmt: skip
    assert out.reply is None and "option 82 of 400 bytes" in out.reason


def test_max_size_relay_option_keeps_root_path(responder: Responder) -> None:
    """A legal 255-byte option 82 still leaves room for what boot needs."""
    out = handle(responder, request(PC1_MAC, DHCPDISCOVER, (OPT_RELAY_AGENT, bytes(255)),
                                    giaddr=IPv4Address("192.168.232.2")))  # fmt: skip
    assert out.reply is not None
    kept = decode_untrusted(encode(out.reply, out.max_size))
    assert kept.get(OPT_RELAY_AGENT) == bytes(255) and kept.get(OPT_SUBNET_MASK) is not None
    assert kept.file == b"pxelinux.0"


# -- options ------------------------------------------------------------------------------


def test_parameter_request_list_order_and_boot_essentials(responder: Responder) -> None:
    out = handle(responder, request(PC1_MAC, DHCPDISCOVER, (OPT_PARAM_REQUEST, bytes([15, 1]))))
    assert out.reply is not None
    codes = [c for c, _ in out.reply.options]
    # Root path, boot file and TFTP server although not requested; DNS, hostname not.
    assert codes == [53, 54, 51, 58, 59, 1, 3, 17, 66, 67, 15]


def test_max_message_size_is_honoured(tmp_path: Path) -> None:
    extras = 'options = { 224 = "hex:' + "ab" * 200 + '", 225 = "hex:' + "cd" * 200 + '" }'
    r = Responder(site(tmp_path, extra={"pc1": "[hosts.pc1.dhcp]\n" + extras}), LeaseTable())
    small = handle(r, request())
    big = handle(r, request(PC1_MAC, DHCPDISCOVER, (OPT_MAX_SIZE, (1500).to_bytes(2, "big"))))
    assert small.reply is not None and big.reply is not None
    assert len(encode(small.reply, small.max_size)) <= 548
    assert decode_untrusted(encode(small.reply, small.max_size)).get(225) is None
    assert decode_untrusted(encode(big.reply, big.max_size)).get(225) == bytes([0xCD]) * 200


def test_hostname_can_be_turned_off(tmp_path: Path) -> None:
    r = Responder(site(tmp_path, dhcp="hostname = false"), LeaseTable())
    out = handle(r, request())
    assert out.reply is not None and out.reply.get(OPT_HOSTNAME) is None
    assert out.reply.get(OPT_ROOT_PATH) == ROOT  # the full path: the kernel default never decides


def test_per_host_options_and_boot_file(tmp_path: Path) -> None:
    extra = '[hosts.pc1.dhcp]\nboot_file = "hosts/{name}-{ip}.efi"\noptions = { 42 = ["10.0.0.1"] }'
    r = Responder(site(tmp_path, extra={"pc1": extra}), LeaseTable())
    out = handle(r, request(PC1_MAC, DHCPDISCOVER, (OPT_CLIENT_ARCH, b"\0\x07")))
    assert out.reply is not None and out.reply.file == b"hosts/pc1-192.168.232.11.efi"
    assert out.reply.get(42) == IPv4Address("10.0.0.1").packed


@pytest.mark.parametrize(
    ("options", "file"),
    [
        ((), b"pxelinux.0"),
        (((OPT_CLIENT_ARCH, b"\0\0"),), b"pxelinux.0"),
        (((OPT_CLIENT_ARCH, b"\0\x06"),), b"grubnetia32.efi"),
        (((OPT_CLIENT_ARCH, b"\0\x07"),), b"grubnetx64.efi"),
        (((OPT_CLIENT_ARCH, b"\0\x09"),), b"grubnetx64.efi"),  # 9 is x64 too in practice
        (((OPT_CLIENT_ARCH, b"\0\x0a"),), b"grubnetarm.efi"),
        (((OPT_CLIENT_ARCH, b"\0\x0b"),), b"grubnetaa64.efi"),
        # iPXE speaks HTTP: its script comes from the HTTP front end (on by default, port 80).
        (((OPT_CLIENT_ARCH, b"\0\x07"), (OPT_USER_CLASS, b"iPXE")), IPXE_URL),
        (((OPT_CLIENT_ARCH, b"\0\0"), (OPT_USER_CLASS, b"\x04iPXE")), IPXE_URL),
    ],
)
def test_boot_file_by_architecture_and_ipxe(
    responder: Responder, options: tuple[tuple[int, bytes], ...], file: bytes
) -> None:
    out = handle(responder, request(PC1_MAC, DHCPDISCOVER, *options))
    assert out.reply is not None and out.reply.file == file
    assert out.reply.get(OPT_BOOTFILE) == file  # iPXE prints the name and needs it with 17


def test_pxe_client_gets_vendor_options(responder: Responder) -> None:
    out = handle(
        responder, request(PC1_MAC, DHCPDISCOVER, (OPT_VENDOR_CLASS, b"PXEClient:Arch:00000"))
    )
    assert out.reply is not None
    assert out.reply.get(OPT_VENDOR_CLASS) == b"PXEClient"
    assert out.reply.get(OPT_VENDOR) == bytes([6, 1, 8, 255])  # PXE 2.1: skip discovery


def test_boot_files_defaults_documented() -> None:
    assert BootFiles().efi64 == "grubnetx64.efi"


HTTP_BOOT = (OPT_VENDOR_CLASS, b"HTTPClient:Arch:00016:UNDI:003001"), (OPT_CLIENT_ARCH, b"\0\x10")


def test_uefi_http_boot_client_gets_httpclient_and_a_url(responder: Responder) -> None:
    """UEFI 2.9 §24.7.2: "HTTPClient" in option 60 of the offer, the boot file as a URI."""
    out = handle(responder, request(PC1_MAC, DHCPDISCOVER, *HTTP_BOOT))
    assert out.reply is not None
    assert out.reply.get(OPT_VENDOR_CLASS) == b"HTTPClient"
    assert out.reply.get(OPT_VENDOR) is None  # PXE's discovery control is not for it
    url = f"http://{SERVER}/snponly.efi".encode()  # iPXE: Debian's GRUB cannot HTTP Boot
    assert (out.reply.file, out.reply.get(OPT_BOOTFILE)) == (url, url)
    assert out.reply.get(OPT_ROOT_PATH) == ROOT


def test_http_port_and_tftp_urls(tmp_path: Path) -> None:
    extra = {"pc2": '[hosts.pc2.dhcp]\nboot_file = "tftp://{server}/{name}.ipxe"'}
    r = Responder(site(tmp_path, dhcp="[http]\nport = 8080", extra=extra), LeaseTable())
    ipxe = handle(r, request(PC1_MAC, DHCPDISCOVER, (OPT_USER_CLASS, b"iPXE")))
    assert ipxe.reply is not None and ipxe.reply.file == f"http://{SERVER}:8080/boot.ipxe".encode()
    http = handle(r, request(PC1_MAC, DHCPDISCOVER, *HTTP_BOOT))
    assert http.reply is not None
    assert http.reply.file == f"http://{SERVER}:8080/snponly.efi".encode()
    # A name that is already a URL is left alone, for iPXE and for HTTP Boot firmware alike.
    for options in ((OPT_USER_CLASS, b"iPXE"),), HTTP_BOOT:
        out = handle(r, request(PC2_MAC, DHCPDISCOVER, *options))
        assert out.reply is not None and out.reply.file == f"tftp://{SERVER}/pc2.ipxe".encode()
    # PXE firmware (TFTP only) still gets plain names.
    pxe = handle(r, request(PC1_MAC, DHCPDISCOVER, (OPT_CLIENT_ARCH, b"\0\x07")))
    assert pxe.reply is not None and pxe.reply.file == b"grubnetx64.efi"


def test_http_off_keeps_ipxe_on_tftp_and_gives_http_boot_nothing(tmp_path: Path) -> None:
    r = Responder(site(tmp_path, dhcp="[http]\nenabled = false"), LeaseTable())
    ipxe = handle(r, request(PC1_MAC, DHCPDISCOVER, (OPT_USER_CLASS, b"iPXE")))
    assert ipxe.reply is not None and ipxe.reply.file == b"boot.ipxe"
    http = handle(r, request(PC1_MAC, DHCPDISCOVER, *HTTP_BOOT))
    assert http.reply is not None and http.reply.yiaddr == PC1_IP  # an address, nothing to boot
    assert http.reply.file == b"" and http.reply.get(OPT_BOOTFILE) is None
    assert http.reply.get(OPT_VENDOR_CLASS) is None


def test_a_url_longer_than_the_file_field_goes_in_option_67_only(tmp_path: Path) -> None:
    name = "a" * 120 + ".efi"
    r = Responder(site(tmp_path, dhcp=f'[dhcp.boot_files]\nhttp_efi64 = "{name}"'), LeaseTable())
    out = handle(r, request(PC1_MAC, DHCPDISCOVER, *HTTP_BOOT))
    assert out.reply is not None and out.reply.file == b""
    assert out.reply.get(OPT_BOOTFILE) == f"http://{SERVER}/{name}".encode()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"{host}.efi"', r"names \{host\}; the fields are \{name\}, \{ip\}, \{mac\}, \{server\}"),
        ('"{name.efi"', r"write a literal brace"),
    ],
)
def test_boot_file_fields_are_checked(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        site(tmp_path, dhcp=f"[dhcp.boot_files]\nbios = {value}")


# -- BOOTP, strangers, pools --------------------------------------------------------------


def test_bootp_answered_for_reserved_host_only(responder: Responder) -> None:
    out = handle(responder, request(PC1_MAC, None))
    assert (
        out.reply is not None and out.reply.message_type is None and out.reply_name == "bootreply"
    )
    assert out.reply.yiaddr == PC1_IP and out.reply.get(OPT_ROOT_PATH) == ROOT
    assert out.reply.get(OPT_LEASE_TIME) is None and len(out.commit) == 1
    assert handle(responder, request(STRANGER, None)).reply is None


def test_unknown_mac_ignored_and_traced_once_a_minute(responder: Responder) -> None:
    first = handle(responder, request(STRANGER))
    again = handle(responder, request(STRANGER), now=NOW + 30)
    later = handle(responder, request(STRANGER), now=NOW + 61)
    assert first.reply is again.reply is later.reply is None
    assert (first.trace, again.trace, later.trace) == (True, False, True)
    assert first.reason == "unknown MAC"


@pytest.mark.parametrize("mtype", [DHCPDECLINE, DHCPRELEASE, DHCPINFORM, DHCPREQUEST])
def test_strangers_change_nothing(responder: Responder, mtype: int) -> None:
    """DECLINE/RELEASE/INFORM from strangers must not touch anyone's lease."""
    handle(responder, request())
    handle(responder, selecting(PC1_MAC, PC1_IP))
    before = list(responder.leases)
    out = handle(responder, request(STRANGER, mtype, (OPT_REQUESTED_IP, PC1_IP.packed),
                                    ciaddr=PC1_IP))  # fmt: skip
    assert out.reply is None and out.commit == ()
    assert list(responder.leases) == before


def test_release_by_owner_and_inform(responder: Responder) -> None:
    handle(responder, selecting(PC1_MAC, PC1_IP))
    inform = handle(responder, request(PC1_MAC, DHCPINFORM, ciaddr=PC1_IP))
    assert inform.reply is not None and inform.reply.message_type == DHCPACK
    assert inform.reply.yiaddr == ZERO and inform.reply.get(OPT_LEASE_TIME) is None
    assert (inform.send, inform.destination) == (Send.UNICAST, PC1_IP)
    out = handle(responder, request(PC1_MAC, DHCPRELEASE, ciaddr=PC1_IP), now=NOW + 5)
    assert out.reply is None and out.commit[0].expires == NOW + 5


def test_reserved_host_decline_is_reported_not_reassigned(responder: Responder) -> None:
    out = handle(responder, request(PC1_MAC, DHCPDECLINE, (OPT_REQUESTED_IP, PC1_IP.packed)))
    assert out.reply is None and out.commit == () and "in use by another machine" in out.reason


POOL = 'pool = ["192.168.232.10-192.168.232.13"]'  # overlaps pc1/pc2: those are skipped


def test_pool_gives_distinct_free_addresses(tmp_path: Path) -> None:
    r = Responder(site(tmp_path, dhcp=POOL), LeaseTable())
    got = []
    for i in range(3):
        mac = f"52:54:00:aa:00:{i:02x}"
        offer = handle(r, request(mac)).reply
        got.append(offer.yiaddr if offer else None)
        if offer is not None:
            assert handle(r, selecting(mac, offer.yiaddr)).reply is not None
    assert got == [IPv4Address("192.168.232.10"), IPv4Address("192.168.232.13"), None]
    # The same client asking again gets its own address back, not a new one.
    again = handle(r, request("52:54:00:aa:00:00"), now=NOW + 100).reply
    assert again is not None and again.yiaddr == IPv4Address("192.168.232.10")
    assert again.get(OPT_ROOT_PATH) is None and again.file == b""  # no tree for strangers


def test_pool_decline_parks_address(tmp_path: Path) -> None:
    r = Responder(site(tmp_path, dhcp=POOL), LeaseTable())
    mac = "52:54:00:aa:00:01"
    offer = handle(r, request(mac)).reply
    assert offer is not None
    out = handle(r, request(mac, DHCPDECLINE, (OPT_REQUESTED_IP, offer.yiaddr.packed)))
    assert out.commit and out.commit[0].mac == ""
    nxt = handle(r, request("52:54:00:aa:00:02")).reply
    assert nxt is not None and nxt.yiaddr != offer.yiaddr


def test_pool_outside_subnets_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"dhcp.pool: 10.0.0.1-10.0.0.5 is not inside"):
        Responder(site(tmp_path, dhcp='pool = ["10.0.0.1-10.0.0.5"]'), LeaseTable())


def test_root_path_too_long_is_a_config_error(tmp_path: Path) -> None:
    s = site(tmp_path)
    long = replace(s, config=replace(s.config, nfs_options="x" * 250))
    with pytest.raises(UserError, match="over the kernel's 255"):
        Responder(long, LeaseTable())


# -- proxyDHCP ----------------------------------------------------------------------------


def test_proxy_dhcp(tmp_path: Path) -> None:
    r = Responder(site(tmp_path, dhcp="proxy = true"), LeaseTable())
    pxe = (OPT_VENDOR_CLASS, b"PXEClient:Arch:00007")
    offer = handle(r, request(PC1_MAC, DHCPDISCOVER, pxe, (OPT_CLIENT_ARCH, b"\0\x07")))
    assert offer.reply is not None and offer.reply.message_type == DHCPOFFER
    assert offer.reply.yiaddr == ZERO and offer.reply.file == b"grubnetx64.efi"
    assert offer.reply.get(OPT_VENDOR_CLASS) == b"PXEClient" and offer.commit == ()
    assert handle(r, request(PC1_MAC, DHCPDISCOVER)).reply is None  # not PXE: not ours
    assert handle(r, request(STRANGER, DHCPDISCOVER, pxe)).reply is None
    # Port 4011: the client unicasts a REQUEST from its new address; the ACK goes back there.
    ack = handle(r, request(PC1_MAC, DHCPREQUEST, pxe, ciaddr=PC1_IP), pxe_port=True,
                 source=(PC1_IP, 4011))  # fmt: skip
    assert ack.reply is not None and ack.reply.message_type == DHCPACK
    assert (ack.send, ack.destination, ack.port) == (Send.UNICAST, PC1_IP, 4011)
    echoed = handle(r, request(PC1_MAC, DHCPDISCOVER, pxe, CLIENT_ID))
    assert echoed.reply is not None and echoed.reply.get(OPT_CLIENT_ID) == CLIENT_ID[1]


# -- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"PC-1.Lab", "pc-1.lab"),
        (b"!!!", None),  # sanitises to nothing
        (b"---.\x00\xff", None),
        (b"a" * 70, "a" * 63),  # labels over 63 bytes are cut
        (b"ok..x_y", "ok.xy"),
    ],
)
def test_sanitize_hostname(raw: bytes, name: str | None) -> None:
    assert sanitize_hostname(raw) == name
