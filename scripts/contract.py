"""Checks the running service against its own OpenAPI document with
schemathesis: every response must be documented (status and body), and none
may be a server error.

Starts a debug build on a fresh SQLite database with an owner admin and a
cabinet user (signed in through the Mini App endpoint), a loopback webhook
receiver, and runs schemathesis: the admin, sign-in and public operations
with the owner's token, the cabinet operations with the user's, each signing
out last.
Every `url` schemathesis generates is rewritten to the receiver by
`contract_hooks.py`, so nothing it creates is looked up or called off this
machine. Exits non-zero on any finding.

    python scripts/contract.py [path/to/switchboard]    # CONTRACT_MAX_TIME: seconds of the longest run (75)
"""

import hashlib
import hmac
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOT_TOKEN = "123456:contract-check-bot-token"
EMAIL = "owner@example.com"
PASSWORD = "contract-check-password-0123"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that takes everything."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class FakeBotApi(http.server.BaseHTTPRequestHandler):
    """A Bot API that answers every call ok, as Telegram would a valid one,
    and serves every file (nothing here reaches Telegram)."""

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            params = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            params = {}
        method = self.path.rsplit("/", 1)[-1].lower()
        if method == "createinvoicelink":
            result = "https://t.me/$contract-invoice"
        elif method == "getfile":
            result = {"file_id": str(params.get("file_id")), "file_unique_id": "u", "file_size": 4, "file_path": "documents/file_1.pdf"}
        elif method in ("deletemessage", "answerprecheckoutquery"):
            result = True
        else:
            result = {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}}
        self.answer(200, "application/json", json.dumps({"ok": True, "result": result}).encode())

    def do_GET(self):
        self.answer(200, "application/pdf", b"%PDF")

    def answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def call(base, method, path, body=None, token=None):
    request = urllib.request.Request(base + path, method=method)
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def init_data(telegram_id):
    """Mini App `initData` signed with the bot token, as Telegram signs it."""
    fields = {
        "auth_date": str(int(time.time())),
        "user": json.dumps({"id": telegram_id, "first_name": "Contract"}),
    }
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    secret = hmac.new(b"WebAppData", BOT_TOKEN.encode(), hashlib.sha256).digest()
    fields["hash"] = hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    return urllib.parse.urlencode(fields)


def schemathesis(base, token, include, exclude, env, max_time):
    """One run over the operations whose path matches `include` and not
    `exclude`, for at most `max_time` seconds."""
    args = [
        os.path.join(os.path.dirname(sys.executable), "st"),
        "run",
        f"{base}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "40",
        "--max-time",
        str(max_time),
        "--workers",
        "2",
        "--seed",
        "1",
        "--request-timeout",
        "10",
        "--header",
        f"Authorization: Bearer {token}",
        "--include-path-regex",
        include,
    ]
    if exclude:
        args += ["--exclude-path-regex", exclude]
    print("==", " ".join(a if "Bearer" not in a else "Authorization: Bearer …" for a in args), flush=True)
    return subprocess.run(args, env=env).returncode


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/switchboard")
    max_time = int(os.environ.get("CONTRACT_MAX_TIME", "75"))
    workdir = tempfile.mkdtemp(prefix="switchboard-contract-")
    port, hook_port, bot_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{port}"

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    bot_api = http.server.ThreadingHTTPServer(("127.0.0.1", bot_port), FakeBotApi)
    threading.Thread(target=bot_api.serve_forever, daemon=True).start()

    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": f"sqlite://{workdir}/switchboard.db",
        "SWITCHBOARD_LISTEN": f"127.0.0.1:{port}",
        "SWITCHBOARD_JWT_SECRET": "contract-check-secret-0123456789abcdef",
        "SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY": "contract-check-encryption-key-0123456789",
        "SWITCHBOARD_TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        # Never Telegram's own: a fake on loopback.
        "SWITCHBOARD_TELEGRAM_API_URL": f"http://127.0.0.1:{bot_port}",
        "SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "SWITCHBOARD_AUTH_RATE_PER_IP": "100000",
        "SWITCHBOARD_AUTH_RATE_PER_ACCOUNT": "100000",
        "SWITCHBOARD_LOG": os.environ.get("CONTRACT_LOG", "warn"),
        "SWITCHBOARD_LOG_FORMAT": "json",
    }
    subprocess.run(
        [binary, "admin", "create", "--email", EMAIL, "--role", "owner"],
        input=PASSWORD + "\n",
        text=True,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    log = open(os.path.join(workdir, "service.log"), "w")
    service = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                call(base, "GET", "/readyz")
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit(f"the service did not start; see {workdir}/service.log")

        admin = call(base, "POST", "/api/v1/auth/login", {"email": EMAIL, "password": PASSWORD})["access_token"]
        user = call(base, "POST", "/api/v1/cabinet/auth/telegram/mini-app", {"init_data": init_data(4242)})[
            "access_token"
        ]

        st_env = dict(os.environ)
        st_env["SCHEMATHESIS_HOOKS"] = "contract_hooks"
        st_env["PYTHONPATH"] = os.path.join(ROOT, "scripts")
        st_env["CONTRACT_RECEIVER"] = f"http://localhost:{hook_port}/hook"
        # What can end the session a run is called with goes after the rest:
        # the cabinet first (the admin operations may block its user), then
        # the admin's, then admin accounts (the owner may get disabled), then
        # signing out.
        cabinet = "/api/v1/cabinet/me"
        runs = [
            (user, cabinet, "^/api/v1/cabinet/", "/logout$", max_time),
            (user, cabinet, "^/api/v1/cabinet/auth/logout$", None, max_time // 6),
            (admin, "/api/v1/admin/me", ".*", "^/api/v1/cabinet/|^/api/v1/admin/admins|/logout$", max_time),
            (admin, "/api/v1/admin/me", "^/api/v1/admin/admins", None, max_time // 3),
            (admin, None, "^/api/v1/auth/logout$", None, max_time // 6),
        ]
        failed = 0
        for token, me, include, exclude, seconds in runs:
            # A run whose token no longer works would check only 401s.
            if me:
                call(base, "GET", me, token=token)
            failed |= schemathesis(base, token, include, exclude, st_env, max(seconds, 5))
    finally:
        service.terminate()
        service.wait(timeout=30)
        receiver.shutdown()
    errors = [
        line
        for line in map(json.loads, open(os.path.join(workdir, "service.log")))
        if line["level"] == "ERROR" and line["target"].startswith("switchboard")
    ]
    if errors:
        print(f"the service logged {len(errors)} errors, the first: {json.dumps(errors[0])}")
        failed = 1
    print("contract check:", "FAILED" if failed else "no findings")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
