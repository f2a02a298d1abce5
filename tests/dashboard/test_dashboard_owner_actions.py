"""The dashboard on a server started with ``--actions-by owner``, in headless Chromium: on another key's resolution a
user key's Rerun, Continue, Cancel and label controls are drawn disabled, their titles saying why (the overview's
``actions_refused``, the server's own words); its owner's key and an admin key have them enabled. Was: every action
shown enabled, each click a 403 banner."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from browser_pages import actions_menu
from sematic_k8s_server import auth
from sematic_k8s_server.config import ServerConfig
from serving import serve

TESTS = Path(__file__).parent


def test_another_keys_resolution_has_its_actions_disabled_saying_why(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    with serve(tmp_path, config=ServerConfig(actions_by="owner")) as s:
        assert s.key is not None and s.admin_key is not None
        bob = auth.create_key(s.store.engine, "bob")
        running_id = big.record_fanout(s.store, 3, running=2, owner=s.owner)  # the "tests" key's
        why = (f"key 'bob' may not cancel, re-run, continue, label or note resolution {running_id} (owned by "
               "'tests'): ask its owner or an admin")
        for key, refused in ((bob, True), (s.key, False), (s.admin_key, False)):
            with actions_menu(browser, s.url, key, running_id, "2/6 resolved") as page:
                tid = page.get_by_test_id
                cancel, add, note = tid("action-cancel"), tid("tag-add"), tid("note-edit")
                if refused:
                    for control in (cancel, tid("action-rerun"), add, note, tid("tag-input")):
                        expect(control).to_be_disabled()
                        expect(control).to_have_attribute("title", why)
                else:
                    for control in (cancel, add, note):
                        expect(control).to_be_enabled()
                    expect(cancel).to_have_attribute("title", "Stop this resolution")
                    expect(tid("action-rerun")).to_have_attribute("title", "Wait until it ends")
        assert s.store.get_resolution(running_id).state == "running"
