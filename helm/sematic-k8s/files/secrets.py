# Makes the Secrets whose values the chart generates (the bundled PostgreSQL's password, MinIO's root password),
# once: a Secret that exists is left as it is, so a password never changes after the database was created with it.
# Run by the chart's secrets hook Job (pre-install, pre-upgrade) with the server image, as its own ServiceAccount
# that may only get and create Secrets. Rendering the chart (helm template, Argo CD) therefore never changes them.
#
# $SECRETS is a JSON list of {"namespace", "name", "labels", "data": {key: value or null}, "copy_of": index,
# "legacy": {"name", "key"}}: null values are generated (48 hex characters: safe in URLs and connection strings),
# unless the "legacy" Secret (where an earlier version of the chart kept it) holds one; "copy_of" makes a Secret
# with the same data as an earlier entry (the S3 credentials in the run namespace).
import base64
import json
import os
import secrets
import sys

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


def say(line):
    print(line, file=sys.stderr, flush=True)


def legacy_value(core, namespace, legacy):
    """The value an earlier chart version stored (upgrades keep the database's password); None if none."""
    if not legacy:
        return None
    try:
        data = core.read_namespaced_secret(legacy["name"], namespace).data or {}
    except ApiException as e:
        if e.status != 404:
            raise
        return None
    value = data.get(legacy["key"])
    return base64.b64decode(value).decode() if value else None


def main():
    wanted = json.loads(os.environ["SECRETS"])
    config.load_incluster_config()
    core = client.CoreV1Api()
    for entry in wanted:
        ns, name = entry["namespace"], entry["name"]
        try:
            existing = core.read_namespaced_secret(name, ns)
        except ApiException as e:
            if e.status != 404:
                raise
            existing = None
        if existing is not None:
            say(f"secret {ns}/{name} exists: kept as it is")
            continue
        if entry.get("copy_of") is not None:
            source = wanted[entry["copy_of"]]
            data = core.read_namespaced_secret(source["name"], source["namespace"]).data or {}
            body = {"metadata": {"name": name, "labels": entry.get("labels") or {}}, "type": "Opaque", "data": data}
        else:
            kept = legacy_value(core, ns, entry.get("legacy"))
            values = {k: v if v is not None else kept or secrets.token_hex(24) for k, v in entry["data"].items()}
            if kept:
                say(f"secret {ns}/{name}: the value kept in {entry['legacy']['name']} by an earlier chart version")
            body = {"metadata": {"name": name, "labels": entry.get("labels") or {}}, "type": "Opaque",
                    "stringData": values}
        try:
            core.create_namespaced_secret(ns, body)
            say(f"secret {ns}/{name} created")
        except ApiException as e:
            if e.status != 409:  # another run of this Job made it first: keep that one
                raise
            say(f"secret {ns}/{name} exists: kept as it is")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ApiException as e:
        say(f"could not make the chart's secrets: {e.status} {e.reason}: {e.body}")
        sys.exit(1)
