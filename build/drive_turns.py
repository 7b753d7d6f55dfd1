#!/usr/bin/env python3
"""Drives a gateway for build/symbol-order.sh: closed-loop echo turns over a raw WebSocket,
then a chat.history and a GET /health. Usage: drive_turns.py TROUPE_HOME TURNS."""
import base64, json, os, socket, struct, sys, time

home, turns = sys.argv[1], int(sys.argv[2])
sessions = 1
for _ in range(600):
    try:
        port = int(open(f"{home}/run/troupe.port").read().strip())
        token = open(f"{home}/token").read().strip()
        break
    except Exception:
        time.sleep(0.1)


class Ws:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def send(self, obj):
        data = json.dumps(obj).encode()
        n = len(data)
        hdr = bytes([0x81])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def recv(self):
        self._need(2)
        b1 = self.buf[1] & 0x7F
        off = 2
        if b1 == 126:
            self._need(4); b1 = struct.unpack(">H", self.buf[2:4])[0]; off = 4
        elif b1 == 127:
            self._need(10); b1 = struct.unpack(">Q", self.buf[2:10])[0]; off = 10
        self._need(off + b1)
        data = self.buf[off:off + b1]
        self.buf = self.buf[off + b1:]
        return json.loads(data)


ws = Ws(port)
ch = ws.recv()
assert ch["event"] == "connect.challenge", ch
ws.send({"type": "req", "id": "c1", "method": "connect", "params": {
    "minProtocol": 3, "maxProtocol": 4,
    "client": {"id": "bench", "version": "0.1.0", "platform": "linux", "mode": "cli"},
    "role": "operator", "scopes": ["operator.admin"], "auth": {"token": token}}})
while True:
    f = ws.recv()
    if f.get("id") == "c1":
        assert f["ok"], f
        break
pid = os.getpid()
start = time.time()
lat = []
for i in range(turns):
    t0 = time.time()
    for s in range(sessions):
        ws.send({"type": "req", "id": f"r{i}-{s}", "method": "chat.send", "params": {
            "sessionKey": f"agent:main:drive:dm:{s}", "message": f"hello number {i} of the driver",
            "idempotencyKey": f"drive-{pid}-{i}-{s}"}})
    done = 0
    while done < sessions:
        f = ws.recv()
        if f.get("type") == "event" and f.get("event") == "chat" and f["payload"]["state"] in ("final", "error", "aborted"):
            assert f["payload"]["state"] == "final", f
            done += 1
    lat.append(time.time() - t0)
el = time.time() - start
lat.sort()
print(f"{turns * sessions} turns in {el:.2f}s: {turns * sessions / el:.0f}/s p50 {lat[len(lat)//2]*1e6:.0f}us p99 {lat[int(len(lat)*0.99)]*1e6:.0f}us")
ws.send({"type": "req", "id": "h1", "method": "chat.history", "params": {
    "sessionKey": "agent:main:drive:dm:0", "limit": 20}})
while ws.recv().get("id") != "h1":
    pass
http = socket.create_connection(("127.0.0.1", port))
http.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
while http.recv(65536):
    pass
