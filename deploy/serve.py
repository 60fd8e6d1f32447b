"""The production recipe, as one command (`make serve`): nginx in front of gunicorn's sync workers.

    make serve                      # http://127.0.0.1:8000
    PORT=9000 make serve
    .venv/bin/python deploy/serve.py   # the same, without the Makefile's nginx install

It reads the same environment as production (variables, then `.env`) and refuses to start,
naming the variable, when SECRET_KEY, ENCRYPTION_KEYS or DATABASE_URL is missing or a value is
malformed (the app's own checks), or when SWITCHBOARD_ENV is not `production`. (What only the
database can tell, such as rows under a key that is not configured, gunicorn's workers check as
they start: then the launcher ends with their message.) Then it:

1. makes a private run directory (removed at exit);
2. starts gunicorn with deploy/gunicorn.conf.py on a unix socket in it (metrics of all workers in
   PROMETHEUS_MULTIPROC_DIR, a folder of the run directory unless set), with TRUSTED_PROXIES=1
   unless set (nginx is the one proxy whose X-Forwarded-For entry names the client), and waits
   until it answers /healthz; a gunicorn that cannot start (the app refusing its settings or its
   database) ends the launcher with gunicorn's message;
3. renders deploy/nginx.conf.template into the run directory and runs nginx in the foreground,
   listening on 127.0.0.1:$PORT (LISTEN=address:port to listen elsewhere);
4. stays until Ctrl-C (SIGINT) or SIGTERM, or until either server exits, then stops both
   (gracefully, then by force after 20 s) and exits non-zero if a server failed.

nginx is Debian's (`apt-get install nginx`; `make serve` installs it when missing), found on PATH
or at /usr/sbin/nginx, or named by NGINX.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
PROJECT_ROOT = DEPLOY.parent
REQUIRED = ("SECRET_KEY", "ENCRYPTION_KEYS", "DATABASE_URL")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class LaunchError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"make serve: {message}")


def check_settings() -> None:
    """Fail fast, as production does, before anything starts. :raise LaunchError: a setting is wrong."""
    from dotenv import load_dotenv

    load_dotenv(PROJECT_ROOT / ".env")
    environment = os.environ.get("SWITCHBOARD_ENV", "production")
    if environment != "production":
        raise LaunchError(f"SWITCHBOARD_ENV is {environment!r}: this is the production recipe (unset it, or use `make run`).")
    for name in REQUIRED:
        if not os.environ.get(name, "").strip():
            raise LaunchError(f"{name} is not set. Production needs SECRET_KEY, ENCRYPTION_KEYS and DATABASE_URL.")
    sys.path.insert(0, str(PROJECT_ROOT))
    from app.config import ConfigError, load_config
    from app.crypto import Keyring, KeyringError

    try:
        config = load_config(os.environ.get("SWITCHBOARD_INSTANCE_PATH") or str(PROJECT_ROOT / "instance"), None)
        Keyring.from_config(config["ENCRYPTION_KEYS"])
    except (ConfigError, KeyringError) as error:  # their messages name the variable, never a value
        raise LaunchError(str(error)) from None


def listen_address() -> str:
    listen = os.environ.get("LISTEN") or f"127.0.0.1:{os.environ.get('PORT') or '8000'}"
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise LaunchError(f"cannot listen on {listen!r}: give PORT as a number (or LISTEN as address:port).")
    return listen


def find_nginx() -> str:
    for candidate in (os.environ.get("NGINX"), shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise LaunchError("nginx is not installed: `make serve` installs Debian's (apt-get install nginx).")


def render_nginx_conf(run_dir: Path, listen: str, socket_path: Path) -> Path:
    # As root, nginx's workers become `nobody`: they must reach the socket and their temp dirs.
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    text = (DEPLOY / "nginx.conf.template").read_text()
    for placeholder, value in (("@USER@", user), ("@RUN_DIR@", str(run_dir)), ("@LISTEN@", listen),
                               ("@UPSTREAM@", str(socket_path))):
        text = text.replace(placeholder, value)
    path = run_dir / "nginx.conf"
    path.write_text(text)
    return path


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def wait_for_gunicorn(process: subprocess.Popen, socket_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LaunchError(f"gunicorn exited with status {process.returncode} (its messages are above).")
        if socket_path.exists():
            connection = UnixHTTPConnection(str(socket_path), timeout=5)
            try:
                connection.request("GET", "/healthz")
                if connection.getresponse().status < 500:  # a worker answers (the bench's floor app: 404)
                    return
            except OSError:
                pass
            finally:
                connection.close()
        time.sleep(0.1)
    raise LaunchError(f"gunicorn did not answer /healthz within {START_TIMEOUT:.0f} s.")


def stop(process: subprocess.Popen | None, sig: signal.Signals) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description="The production recipe: nginx in front of gunicorn.")
    parser.add_argument("--app", default="wsgi:app", help="the WSGI app gunicorn serves (the benchmark's floor app)")
    args = parser.parse_args()
    check_settings()
    listen = listen_address()
    nginx = find_nginx()
    run_dir = Path(tempfile.mkdtemp(prefix="switchboard-serve-"))
    if os.geteuid() == 0:
        run_dir.chmod(0o711)  # nginx's workers (nobody) pass through to the socket; nobody can list it
    socket_path = run_dir / "gunicorn.sock"
    env = {**os.environ, "TRUSTED_PROXIES": os.environ.get("TRUSTED_PROXIES") or "1"}
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # The workers' metrics files (app/metrics.py), private to this server and gone with it.
        (run_dir / "metrics").mkdir(mode=0o700)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    if not os.environ.get("REDIS_URL"):
        print("make serve: REDIS_URL is not set: each gunicorn worker keeps its own rate-limit counters",
              file=sys.stderr, flush=True)

    stopping: list[int] = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    gunicorn = web = None
    status = 0
    try:
        # Their own sessions: a Ctrl-C reaches only this launcher, which stops them in order.
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(DEPLOY / "gunicorn.conf.py"),
             "--bind", f"unix:{socket_path}", args.app],
            cwd=PROJECT_ROOT, env=env, start_new_session=True)
        wait_for_gunicorn(gunicorn, socket_path)
        conf = render_nginx_conf(run_dir, listen, socket_path)
        web = subprocess.Popen([nginx, "-e", "stderr", "-p", str(run_dir), "-c", str(conf)],
                               cwd=run_dir, start_new_session=True)
        print(f"make serve: http://{listen} (nginx {web.pid} -> gunicorn {gunicorn.pid}); Ctrl-C stops both",
              file=sys.stderr, flush=True)
        while not stopping:
            if gunicorn.poll() is not None or web.poll() is not None:
                failed = "gunicorn" if gunicorn.poll() is not None else "nginx"
                print(f"make serve: {failed} exited; stopping", file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(0.2)
    except LaunchError as error:
        print(error.code, file=sys.stderr, flush=True)
        status = 1
    finally:
        stop(web, signal.SIGQUIT)  # nginx: finish what is in flight, then exit
        stop(gunicorn, signal.SIGTERM)  # gunicorn: graceful
        shutil.rmtree(run_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
