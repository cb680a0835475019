"""UDP "pods" that answer with their name, and a client with a fixed source port.

    udpname.py serve NAME PORT
        answers every datagram with NAME.
    udpname.py ask HOST PORT SRCPORT
        one datagram from SRCPORT (the same port every time, so the kernel
        keeps using one conntrack entry, as a DNS client reusing its socket
        does); prints the answer, or "no-answer" after 2 s.
"""
import socket
import sys


def serve(name, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        _, peer = s.recvfrom(2048)
        s.sendto(name.encode(), peer)


def ask(host, port, src_port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", src_port))
    s.settimeout(2)
    s.sendto(b"who", (host, port))
    try:
        print(s.recvfrom(2048)[0].decode())
    except socket.timeout:
        print("no-answer")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(args[0], int(args[1]))
    else:
        ask(args[0], int(args[1]), int(args[2]))
