"""Screenshots of the web app's views on the demo chain, for docs/ui/ (README links them).

Runs ``gridledger demo --serve`` (embedded chain, day-ahead schedule included), drives the
system Chromium with Playwright through each view, writes palette PNGs (small files) and ends
with one JSON line: the files and their sizes. Not a benchmark; it lives here beside the other
scripts that produce the repository's figures.

    python bench/ui_screenshots.py [--out docs/ui] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, sync_playwright


def start_demo(home: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "gridledger.cli", "demo", "--quiet", "--home", str(home)]
    cmd += ["--out", str(home / "out"), "--serve", "127.0.0.1:0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    for line in proc.stdout:
        if line.startswith("web app on the demo chain: "):
            return proc, line.split(": ", 1)[1].split()[0]
    raise RuntimeError(f"the demo ended without serving (exit {proc.wait()})")


def shoot(page: Page, path: Path, full: bool = False) -> None:
    page.wait_for_timeout(1200)  # charts and the map settle
    page.screenshot(path=str(path), full_page=full)
    img = Image.open(path).convert("RGB").quantize(colors=96, dither=Image.Dither.NONE)
    img.save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("docs/ui"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="gridledger-ui-"))
    proc, url = start_demo(home)
    try:
        for _ in range(100):
            try:
                import httpx

                httpx.get(url + "status", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            ctx = browser.new_context(
                viewport={"width": 1280, "height": 800}, timezone_id="UTC", locale="en-GB"
            )
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            page.set_input_files("#keyfile", str(home / "keys" / "L5.json"))
            page.wait_for_selector("[data-testid=balance]")
            shoot(page, args.out / "prosumer.png", full=True)
            for view in ("market", "dso", "scheduling"):
                page.click(f"nav a[data-view={view}]")
                if view == "dso":
                    page.wait_for_selector("#dso-map[data-drawn]", timeout=30_000)
                shoot(page, args.out / f"{view}.png")
            page.click("nav a[data-view=explorer]")
            page.get_by_role("button", name=re.compile("^open block")).first.click()
            page.get_by_role("button", name=re.compile("^proof of")).first.click()
            page.wait_for_selector("#proof-verdict[data-verdict]")
            shoot(page, args.out / "explorer.png", full=True)
            phone = browser.new_context(
                viewport={"width": 390, "height": 844}, timezone_id="UTC", locale="en-GB"
            ).new_page()
            phone.goto(url + "#dso")
            phone.wait_for_selector("#dso-map[data-drawn]", timeout=30_000)
            shoot(phone, args.out / "dso-phone.png")
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    files = {f.name: f.stat().st_size for f in sorted(args.out.glob("*.png"))}
    print(json.dumps({"screenshots": files, "chain_home": str(home)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
