"""Environment -> settings, validated once at start-up.

Every variable the platform reads is named here, with its default and the form it must take. A bad value raises
`ConfigError` whose message is one line naming the variable and the expected form; the CLI prints just that line.
A value is echoed only with its passwords masked (`redact`).

The local stack (`make dev`, `make demo`) writes a stack file naming its endpoint and databases; the CLI reads it
(`apply_local_stack_file`) so its commands work in any terminal. Nothing else reads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

BucketKind = Literal["videos", "code", "thumbnails", "temp"]
BUCKET_KINDS: tuple[BucketKind, ...] = ("videos", "code", "thumbnails", "temp")
ENVIRONMENTS = ("dev", "staging", "prod")
LOCAL_ACCOUNT_ID = "000000000000"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/t2m"

_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_ACCOUNT = re.compile(r"^\d{12}$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
REDIS_URL = re.compile(r"^rediss?://\S+$")  # the legacy Redis (t2m_pipeline.migration.legacy_redis connects)
REDIS_URL_FORM = "redis://host:port/db"
_DB_URL = re.compile(r"^postgresql(\+psycopg|\+psycopg2)?://\S+$")
_URL_PASSWORD = re.compile(r"([^\s/:@]+):[^\s@]+@")  # user:password@, with or without a scheme
_KEYWORD_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)(\s*[=:]\s*)(\S+)")
SECRET_SETTINGS = frozenset({"T2M_LLM_API_KEY"})
LOCAL_STACK_FILE = Path(__file__).resolve().parents[1] / ".local" / "stack.env"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message is the single line shown to the user."""


def redact(value: str) -> str:
    """`value` with anything that looks like a password masked: `scheme://user:***@host`, `password=***`."""
    value = _URL_PASSWORD.sub(r"\1:***@", value)
    return _KEYWORD_PASSWORD.sub(r"\1\2***", value)


def _shown(name: str, value: str) -> str:
    """How a bad value is echoed in an error: never a secret setting, never a password inside a value."""
    return "'***'" if name in SECRET_SETTINGS else repr(redact(value))


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigError(f"{name}={_shown(name, value)} is invalid: expected one of {'|'.join(allowed)}")
    return value


def _matching(env: Mapping[str, str], name: str, default: str | None, pattern: re.Pattern, form: str) -> str | None:
    value = env.get(name, "").strip() or default
    if value is not None and not pattern.fullmatch(value):
        raise ConfigError(f"{name}={_shown(name, value)} is invalid: expected {form}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int, maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0 or (maximum is not None and value > maximum):
        upper = f" up to {maximum}" if maximum else ""
        raise ConfigError(f"{name}={_shown(name, raw)} is invalid: expected a positive whole number{upper}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    return parse_flag(name, env.get(name, ""))


def parse_flag(name: str, raw: str) -> bool:
    """A 1|0 switch; anything else is a ConfigError naming `name`."""
    raw = raw.strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={_shown(name, raw)} is invalid: expected 1|0|true|false")


@dataclass(frozen=True)
class Settings:
    """What the platform needs to know about where it runs. Credentials are never here: boto3's chain finds them."""

    env: str = "dev"
    region: str = "us-east-1"
    account_id: str = LOCAL_ACCOUNT_ID
    endpoint_url: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    sse_algorithm: str = "AES256"
    kms_key_id: str | None = None
    noncurrent_version_days: int = 90
    multipart_threshold_mib: int = 16
    s3_max_attempts: int = 10
    s3_read_timeout_s: int = 60
    s3_max_pool_connections: int = 32
    code_generator: str = "template"
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    legacy_redis_mirror: bool = False
    render_timeout_s: int = 300
    render_sandbox: str = "bwrap"
    render_backend: str = "local"
    render_cluster: str | None = None
    render_task_definition: str | None = None
    render_container: str = "render"
    render_subnets: tuple[str, ...] = ()
    render_security_groups: tuple[str, ...] = ()

    @property
    def is_local_endpoint(self) -> bool:
        """An S3-compatible endpoint (moto, MinIO) rather than AWS itself."""
        return self.endpoint_url is not None

    def bucket(self, kind: BucketKind) -> str:
        if kind not in BUCKET_KINDS:
            raise ValueError(f"unknown bucket kind {kind!r}: expected one of {'|'.join(BUCKET_KINDS)}")
        return bucket_name(self.env, kind, self.region, self.account_id)

    @property
    def buckets(self) -> dict[str, str]:
        return {kind: self.bucket(kind) for kind in BUCKET_KINDS}

    def dagster_storage_url(self) -> str:
        """Dagster's own storage speaks psycopg2 (a bare postgresql:// maps to psycopg 3 in SQLAlchemy 2.1)."""
        return re.sub(r"^postgresql(\+psycopg2?)?://", "postgresql+psycopg2://", self.database_url)


# Each setting's environment variable. `load_settings` reads these names; the Dagster resources bind their typed
# fields to them (`dg.EnvVar`), so the UI shows which variable a value came from. A test holds the two together.
SETTING_VARIABLES: dict[str, str] = {
    "env": "T2M_ENV",
    "region": "AWS_REGION",
    "account_id": "AWS_ACCOUNT_ID",
    "endpoint_url": "AWS_ENDPOINT_URL",
    "database_url": "T2M_DATABASE_URL",
    "redis_url": "T2M_REDIS_URL",
    "sse_algorithm": "T2M_SSE_ALGORITHM",
    "kms_key_id": "T2M_KMS_KEY_ID",
    "noncurrent_version_days": "T2M_NONCURRENT_VERSION_DAYS",
    "multipart_threshold_mib": "T2M_MULTIPART_THRESHOLD_MIB",
    "s3_max_attempts": "T2M_S3_MAX_ATTEMPTS",
    "s3_read_timeout_s": "T2M_S3_READ_TIMEOUT_S",
    "s3_max_pool_connections": "T2M_S3_MAX_POOL_CONNECTIONS",
    "code_generator": "T2M_CODE_GENERATOR",
    "llm_base_url": "T2M_LLM_BASE_URL",
    "llm_model": "T2M_LLM_MODEL",
    "llm_api_key": "T2M_LLM_API_KEY",
    "legacy_redis_mirror": "T2M_LEGACY_REDIS_MIRROR",
    "render_timeout_s": "T2M_RENDER_TIMEOUT_S",
    "render_sandbox": "T2M_RENDER_SANDBOX",
    "render_backend": "T2M_RENDER_BACKEND",
    "render_cluster": "T2M_RENDER_CLUSTER",
    "render_task_definition": "T2M_RENDER_TASK_DEFINITION",
    "render_container": "T2M_RENDER_CONTAINER",
    "render_subnets": "T2M_RENDER_SUBNETS",
    "render_security_groups": "T2M_RENDER_SECURITY_GROUPS",
}


def bucket_name(env: str, kind: str, region: str, account_id: str) -> str:
    """The one rule for bucket names: `{env}-t2m-{kind}-{region}-{account_id}`."""
    return f"{env}-t2m-{kind}-{region}-{account_id}"


RENDER_SANDBOXES = ("bwrap", "unconfined-local-only")
RENDER_BACKENDS = ("local", "ecs")
_AWS_IDS = re.compile(r"^[a-z]+-[0-9a-f]{8,17}(,[a-z]+-[0-9a-f]{8,17})*$")


def render_sandbox_mode(env: Mapping[str, str] | None = None) -> str:
    """`T2M_RENDER_SANDBOX`: `bwrap` (the sandbox, required) or, loudly, `unconfined-local-only`. Nothing degrades
    to unconfined on its own: a missing sandbox fails the render."""
    return _choice(os.environ if env is None else env, "T2M_RENDER_SANDBOX", "bwrap", RENDER_SANDBOXES)


def _id_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    value = _matching(env, name, None, _AWS_IDS, "comma-separated AWS ids such as subnet-0123abcd")
    return tuple(value.split(",")) if value else ()


def _render_ecs(env: Mapping[str, str]) -> dict:
    """The ECS render backend's settings: required together when T2M_RENDER_BACKEND=ecs."""
    values = {
        "render_backend": _choice(env, "T2M_RENDER_BACKEND", "local", RENDER_BACKENDS),
        "render_cluster": env.get("T2M_RENDER_CLUSTER", "").strip() or None,
        "render_task_definition": env.get("T2M_RENDER_TASK_DEFINITION", "").strip() or None,
        "render_container": env.get("T2M_RENDER_CONTAINER", "").strip() or "render",
        "render_subnets": _id_list(env, "T2M_RENDER_SUBNETS"),
        "render_security_groups": _id_list(env, "T2M_RENDER_SECURITY_GROUPS"),
    }
    required = {
        "T2M_RENDER_CLUSTER": "render_cluster",
        "T2M_RENDER_TASK_DEFINITION": "render_task_definition",
        "T2M_RENDER_SUBNETS": "render_subnets",
        "T2M_RENDER_SECURITY_GROUPS": "render_security_groups",
    }
    missing = [name for name, key in required.items() if not values[key]]
    if values["render_backend"] == "ecs" and missing:
        raise ConfigError(f"T2M_RENDER_BACKEND=ecs needs {', '.join(missing)}: expected the render cluster, task definition, subnets and security groups")
    return values


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise ConfigError (one line) on the first bad one."""
    env = os.environ if env is None else env
    environment = _choice(env, "T2M_ENV", "dev", ENVIRONMENTS)
    region = _matching(env, "AWS_REGION", "us-east-1", _REGION, "an AWS region such as us-east-1")
    endpoint = _matching(env, "AWS_ENDPOINT_URL", None, _URL, "a URL such as http://127.0.0.1:9000")
    account_default = LOCAL_ACCOUNT_ID if endpoint else None
    account = _matching(env, "AWS_ACCOUNT_ID", account_default, _ACCOUNT, "12 digits")
    if account is None:
        raise ConfigError("AWS_ACCOUNT_ID is required against real AWS: expected 12 digits (or set AWS_ENDPOINT_URL)")
    sse = _choice(env, "T2M_SSE_ALGORITHM", "AES256", ("AES256", "aws:kms"))
    kms_key = env.get("T2M_KMS_KEY_ID", "").strip() or None
    generator = _choice(env, "T2M_CODE_GENERATOR", "template", ("template", "openai"))
    settings = Settings(
        env=environment,
        region=region,
        account_id=account,
        endpoint_url=endpoint,
        database_url=_matching(
            env, "T2M_DATABASE_URL", DEFAULT_DATABASE_URL, _DB_URL, "postgresql+psycopg://user@host:port/database"
        ),
        redis_url=_matching(env, "T2M_REDIS_URL", None, REDIS_URL, REDIS_URL_FORM),
        sse_algorithm=sse,
        kms_key_id=kms_key,
        noncurrent_version_days=_positive_int(env, "T2M_NONCURRENT_VERSION_DAYS", 90, 36500),
        multipart_threshold_mib=_positive_int(env, "T2M_MULTIPART_THRESHOLD_MIB", 16, 5120),
        s3_max_attempts=_positive_int(env, "T2M_S3_MAX_ATTEMPTS", 10, 50),
        s3_read_timeout_s=_positive_int(env, "T2M_S3_READ_TIMEOUT_S", 60, 3600),
        s3_max_pool_connections=_positive_int(env, "T2M_S3_MAX_POOL_CONNECTIONS", 32, 512),
        code_generator=generator,
        llm_base_url=_matching(env, "T2M_LLM_BASE_URL", None, _URL, "a URL such as https://api.openai.com/v1"),
        llm_model=env.get("T2M_LLM_MODEL", "").strip() or None,
        llm_api_key=env.get("T2M_LLM_API_KEY", "").strip() or None,
        legacy_redis_mirror=_flag(env, "T2M_LEGACY_REDIS_MIRROR"),
        render_timeout_s=_positive_int(env, "T2M_RENDER_TIMEOUT_S", 300, 86400),
        render_sandbox=render_sandbox_mode(env),
        **_render_ecs(env),
    )
    if generator == "openai" and not (settings.llm_base_url and settings.llm_model):
        raise ConfigError("T2M_CODE_GENERATOR=openai needs T2M_LLM_BASE_URL and T2M_LLM_MODEL: expected a URL and a model name")
    return settings


def local_stack_file(env: Mapping[str, str] | None = None) -> Path | None:
    """The stack file to read: `T2M_LOCAL_STACK_FILE` when set (empty: none), else the checkout's `.local/stack.env`
    when `make dev` or `make demo` wrote one."""
    env = os.environ if env is None else env
    named = env.get("T2M_LOCAL_STACK_FILE")
    if named is not None:
        return Path(named) if named.strip() else None
    return LOCAL_STACK_FILE if LOCAL_STACK_FILE.is_file() else None


def read_stack_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines (blank lines and `#` comments skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"T2M_LOCAL_STACK_FILE={str(path)!r} cannot be read ({exc.strerror}): expected the file `make dev` writes") from None
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name.strip()):
            raise ConfigError(f"{path}:{number} is invalid: expected NAME=value")
        values[name.strip()] = value.strip()
    return values


def apply_local_stack_file(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Fill the environment from the local stack's file; variables already set win. Returns the file read."""
    environ = os.environ if environ is None else environ
    path = local_stack_file(environ)
    if path is None:
        return None
    for name, value in read_stack_file(path).items():
        environ.setdefault(name, value)
    return path
