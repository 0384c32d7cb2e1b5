"""Single-request PUTs: signed by the AWS Common Runtime's SigV4 signer (C), sent over the standard library's
`http.client` on a blocking keep-alive connection per thread.

For a migration of many small files, botocore's Python (request serialization, hooks, urllib3, signing) was over
half the client's CPU per file (BENCHMARKS.md). The CRT's own S3 client retries inside C without saying so, and a
retried PUT whose first answer was lost leaves an extra version that only a known retry lets us remove; so the
retries stay here (tenacity), where the attempts are counted. The CRT's HTTP connections were tried too: each of
their callbacks (connection up, body read, headers, completion, shutdown) crosses from the CRT's event-loop thread
into Python, and those GIL handoffs cost twice the CPU per PUT of a plain blocking exchange (0.75 against 0.37 ms).
Errors are raised as botocore's (`ClientError`, `EndpointConnectionError`, `ConnectionClosedError`,
`ReadTimeoutError`, `HTTPClientError`), so the storage layer maps them as it maps botocore's own.

Used for what S3Storage sends in one request (below its multipart threshold); everything else stays on boto3.
It verifies TLS against the system's trust store, or the CA bundle boto3 would use (`AWS_CA_BUNDLE`, `ca_bundle`);
boto3's proxy settings do not apply (none of our deployments uses a proxy). Timeouts are botocore's: one to
connect, then one for each read or write on the socket (a body goes out a block at a time, each with its own).

Credentials are those boto3's default chain finds. The chain's first provider reads the environment
(`env_credentials`, as botocore's `EnvProvider` reads it); when that is where they are and the endpoint needs no CA
bundle (plain HTTP, as a local endpoint), botocore's session is not loaded: its import (about 0.2 s) came before a
files migration's first PUT. Otherwise (a role, a profile, expiring keys, TLS) the chain itself is asked, as before.
"""

from __future__ import annotations

import http.client
import os
import random
import select
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO
from urllib.parse import quote, urlsplit

from awscrt import auth
from awscrt import http as crt_http
from awscrt.exceptions import AwsCrtError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from t2m_pipeline.config import Settings

# What S3 answers when trying again later may work (botocore's standard retry mode retries these too).
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "SlowDown", "Throttling", "ThrottlingException", "InternalError",
     "ServiceUnavailable", "RequestLimitExceeded", "BandwidthLimitExceeded", "PriorRequestNotComplete"}
)
CONNECT_TIMEOUT_S = 5  # as make_s3_client
MAX_BACKOFF_S = 20  # botocore's cap
BLOCK = 1 << 20  # a file body is sent this much at a time


@dataclass(frozen=True)
class PutResult:
    version_id: str | None
    attempts: int  # requests sent: more than one means an earlier one may have written a version too


def _now() -> datetime:
    return datetime.now(timezone.utc)


def env_credentials(environ=os.environ) -> tuple[str, str, str | None] | None:
    """(key, secret, token) as the first provider of boto3's default chain (botocore's `EnvProvider`) finds them in
    the environment, when they are static keys; None when it would not find them (or would find expiring ones, which
    it refreshes): then the chain is asked. With no profile given in code (ours never gives one) nothing comes before
    that provider, so whatever it finds is what the chain returns."""
    key, secret = environ.get("AWS_ACCESS_KEY_ID", ""), environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not key or not secret or environ.get("AWS_CREDENTIAL_EXPIRATION", ""):
        return None  # none, partial (the chain raises as boto3 does) or refreshable: the chain's own answer
    token = next((value for name in ("AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN") if (value := environ.get(name, ""))), None)
    return key, secret, token


def wait_for_read(sock: socket.socket, timeout: float) -> bool:
    """Whether `sock` has something to read (or was closed) within `timeout` seconds (urllib3's check, without
    importing urllib3)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status in TRANSIENT_STATUS or exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES
    return isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError))


def _client_error(status: int, body: bytes, operation: str) -> ClientError:
    code, message = str(status), ""
    try:
        root = ET.fromstring(body)
        code = root.findtext("Code") or code
        message = root.findtext("Message") or ""
    except ET.ParseError:
        pass
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class WrongLengthError(ValueError):
    """The body is not as long as the Content-Length sent for it (the file changed): no retry mends that."""


class DirectPuts:
    """PutObject in one request, from any thread: each thread keeps its own keep-alive connection per host."""

    def __init__(self, settings: Settings, *, max_attempts: int | None = None, read_timeout: float | None = None):
        self.max_attempts = max_attempts or settings.s3_max_attempts
        self.read_timeout = read_timeout or settings.s3_read_timeout_s
        endpoint = urlsplit(settings.endpoint_url or f"https://s3.{settings.region}.amazonaws.com")
        if endpoint.scheme not in ("http", "https"):  # as botocore: nothing else is an S3 endpoint
            raise ValueError(f"S3 endpoint {settings.endpoint_url!r}: the scheme must be http or https")
        self.scheme, self.endpoint_host = endpoint.scheme, endpoint.hostname or ""
        self.port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        self.path_style = settings.endpoint_url is not None  # as make_s3_client: path style on a local endpoint
        static = env_credentials()
        session = None
        if static is None or self.scheme == "https":
            import botocore.session

            session = botocore.session.get_session()  # boto3's default chain and config, as the rest of the layer
        if static is not None:  # what the chain would return, read as its first provider reads it
            provider = auth.AwsCredentialsProvider.new_static(*static)
        else:
            from s3transfer.crt import BotocoreCRTCredentialsWrapper

            credentials = session.get_credentials()
            provider = BotocoreCRTCredentialsWrapper(credentials).to_crt_credentials_provider() if credentials is not None else None
        self.has_credentials = provider is not None  # none: each put fails as boto3's would, at the request
        self.tls = None
        if self.scheme == "https":  # verify_mode CERT_REQUIRED and hostname checks: always
            self.tls = ssl.create_default_context(cafile=session.get_config_variable("ca_bundle") or None)
        self.signing = auth.AwsSigningConfig(
            algorithm=auth.AwsSigningAlgorithm.V4,
            signature_type=auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=provider,
            region=settings.region,
            service="s3",
            # S3's SigV4 rules: the path is neither normalized nor encoded twice; the body is not hashed into the
            # signature (it is verified by its x-amz-checksum-sha256 instead, and travels over TLS on AWS)
            use_double_uri_encode=False,
            should_normalize_uri_path=False,
            signed_body_value=auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD,
            signed_body_header_type=auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
        )
        self._local = threading.local()
        self._pools: list[dict] = []  # every thread's connections, for close()
        self._pools_lock = threading.Lock()

    def close(self) -> None:
        """Close every thread's connections (when the threads that sent are done)."""
        with self._pools_lock:
            for pool in self._pools:
                while pool:
                    pool.popitem()[1].close()

    def _where(self, bucket: str, key: str) -> tuple[str, str]:
        path = "/" + quote(key, safe="/~")
        if self.path_style or "." in bucket:  # a dotted name fails the certificate of *.s3...: path style, as botocore
            return f"{self.endpoint_host}:{self.port}" if self.port not in (80, 443) else self.endpoint_host, f"/{bucket}{path}"
        return f"{bucket}.{self.endpoint_host}", path

    def _connection(self, host: str) -> http.client.HTTPConnection:
        """This thread's open connection to `host`, connected now if it has none."""
        pool = self._local.__dict__.get("connections")
        if pool is None:
            pool = self._local.connections = {}
            with self._pools_lock:
                self._pools.append(pool)
        connection = pool.get(host)
        # an idle connection with something to read was closed by the server (or is out of step): a request sent on
        # it would fail after the fact and count as a retry (urllib3 checks the same before reuse)
        if connection is not None and connection.sock is not None and not wait_for_read(connection.sock, timeout=0):
            return connection
        if connection is not None:
            connection.close()
        connect_host = self.endpoint_host if self.path_style else host.split(":")[0]
        if self.tls is not None:
            connection = http.client.HTTPSConnection(connect_host, self.port, timeout=CONNECT_TIMEOUT_S, context=self.tls)
        else:
            connection = http.client.HTTPConnection(connect_host, self.port, timeout=CONNECT_TIMEOUT_S)
        try:
            connection.connect()  # the TLS handshake too: a certificate no trusted CA vouches for fails here
        except OSError as exc:
            connection.close()
            raise EndpointConnectionError(endpoint_url=f"{self.scheme}://{connect_host}:{self.port}", error=exc) from exc
        connection.sock.settimeout(self.read_timeout)
        pool[host] = connection
        return connection

    def _drop(self, host: str) -> None:
        connection = self._local.__dict__.get("connections", {}).pop(host, None)
        if connection is not None:
            connection.close()

    def put(self, bucket: str, key: str, body: bytes | IO[bytes], size: int, headers: dict[str, str]) -> PutResult:
        """One PutObject (retried as botocore's standard mode would); the version S3 answered with."""
        if not self.has_credentials:
            raise NoCredentialsError()
        start = None if isinstance(body, (bytes, bytearray, memoryview)) else body.tell()
        attempts = 0

        def attempt() -> str | None:
            nonlocal attempts
            attempts += 1
            if start is not None:
                body.seek(start)
            return self._send(bucket, key, body, size, headers)

        try:
            return PutResult(attempt(), attempts)  # nearly every PUT: no retry machinery to set up
        except Exception as exc:
            if self.max_attempts < 2 or not _transient(exc):
                raise
        time.sleep(random.uniform(0, 1))  # botocore's first backoff; tenacity's own follow
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts - 1), wait=wait_random_exponential(multiplier=1, max=MAX_BACKOFF_S),
            retry=retry_if_exception(_transient), reraise=True,
        )
        version_id = retrying(attempt)
        return PutResult(version_id, attempts)

    def signed_request(self, bucket: str, key: str, size: int, headers: dict[str, str]) -> crt_http.HttpRequest:
        """The PutObject request as it is sent (its body aside): addressed, signed now."""
        for name, value in headers.items():  # what http.client would refuse, or send as other bytes than were signed
            if not (value.isascii() and value.isprintable()):
                raise ParamValidationError(report=f"header {name}: {value!r} is not printable ASCII")
        host, path = self._where(bucket, key)
        request = crt_http.HttpRequest("PUT", path, crt_http.HttpHeaders([("Host", host), ("Content-Length", str(size)), *headers.items()]))
        try:  # a config signs at the date it holds: each request gets its own (S3 refuses one 15 minutes old)
            auth.aws_sign_request(request, self.signing.replace(date=_now())).result()
        except AwsCrtError as exc:  # the credentials could not be had (a refresh failed)
            raise CredentialRetrievalError(provider="boto3's default chain", error_msg=str(exc)) from exc
        return request

    def _send(self, bucket: str, key: str, body: bytes | IO[bytes], size: int, headers: dict[str, str]) -> str | None:
        host, path = self._where(bucket, key)
        request = self.signed_request(bucket, key, size, headers)
        connection = self._connection(host)
        try:
            connection.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers:
                connection.putheader(name, value)
            connection.endheaders()
            try:
                _send_exactly(connection, body, size)
            except TimeoutError:
                raise
            except OSError as error:  # S3 may answer early (an error) and close while the body is still going out
                response = _early_answer(connection, error)
            else:
                response = connection.getresponse()
            answer = response.read()
        except (TimeoutError, socket.timeout) as exc:
            self._drop(host)  # the request may still land: only a counted retry tells the caller so
            raise ReadTimeoutError(endpoint_url=f"{self.scheme}://{host}{path}", error=exc) from exc
        except WrongLengthError as exc:
            self._drop(host)
            raise HTTPClientError(error=exc) from exc
        except (OSError, http.client.HTTPException) as exc:  # reset, closed, a garbled answer
            self._drop(host)
            raise ConnectionClosedError(endpoint_url=f"{self.scheme}://{host}{path}", error=exc) from exc
        except BaseException:  # never leave a connection halfway through a request for the next PUT
            self._drop(host)
            raise
        if response.will_close:
            self._drop(host)
        if response.status >= 300:
            raise _client_error(response.status, answer, "PutObject")
        return response.getheader("x-amz-version-id")


def _early_answer(connection: http.client.HTTPConnection, error: OSError) -> http.client.HTTPResponse:
    """The answer the server sent before it stopped reading the body, if there is one; else the send's `error`
    stands (botocore reads such an answer too, through its Expect: 100-continue)."""
    try:
        return connection.getresponse()
    except (OSError, http.client.HTTPException):
        raise error from None


def _send_exactly(connection: http.client.HTTPConnection, body: bytes | IO[bytes], size: int) -> None:
    """`size` bytes of `body` onto the connection, a block at a time (each block its own write timeout);
    WrongLengthError if it holds fewer or more, found before the last block goes out: the server never gets a whole
    request to store."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        if len(body) != size:
            raise WrongLengthError(f"{len(body)} bytes to send, {size} announced")
        view = memoryview(body)
        for start in range(0, size, BLOCK):
            connection.send(view[start : start + BLOCK])
        return
    left = size
    while True:
        block = body.read(min(BLOCK, left)) if left else b""
        if left and not block:
            raise WrongLengthError(f"the body ended {left} bytes short of the {size} announced")
        left -= len(block)
        if not left and body.read(1):
            raise WrongLengthError(f"the body holds more than the {size} bytes announced")
        connection.send(block)
        if not left:
            return
