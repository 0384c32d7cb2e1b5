"""Single-request PUTs over the AWS Common Runtime: the SigV4 signing and the HTTP exchange run in C.

For a migration of many small files, botocore's Python (request serialization, hooks, urllib3, signing) was over
half the client's CPU per file (BENCHMARKS.md). The CRT's own S3 client retries inside C without saying so, and a
retried PUT whose first answer was lost leaves an extra version that only a known retry lets us remove; so this uses
the CRT's signer and HTTP connections and keeps the retries here (tenacity), where the attempts are counted.
Errors are raised as botocore's (`ClientError`, `EndpointConnectionError`, `ConnectionClosedError`,
`ReadTimeoutError`), so the storage layer maps them as it maps botocore's own.

Used for what S3Storage sends in one request (below its multipart threshold); everything else stays on boto3.
It verifies TLS against the system's trust store, or the CA bundle boto3 would use (`AWS_CA_BUNDLE`, `ca_bundle`);
boto3's proxy settings do not apply (none of our deployments uses a proxy).
"""

from __future__ import annotations

import io
import random
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO
from urllib.parse import quote, urlsplit

import botocore.session
from awscrt import auth, http
from awscrt import io as crt_io
from awscrt.exceptions import AwsCrtError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from s3transfer.crt import BotocoreCRTCredentialsWrapper
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from t2m_pipeline.config import Settings

# What S3 answers when trying again later may work (botocore's standard retry mode retries these too).
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "SlowDown", "Throttling", "ThrottlingException", "InternalError",
     "ServiceUnavailable", "RequestLimitExceeded", "BandwidthLimitExceeded", "PriorRequestNotComplete"}
)
CONNECT_TIMEOUT_MS = 5000
MAX_BACKOFF_S = 20  # botocore's cap
# The read timeout bounds a whole exchange here (botocore's, each read): a large body gets time for its bytes too.
MIN_UPLOAD_RATE = 64 * 1024  # bytes/s


@dataclass(frozen=True)
class PutResult:
    version_id: str | None
    attempts: int  # requests sent: more than one means an earlier one may have written a version too


def _now() -> datetime:
    return datetime.now(timezone.utc)


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


class CrtPuts:
    """PutObject in one request, from any thread: each thread keeps its own keep-alive connection per host."""

    def __init__(self, settings: Settings, *, max_attempts: int | None = None, read_timeout: float | None = None):
        session = botocore.session.get_session()  # boto3's default chain and config, as the rest of the layer
        credentials = session.get_credentials()
        self.has_credentials = credentials is not None  # none: each put fails as boto3's would, at the request
        self.max_attempts = max_attempts or settings.s3_max_attempts
        self.read_timeout = read_timeout or settings.s3_read_timeout_s
        endpoint = urlsplit(settings.endpoint_url or f"https://s3.{settings.region}.amazonaws.com")
        self.scheme, self.endpoint_host = endpoint.scheme, endpoint.hostname or ""
        self.port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        self.path_style = settings.endpoint_url is not None  # as make_s3_client: path style on a local endpoint
        group = crt_io.EventLoopGroup(1)
        self.bootstrap = crt_io.ClientBootstrap(group, crt_io.DefaultHostResolver(group))
        self.socket_options = crt_io.SocketOptions()
        self.socket_options.connect_timeout_ms = CONNECT_TIMEOUT_MS
        self.tls = None
        if self.scheme == "https":
            options = crt_io.TlsContextOptions()  # verify_peer: always
            ca_bundle = session.get_config_variable("ca_bundle")
            if ca_bundle:
                options.override_default_trust_store_from_path(ca_filepath=ca_bundle)
            self.tls = crt_io.ClientTlsContext(options)
        self.signing = auth.AwsSigningConfig(
            algorithm=auth.AwsSigningAlgorithm.V4,
            signature_type=auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=BotocoreCRTCredentialsWrapper(credentials).to_crt_credentials_provider()
            if credentials is not None else None,
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

    def _where(self, bucket: str, key: str) -> tuple[str, str]:
        path = "/" + quote(key, safe="/~")
        if self.path_style:
            return f"{self.endpoint_host}:{self.port}" if self.port not in (80, 443) else self.endpoint_host, f"/{bucket}{path}"
        return f"{bucket}.{self.endpoint_host}", path

    def _connection(self, host: str) -> http.HttpClientConnection:
        pool = self._local.__dict__.setdefault("connections", {})
        connection = pool.get(host)
        if connection is None or not connection.is_open():
            tls = None
            if self.tls is not None:
                tls = self.tls.new_connection_options()
                tls.set_server_name(host.split(":")[0])
            connect_host = self.endpoint_host if self.path_style else host
            try:
                connection = http.HttpClientConnection.new(
                    host_name=connect_host, port=self.port, bootstrap=self.bootstrap,
                    socket_options=self.socket_options, tls_connection_options=tls,
                ).result(CONNECT_TIMEOUT_MS / 1000 + 1)
            except (AwsCrtError, TimeoutError) as exc:
                raise EndpointConnectionError(endpoint_url=f"{self.scheme}://{connect_host}:{self.port}", error=exc) from exc
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
        stream = io.BytesIO(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
        start = stream.tell()
        attempts = 0

        def attempt() -> str | None:
            nonlocal attempts
            attempts += 1
            stream.seek(start)
            return self._send(bucket, key, stream, size, headers)

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

    def signed_request(self, bucket: str, key: str, stream: IO[bytes] | None, size: int, headers: dict[str, str]) -> http.HttpRequest:
        """The PutObject request as it is sent: addressed, signed now."""
        host, path = self._where(bucket, key)
        request = http.HttpRequest(
            "PUT", path, http.HttpHeaders([("Host", host), ("Content-Length", str(size)), *headers.items()]), stream
        )
        try:  # a config signs at the date it holds: each request gets its own (S3 refuses one 15 minutes old)
            auth.aws_sign_request(request, self.signing.replace(date=_now())).result()
        except AwsCrtError as exc:  # the credentials could not be had (a refresh failed)
            raise CredentialRetrievalError(provider="boto3's default chain", error_msg=str(exc)) from exc
        return request

    def _send(self, bucket: str, key: str, stream: IO[bytes], size: int, headers: dict[str, str]) -> str | None:
        host, path = self._where(bucket, key)
        request = self.signed_request(bucket, key, stream, size, headers)
        answer: dict = {}
        body: list[bytes] = []

        def on_response(http_stream, status_code, headers, **kwargs):
            answer["status"], answer["headers"] = status_code, headers

        def on_body(http_stream, chunk, **kwargs):
            body.append(bytes(chunk))

        try:
            http_stream = self._connection(host).request(request, on_response, on_body)
            http_stream.activate()
            http_stream.completion_future.result(self.read_timeout + size / MIN_UPLOAD_RATE)  # the whole exchange
        except TimeoutError as exc:
            self._drop(host)  # the request may still land: only a counted retry tells the caller so
            raise ReadTimeoutError(endpoint_url=f"{self.scheme}://{host}{path}", error=exc) from exc
        except AwsCrtError as exc:
            self._drop(host)
            if "LENGTH" in exc.name:  # the body is not the size announced (the file changed): no retry mends that
                raise HTTPClientError(error=exc) from exc
            raise ConnectionClosedError(endpoint_url=f"{self.scheme}://{host}{path}", error=exc) from exc  # reset, closed
        status = answer.get("status", 0)
        if status >= 300:
            raise _client_error(status, b"".join(body), "PutObject")
        return next((v for k, v in answer.get("headers", []) if k.lower() == "x-amz-version-id"), None)
