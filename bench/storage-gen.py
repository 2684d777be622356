#!/usr/bin/python3
"""Generates a fleet of storage-secret-store Secrets for bench/storage.

Writes, into OUTDIR: list.json (a kubectl `kind: List` of N Secrets, a mix of
VPC and classic clusters, 1 in 20 carrying a stale key), truth.ndjson (one
record per resource group), aes.key (64 hex digits) and sample/ (the first
SAMPLE Secrets as one file each, for the runbook pipeline). Envelopes are
sealed with Python's cryptography AES-GCM as the Go service seals them.

Usage: storage-gen.py N OUTDIR SAMPLE
"""
import base64
import json
import os
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

GROUPS = 1000
REGIONS = ["us-south", "eu-de", "jp-tok", "au-syd"]


def toml_vpc(env, rg, region):
    return (
        '[Bluemix]\n  iam_url = "https://iam.cloud.ibm.com"\n  iam_client_id = "bx"\n'
        '  iam_client_secret = "bx"\n  iam_api_key = ""\n  refresh_token = ""\n  pay_tier = "paid"\n'
        f'  containers_api_route = "https://{region}.containers.cloud.ibm.com"\n  encryption = true\n\n'
        '[Softlayer]\n  encryption = true\n  softlayer_username = ""\n  softlayer_api_key = ""\n'
        '  softlayer_datacenter = "dal10"\n\n'
        f'[VPC]\n  g2_riaas_endpoint_url = "https://{region}.iaas.cloud.ibm.com"\n'
        f'  g2_resource_group_id = "{rg}"\n  g2_api_key = "{env}"\n  encryption = true\n  provider_type = "g2"\n'
    )


def toml_classic(env, region):
    return (
        '[Bluemix]\n  iam_url = "https://iam.cloud.ibm.com"\n  iam_client_id = "bx"\n'
        f'  iam_client_secret = "bx"\n  iam_api_key = "{env}"\n  refresh_token = ""\n  pay_tier = "paid"\n'
        f'  containers_api_route = "https://{region}.containers.cloud.ibm.com"\n  encryption = true\n\n'
        '[Softlayer]\n  encryption = true\n  softlayer_username = ""\n  softlayer_api_key = ""\n'
        '  softlayer_datacenter = "dal10"\n'
    )


def main():
    n, outdir, sample = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    os.makedirs(os.path.join(outdir, "sample"), exist_ok=True)
    key = os.urandom(32)
    aead = AESGCM(key)
    with open(os.path.join(outdir, "aes.key"), "w") as f:
        f.write(key.hex() + "\n")
    iam = {}
    with open(os.path.join(outdir, "truth.ndjson"), "w") as f:
        for g in range(GROUPS):
            rg = f"rg{g:04x}"
            region = REGIONS[g % len(REGIONS)]
            iam[g] = "bench-" + base64.urlsafe_b64encode(os.urandom(30)).decode()
            rec = {"Region": region, "AccountID": "acct-bench", "ResourceGroupID": rg, "Canceled": None,
                   "Name": "default", "SLUser": None, "SLAPIKey": None, "RefreshToken": None,
                   "IAMAPIKey": iam[g], "IAMAPIKeyUUID": f"ApiKey-{g}", "Clusters": "{}"}
            f.write(json.dumps(rec) + "\n")
    with open(os.path.join(outdir, "list.json"), "w") as f:
        f.write('{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[\n')
        for i in range(n):
            g = i % GROUPS
            rg = f"rg{g:04x}"
            region = REGIONS[g % len(REGIONS)]
            value = iam[g] if i % 20 else "stale-" + iam[g]
            nonce = os.urandom(12)
            env = base64.b64encode(nonce + aead.encrypt(nonce, value.encode(), None)).decode()
            cluster = f"c{i:07x}"
            if i % 3 == 0:
                toml = toml_classic(env, region)
                ann = {"example.com/cluster-id": cluster, "example.com/resource-group-id": rg}
            else:
                toml = toml_vpc(env, rg, region)
                ann = {"example.com/cluster-id": cluster}
            secret = {"apiVersion": "v1", "data": {"slclient.toml": base64.b64encode(toml.encode()).decode()},
                      "kind": "Secret",
                      "metadata": {"annotations": ann, "creationTimestamp": "2026-11-23T10:00:00Z",
                                   "name": "storage-secret-store", "namespace": "kube-system",
                                   "resourceVersion": str(1000 + i), "uid": f"00000000-0000-4000-8000-{i:012x}"},
                      "type": "Opaque"}
            text = json.dumps(secret)
            f.write(("," if i else "") + text + "\n")
            if i < sample:
                with open(os.path.join(outdir, "sample", cluster + ".json"), "w") as s:
                    s.write(json.dumps(secret, indent=4) + "\n")
        f.write("]}\n")


if __name__ == "__main__":
    main()
