#!/usr/bin/env python3
"""Schemathesis against a running `cairn serve`: every check, 0 failures.

Starts the server built by cargo on an ephemeral 127.0.0.1 port over a fresh store (an admin,
a `notes` collection with a record and an attachment field), signs in as the admin, and runs
`st run <server>/api/openapi.json --checks all` with the admin's token. The rate limits are
lifted for the run (the limiter has its own tests); everything else is the default
configuration. Signing out is left out (it would revoke the run's own token). The server is stopped with SIGTERM whatever happens; the exit status is
Schemathesis's.

Usage: .ci/schemathesis.py PATH_TO_CAIRN PATH_TO_ST [MAX_EXAMPLES]
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from cairn_api import call

PASSWORD = "schemathesis admin password"


def main():
    cairn, st = sys.argv[1], sys.argv[2]
    examples = sys.argv[3] if len(sys.argv) > 3 else "30"
    with tempfile.TemporaryDirectory(prefix="cairn-schemathesis-") as tmp:
        store = os.path.join(tmp, "store")
        password_file = os.path.join(tmp, "password")
        with open(password_file, "w") as f:
            f.write(PASSWORD + "\n")
        env = dict(os.environ)
        for limit in ("READ", "WRITE", "LOGIN"):
            env[f"CAIRN_RATE_{limit}_PER_MINUTE"] = "0"
        env["CAIRN_LOGIN_LOCKOUT_FAILURES"] = "0"
        server = subprocess.Popen(
            [cairn, "--dir", store, "serve", "--listen", "127.0.0.1:0",
             "--bootstrap-admin", "root", "--bootstrap-admin-password-file", password_file],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        try:
            base = None
            deadline = time.monotonic() + 120
            while base is None and time.monotonic() < deadline:
                line = server.stderr.readline()
                if not line:
                    raise SystemExit("cairn serve ended before it listened")
                found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
                if found:
                    base = found.group(1)
            if base is None:
                raise SystemExit("cairn serve did not say where it listens")
            token = call(base, "POST", "/api/auth/login", body={"name": "root", "password": PASSWORD})["token"]
            schema = {"name": "notes", "fields": [
                {"name": "title", "type": "text", "fulltext": True, "indexed": True},
                {"name": "n", "type": "integer", "indexed": True},
                {"name": "file", "type": "attachment"}],
                "rules": {"list": "", "view": "", "create": "", "update": "", "delete": ""}}
            call(base, "POST", "/api/collections", token, schema)
            call(base, "POST", "/api/collections/notes/records?id=n1", token, {"title": "first note", "n": 1})
            # Drain the server's log so that it never blocks on a full pipe.
            import threading
            threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
            command = [
                st, "--config-file", os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemathesis.toml"),
                "run", base + "/api/openapi.json",
                "--checks", "all",
                # Signing out would revoke the token the run uses; it has its own tests.
                "--exclude-operation-id", "logout",
                # Realtime streams stay open until the client goes (by design); their own
                # tests (crates/cairn-server/tests/http/realtime*.rs) drive them.
                "--exclude-operation-id", "realtime_stream",
                "--exclude-operation-id", "realtime_socket",
                "--exclude-operation-id", "job_events",
                "--header", "Authorization: Bearer " + token,
                "--max-examples", examples,
                "--workers", "1",
                "--seed", os.environ.get("ST_SEED", "1"),
                "--generation-database", "none",
                "--no-color",
            ]
            print("+", " ".join(c if "Bearer" not in c else "Authorization: Bearer ***" for c in command), flush=True)
            status = subprocess.call(command)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        sys.exit(status)


if __name__ == "__main__":
    main()
