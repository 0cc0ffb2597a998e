"""The suite's client load opens a new connection per request: kube-proxy routes per connection, so a
reused connection would pin a client to one pod and hide a canary's traffic share."""

import http.server
import json
import threading

from tests.support.load import VERSION_HEADER, Load


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # would keep connections open if the client let it
    peers: set = set()

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        type(self).peers.add(self.client_address)
        body = json.dumps({"predictions": [1]}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header(VERSION_HEADER, "3")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_every_request_arrives_on_a_connection_of_its_own():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Load(f"http://127.0.0.1:{server.server_port}/invocations", {"inputs": [[1]]}, workers=2) as load:
            while len(load.answers) < 40:
                threading.Event().wait(0.01)
    finally:
        server.shutdown()
    assert not load.failures()
    assert {answer.version for answer in load.answers} == {"3"}
    assert len(_CountingHandler.peers) == len(load.answers)
