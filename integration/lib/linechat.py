"""Line-echo "pods" and a held-open client, for draining tests.

    linechat.py serve NAME PORT
        answers each line with NAME; a line "bye" closes the connection with
        a reset (SO_LINGER 0), so IPVS forgets it in seconds instead of
        keeping it in TIME_WAIT for two minutes.
    linechat.py hold HOST PORT STATUS STOP
        one connection, a line every 0.2 s until the file STOP exists; the
        first answer (which pod it reached) goes to STATUS; exits 1 if an
        answer is ever missing or comes from another pod, else prints the
        number of answers.
    linechat.py once HOST PORT
        one fresh connection, one line: prints the answer.
"""
import os
import socket
import struct
import sys
import threading
import time


def serve(name, port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)

    def talk(conn):
        f = conn.makefile("rwb")
        for line in f:
            if line.strip() == b"bye":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
            f.write(name.encode() + b"\n")
            f.flush()
        conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=talk, args=(conn,), daemon=True).start()


def hold(host, port, status, stop):
    s = socket.create_connection((host, port), timeout=10)
    f = s.makefile("rwb")
    first, n = None, 0
    while not os.path.exists(stop):
        f.write(b"ping\n")
        f.flush()
        answer = f.readline().strip().decode()
        if not answer:
            print(f"no answer after {n}", file=sys.stderr)
            sys.exit(1)
        if first is None:
            first = answer
            with open(status, "w") as out:
                out.write(answer + "\n")
        elif answer != first:
            print(f"answer {n} came from {answer}, not {first}", file=sys.stderr)
            sys.exit(1)
        n += 1
        time.sleep(0.2)
    f.write(b"bye\n")
    f.flush()
    s.close()
    print(n)


def once(host, port):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"ping\n")
    print(s.makefile("rb").readline().strip().decode())
    s.sendall(b"bye\n")
    s.close()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(args[0], int(args[1]))
    elif cmd == "hold":
        hold(args[0], int(args[1]), args[2], args[3])
    else:
        once(args[0], int(args[1]))
