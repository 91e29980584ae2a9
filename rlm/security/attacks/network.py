"""Network attacks: interfaces, host addresses, the internet, DNS, raw and Unix sockets."""

from __future__ import annotations

from rlm.sandbox.execution import Execution
from rlm.security.model import _indent, attack
from rlm.security.runner import CheckContext
from rlm.security.verify import _missing, _no_canary_hit, refused, report_of


# --------------------------------------------------------------------------- network
def _verify_interfaces(execution: Execution, ctx: CheckContext) -> tuple[bool, str]:
    data = report_of(execution)
    if data is None:
        return _missing(execution)
    names = sorted(set(data["ifaces"]) | set(data["sysfs"]))
    routes = data["routes"]
    return names == ["lo"] and not routes, f"interfaces: {', '.join(names)}; routes: {len(routes)}"


attack("net_interfaces", "network", "only the loopback interface, no route", r"""
    import os, socket
    routes = [l for l in open("/proc/net/route").read().splitlines()[1:] if l.strip()]
    report(ifaces=[n for _, n in socket.if_nameindex()], sysfs=sorted(os.listdir("/sys/class/net")), routes=routes)
""", _verify_interfaces)

_CONNECT = _indent(r"""
import socket
def connect(family, address, kind=socket.SOCK_STREAM):
    with socket.socket(family, kind) as s:
        s.settimeout(3)
        s.connect(address)
        if kind == socket.SOCK_STREAM:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
""")

attack("net_host_loopback", "network", "refused: 127.0.0.1 is the sandbox's own; host canary counts 0",
       _CONNECT + r"""
    import urllib.request
    port = PROBE["http_port"]
    out = {
        "tcp 127.0.0.1": attempt(connect, socket.AF_INET, ("127.0.0.1", port)),
        "tcp [::1]": attempt(connect, socket.AF_INET6, ("::1", port)),
        "tcp localhost": attempt(connect, socket.AF_INET, ("localhost", port)),
        "urllib": attempt(urllib.request.urlopen, f"http://127.0.0.1:{port}/", timeout=3),
        "any-port canary on 127.0.0.1": attempt(connect, socket.AF_INET, ("127.0.0.1", PROBE["any_port"])),
    }
    report(out=out)
""", refused("out", extra=_no_canary_hit))

attack("net_host_addresses", "network", "every host address unreachable (no route); canary counts 0",
       _CONNECT + r"""
    addrs = sorted(set(PROBE["host_addrs"]) | {"172.17.0.1", "10.0.2.2", "192.168.65.2"})
    out = {a: attempt(connect, socket.AF_INET, (a, PROBE["any_port"])) for a in addrs}
    out["host.docker.internal"] = attempt(connect, socket.AF_INET, ("host.docker.internal", PROBE["any_port"]))
    report(out=out)
""", refused("out", extra=_no_canary_hit))

attack("net_internet", "network", "no route to the internet (TCP, UDP, IPv6)", _CONNECT + r"""
    out = {
        "tcp 1.1.1.1:443": attempt(connect, socket.AF_INET, ("1.1.1.1", 443)),
        "tcp 8.8.8.8:53": attempt(connect, socket.AF_INET, ("8.8.8.8", 53)),
        "udp 8.8.8.8:53": attempt(connect, socket.AF_INET, ("8.8.8.8", 53), socket.SOCK_DGRAM),
        "tcp [2606:4700::1111]:443": attempt(connect, socket.AF_INET6, ("2606:4700::1111", 443)),
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        out["udp sendto 9.9.9.9"] = attempt(u.sendto, b"x", ("9.9.9.9", 53))
    report(out=out)
""", refused("out"))

attack("net_dns", "network", "no name resolution; the resolver is unreachable", _CONNECT + r"""
    out = {name: attempt(socket.getaddrinfo, name, 443) for name in ("example.com", "pypi.org", "host.docker.internal")}
    resolvers = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")]
    for r in resolvers:
        family = socket.AF_INET6 if ":" in r else socket.AF_INET
        out["udp to resolver " + r] = attempt(connect, family, (r, 53), socket.SOCK_DGRAM)
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            out["sendto resolver " + r] = attempt(u.sendto, b"\x00" * 12, (r, 53))
    report(out=out)
""", refused("out"))

attack("net_raw_sockets", "network", "raw and packet sockets refused (no CAP_NET_RAW); ping has no route", r"""
    import socket
    out = {
        "AF_INET SOCK_RAW icmp": attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "AF_INET SOCK_RAW tcp": attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
        "AF_INET6 SOCK_RAW": attempt(socket.socket, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
        "AF_PACKET SOCK_RAW": attempt(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
        "AF_PACKET SOCK_DGRAM": attempt(socket.socket, socket.AF_PACKET, socket.SOCK_DGRAM, 0x0300),
    }
    def ping():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as s:
            s.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", ("8.8.8.8", 0))
    out["icmp datagram ping 8.8.8.8"] = attempt(ping)
    report(out=out)
""", refused("out"))

attack("net_abstract_unix", "network", "the host's abstract Unix sockets are out of reach; canary counts 0", r"""
    import socket
    def connect(name):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(name)
    out = {"host abstract canary": attempt(connect, "\0" + PROBE["abstract_name"]),
           "containerd shim (classic escape)": attempt(connect, "\0/containerd-shim/moby.sock"),
           "host path Unix canary": attempt(connect, PROBE["unix_socket"]),
           "docker.sock by path": attempt(connect, "/var/run/docker.sock")}
    report(out=out)
""", refused("out", extra=_no_canary_hit))

attack("net_socket_families", "network",
       "only AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK sockets: AF_VSOCK and the rest refused", r"""
    import ctypes, os, socket
    libc = ctypes.CDLL(None, use_errno=True)
    AF_VSOCK = 40
    def vsock(address, listen=False):
        with socket.socket(AF_VSOCK, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            if listen:
                s.bind(address)
                s.listen(1)
            else:
                s.connect(address)
    def raw_socket(domain, kind=1):      # socket(2) itself, with the domain as a full 64-bit register
        libc.syscall.restype = ctypes.c_long
        fd = libc.syscall(ctypes.c_long(41), ctypes.c_ulong(domain), ctypes.c_long(kind), ctypes.c_long(0))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        os.close(fd)
    def pair(domain):
        fds = (ctypes.c_int * 2)()
        if libc.socketpair(domain, 1, 0, fds) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        os.close(fds[0]); os.close(fds[1])
    out = {
        "AF_VSOCK bind+listen port 5000": attempt(vsock, (0xFFFFFFFF, 5000), True),
        "AF_VSOCK connect CID 1 (local)": attempt(vsock, (1, 22)),
        "AF_VSOCK connect CID 2 (host)": attempt(vsock, (2, 22)),
        "AF_VSOCK via syscall(2)": attempt(raw_socket, AF_VSOCK),
        "AF_VSOCK with high bits set": attempt(raw_socket, (1 << 32) | AF_VSOCK),
        "socketpair AF_VSOCK": attempt(pair, AF_VSOCK),
    }
    for name, family in (("AF_KEY", 15), ("AF_RDS", 21), ("AF_CAN", 29), ("AF_TIPC", 30), ("AF_BLUETOOTH", 31),
                         ("AF_ALG", 38), ("AF_XDP", 44), ("AF_APPLETALK", 5), ("AF_X25", 9), ("AF_SMC", 43)):
        out[name] = attempt(raw_socket, family)
    report(out=out)
""", refused("out"))
