"""Actions by owner (``sematic-k8s server --actions-by owner``, ``$SEMATIC_K8S_ACTIONS_BY``), over real HTTP on SQLite
and PostgreSQL with two user keys (alice, bob) and an admin: a user key cancels, re-runs, continues, labels and notes
only the resolutions it recorded, an admin key any, and a resolution recorded with no owner (before owners, or straight
into the database) only an admin; a refusal is a 403 whose one line names the key, the owner's key and what to do,
nothing of it applied. The one check is a dependency of every keyed route, keyed on the route's marker: a walk over the
app's routes shows every action route on a resolution honours it. By default (team) any user key acts on any
resolution, as before. Was: any user or admin key acted on any resolution, whatever the server's setting."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from sematic_k8s import settings
from sematic_k8s.specs import DriverSpec
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.wire import batch_to_json, dumps
from sematic_k8s_server.cli import main
from sematic_k8s_server.config import RerunConfig, ServerConfig
from sematic_k8s_server.deps import ACTION
from serving import Served, app_routes, create_api_key, record_resolution, serve, server_process

REPO = "127.0.0.1:5000/pipelines"
IMAGE = f"{REPO}@sha256:" + "ab" * 32
STORAGE = "s3://sk-owned/artifacts"
READS = frozenset({"GET", "HEAD"})
# the routes on a resolution that change something and check owners their own way (its own key's only, admin too)
OWN_CHECKS = {("POST", "/api/v1/resolutions/{resolution_id}/token"),
              ("DELETE", "/api/v1/resolutions/{resolution_id}/token"),
              ("POST", "/api/v1/store/take_over/{resolution_id}")}
ACTIONS = {  # what each action asks, and how its refusal names it
    "cancel": ("cancel", {}),
    "rerun": ("re-run or continue", {}),
    "continue": ("re-run or continue", {"mode": "continue"}),
    "label": ("label or note", {"add": ["mine"]}),
    "note": ("label or note", {"note": "mine"}),
}


class Team:
    """A server and its keys: alice and bob (user keys, made as a person makes them), the admin; its reruns are
    noted, never started (``launched``)."""

    def __init__(self, served: Served, launched: list[DriverSpec], envs: list[Mapping[str, str]]) -> None:
        url = served.store.engine.url.render_as_string(hide_password=False)
        self.served, self.launched, self.envs = served, launched, envs  # envs: each rerun driver's environment
        self.alice = create_api_key(url, served.home, "alice")
        self.bob = create_api_key(url, served.home, "bob")
        self.admin = served.admin_key

    def recorded(self, key: str, state: str) -> str:
        """A cloud resolution of ``IMAGE`` recorded by ``key`` in ``state``, through the server."""
        return record_resolution(self.served.url, key, kind="cloud", state=state, image=IMAGE, storage_url=STORAGE)

    def unowned(self, state: str) -> str:
        """A cloud resolution recorded straight into the database (no owner), as one recorded before owners."""
        root = uuid.uuid4().hex
        batch = Batch()
        batch.add_resolution(ResolutionRecord(id=root, root_func_path="pipes:pipeline", state=state, image=IMAGE,
                                              settings={"kind": "cloud", "storage_url": STORAGE}, created_at=utcnow()))
        batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="pipes:pipeline",
                                func_name="pipeline", state=state, created_at=utcnow()))
        self.served.store.write(batch)
        return root

    def target(self, key: str | None, action: str) -> str:
        """A resolution ``key`` recorded (None: no owner) that ``action`` applies to: running to cancel, failed else."""
        state = "running" if action == "cancel" else "failed"
        return self.unowned(state) if key is None else self.recorded(key, state)

    def act(self, key: str | None, action: str, root: str) -> httpx.Response:
        path = "labels" if action in ("label", "note") else "rerun" if action == "continue" else action
        with self.served.client(key) as c:
            return c.post(f"/api/v1/resolutions/{root}/{path}", json=ACTIONS[action][1])

    def as_recorded(self, root: str) -> tuple:
        """What an action changes: the resolution's state, labels and cancel, the resolutions recorded, reruns."""
        store = self.served.store
        res = store.get_resolution(root)
        assert res is not None
        return (res.state, res.tags, res.note, res.labels_version, store.cancel_requested(root),
                len(store.list_resolutions()), len(self.launched))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else None


def _team(tmp_path: Path, db_url: str | None, actions_by: str | None) -> Iterator[Team]:
    launched: list[DriverSpec] = []
    envs: list[Mapping[str, str]] = []

    def launch(spec: DriverSpec, env: Mapping[str, str]) -> None:
        launched.append(spec)
        envs.append(env)

    config = ServerConfig(reruns=RerunConfig(image_repositories=(REPO,), storage_url=STORAGE),
                          **({} if actions_by is None else {"actions_by": actions_by}))
    with serve(tmp_path, db_url, config=config, rerun_launcher=launch) as s:
        yield Team(s, launched, envs)


@pytest.fixture
def owners(db: str | None, tmp_path: Path) -> Iterator[Team]:
    """A server started with actions by owner."""
    yield from _team(tmp_path, db, "owner")


@pytest.fixture
def team(db: str | None, tmp_path: Path) -> Iterator[Team]:
    """A server started as by default (actions by team)."""
    yield from _team(tmp_path, db, None)


def _refused(r: httpx.Response) -> str:
    assert r.status_code == 403, (r.request.method, r.request.url.path, r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    return detail


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_user_key_acts_only_on_its_own_resolutions_and_an_admin_on_any(owners: Team, action: str) -> None:
    words = ACTIONS[action][0]
    root = owners.target(owners.alice, action)
    before = owners.as_recorded(root)
    assert _refused(owners.act(owners.bob, action, root)) == (
        f"key 'bob' may not {words} resolution {root} (owned by 'alice'): ask its owner or an admin")
    assert owners.as_recorded(root) == before  # nothing of it applied
    for key in (owners.alice, owners.admin):  # its owner, and an admin key, on a resolution of alice's each
        mine = owners.target(owners.alice, action)
        was = owners.as_recorded(mine)
        r = owners.act(key, action, mine)
        assert r.status_code in (200, 202), (action, r.status_code, r.text[:300])
        assert owners.as_recorded(mine) != was  # applied
    assert len(owners.launched) == (2 if action in ("rerun", "continue") else 0)  # the two reruns started


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_resolution_with_no_owner_is_an_admins_alone(owners: Team, action: str) -> None:
    words = ACTIONS[action][0]
    root = owners.target(None, action)
    before = owners.as_recorded(root)
    for name, key in (("alice", owners.alice), ("bob", owners.bob)):
        assert _refused(owners.act(key, action, root)) == (
            f"key {name!r} may not {words} resolution {root} (it has no owner: recorded before the server recorded "
            "owners, or straight into the database): ask an admin")
    assert owners.as_recorded(root) == before
    r = owners.act(owners.admin, action, root)
    assert r.status_code in (200, 202), r.text[:300]


def test_the_owner_refused_is_named_even_once_revoked_and_an_unknown_id_is_still_a_404(owners: Team) -> None:
    root = owners.recorded(owners.alice, "running")
    with owners.served.client(owners.admin) as admin:
        alice = next(k for k in admin.get("/api/v1/api-keys").json()["items"] if k["name"] == "alice")
        assert admin.post(f"/api/v1/api-keys/{alice['id']}/revoke", json={}).status_code == 200
    assert _refused(owners.act(owners.bob, "cancel", root)) == (
        f"key 'bob' may not cancel resolution {root} (owned by 'alice', revoked): ask its owner or an admin")
    unknown = uuid.uuid4().hex
    assert owners.act(owners.bob, "cancel", unknown).status_code == 404


def test_every_action_route_on_a_resolution_honours_the_owner_check(owners: Team) -> None:
    """Walks the app's own routes: every route on a resolution (``{resolution_id}`` in its path) that changes anything
    is marked an action (checked by the one dependency) or checks owners its own way (:data:`OWN_CHECKS`); each marked
    one refuses bob alice's resolution in one line naming both, nothing applied. A route added later unmarked fails
    here."""
    root = owners.recorded(owners.alice, "running")
    before = owners.as_recorded(root)
    marked = []
    with owners.served.client(owners.bob) as bob:
        for template, route in app_routes(owners.served.app.routes):
            for method in sorted(set(route.methods) - READS):
                if "{resolution_id}" not in template:
                    continue
                what = (getattr(route, "openapi_extra", None) or {}).get(ACTION)
                if what is None:
                    assert (method, template) in OWN_CHECKS, f"{method} {template}: an action with no owner check"
                    continue
                detail = _refused(bob.request(method, template.replace("{resolution_id}", root), json={}))
                assert re.fullmatch(rf"key 'bob' may not {what} resolution {root} \(owned by 'alice'\): ask its owner "
                                    "or an admin", detail), detail
                marked.append(template.rsplit("/", 1)[1])
    assert sorted(marked) == ["cancel", "labels", "rerun"], marked
    assert owners.as_recorded(root) == before


def _continuing(team: Team, credential: str, of: str, res_id: str) -> httpx.Response:
    """Resolution ``res_id`` recorded through the store with ``credential`` (a key, as a LocalResolver continuing ``of``
    records it; a token, as a driver does), running and beating, saying it continues ``of``."""
    batch = Batch()
    batch.add_resolution(ResolutionRecord(
        id=res_id, root_func_path="pipes:pipeline", state="running", rerun_of=of, created_at=utcnow(),
        heartbeat_at=utcnow(), image=IMAGE,
        settings={"kind": "cloud", "rerun_of": of, "rerun_mode": "continue", "storage_url": STORAGE}))
    with team.served.client(credential) as c:
        return c.post("/api/v1/store/write", content=dumps(batch_to_json(batch)),
                      headers={"Content-Type": "application/json"})


def _made_to_continue(team: Team, key: str, of: str) -> tuple[str, httpx.Response]:
    """A running resolution ``key`` recorded, then updated through the store to say it continues ``of``: its id, and
    the update's answer."""
    res_id = team.recorded(key, "running")
    batch = Batch(resolution_updates={res_id: {
        "rerun_of": of, "heartbeat_at": utcnow(),
        "settings": {"kind": "cloud", "rerun_of": of, "rerun_mode": "continue", "storage_url": STORAGE}}})
    with team.served.client(key) as c:
        return res_id, c.post("/api/v1/store/write", content=dumps(batch_to_json(batch)),
                              headers={"Content-Type": "application/json"})


def _update_refused(team: Team, key: str, of: str) -> None:
    res_id, r = _made_to_continue(team, key, of)
    assert r.status_code == 422 and r.json()["detail"] == (
        f"resolution {res_id}: an update may not change what it continues (rerun_of, settings.rerun_mode 'continue'); "
        "a continue is a new resolution, recorded as one (sematic-k8s rerun RUN_ID --mode continue)"), r.text
    assert team.served.store.get_resolution(res_id).rerun_of is None  # type: ignore[union-attr]


def test_no_key_records_a_continue_of_a_resolution_it_may_not_continue(owners: Team) -> None:
    """A resolution has one continuation at a time (a second is refused while the first runs). Bob, refused alice's
    continue at its route, records one through the store (as a LocalResolver continuing it would), and through a token
    he minted to re-run from it: each a 403 in one line naming both keys, nothing recorded, and alice then continues
    hers. Alice's own record of a continue, and the record an admin's rerun driver writes in the place of the server's
    claim, are let through; an update making a resolution of bob's continue hers is a 422. Was: bob's records were
    written, and alice's continue refused (409, "being continued already by" bob's) for as long as his record beat,
    which she may not cancel."""
    root = owners.recorded(owners.alice, "failed")
    bobs, tokens = uuid.uuid4().hex, uuid.uuid4().hex
    refused = f"key 'bob' may not continue resolution {root} (owned by 'alice'): ask its owner or an admin"
    assert _refused(_continuing(owners, owners.bob, root, bobs)) == (
        f"{refused} (resolution {bobs} records that it continues it)")
    with owners.served.client(owners.bob) as c:
        token = c.post(f"/api/v1/resolutions/{tokens}/token", json={"rerun_from": root}).json()["token"]
    assert _refused(_continuing(owners, token, root, tokens)) == (
        f"resolution {tokens}'s token: {refused} (resolution {tokens} records that it continues it)")
    assert owners.served.store.get_resolution(bobs) is None and owners.served.store.get_resolution(tokens) is None
    _update_refused(owners, owners.bob, root)  # nor by updating one of his own (nor alice, below: in any mode)
    later = uuid.uuid4().hex  # nor by a new one, not a continue, made one by an update in its own batch
    batch = Batch(resolution_updates={later: {"settings": {"kind": "cloud", "rerun_mode": "continue"}}})
    batch.add_resolution(ResolutionRecord(id=later, root_func_path="pipes:pipeline", state="running", rerun_of=root,
                                          created_at=utcnow(), heartbeat_at=utcnow(), settings={"kind": "cloud"}))
    with owners.served.client(owners.bob) as c:
        r = c.post("/api/v1/store/write", content=dumps(batch_to_json(batch)),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and owners.served.store.get_resolution(later) is None, r.text
    assert owners.act(owners.alice, "continue", root).status_code == 202  # nothing in her way
    assert _continuing(owners, owners.alice, owners.recorded(owners.alice, "failed"), uuid.uuid4().hex).is_success
    other = owners.recorded(owners.alice, "failed")
    claimed = owners.act(owners.admin, "continue", other).json()["resolution_id"]
    driver = owners.envs[-1][settings.API_KEY_ENV]  # the admin's rerun driver's token: its record in the claim's place
    assert _continuing(owners, driver, other, claimed).is_success
    assert owners.served.store.get_resolution(claimed).state == "running"  # type: ignore[union-attr]


def test_by_default_any_key_records_a_continue_of_any_resolution(team: Team) -> None:
    """Acting by team, any key continues any resolution, recording a new resolution that continues it. An update of a
    recorded resolution making it continue one (which the check of one continuation at a time never saw: two then ran at
    once) is a 422, in any mode. Was: written."""
    root = team.recorded(team.alice, "failed")
    for key in (team.alice, team.bob):  # a continue is recorded with its resolution, never by an update
        _update_refused(team, key, root)
    assert _continuing(team, team.bob, root, uuid.uuid4().hex).is_success


@pytest.mark.parametrize("action", list(ACTIONS))
def test_by_default_any_user_key_acts_on_any_resolution(team: Team, action: str) -> None:
    root = team.target(team.alice, action)
    r = team.act(team.bob, action, root)
    assert r.status_code in (200, 202), r.text[:300]
    unowned = team.target(None, action)
    assert team.act(team.alice, action, unowned).status_code in (200, 202)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_server_command_takes_the_setting_from_its_flag_or_environment(tmp_path: Path, how: str) -> None:
    args, env = (["--actions-by", "owner"], None) if how == "flag" else ([], {"SEMATIC_K8S_ACTIONS_BY": "owner"})
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    with server_process(tmp_path, "--db-url", url, *args, env=env) as (_, base):
        alice, bob = (create_api_key(url, tmp_path, name) for name in ("alice", "bob"))
        root = record_resolution(base, alice, kind="cloud", state="running")
        with httpx.Client(base_url=base, headers={"X-API-Key": bob}, timeout=30) as c:
            r = c.post(f"/api/v1/resolutions/{root}/cancel", json={})
        assert r.status_code == 403 and "(owned by 'alice')" in r.json()["detail"], r.text
    bad = CliRunner().invoke(main, ["server", "--home", str(tmp_path), "--actions-by", "nobody"])
    assert bad.exit_code == 2 and "'nobody' is not one of 'team', 'owner'" in bad.output, bad.output


def _overview_refusals(served: Team, expected: str) -> dict[str, str | None]:
    """Each key's overview ``actions_refused`` of a resolution alice recorded, its ``whoami`` saying ``expected``."""
    root = served.recorded(served.alice, "running")
    out = {}
    for name, key in (("bob", served.bob), ("alice", served.alice), ("admin", served.admin)):
        with served.served.client(key) as c:
            assert c.get("/api/v1/whoami").json()["actions_by"] == expected
            out[name] = c.get(f"/api/v1/resolutions/{root}/overview").json()["actions_refused"]
    return {name: None if why is None else why.replace(root, "ID") for name, why in out.items()}


def test_the_overview_says_why_a_key_may_not_act_and_whoami_the_setting(owners: Team) -> None:
    """What the dashboard draws disabled: the overview's ``actions_refused`` (the refusal's own words), null for the
    owner's key and an admin's; ``whoami`` says the setting."""
    assert _overview_refusals(owners, "owner") == {
        "bob": "key 'bob' may not cancel, re-run, continue, label or note resolution ID (owned by 'alice'): ask its "
               "owner or an admin", "alice": None, "admin": None}


def test_by_default_the_overview_refuses_no_key(team: Team) -> None:
    assert _overview_refusals(team, "team") == {"bob": None, "alice": None, "admin": None}
