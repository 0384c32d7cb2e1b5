"""One-request PUTs (`direct_puts.DirectPuts`: the CRT's SigV4 signer, http.client) against the moto server over HTTP: they store
what boto3's put_object stores, sign as botocore signs for S3, and fail as boto3 fails. Their behaviour under faults
(retries counted, duplicates removed, faults reaching the caller without retries) is in
`faults/test_s3_faults.py`, for both transports."""

import base64
import dataclasses
import datetime as dt
import hashlib
import time
import uuid

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devtools.fault_proxy import FaultPlan, FaultProxy
from t2m_pipeline.storage import direct_puts, layout
from t2m_pipeline.storage.direct_puts import DirectPuts
from t2m_pipeline.storage.errors import BucketNotFoundError, CredentialsMissingError, EndpointUnreachableError
from t2m_pipeline.storage.s3 import WRITE_ID_METADATA, ObjectOwner, S3Storage

# What differs between two writes of the same bytes by design: when, and which write
PER_WRITE = {"uploaded-at", WRITE_ID_METADATA}
ODD_KEYS = ["a b/ü+%x?y#z", "sp  ace/&=;,$@!'()*", "tilde~/~x", "dots/../x/./y", "plus+/equals=="]


@pytest.fixture
def direct_storage(settings, engine, buckets):
    return S3Storage(settings, engine, single_puts=DirectPuts(settings))


def _head(storage: S3Storage, bucket: str, key: str, version_id: str) -> dict:
    head = storage.client.head_object(Bucket=bucket, Key=key, VersionId=version_id, ChecksumMode="ENABLED")
    return {
        "ContentType": head["ContentType"], "ContentLength": head["ContentLength"], "SSE": head["ServerSideEncryption"],
        "ChecksumSHA256": head["ChecksumSHA256"],
        "Metadata": {k: v for k, v in head["Metadata"].items() if k not in PER_WRITE},
    }


def test_a_direct_put_stores_what_boto3_put_object_stores(storage, direct_storage, buckets, make_user):
    user_id, _ = make_user()
    owner = ObjectOwner(user_id, "plan")
    data = b"<SCENE_OUTLINE>hello</SCENE_OUTLINE>"
    heads = {}
    for name, store in (("boto3", storage), ("direct", direct_storage)):
        key = layout.job_plan_key(user_id, uuid.uuid4(), f"{name}.txt")
        stored = store.put_bytes(buckets["code"], key, data, owner=owner, content_type="text/plain", original_name="Outline ü.txt")
        [listed] = store.client.list_object_versions(Bucket=buckets["code"], Prefix=key)["Versions"]
        assert stored.version_id == listed["VersionId"] and store.get_bytes(buckets["code"], key) == data
        heads[name] = _head(store, buckets["code"], key, stored.version_id)
    assert heads["direct"] == heads["boto3"]
    assert heads["direct"]["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.mark.parametrize("key", ODD_KEYS)
def test_keys_with_any_character_land_under_their_own_name(direct_storage, buckets, make_user, key):
    user_id, _ = make_user()
    data = key.encode() * 3
    stored = direct_storage.put_bytes(buckets["temp"], key, data, owner=ObjectOwner(user_id, "temp"), content_type="text/plain")
    assert direct_storage.get_bytes(buckets["temp"], key, stored.version_id) == data
    assert [v["Key"] for v in direct_storage.client.list_object_versions(Bucket=buckets["temp"], Prefix=key)["Versions"]] == [key]


@pytest.mark.parametrize("key", ["plain/key.mp4", *ODD_KEYS])
@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:9000"], ids=["aws", "local"])
def test_the_signature_is_botocores_s3_sigv4_for_the_same_request(settings, monkeypatch, key, endpoint):
    """Signed at one instant with one key pair, the CRT's Authorization header equals botocore's S3SigV4Auth's (the
    signer boto3 uses against AWS): S3 accepts one exactly when it accepts the other. moto checks no signature, so
    this is the proof."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    when = dt.datetime(2026, 12, 6, 8, 0, 0, tzinfo=dt.timezone.utc)
    puts = DirectPuts(dataclasses.replace(settings, endpoint_url=endpoint, region="eu-west-1"))
    headers = {"Content-Type": "video/mp4", "x-amz-meta-user-id": "u1", "x-amz-checksum-sha256": "abc=",
               "x-amz-server-side-encryption": "AES256"}
    monkeypatch.setattr(direct_puts, "_now", lambda: when)
    host, path = puts._where("bucket-a", key)  # noqa: SLF001
    crt = dict(puts.signed_request("bucket-a", key, 3, headers).headers)

    scheme = "https" if endpoint is None else "http"
    ours = AWSRequest("PUT", f"{scheme}://{host}{path}", headers={"Content-Length": "3", **headers}, data=b"abc")
    signer = S3SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "s3", "eu-west-1")
    monkeypatch.setattr(signer, "_should_sha256_sign_payload", lambda request: False)  # UNSIGNED-PAYLOAD, as ours

    class Frozen(dt.datetime):
        @classmethod
        def utcnow(cls):
            return when.replace(tzinfo=None)

        @classmethod
        def now(cls, tz=None):
            return when

    monkeypatch.setattr("botocore.auth.datetime.datetime", Frozen)
    signer.add_auth(ours)
    assert crt["x-amz-content-sha256"] == ours.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert crt["Authorization"] == ours.headers["Authorization"]


def test_each_request_is_signed_at_its_own_time(settings, monkeypatch):
    """S3 refuses a signature more than 15 minutes from its clock: a long migration's requests are each signed when
    sent, not when the client was made."""
    puts = DirectPuts(settings)
    for minutes in (0, 20, 24 * 60):
        when = dt.datetime(2026, 12, 6, 23, 50, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=minutes)
        monkeypatch.setattr(direct_puts, "_now", lambda when=when: when)
        headers = dict(puts.signed_request("bucket-a", "k", 1, {}).headers)
        assert headers["X-Amz-Date"] == when.strftime("%Y%m%dT%H%M%SZ")
        assert f"/{when:%Y%m%d}/{settings.region}/s3/aws4_request" in headers["Authorization"]


def test_errors_are_storage_errors_and_only_transient_ones_are_retried(settings, engine, buckets, make_user, monkeypatch, tmp_path):
    user_id, _ = make_user()
    owner = ObjectOwner(user_id, "temp")
    with FaultProxy(settings.endpoint_url, FaultPlan(rate=0.0)) as proxy:
        through = dataclasses.replace(settings, endpoint_url=proxy.url)
        store = S3Storage(through, None, single_puts=DirectPuts(through))
        with pytest.raises(BucketNotFoundError, match="does not exist"):
            store.put_bytes("no-such-bucket-here", "k", b"x", owner=owner, content_type="text/plain")
        assert proxy.stats.requests["PutObject"] == 1  # not retried
    closed = dataclasses.replace(settings, endpoint_url="http://127.0.0.1:9", s3_max_attempts=2)  # nothing listens
    with pytest.raises(EndpointUnreachableError, match="unreachable"):
        S3Storage(closed, None, single_puts=DirectPuts(closed)).put_bytes(buckets["temp"], "k", b"x", owner=owner, content_type="text/plain")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialsMissingError, match="no AWS credentials"):
        S3Storage(settings, None, single_puts=DirectPuts(settings)).put_bytes(buckets["temp"], "k", b"x", owner=owner, content_type="text/plain")


@pytest.fixture
def tls_endpoint(settings, tmp_path):
    """The moto server behind an HTTPS reverse proxy of the test's own, its certificate self-signed for 127.0.0.1:
    (the endpoint's URL, the certificate's path)."""
    import http.client
    import ssl
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    target = urlsplit(settings.endpoint_url)

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            upstream.request("PUT", self.path, body, dict(self.headers))
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("connection", "content-length", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            upstream.close()

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a client that refuses the certificate ends its connection mid-handshake

    server = Server(("127.0.0.1", 0), Forward)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # the handshake in each connection's own thread: a client that refused the certificate and lingers holds no one up
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", str(cert)
    server.shutdown()


def test_over_tls_the_endpoint_certificate_is_verified(settings, buckets, make_user, tls_endpoint, monkeypatch):
    """TLS, as against AWS: a certificate no trusted CA vouches for is refused (fail closed, nothing written);
    trusted through the CA bundle boto3 would use (AWS_CA_BUNDLE), the object lands."""
    url, cert = tls_endpoint
    user_id, _ = make_user()
    owner, key, data = ObjectOwner(user_id, "temp"), f"tls/{uuid.uuid4()}.txt", b"over TLS"
    over_tls = dataclasses.replace(settings, endpoint_url=url, s3_max_attempts=1)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    with pytest.raises(EndpointUnreachableError):
        S3Storage(over_tls, None, single_puts=DirectPuts(over_tls)).put_bytes(buckets["temp"], key, data, owner=owner, content_type="text/plain")
    plain = S3Storage(settings)
    assert plain.client.list_object_versions(Bucket=buckets["temp"], Prefix=key).get("Versions", []) == []

    monkeypatch.setenv("AWS_CA_BUNDLE", cert)
    puts = DirectPuts(over_tls)
    stored = S3Storage(over_tls, None, single_puts=puts).put_bytes(buckets["temp"], key, data, owner=owner, content_type="text/plain")
    assert plain.get_bytes(buckets["temp"], key, stored.version_id) == data
    # this proxy keeps connections alive (moto closes each): the next PUT goes over the same TLS connection
    [connection] = puts._local.connections.values()  # noqa: SLF001
    again = S3Storage(over_tls, None, single_puts=puts).put_bytes(buckets["temp"], key, b"again", owner=owner, content_type="text/plain")
    assert puts._local.connections[next(iter(puts._local.connections))] is connection  # noqa: SLF001
    assert plain.get_bytes(buckets["temp"], key, again.version_id) == b"again"


@pytest.mark.parametrize("sent", [b"12345", b"1234567890ab"], ids=["short", "long"])
def test_a_body_of_another_length_than_announced_is_refused_not_retried_and_stores_nothing(settings, buckets, sent):
    """A file that changed between its hash and its upload: the request never completes, so S3 stores nothing, and
    no retry is made (the same bytes would fail again). Control: the right length lands."""
    import io

    from botocore.exceptions import HTTPClientError

    puts, key = DirectPuts(settings), f"length/{uuid.uuid4()}"
    with pytest.raises(HTTPClientError, match="announced"):
        puts.put(buckets["temp"], key, io.BytesIO(sent), 10, {"Content-Type": "text/plain"})
    with pytest.raises(HTTPClientError, match="announced"):
        puts.put(buckets["temp"], key, sent, 10, {"Content-Type": "text/plain"})
    plain = S3Storage(settings)
    assert plain.client.list_object_versions(Bucket=buckets["temp"], Prefix=key).get("Versions", []) == []
    landed = puts.put(buckets["temp"], key, io.BytesIO(b"0123456789"), 10, {"Content-Type": "text/plain"})
    assert landed.attempts == 1 and plain.get_bytes(buckets["temp"], key, landed.version_id) == b"0123456789"


def _raw_server(handle):
    """A listener on loopback calling `handle(conn, head)` in a thread per connection, once a request's headers are
    read: its URL, and how many requests it got (a dict the handler may read)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    got = {"requests": 0}

    def serve_one(conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            got["requests"] += 1
            handle(conn, data)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}", got


def _keep_alive_server_that_closes_when_idle():
    """Answers a PUT 200 on a keep-alive connection, then closes that connection 0.2 s later (as S3 closes idle
    ones)."""

    def handle(conn, data):
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        while len(body) < length:
            body += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nx-amz-version-id: v1\r\nContent-Length: 0\r\n\r\n")
        time.sleep(0.2)

    return _raw_server(handle)


@pytest.mark.parametrize("checked", [True, False], ids=["protected", "control"])
def test_a_keep_alive_connection_the_server_closed_is_not_reused(settings, monkeypatch, checked):
    """A PUT on a connection the server closed while it was idle would fail after being written, and count as a
    retry (which costs a scan for duplicate versions). Control: without the check before reuse, it does."""
    if not checked:
        monkeypatch.setattr(direct_puts, "wait_for_read", lambda sock, timeout: False)
        monkeypatch.setattr(direct_puts.time, "sleep", lambda s: None)
    listener, url, got = _keep_alive_server_that_closes_when_idle()
    try:
        puts = DirectPuts(dataclasses.replace(settings, endpoint_url=url, s3_max_attempts=3))
        assert puts.put("bucket-a", "k", b"one", 3, {}).attempts == 1
        time.sleep(0.5)  # the server has closed the idle connection
        second = puts.put("bucket-a", "k", b"two", 3, {})
        assert second.version_id == "v1" and got["requests"] == 2
        assert second.attempts == (1 if checked else 2)
    finally:
        listener.close()


def _answering_early_server(answer: bytes):
    """Answers `answer` as soon as a request's headers are read and closes without reading the body (as S3 does when
    it refuses a request)."""
    import socket

    def handle(conn, data):
        conn.sendall(answer)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(2)
        try:  # read a little of the body, then close with the rest unread: the client's send fails
            conn.recv(65536)
        except OSError:
            pass

    return _raw_server(handle)


@pytest.mark.parametrize("early_answers_read", [True, False], ids=["protected", "control"])
def test_an_error_s3_sends_before_the_body_is_read_is_the_error_raised(settings, monkeypatch, early_answers_read):
    """S3 refuses a large PUT (access denied, a bad signature) as soon as it has the headers and closes: the refusal is
    what the caller gets, not a connection error retried ten times. Control: with the early answer not read, the
    send's broken pipe is all there is, and it is retried."""
    import io

    from botocore.exceptions import ClientError, ConnectionClosedError

    body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    answer = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    listener, url, got = _answering_early_server(answer)
    try:
        if not early_answers_read:
            def no_early_answer(connection, error):
                raise error

            monkeypatch.setattr(direct_puts, "_early_answer", no_early_answer)
            monkeypatch.setattr(direct_puts.time, "sleep", lambda s: None)
            monkeypatch.setattr(direct_puts, "wait_random_exponential", lambda **kw: (lambda state: 0))
        puts = DirectPuts(dataclasses.replace(settings, endpoint_url=url, s3_max_attempts=3))
        size = 32 << 20  # far more than the socket buffers hold
        expected = ClientError if early_answers_read else ConnectionClosedError
        with pytest.raises(expected) as raised:
            puts.put("bucket-a", "k", io.BytesIO(bytes(size)), size, {"Content-Type": "application/octet-stream"})
        if early_answers_read:
            assert raised.value.response["Error"]["Code"] == "AccessDenied"
            assert got["requests"] == 1
        else:
            assert got["requests"] == 3
    finally:
        listener.close()


@pytest.mark.parametrize("value", ["text/plain\r\nX-Injected: 1", "vidéo/mp4"])
def test_a_header_value_that_is_not_printable_ascii_is_refused_before_anything_is_sent(settings, buckets, value):
    """A newline would inject a header; a non-ASCII letter would go out as other bytes than were signed. Refused
    with a validation error (not retried), and the thread's connection still serves the next PUT."""
    from botocore.exceptions import ParamValidationError

    puts, key = DirectPuts(settings), f"headers/{uuid.uuid4()}"
    with pytest.raises(ParamValidationError, match="printable ASCII"):
        puts.put(buckets["temp"], key, b"x", 1, {"Content-Type": value})
    landed = puts.put(buckets["temp"], key, b"y", 1, {"Content-Type": "text/plain"})
    assert landed.attempts == 1 and S3Storage(settings).get_bytes(buckets["temp"], key, landed.version_id) == b"y"


@pytest.mark.parametrize(
    "environ",
    [
        {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"},
        {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "session"},
        {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SECURITY_TOKEN": "security", "AWS_SESSION_TOKEN": "session"},
        {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "", "AWS_SECURITY_TOKEN": "security"},
        {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_PROFILE": "elsewhere", "AWS_ACCOUNT_ID": "123456789012"},
    ],
    ids=["keys", "session token", "both tokens", "empty session token", "a profile named too"],
)
def test_keys_read_from_the_environment_are_what_botocores_default_chain_returns(monkeypatch, tmp_path, environ):
    """`env_credentials` stands in for boto3's default chain only where the chain's answer is the environment's keys:
    the same key, secret and token, in every form the chain reads them (a named profile included: explicit keys win)."""
    import botocore.session

    config = tmp_path / "config"
    config.write_text("[profile elsewhere]\nregion = us-east-1\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
                 "AWS_CREDENTIAL_EXPIRATION", "AWS_ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**environ, "AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    chain = botocore.session.get_session().get_credentials().get_frozen_credentials()
    assert direct_puts.env_credentials() == (chain.access_key, chain.secret_key, chain.token)


@pytest.mark.parametrize(
    "environ",
    [{}, {"AWS_ACCESS_KEY_ID": "AKID"}, {"AWS_SECRET_ACCESS_KEY": "secret"},
     {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"}],
    ids=["none", "key only", "secret only", "expiring"],
)
def test_other_environments_leave_the_answer_to_botocores_chain(environ):
    """None, partial or refreshable keys: the chain is asked (it finds another provider, raises, or refreshes)."""
    assert direct_puts.env_credentials(environ) is None
