#!/usr/bin/env python3
"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright.

Starts `cairn serve` on an ephemeral 127.0.0.1 port over a fresh store (a bootstrap admin, a
`notes` collection with a record, a user who is not an admin), then as the admin: a wrong
password is refused; signing in shows the collections; a collection's records are filtered (a bad filter pointed at), sorted and updated live
when another client writes; a record is edited, meets another client's edit as a conflict,
is reverted from its history, deleted and undone; a backup is taken, verified and restored
with its typed confirmation; the jobs page lists a job enqueued
meanwhile and follows it live to completion; killing the server shows the lost-connection
banner, and after a restart on the same port the job enqueued while it was down appears.
As the other user: no jobs link, and the jobs page by URL is refused. No page may break the
Content-Security-Policy. Screenshots (desktop and phone width) go to SHOTS_DIR, also on
failure.

Usage: .ci/console_test.py PATH_TO_CAIRN SHOTS_DIR
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from playwright.sync_api import expect, sync_playwright

from cairn_api import call

PASSWORD = "console admin password"


def serve(cairn, store, password_file, listen):
    server = subprocess.Popen(
        [cairn, "--dir", store, "serve", "--listen", listen,
         "--bootstrap-admin", "root", "--bootstrap-admin-password-file", password_file],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            raise SystemExit("cairn serve ended before it listened")
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if found:
            threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
            return server, found.group(1)
    server.kill()
    raise SystemExit("cairn serve did not say where it listens")


def stop(server):
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()


def main():
    cairn, shots = sys.argv[1], sys.argv[2]
    os.makedirs(shots, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cairn-console-") as tmp:
        store = os.path.join(tmp, "store")
        password_file = os.path.join(tmp, "password")
        with open(password_file, "w") as f:
            f.write(PASSWORD + "\n")
        server, base = serve(cairn, store, password_file, "127.0.0.1:0")
        try:
            token = call(base, "POST", "/api/auth/login", body={"name": "root", "password": PASSWORD})["token"]
            call(base, "POST", "/api/collections", token,
                 {"name": "notes", "fields": [{"name": "title", "type": "text", "summary": True, "indexed": True}]})
            call(base, "POST", "/api/collections/notes/records", token, {"title": "first note"})
            call(base, "POST", "/api/users", token, {"name": "ana", "password": "ana's password", "role": "user"})
            server = run_browser(cairn, store, password_file, base, token, server, shots)
        finally:
            stop(server)


def run_browser(cairn, store, password_file, base, token, server, shots):
    violations = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        try:
            page.goto(base + "/console/")
            page.get_by_label("Name").fill("root")
            page.get_by_label("Password").fill("wrong password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("do not sign anyone in")
            page.screenshot(path=os.path.join(shots, "sign-in.png"))

            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Collections")).to_be_visible()
            expect(page.get_by_role("row", name=re.compile(r"notes\s+1\s+1"))).to_be_visible()
            page.screenshot(path=os.path.join(shots, "collections.png"))

            # Records: a table of the summary fields, a filter whose error points at the
            # character, sorting by a column, and another client's write appearing live.
            page.get_by_role("link", name="notes").click()
            expect(page.get_by_role("heading", name="notes")).to_be_visible()
            expect(page.get_by_role("cell", name="first note")).to_be_visible()
            page.get_by_label("Filter").fill('title = "first note" and >')
            page.get_by_role("button", name="Apply").click()
            expect(page.get_by_role("alert")).to_contain_text("filter")
            expect(page.locator("pre.caret")).to_have_text('title = "first note" and >\n' + " " * 25 + "^")
            page.screenshot(path=os.path.join(shots, "records-filter-error.png"))
            page.get_by_label("Filter").fill('title != "nothing"')
            page.get_by_role("button", name="Apply").click()
            expect(page.get_by_role("cell", name="first note")).to_be_visible()
            call(base, "POST", "/api/collections/notes/records", token, {"title": "a second note"})
            expect(page.get_by_role("cell", name="a second note")).to_be_visible(timeout=15_000)
            page.get_by_role("button", name="title").click()
            expect(page.get_by_role("columnheader", name="title")).to_have_attribute("aria-sort", "ascending")
            expect(page.locator("tbody tr").first).to_contain_text("a second note")
            page.get_by_role("button", name="title").click()
            expect(page.get_by_role("columnheader", name="title")).to_have_attribute("aria-sort", "descending")
            expect(page.locator("tbody tr").first).to_contain_text("first note")
            page.screenshot(path=os.path.join(shots, "records.png"))

            # A record: edit, a conflict with another client's edit, history and revert,
            # delete (confirmed) and undo.
            page.locator("tbody tr", has_text="first note").get_by_role("link").click()
            expect(page.locator("h1")).to_contain_text("notes / ")
            record_id = page.locator("h1").inner_text().split(" / ")[1]
            page.get_by_label("title").fill("first note, edited")
            page.get_by_role("button", name="Save").click()
            expect(page.get_by_text("version 2,")).to_be_visible()
            call(base, "PATCH", f"/api/collections/notes/records/{record_id}", token, {"title": "changed elsewhere"})
            expect(page.get_by_role("status").filter(has_text="Version 3 was saved elsewhere")).to_be_visible(timeout=15_000)
            page.get_by_label("title").fill("a stale edit")
            page.get_by_role("button", name="Save").click()
            expect(page.get_by_role("alert")).to_contain_text("now version 3")
            page.screenshot(path=os.path.join(shots, "record-conflict.png"))
            page.get_by_role("button", name="Show the newer version").click()
            expect(page.get_by_label("title")).to_have_value("changed elsewhere")
            page.get_by_role("button", name="Revert to version 1").click()
            expect(page.get_by_text("version 4,")).to_be_visible()
            expect(page.get_by_label("title")).to_have_value("first note")
            page.screenshot(path=os.path.join(shots, "record.png"))
            page.once("dialog", lambda dialog: dialog.accept())
            page.get_by_role("button", name="Delete").click()
            expect(page.get_by_text("is deleted")).to_be_visible()
            page.get_by_role("button", name="Undo the delete").click()
            expect(page.get_by_label("title")).to_have_value("first note")

            # Backups: take one, verify it, restore it with the typed confirmation.
            page.get_by_role("link", name="Backups").click()
            page.get_by_role("button", name="Take a backup now").click()
            first = page.locator("tbody tr").first
            expect(first).to_contain_text("verified", timeout=30_000)
            backup_id = first.locator("td").first.inner_text()
            first.get_by_role("button", name="Verify").click()
            expect(page.locator(".toast", has_text=f"Backup {backup_id}: verified")).to_be_visible(timeout=30_000)
            page.screenshot(path=os.path.join(shots, "backups.png"))
            page.locator(f'tr[data-backup="{backup_id}"]').get_by_role("button", name="Restore…").click()
            go = page.get_by_role("button", name="Replace the store with this backup")
            expect(go).to_be_disabled()
            page.get_by_label(re.compile("Type the backup's id")).fill("not the id")
            expect(go).to_be_disabled()
            page.get_by_label(re.compile("Type the backup's id")).fill(backup_id)
            page.screenshot(path=os.path.join(shots, "restore-confirm.png"))
            go.click()
            expect(page.locator(".toast", has_text=f"Restored from {backup_id}")).to_be_visible(timeout=60_000)
            expect(page.get_by_role("cell", name="pre_restore").first).to_be_visible()

            page.get_by_role("link", name="Jobs").click()
            expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
            job = call(base, "POST", "/api/jobs", token, {"kind": "cairn.check", "queue": "maintenance"})["job"]
            row = page.locator(f'tr[data-job="{job["id"]}"]')
            expect(row).to_contain_text("completed", timeout=30_000)
            page.screenshot(path=os.path.join(shots, "jobs.png"))
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=os.path.join(shots, "jobs-phone.png"))
            page.set_viewport_size({"width": 1280, "height": 800})

            # The server goes away: the banner says so; back on the same port, the page
            # lists again and shows what changed meanwhile.
            port = base.rsplit(":", 1)[1]
            stop(server)
            expect(page.locator("#banner")).to_contain_text("connection to the server was lost", timeout=30_000)
            page.screenshot(path=os.path.join(shots, "jobs-disconnected.png"))
            server, _ = serve(cairn, store, password_file, "127.0.0.1:" + port)
            later = call(base, "POST", "/api/jobs", token, {"kind": "report.later", "queue": "reports"})["job"]
            expect(page.locator(f'tr[data-job="{later["id"]}"]')).to_contain_text("available", timeout=30_000)
            expect(page.locator("#banner")).to_be_hidden()

            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            page.get_by_label("Name").fill("ana")
            page.get_by_label("Password").fill("ana's password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("ana (user)")).to_be_visible()
            expect(page.get_by_role("link", name="Jobs")).to_be_hidden()
            page.goto(base + "/console/#/jobs")
            page.reload()
            expect(page.get_by_role("alert")).to_contain_text("admins")
            page.screenshot(path=os.path.join(shots, "jobs-refused.png"))
        except Exception:
            page.screenshot(path=os.path.join(shots, "failure.png"))
            raise
        finally:
            browser.close()
    if violations:
        raise SystemExit(f"Content-Security-Policy violations: {violations}")
    print("console: every check passed; screenshots in", shots)
    return server


if __name__ == "__main__":
    main()
