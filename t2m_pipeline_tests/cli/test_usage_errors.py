"""Every usage error of `t2m` is one line on stderr with exit status 2, and no error echoes a password.

The control runs the same bad command through typer's own handling (what `t2m` did before): a usage block and
more than one line.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from t2m_pipeline.cli import app

SECRET = "pw-9f2c7e1d"


def t2m(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "t2m_pipeline.cli", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


USAGE_ERRORS = [
    (["urls", "X", "--user", "u", "--expires", "abc"], "--expires"),
    (["jobs", "submit", "--user", "u", "--email", "e@example.com"], "--topic"),
    (["jobs", "show"], "job_id"),
    (["nope"], "nope"),
    (["jobs", "submit", "--user", "u", "--email", "e@example.com", "--topic", "t", "--scenes", "x"], "--scenes"),
    (["migrate", "verify", "--legacy-root"], "--legacy-root"),
    (["audit", "--only", "bogus"], "bogus"),
    (["db", "upgrade", "--bogus-flag"], "--bogus-flag"),
]


@pytest.mark.parametrize("args,named", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_a_usage_error_is_one_line_and_exit_2(service_env, args, named):
    result = t2m(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("t2m: error: ") and named in lines[0], result.stderr
    assert result.stdout == ""


def test_control_typer_alone_prints_a_usage_block():
    code = "from t2m_pipeline.cli import app; app.main(['urls', 'X', '--user', 'u', '--expires', 'abc'], prog_name='t2m')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) > 1


def test_help_still_works_and_lists_every_command():
    result = t2m("--help")
    assert result.returncode == 0
    for name in app.commands:
        assert f"  {name} " in result.stdout
    assert t2m("jobs", "submit", "--help").returncode == 0


@pytest.mark.parametrize(
    "url",
    [f"postgres://admin:{SECRET}@db.internal:5432/t2m", f"host=db.internal password={SECRET} dbname=t2m",
     f"postgresql+asyncpg://admin:{SECRET}@db/t2m", f"mysql://root:{SECRET}@db/t2m?password={SECRET}"],
)
def test_a_malformed_database_url_is_named_without_its_password(service_env, url):
    result = t2m("db", "current", env={"T2M_DATABASE_URL": url})
    assert result.returncode == 2
    assert SECRET not in result.stderr + result.stdout
    assert result.stderr.startswith("t2m: error: T2M_DATABASE_URL=") and "***" in result.stderr


def test_control_the_inputs_carry_the_password():
    """The masked values above would leak without the masking: the raw value holds the secret."""
    from t2m_pipeline.config import redact

    raw = f"postgres://admin:{SECRET}@db/t2m"
    assert SECRET in repr(raw) and SECRET not in redact(raw)


def test_other_url_settings_are_masked_too(service_env):
    result = t2m("db", "current", env={"T2M_REDIS_URL": f"http://u:{SECRET}@redis:6379/0"})
    assert result.returncode == 2 and SECRET not in result.stderr and "T2M_REDIS_URL" in result.stderr
    result = t2m("db", "current", env={"T2M_LLM_BASE_URL": f"ftp//u:{SECRET}@llm"})
    assert result.returncode == 2 and SECRET not in result.stderr and "T2M_LLM_BASE_URL" in result.stderr
