"""The dashboard with a read-only API key, in headless Chromium: what the key may not do is drawn disabled, its title
saying why (the page asks the server who its key is: ``GET /api/v1/whoami``); the key reads the page as any key does.
The same page with a user key has them enabled. Was: every action shown enabled, each click a 403 banner."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from browser_pages import actions_menu
from sematic_k8s_server import auth
from serving import serve

TESTS = Path(__file__).parent
WHY = "key 'viewer' is read-only: use a user key"


def test_a_read_only_keys_actions_are_disabled_saying_why(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    with serve(tmp_path) as s:
        assert s.key is not None
        viewer = auth.create_key(s.store.engine, "viewer", read_only=True)
        running_id = big.record_fanout(s.store, 3, running=2, owner=s.owner)
        for key, read_only in ((viewer, True), (s.key, False)):
            with actions_menu(browser, s.url, key, running_id, "2/6 resolved") as page:
                tid = page.get_by_test_id
                cancel, add, note = tid("action-cancel"), tid("tag-add"), tid("note-edit")
                if read_only:
                    for control in (cancel, add, note, tid("tag-input")):
                        expect(control).to_be_disabled()
                        expect(control).to_have_attribute("title", f"{WHY} to do this")
                else:
                    for control in (cancel, add, note):
                        expect(control).to_be_enabled()
                    expect(cancel).to_have_attribute("title", "Stop this resolution")
        assert s.store.get_resolution(running_id).state == "running"
