"""`t2m migrate` end to end: real CLI processes, Redis, PostgreSQL and the moto server; kill -9 mid-run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from t2m_pipeline.cli import main


@pytest.fixture
def cli_env(migration_db, monkeypatch, buckets):
    settings, engine = migration_db
    monkeypatch.setenv("T2M_DATABASE_URL", settings.database_url)
    return settings, engine


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_redis_files_verify_rerun_and_rollback(cli_env, world, capsys):
    settings, engine = cli_env
    code, out, _ = run_cli(capsys, "migrate", "redis", "--redis-url", world.redis_url, "--json", "--processes", "3")
    assert code == 0 and json.loads(out)["jobs_inserted"] == 7 and json.loads(out)["processes"] == 3
    code, out, _ = run_cli(capsys, "migrate", "files", "--legacy-root", str(world.root), "--json")
    first = json.loads(out)
    assert code == 0 and first["uploaded_files"] > 0 and first["outcomes"]["failed"] == 0
    code, out, _ = run_cli(capsys, "migrate", "verify", "--legacy-root", str(world.root), "--json")
    assert code == 0 and json.loads(out)["ok"]
    code, out, _ = run_cli(capsys, "migrate", "files", "--legacy-root", str(world.root), "--json")
    assert code == 0 and json.loads(out)["uploaded_bytes"] == 0
    code, out, _ = run_cli(capsys, "migrate", "files", "--legacy-root", str(world.root))  # for people: a table
    assert code == 0 and "unchanged (already migrated)" in out and "Files migration" in out and "copied for" in out

    code, out, _ = run_cli(capsys, "migrate", "rollback", "--batch", first["batch_id"], "--json")
    assert code == 0 and json.loads(out)["s3_versions_deleted"] == first["uploaded_files"] + first["copied_files"]
    code, out, _ = run_cli(capsys, "migrate", "verify", "--legacy-root", str(world.root))
    assert code == 1 and "not in the ledger" in out  # nothing is accounted for any more
    code, out, _ = run_cli(capsys, "migrate", "verify", "--legacy-root", str(world.root), "--json")
    assert json.loads(out)["problem_count"] >= first["files"]


def test_user_errors_are_one_line_with_exit_2(cli_env, tmp_path, capsys):
    for args in (
        ("migrate", "files", "--legacy-root", str(tmp_path / "nope")),
        ("migrate", "verify", "--legacy-root", str(tmp_path)),
        ("migrate", "rollback", "--batch", "not-a-batch"),
        ("migrate", "rollback", "--batch", "00000000-0000-0000-0000-000000000000"),
        ("migrate", "redis", "--redis-url", "redis://127.0.0.1:1/0"),
        ("migrate", "redis", "--redis-url", "http://wrong"),
        ("migrate", "redis", "--processes", "0"),
    ):
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and err.startswith("t2m: error: ") and err.count("\n") == 1, (args, err)


def test_kill_9_mid_run_then_a_rerun_passes_verify_without_duplicates(cli_env, world, capsys):
    settings, engine = cli_env
    code, _, _ = run_cli(capsys, "migrate", "redis", "--redis-url", world.redis_url, "--json")
    assert code == 0
    bulk = world.root / "output" / f"bulk_topic_{world.tag}" / "scene1" / "subplans"
    bulk.mkdir(parents=True)
    for i in range(600):
        (bulk / f"note_{i:04d}.txt").write_bytes(f"note {i}\n".encode() * 20)
    env = {**os.environ, "T2M_DATABASE_URL": settings.database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "t2m_pipeline.cli", "migrate", "files", "--legacy-root", str(world.root), "--json", "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            intents = conn.execute(text("SELECT count(*) FROM migration_ledger WHERE reason LIKE 'interrupted%'")).scalar_one()
            if intents >= 500:
                break
            conn.rollback()
            time.sleep(0.02)
    time.sleep(0.5)  # uploads in flight
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM migration_batches WHERE source = 'files'")).scalar_one()
        left = conn.execute(text("SELECT count(*) FROM migration_ledger WHERE reason LIKE 'interrupted%'")).scalar_one()
        migrated = conn.execute(text("SELECT count(*) FROM migration_ledger WHERE outcome = 'migrated'")).scalar_one()
    assert status == "running" and left > 0  # killed mid-run, with uploads not yet confirmed

    code, out, _ = run_cli(capsys, "migrate", "files", "--legacy-root", str(world.root), "--json")
    rerun = json.loads(out)
    assert code == 0 and rerun["outcomes"]["failed"] == 0
    # what the killed run had uploaded but not confirmed is adopted, not uploaded again; the rest is uploaded once
    assert rerun["adopted_versions"] > 0
    done = rerun["adopted_versions"] + rerun["uploaded_files"] + rerun["copied_files"]
    assert done == rerun["outcomes"]["migrated"] + rerun["copies"]["migrated"] - migrated  # (ledger rows: files and copies)
    code, out, _ = run_cli(capsys, "migrate", "verify", "--legacy-root", str(world.root), "--json")
    result = json.loads(out)
    assert code == 0 and result["ok"], result["problems"]  # every file once; no unrecorded (duplicate) S3 version
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) - count(DISTINCT (s3_bucket, s3_key, version_id)) FROM file_metadata")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM migration_ledger")).scalar_one() == result["files_in_tree"] + result["copies_checked"]


BAR_PROBE = """
import sys
from t2m_pipeline.cli import migrate
with migrate._bar(sys.argv[1] == "json", lambda p: [p.TextColumn("migrating"), p.BarColumn()]) as bar:
    task = bar.add_task("files", total=None)
    bar.update(task, completed=1, total=2)
print("rich" in sys.modules)
"""


@pytest.mark.parametrize("output", ["json", "people"])
def test_a_json_run_has_no_progress_bar_and_never_imports_rich(output):
    """`--json` prints the report alone (rich's bar was disabled there): rich's import (about 0.05 s) is not paid
    before a files migration's first PUT. Control: for people the bar is rich's."""
    done = subprocess.run([sys.executable, "-c", BAR_PROBE, output], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "T2M_LOCAL_STACK_FILE": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == ("False" if output == "json" else "True")
