"""Configuration import benchmark: seconds and peak memory of `flask config import` for big files.

For each size P (default: 100 then 1,000 providers) it creates a throwaway PostgreSQL database
(`switchboard_bench_config`), builds the schema with the migrations, writes a file of P providers
(each naming one key in `api_key_env`) and 10 model configs per provider, and runs, each as an
operator would in its own process (`flask --app wsgi config ...`):

1. `config import FILE --dry-run` on the empty database (plans and applies everything, rolls back);
2. `config import FILE` (creates everything in one transaction);
3. `config import FILE` again (everything unchanged);
4. `config export`.

Each run's wall time and the process's peak resident memory (`ru_maxrss` from `wait4`) are
printed as a Markdown table. Memory that grew with the file faster than the file itself would
show as a peak far above the small size's. The database is dropped at the end.

    .venv/bin/python bench/config_import_bench.py              # P = 100 and 1000
    .venv/bin/python bench/config_import_bench.py 1000         # one size
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/switchboard_bench_config"
KEY = base64.b64encode(b"c" * 32).decode()
CONFIGS_PER_PROVIDER = 10


def recreate_database(url: str, drop_only: bool = False) -> None:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = conninfo.rsplit("/", 1)[1].split("?", 1)[0]
    if not name.startswith("switchboard_bench"):
        raise SystemExit(f"refusing to drop {name!r}: the bench database's name must start with switchboard_bench")
    with psycopg.connect(conninfo.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if not drop_only:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def write_file(path: Path, providers: int) -> dict[str, str]:
    """The file, and the environment variables its api_key_env names."""
    env: dict[str, str] = {}
    lines = ["version: 1", "groups: []", "providers:"]
    for p in range(providers):
        variable = f"BENCH_KEY_{p}"
        env[variable] = f"sk-bench-{uuid.uuid4().hex}{uuid.uuid4().hex}"
        lines += [f"  - name: provider-{p:05d}", "    type: openai", f"    display_name: Provider {p}",
                  "    key_policy: user_preferred", f"    api_key_env: [{variable}]"]
    lines.append("model_configs:")
    for p in range(providers):
        for m in range(CONFIGS_PER_PROVIDER):
            lines += [f"  - provider: provider-{p:05d}", f"    model: model-{m:02d}",
                      f"    display_name: Model {m} of provider {p}", f"    is_default: {str(p == 0 and m == 0).lower()}",
                      "    context_limit: 128000", "    compression_threshold: 70",
                      "    options: {temperature: 0.7, tags: [bench]}"]
    path.write_text("\n".join(lines) + "\n")
    return env


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run `flask --app wsgi ARGS`; (seconds, peak RSS in MB, last line of stdout)."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=PROJECT_ROOT, env=env,
                                   stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # the child's own peak memory
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"flask {' '.join(args)} failed:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, (stdout.strip().splitlines() or [""])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 1000], help="providers per file")
    parser.add_argument("--url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    options = parser.parse_args()
    rows = []
    for providers in options.sizes:
        recreate_database(options.url)
        folder = Path(tempfile.mkdtemp(prefix="switchboard-config-bench-"))
        path = folder / "switchboard.yaml"
        keys = write_file(path, providers)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SWITCHBOARD_", "FLASK_"))}
        env.update({"DATABASE_URL": options.url, "SECRET_KEY": "bench-" + "s" * 40, "ENCRYPTION_KEYS": KEY,
                    "SWITCHBOARD_ENV": "production", "SWITCHBOARD_INSTANCE_PATH": str(folder), **keys})
        subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=PROJECT_ROOT, env=env,
                       check=True, capture_output=True)
        size_mb = path.stat().st_size / 1024 / 1024
        for label, args in (("dry run (empty database)", ["config", "import", str(path), "--dry-run"]),
                            ("import (creates all)", ["config", "import", str(path)]),
                            ("import again (unchanged)", ["config", "import", str(path)]),
                            ("export", ["config", "export", "--output", str(folder / "export.yaml")])):
            seconds, peak, last = run(args, env)
            rows.append((providers, providers * CONFIGS_PER_PROVIDER, f"{size_mb:.1f} MB", label, seconds, peak, last))
            print(f"{providers} providers: {label}: {seconds:.1f} s, peak RSS {peak:.0f} MB ({last})", flush=True)
    recreate_database(options.url, drop_only=True)
    print()
    print("| providers | configs | file | run | seconds | peak RSS |")
    print("|---:|---:|---:|---|---:|---:|")
    for providers, configs, size, label, seconds, peak, _ in rows:
        print(f"| {providers:,} | {configs:,} | {size} | {label} | {seconds:.1f} | {peak:.0f} MB |")


if __name__ == "__main__":
    main()
