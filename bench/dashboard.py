"""Time to show a 5,000-run resolution's page in headless Chromium, against a 50-run one measured in the same run.

The server (uvicorn, API keys on, SQLite) holds two recorded resolutions of the same shape: ``prepare``, a
fan-out of N ``add`` runs, ``total`` (tests/dashboard/big_resolution.py). Debian's Chromium, driven by Playwright,
loads the dashboard fresh on each resolution's page and waits until its graph is drawn (every box placed);
the median of several loads is reported for each size, and their ratio. Also: the page's height, the
boxes drawn, and the time of the overview request alone. Run with ``make bench`` or ``python -m bench.dashboard``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
GOAL_S = 1.0  # issue 14: a 5,000-run resolution's page drawn in under a second
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
DRAWN_JS = """() => { const g = document.querySelector('[data-testid="run-graph"]');
  return g && g.style.width ? {boxes: document.querySelectorAll('.run').length,
                               height: document.documentElement.scrollHeight} : null; }"""


def load_page(page, url: str) -> tuple[float, dict]:  # noqa: ANN001 - a Playwright page
    """Seconds from navigation to the graph drawn, and what was drawn."""
    page.goto("about:blank")
    t0 = time.perf_counter()
    page.goto(url)
    handle = page.wait_for_function(DRAWN_JS, timeout=60_000, polling="raf")
    return time.perf_counter() - t0, handle.json_value()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000, help="runs in the big fan-out")
    parser.add_argument("--baseline", type=int, default=50, help="runs in the baseline fan-out")
    parser.add_argument("--loads", type=int, default=7, help="page loads per size (the median is reported)")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(REPO / "tests" / "support"), str(REPO / "tests" / "dashboard")]
    from playwright.sync_api import sync_playwright

    from big_resolution import record_fanout
    from serving import serve

    if not Path(CHROMIUM).exists():
        print(f"dashboard bench: no Chromium at {CHROMIUM} (apt-get install chromium): skipped", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp)) as s:
        ids = {n: record_fanout(s.store, n) for n in (args.baseline, args.runs)}
        api = {}
        with httpx.Client(base_url=s.url, headers={"X-API-Key": s.key}, timeout=60) as c:
            for n, rid in ids.items():
                times = []
                for _ in range(args.loads):
                    t0 = time.perf_counter()
                    c.get(f"/api/v1/resolutions/{rid}/overview").raise_for_status()
                    times.append(time.perf_counter() - t0)
                api[n] = statistics.median(times)
        results = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_context(viewport={"width": 1440, "height": 960}).new_page()
            page.goto(s.url + "/static/style.css")
            page.evaluate(f"localStorage.setItem('sematic_k8s_api_key', '{s.key}')")
            for n, rid in ids.items():
                load_page(page, f"{s.url}/#/resolutions/{rid}")  # warm: the modules cached, as for a user
                runs = [load_page(page, f"{s.url}/#/resolutions/{rid}") for _ in range(args.loads)]
                results[n] = (statistics.median(t for t, _ in runs), runs[-1][1])
            browser.close()
    base_s, base = results[args.baseline]
    big_s, big = results[args.runs]
    print(f"\ndashboard: a resolution's page in headless Chromium, loaded fresh until its graph is drawn "
          f"(median of {args.loads}); the same machine and run for both")
    header = f"{'runs':>6} {'page ms':>8} {'overview API ms':>16} {'boxes drawn':>12} {'page height px':>15}"
    print(header)
    print("-" * len(header))
    for n in (args.baseline, args.runs):
        t, drawn = results[n]
        print(f"{n + 3:>6} {t * 1000:>8.0f} {api[n] * 1000:>16.0f} {drawn['boxes']:>12} {drawn['height']:>15}")
    print(f"ratio {args.runs + 3} runs / {args.baseline + 3} runs: {big_s / base_s:.2f}x "
          f"({big_s * 1000:.0f} ms vs {base_s * 1000:.0f} ms); goal: the {args.runs + 3}-run page under "
          f"{GOAL_S:g} s: {'met' if big_s < GOAL_S else 'MISSED'}")


if __name__ == "__main__":
    main()
