"""Apply benchmark against the local AWS emulator (run through scripts/bench-apply).

1. N workspaces at RATE launches/min with burst B: wall time / the limiter's bound
   ((N - B) / RATE).
2. The same with 20 % of RunInstances throttled and 10 % of responses lost: workspaces
   up, instances per workspace, and the same ratio.
3. One zone sold out for the fleet's type (BENCH_SOLD_OUT_WORKSPACES, default 30):
   InsufficientInstanceCapacity answers for the whole fleet, and the wall time divided
   by the same fleet's fault-free wall time.

BENCH_SCENARIOS picks scenarios by name (clean, faults, sold-out; default all).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

import boto3

N = int(os.environ.get("BENCH_WORKSPACES", "100"))
RATE = float(os.environ.get("BENCH_RATE", "120"))
BURST = int(os.environ.get("BENCH_BURST", "10"))
N_SOLD_OUT = int(os.environ.get("BENCH_SOLD_OUT_WORKSPACES", "30"))
SCENARIOS = os.environ.get("BENCH_SCENARIOS", "clean,faults,sold-out").split(",")
PRISM = sys.argv[1]
URL = sys.argv[2]


def post(path, body):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(req).read()


def reset():
    post("/moto-api/reset", {})
    post("/_prism/reset", {})
    post("/_prism/quotas", {"ec2": {"L-1216C47A": 100000}})


def get(path):
    return json.loads(urllib.request.urlopen(URL + path).read())


def run(fleet, faults, n=N, sold_out=()):
    reset()
    post("/_prism/faults", {"faults": faults})
    post("/_prism/capacity", {"sold_out": list(sold_out)})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.yaml")
        with open(path, "w") as f:
            f.write(
                f"name: {fleet}\nproject: bench\ntemplate: t\ncount: {n}\nregion: us-west-2\n"
                f"rate_limit: {{rate_per_minute: {RATE}, burst_size: {BURST}, adaptive: true}}\n"
                "retry: {max_retries: 6, initial_backoff: 1s, max_backoff: 10s}\n"
                "templates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n"
            )
        env = dict(os.environ, AWS_ENDPOINT_URL=URL, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        start = time.monotonic()
        proc = subprocess.run([PRISM, "apply", "--yes", "--no-wait", "--format", "json", path],
                              env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
    post("/_prism/faults", {"faults": []})
    post("/_prism/capacity", {"sold_out": []})
    launch_calls = sum(1 for c in get("/_prism/calls")["calls"] if c["action"] == "RunInstances")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    retries = sum(1 for e in events if e.get("event") == "retrying")
    slowdowns = sum(1 for e in events if e.get("event") == "rate_changed")
    ec2 = boto3.client("ec2", endpoint_url=URL, region_name="us-west-2",
                       aws_access_key_id="bench", aws_secret_access_key="bench")
    per_ws = Counter()
    for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:prism:fleet", "Values": [fleet]}]):
        for r in page["Reservations"]:
            for i in r["Instances"]:
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                per_ws[tags.get("prism:workspace")] += 1
    bound = (n - BURST) / RATE * 60
    return {
        "n": n, "launch_calls": launch_calls,
        "exit": proc.returncode, "wall_s": wall, "bound_s": bound, "ratio": wall / bound,
        "workspaces_up": len(per_ws), "max_instances_per_workspace": max(per_ws.values(), default=0),
        "instances": sum(per_ws.values()), "retries": retries, "rate_changes": slowdowns,
    }


def show(title, r):
    print(f"{title}")
    print(f"  exit code                  {r['exit']}")
    print(f"  wall time                  {r['wall_s']:.1f} s")
    print(f"  limiter bound (N-B)/rate   {r['bound_s']:.1f} s")
    print(f"  wall / bound               {r['ratio']:.3f}")
    print(f"  workspaces up              {r['workspaces_up']} of {r['n']}")
    print(f"  instances per workspace    max {r['max_instances_per_workspace']} ({r['instances']} instances)")
    print(f"  retries, rate changes      {r['retries']}, {r['rate_changes']}")


print(f"prism apply at {RATE:g}/min, burst {BURST}, against the emulator ({N} workspaces unless said)\n")
if "clean" in SCENARIOS:
    show("clean", run("bench-clean", []))
    print()
if "faults" in SCENARIOS:
    # The emulator tries fault rules in order: 12.5 % of the calls not throttled is 10 %.
    show("20 % throttled, 10 % lost responses", run("bench-faults", [
        {"action": "RunInstances", "code": "RequestLimitExceeded", "status": 503,
         "message": "Request limit exceeded.", "probability": 0.2},
        {"action": "RunInstances", "code": "InternalError", "status": 500, "lost": True, "probability": 0.125},
    ]))
    print()
if "sold-out" in SCENARIOS:
    # The region has 4 zones; the first is sold out for the fleet's type.
    base = run("bench-base", [], n=N_SOLD_OUT)
    ice = run("bench-ice", [], n=N_SOLD_OUT, sold_out=[{"zone": "us-west-2a", "instance_type": "t3.micro"}])
    show(f"one zone sold out ({N_SOLD_OUT} workspaces)", ice)
    answers = ice["launch_calls"] - ice["instances"]
    print(f"  ICE answers                {answers} (done when <= burst + zones = {BURST + 4})")
    print(f"  fault-free wall time       {base['wall_s']:.1f} s")
    print(f"  wall / fault-free          {ice['wall_s'] / base['wall_s']:.3f} (done when <= 1.2)")
