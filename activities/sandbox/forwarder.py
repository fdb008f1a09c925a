"""Runs inside a sealed sandbox with an egress allowlist: relays 127.0.0.1:PORT to the proxy.

    python3 -I -S forwarder.py PORT SOCKET -- COMMAND [ARGS...]

Listens on the sandbox's own loopback, relays every connection to the worker's proxy through
the unix socket bound at SOCKET, runs COMMAND and exits with its status (a command killed by a
signal is re-raised as that signal). Standard library only: it is run by the host's system
Python, not the worker's environment, which the sandbox cannot see.
"""

import os
import signal
import socket
import subprocess
import sys
import threading


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _relay(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _serve(listener: socket.socket, path: str) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, path), daemon=True).start()


def main() -> int:
    port, path, dashes, *command = sys.argv[1:]
    if dashes != "--" or not command:
        print("usage: forwarder.py PORT SOCKET -- COMMAND...", file=sys.stderr)
        return 2
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(64)
    threading.Thread(target=_serve, args=(listener, path), daemon=True).start()
    try:
        code = subprocess.call(command)
    except FileNotFoundError:
        print(f"{command[0]}: command not found", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"{command[0]}: permission denied", file=sys.stderr)
        return 126
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main())
