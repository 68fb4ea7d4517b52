"""Apply benchmark against the local AWS emulator (run through scripts/bench-apply).

1. N workspaces at RATE launches/min with burst B: wall time / the limiter's bound
   ((N - B) / RATE).
2. The same with 20 % of RunInstances throttled and 10 % of responses lost: workspaces
   up, instances per workspace, and the same ratio.
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
PRISM = sys.argv[1]
URL = sys.argv[2]


def post(path, body):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(req).read()


def reset():
    post("/moto-api/reset", {})
    post("/_prism/reset", {})
    post("/_prism/quotas", {"ec2": {"L-1216C47A": 100000}})


def run(fleet, faults):
    reset()
    post("/_prism/faults", {"faults": faults})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.yaml")
        with open(path, "w") as f:
            f.write(
                f"name: {fleet}\nproject: bench\ntemplate: t\ncount: {N}\nregion: us-west-2\n"
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
    bound = (N - BURST) / RATE * 60
    return {
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
    print(f"  workspaces up              {r['workspaces_up']} of {N}")
    print(f"  instances per workspace    max {r['max_instances_per_workspace']} ({r['instances']} instances)")
    print(f"  retries, rate changes      {r['retries']}, {r['rate_changes']}")


print(f"prism apply: {N} workspaces at {RATE:g}/min, burst {BURST}, against the emulator\n")
show("clean", run("bench-clean", []))
print()
# The emulator tries fault rules in order: 12.5 % of the calls not throttled is 10 %.
show("20 % throttled, 10 % lost responses", run("bench-faults", [
    {"action": "RunInstances", "code": "RequestLimitExceeded", "status": 503,
     "message": "Request limit exceeded.", "probability": 0.2},
    {"action": "RunInstances", "code": "InternalError", "status": 500, "lost": True, "probability": 0.125},
]))
