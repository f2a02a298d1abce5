# Makes the Secrets whose values the chart generates (the bundled PostgreSQL's password, MinIO's root password),
# once: a Secret that exists is left as it is, so a password never changes after the database was created with it.
# Run by the chart's secrets hook Job (pre-install, pre-upgrade) with the server image, as its own ServiceAccount
# that may only get and create Secrets. Rendering the chart (helm template, Argo CD) therefore never changes them.
#
# $SECRETS is a JSON list of {"namespace", "name", "labels", "data": {key: value or null}, "copy_of": index}:
# null values are generated (48 hex characters: safe in URLs and connection strings); "copy_of" makes a Secret with
# the same data as an earlier entry (the S3 credentials in the run namespace).
import json
import os
import secrets
import sys

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


def say(line):
    print(line, file=sys.stderr, flush=True)


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
            values = {k: v if v is not None else secrets.token_hex(24) for k, v in entry["data"].items()}
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
