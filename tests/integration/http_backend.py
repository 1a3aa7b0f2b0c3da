#!/usr/bin/env python3
"""A real HTTP backend for the tests of wsgw's outgoing HTTP (webhook sink, connect authorizer).

Prints "PORT <n>" on its first stdout line once it listens on 127.0.0.1. Every request to a
path other than /_* is recorded and answered as that path's mode says (default: 200, "{}").
  POST /_mode      {"path": "/events", "status": 503, "delay_ms": 0, "body": "..."}
  GET  /_received  the recorded requests as a JSON list: method, path, headers (names in lower
                   case), body, status (what was answered), signature_ok (with --secret: the
                   Standard Webhooks signature checked here with Python's own HMAC; else null)
  POST /_clear     forget the recorded requests
With --tls CERT KEY it serves HTTPS. With --no-record (for bench/http-out-bench) nothing is
recorded or checked: every request is answered at once as its mode says.
"""
import argparse
import base64
import hashlib
import hmac
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
modes = {}
received = []
key = None
recording = True


def check_signature(headers, body):
    if key is None:
        return None
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sig = headers.get("webhook-signature")
    if not msg_id or not ts or not sig:
        return False
    if abs(time.time() - int(ts)) > 300:
        return False
    content = msg_id.encode() + b"." + ts.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(s.startswith("v1,") and hmac.compare_digest(s[3:], expected) for s in sig.split(" "))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        body = self.read_body()
        path = self.path.split("?")[0]
        if path == "/_mode":
            m = json.loads(body)
            with lock:
                modes[m["path"]] = m
            return self.answer(200, "{}")
        if path == "/_received":
            with lock:
                data = json.dumps(received)
            return self.answer(200, data)
        if path == "/_clear":
            with lock:
                received.clear()
            return self.answer(200, "{}")
        with lock:
            mode = dict(modes.get(path, {}))
        status = int(mode.get("status", 200))
        delay = min(int(mode.get("delay_ms", 0)), 60000) / 1000.0
        if delay:
            time.sleep(delay)
        if not recording:
            return self.answer(status, mode.get("body", "{}"))
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {"method": self.command, "path": self.path, "headers": headers,
                  "body": body.decode("utf-8", "replace"), "status": status,
                  "signature_ok": check_signature(headers, body)}
        with lock:
            received.append(record)
        self.answer(status, mode.get("body", "{}"))

    do_GET = handle_any
    do_POST = handle_any


def main():
    global key, recording
    p = argparse.ArgumentParser()
    p.add_argument("--secret", default="")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with this certificate and key")
    args = p.parse_args()
    recording = not args.no_record
    if args.secret:
        s = args.secret[len("whsec_"):] if args.secret.startswith("whsec_") else args.secret
        key = base64.b64decode(s)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls[0], args.tls[1])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
