"""An HTTPS proxy that puts the GCS emulator where TensorFlow looks for Cloud Storage.

TensorFlow's built-in ``gs://`` filesystem has its endpoints compiled in
(``https://www.googleapis.com/storage/v1/``, ``https://storage.googleapis.com/``) and no emulator
setting, but it goes through libcurl, which honours ``https_proxy`` and ``CURL_CA_BUNDLE``. This
proxy answers ``CONNECT`` for those hosts, terminates TLS with a certificate from its own test CA
and forwards each request, unchanged, to the emulator over plain HTTP on 127.0.0.1. Anything else
is refused, so nothing leaves the machine. ``env()`` is what a process (or container on the host
network) needs: the proxy, the CA bundle and a fixed token so TensorFlow asks no metadata server.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import os
import socketserver
import ssl
import tempfile
import threading
import urllib.parse

HOSTS = ("www.googleapis.com", "storage.googleapis.com")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
              "proxy-authorization", "proxy-authenticate", "trailer"}


def _test_ca_and_leaf(directory: str) -> tuple[str, str, str]:
    """(ca.pem, leaf.pem, leaf.key) for HOSTS, made fresh (valid one day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, signer, *, ca: bool, sans=()):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in sans]),
                                            critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bertja test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, ca=True)
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]), ca_name, leaf_key, ca_key,
                ca=False, sans=HOSTS)
    paths = [os.path.join(directory, n) for n in ("ca.pem", "leaf.pem", "leaf.key")]
    for path, data in zip(paths, (ca.public_bytes(serialization.Encoding.PEM),
                                  leaf.public_bytes(serialization.Encoding.PEM),
                                  leaf_key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))):
        with open(path, "wb") as f:
            f.write(data)
    os.chmod(directory, 0o755)
    os.chmod(paths[0], 0o644)
    return paths[0], paths[1], paths[2]


class GoogleApisFront:
    """``with GoogleApisFront(emulator) as front: subprocess.run(..., env={**os.environ, **front.env()})``."""

    def __init__(self, emulator: str):
        target = urllib.parse.urlsplit(emulator)
        self.emulator = (target.hostname, target.port)
        self.dir = tempfile.mkdtemp(prefix="googleapis-front-")
        self.ca, leaf, key = _test_ca_and_leaf(self.dir)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(leaf, key)
        self.requests: list[tuple[str, str, str, int]] = []  # (host, method, path, status)
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    def env(self, ca_path: str | None = None) -> dict[str, str]:
        """Environment for TensorFlow (``ca_path``: where a container sees ``self.ca``)."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {"https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "127.0.0.1,localhost",
                "CURL_CA_BUNDLE": ca_path or self.ca, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
                "NO_GCE_CHECK": "true"}

    def __enter__(self) -> GoogleApisFront:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self):
        front = self

        class Forward(http.server.BaseHTTPRequestHandler):
            """One request inside the tunnel, passed to the emulator as is."""
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = self.headers.get("Content-Length")
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while (size := int(self.rfile.readline().split(b";")[0], 16)):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(length)) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                path = self.path
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
                if not body and query.get("uploadType") == ["media"]:
                    # TensorFlow's directory markers are empty media uploads, which the emulator
                    # cannot take (it reads no body as None): the same object as a multipart upload.
                    path = path.replace("uploadType=media", "uploadType=multipart")
                    boundary = "bertja-empty-object"
                    body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                            f'{{"name": "{query["name"][0]}"}}\r\n--{boundary}\r\n'
                            f"Content-Type: application/octet-stream\r\n\r\n\r\n--{boundary}--\r\n").encode()
                    headers["Content-Type"] = f'multipart/related; boundary="{boundary}"'
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(*front.emulator, timeout=120)
                upstream.request(self.command, path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                front.requests.append((self.server_host, self.command, self.path, response.status))
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in HOP_BY_HOP | {"content-length"}:
                        # resumable upload sessions point back at the emulator: keep them on this host
                        self.send_header(k, v.replace(f"http://{front.emulator[0]}:{front.emulator[1]}",
                                                      f"https://{self.server_host}"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

        class Proxy(socketserver.StreamRequestHandler):
            """``CONNECT host:443`` for HOSTS, then TLS with the test CA's certificate."""

            def handle(self):
                line = self.rfile.readline().decode("latin-1").split()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                host = line[1].rsplit(":", 1)[0] if len(line) == 3 and line[0] == "CONNECT" else None
                if host not in HOSTS:
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                try:
                    tunnel = front.tls.wrap_socket(self.connection, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                handler = Forward.__new__(Forward)
                handler.server_host = host
                try:
                    Forward.__init__(handler, tunnel, self.client_address, self.server)
                except OSError:  # the client went away (a preempted VM's trainer, killed mid-request)
                    pass

        return Proxy
