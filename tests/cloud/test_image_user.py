"""Secret files given to the image's user when its USER is a name, with the real engine: a Docker driver's keys
(``$SEMATIC_K8S_*_FILE``), as the Docker launcher copies them into its created container, are that user's and it
reads them; each form of USER (none, numeric, a user or group name from the image's own /etc/passwd and /etc/group)
resolves to the ids the engine runs the container as; a name the image lacks is refused in words. The worker's task
file: ``test_docker_executor.py``."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from infra import docker_client, require_docker
from named_user import APP_GID, APP_UID, NAMED_USER_REPO, SK_GID, named_user_image
from sematic_k8s.docker_secrets import image_user
from sematic_k8s.errors import ImageUserUnknown
from sematic_k8s.labels import RESOLUTION_LABEL
from sematic_k8s.launchers.docker import start_driver
from sematic_k8s.settings import API_KEY_ENV, SECRET_FILE_ENVS
from sematic_k8s.specs import DriverSpec, ResolutionSettings
from waiting import wait_for

# What the fake driver does: reads each secret file it is named, says whether it could, then idles.
FAKE_DRIVER = """import os, time
for var in sorted(v for v in os.environ if v.startswith("SEMATIC_K8S_") and v.endswith("_FILE")):
    try:
        with open(os.environ[var]) as f:
            print(var, "read", len(f.read()), "characters as uid", os.getuid(), flush=True)
    except OSError as e:
        print(var, "unreadable:", e.strerror, "as uid", os.getuid(), flush=True)
print("done", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """The engine (the tests' base image there); the images the tests tagged are untagged at the end."""
    require_docker()
    client = docker_client()
    yield client
    for image in client.images.list(name=NAMED_USER_REPO):
        for tag in image.tags:
            if tag.endswith(f"-{RUN}"):
                client.images.remove(tag)


RUN = uuid.uuid4().hex[:8]


@pytest.mark.parametrize(("user", "ids"), [
    ("0", (0, 0)), ("2345", (2345, 2345)), ("2345:2400", (2345, 2400)),
    ("app", (APP_UID, APP_GID)), ("app:sk", (APP_UID, SK_GID)), ("2345:sk", (APP_UID, SK_GID)),
    ("app:2400", (APP_UID, 2400)), ("ghost", None), ("app:ghosts", None)])
def test_an_images_user_resolves_to_the_ids_the_engine_runs_it_as(engine, user, ids):
    """The ids match what ``id -u``/``id -g`` print in a container of the image (a name, from its own /etc/passwd
    and /etc/group); a name it lacks, which the engine refuses at the container's start, is ImageUserUnknown saying
    the image, its USER and what to do. Was: every name taken for root."""
    image = named_user_image(engine, require_docker(), user, f"{user.replace(':', '-')}-{RUN}")
    container = engine.containers.create(image, ["sh", "-c", "echo $(id -u) $(id -g)"])
    try:
        if ids is None:
            with pytest.raises(ImageUserUnknown) as refused:
                image_user(engine, image, container.id)
            missing = user.rpartition(":")[2]
            assert str(refused.value) == (
                f"image {image} runs as USER {user}, but its /etc/{'group' if ':' in user else 'passwd'} has no "
                f"{'group' if ':' in user else 'user'} {missing}: Docker would refuse to start it; give the image a "
                "numeric USER (uid or uid:gid) or one its /etc/passwd and /etc/group name")
            with pytest.raises(Exception, match="unable to find"):  # the engine's own refusal
                container.start()
            return
        assert image_user(engine, image, container.id) == ids
        container.start()
        container.wait()
        assert container.logs().decode().split() == [str(i) for i in ids]
    finally:
        container.remove(force=True)


def test_a_docker_drivers_secret_files_are_its_named_users_and_it_reads_them(engine):
    """A driver image whose USER is ``app:sk`` (a user's own base image): the launcher's 0400 files (its token,
    an S3 key) are uid 2345's, whom the driver runs as, and it reads each. Was: they were root's, and the driver
    could read none (Permission denied), so a CloudResolver's Docker driver failed at its start."""
    driver = base64.b64encode(FAKE_DRIVER.encode()).decode()
    image = named_user_image(engine, require_docker(), "app:sk", f"driver-{RUN}", extra=(
        "WORKDIR /fake\n"
        f"RUN mkdir sematic_k8s && touch sematic_k8s/__init__.py && echo {driver} | base64 -d > sematic_k8s/driver.py"))
    root_id = uuid.uuid4().hex
    spec = DriverSpec(root=None, storage_url="s3://nowhere/artifacts", image=image,
                      resolution=ResolutionSettings(root_id=root_id))
    env = {API_KEY_ENV: f"sk-token-{uuid.uuid4().hex}", "AWS_SECRET_ACCESS_KEY": "sk-key-1234"}
    start_driver(spec, env, docker_socket=False)
    try:
        [container] = engine.containers.list(all=True, filters={"label": f"{RESOLUTION_LABEL}={root_id}"})
        logs = wait_for(lambda: "done" in (text := container.logs().decode()) and text, 60, what="the driver's look")
        assert logs.splitlines() == sorted(
            f"{SECRET_FILE_ENVS[name]} read {len(value)} characters as uid {APP_UID}" for name, value in env.items()
        ) + ["done"]
    finally:
        for container in engine.containers.list(all=True, filters={"label": f"{RESOLUTION_LABEL}={root_id}"}):
            container.remove(force=True)
