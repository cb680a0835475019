#!/usr/bin/env python3
"""Write a synthetic cluster for benchmarks: N ClusterIP Services (TCP 80 ->
8080), each with one EndpointSlice of M ready endpoints, as JSON Lists that
`kproxy --manifests DIR` reads.

    gen-cluster.py --services 10000 --endpoints 10 --out DIR [--change-one]

--change-one adds one endpoint to the first Service: the input of the
"one endpoint changed" measurement (one kernel operation).
"""
import argparse
import json
import os


def cluster_ip(i):
    # 10.96.0.0/12 holds a million addresses; skip .0 and .255 for readability.
    n = i + 1
    return f"10.{96 + n // 65536}.{(n // 256) % 256}.{n % 256}"


def pod_ip(i, j, m):
    n = i * m + j + 1
    return f"10.{128 + n // 65536}.{(n // 256) % 256}.{n % 256}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, required=True)
    ap.add_argument("--endpoints", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--change-one", action="store_true")
    ap.add_argument("--per-file", type=int, default=1000)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for f in os.listdir(a.out):
        if f.startswith("bench-") and f.endswith(".json"):
            os.remove(os.path.join(a.out, f))
    for start in range(0, a.services, a.per_file):
        items = []
        for i in range(start, min(start + a.per_file, a.services)):
            name = f"svc-{i}"
            items.append({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(i),
                         "selector": {"app": name},
                         "ports": [{"name": "http", "protocol": "TCP", "port": 80,
                                    "targetPort": 8080}]},
            })
            eps = [pod_ip(i, j, a.endpoints) for j in range(a.endpoints)]
            if a.change_one and i == 0:
                eps.append("10.250.0.1")
            items.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{name}-abcde", "namespace": "bench",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                               "nodeName": f"node-{j % 3}"} for j, ip in enumerate(eps)],
            })
        path = os.path.join(a.out, f"bench-{start // a.per_file:05d}.json")
        with open(path, "w") as fh:
            json.dump({"apiVersion": "v1", "kind": "List", "items": items}, fh)


if __name__ == "__main__":
    main()
