#!/usr/bin/env python3
"""Create the objects of scripts/gen-cluster.py's output in a real API
server, the way controllers would: one POST per object over a few
keep-alive connections (kubectl would start a process and discover the API
again for every batch, which costs more than the objects themselves).

    api-load.py API_DIR CLUSTER_DIR [--threads 4]

API_DIR is scripts/control-plane's folder (port, ca.crt, admin.crt/key).
Cluster IPs are left to the API server's allocator (gen-cluster.py's first
address is the `kubernetes` Service's). Prints the count and the time taken.
"""
import argparse
import glob
import http.client
import json
import os
import ssl
import sys
import threading
import time

PATHS = {
    "Service": "/api/v1/namespaces/{ns}/services",
    "EndpointSlice": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
}


def connection(api_dir):
    ctx = ssl.create_default_context(cafile=os.path.join(api_dir, "ca.crt"))
    ctx.load_cert_chain(os.path.join(api_dir, "admin.crt"), os.path.join(api_dir, "admin.key"))
    port = int(open(os.path.join(api_dir, "port")).read())
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)


def post(conn, path, obj):
    conn.request("POST", path, body=json.dumps(obj), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    if r.status not in (200, 201, 409):
        raise RuntimeError(f"POST {path}: {r.status} {body[:300]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("api_dir")
    ap.add_argument("cluster_dir")
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()
    items = []
    for f in sorted(glob.glob(os.path.join(a.cluster_dir, "*.json"))):
        items.extend(json.load(open(f))["items"])
    for o in items:
        o.get("spec", {}).pop("clusterIP", None)
    namespaces = sorted({o["metadata"]["namespace"] for o in items})
    conn = connection(a.api_dir)
    for ns in namespaces:
        post(conn, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    # Services before their slices, as a cluster would have them.
    services = [o for o in items if o["kind"] == "Service"]
    slices = [o for o in items if o["kind"] != "Service"]
    t0 = time.time()
    for batch in (services, slices):
        errors = []

        def work(part):
            c = connection(a.api_dir)
            try:
                for o in part:
                    post(c, PATHS[o["kind"]].format(ns=o["metadata"]["namespace"]), o)
            except Exception as e:  # reported below; the other threads go on
                errors.append(e)

        threads = [threading.Thread(target=work, args=(batch[i :: a.threads],)) for i in range(a.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit(f"api-load: {errors[0]}")
    print(f"api-load: {len(items)} objects in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
