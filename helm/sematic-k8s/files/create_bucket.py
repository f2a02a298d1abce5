"""The server pod's init container with the bundled MinIO: create the artifact bucket once the S3 endpoint answers.

Runs in the server image (boto3) as ``python -c "<this file>"`` with $SEMATIC_K8S_S3_BUCKET,
$SEMATIC_K8S_S3_ENDPOINT, the AWS credentials and $WAIT_SECONDS. An existing bucket is left as it is.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

MISSING = {"404", "NoSuchBucket", "NotFound"}
ALREADY_THERE = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


def say(message: str) -> None:
    print(f"sematic-k8s bucket: {message}", file=sys.stderr, flush=True)


def ensure_bucket(s3: Any, bucket: str) -> str:
    """Make sure the bucket exists: "exists" or "created".

    Raises ClientError / BotoCoreError while the endpoint is not ready.
    """
    try:
        s3.head_bucket(Bucket=bucket)
        return "exists"
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) not in MISSING:
            raise
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) not in ALREADY_THERE:
            raise
    return "created"


def main() -> int:
    bucket = os.environ["SEMATIC_K8S_S3_BUCKET"]
    endpoint = os.environ.get("SEMATIC_K8S_S3_ENDPOINT") or None
    region = os.environ.get("SEMATIC_K8S_S3_REGION") or "us-east-1"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))
    deadline = time.monotonic() + float(os.environ.get("WAIT_SECONDS", "300"))
    while True:
        try:
            say(f"bucket {bucket!r} {ensure_bucket(s3, bucket)} at {endpoint or 'AWS'}")
            return 0
        except (ClientError, BotoCoreError) as e:
            if time.monotonic() > deadline:
                say(f"giving up on bucket {bucket!r} at {endpoint or 'AWS'}: {e}")
                return 1
            say(f"waiting for {endpoint or 'AWS'}: {e}")
            time.sleep(3)


if __name__ == "__main__":
    sys.exit(main())
