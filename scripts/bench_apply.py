"""Apply benchmark against the local AWS emulator (run through scripts/bench-apply).

For each fleet size (BENCH_SIZES, default "30 100"), prism apply and a plain shell loop
over `aws ec2 run-instances` (with one rerun of what failed) launch t3.micro
workspaces in five scenarios:

  clean       no faults; prism at RATE/min burst BURST: wall / limiter bound (N-B)/RATE
  aws-bucket  the emulator's AWS-like token buckets (RunInstances 5, refill 2/s), prism
              configured at 600/min burst 20: throttled share, wall / AWS's own bound
              (N-5)/2 s
  faults      20 % of RunInstances throttled, 10 % of responses lost: wall / clean
  sold-out    the region's first zone sold out for t3.micro: ICE answers, wall / clean
Every row counts the workspaces up and the most instances any workspace got.

BENCH_SCENARIOS picks scenarios by name (default: all four, comma-separated), BENCH_TOOLS
the tools (prism,aws-cli).

Usage: bench_apply.py PRISM URL [AWS_CLI]
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

import boto3

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "30 100").split()]
RATE = float(os.environ.get("BENCH_RATE", "120"))
BURST = int(os.environ.get("BENCH_BURST", "5"))
PRISM = sys.argv[1]
URL = sys.argv[2]
AWS = sys.argv[3] if len(sys.argv) > 3 else None
REGION = "us-west-2"
IMAGE = "ami-785db401"
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": REGION,
         "AWS_DEFAULT_REGION": REGION}


def post(path, body):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(req).read()


def calls():
    with urllib.request.urlopen(URL + "/_prism/calls") as r:
        return json.load(r)["calls"]


# The emulator tries fault rules in order: 12.5 % of the calls not throttled is 10 %.
FAULTS = [
    {"action": "RunInstances", "code": "RequestLimitExceeded", "status": 503,
     "message": "Request limit exceeded.", "probability": 0.2},
    {"action": "RunInstances", "code": "InternalError", "status": 500, "lost": True, "probability": 0.125},
]
TOOLS = os.environ.get("BENCH_TOOLS", "prism,aws-cli").split(",")
PICKED = os.environ.get("BENCH_SCENARIOS", "clean,aws-bucket,faults,sold-out").split(",")
SCENARIOS = {
    "clean": {},
    "aws-bucket": {"throttle": True, "rate": 600, "burst": 20},
    "faults": {"faults": FAULTS},
    "sold-out": {"sold_out": [{"zone": f"{REGION}a", "instance_type": "t3.micro"}]},
}


def prepare(scenario):
    post("/moto-api/reset", {})
    post("/_prism/reset", {})
    post("/_prism/quotas", {"ec2": {"L-1216C47A": 100000}})
    post("/_prism/faults", {"faults": scenario.get("faults", [])})
    post("/_prism/capacity", {"sold_out": scenario.get("sold_out", [])})
    post("/_prism/throttle", {"enabled": scenario.get("throttle", False)})
    urllib.request.urlopen(urllib.request.Request(URL + "/_prism/calls", method="DELETE")).read()


def instances(fleet):
    ec2 = boto3.client("ec2", endpoint_url=URL, region_name=REGION,
                       aws_access_key_id="bench", aws_secret_access_key="bench")
    per_ws = Counter()
    for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:prism:fleet", "Values": [fleet]}]):
        for r in page["Reservations"]:
            for i in r["Instances"]:
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                per_ws[tags.get("prism:workspace")] += 1
    return per_ws


def measure(fleet, wall, exit_code):
    post("/_prism/throttle", {"enabled": False})
    post("/_prism/faults", {"faults": []})
    runs = [c for c in calls() if c["action"] == "RunInstances"]
    codes = Counter(c.get("code") for c in runs)
    per_ws = instances(fleet)
    return {
        "exit": exit_code, "wall": wall, "calls": len(runs),
        "throttled": codes["RequestLimitExceeded"], "ice": codes["InsufficientInstanceCapacity"],
        "up": len(per_ws), "max_per_ws": max(per_ws.values(), default=0),
    }


def prism(n, name, scenario):
    fleet = f"p{n}-{name}"
    prepare(scenario)
    rate, burst = scenario.get("rate", RATE), scenario.get("burst", BURST)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.yaml")
        with open(path, "w") as f:
            f.write(
                f"name: {fleet}\nproject: bench\ntemplate: t\ncount: {n}\nregion: {REGION}\n"
                f"rate_limit: {{rate_per_minute: {rate}, burst_size: {burst}, adaptive: true}}\n"
                "retry: {max_retries: 6, initial_backoff: 1s, max_backoff: 10s}\n"
                f"templates:\n  t: {{image: {IMAGE}, instance_type: t3.micro}}\n"
            )
        # A cache folder of its own: launch notes of other runs must not help.
        env = dict(os.environ, AWS_ENDPOINT_URL=URL, XDG_CACHE_HOME=d, **CREDS)
        start = time.monotonic()
        proc = subprocess.run([PRISM, "apply", "--yes", "--no-wait", "--format", "json", path],
                              env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
    return measure(fleet, wall, proc.returncode)


# What a user would write: one run-instances per student, then the failures once more.
LOOP = r"""
launch() {
  "$AWS" ec2 run-instances --endpoint-url "$URL" --image-id "$IMAGE" --instance-type t3.micro \
    --count 1 --tag-specifications \
    "ResourceType=instance,Tags=[{Key=prism:fleet,Value=$FLEET},{Key=prism:workspace,Value=$1}]" \
    >/dev/null 2>&1
}
failed=()
for ws in $WORKSPACES; do launch "$ws" || failed+=("$ws"); done
left=0
for ws in "${failed[@]}"; do launch "$ws" || left=$((left + 1)); done
exit $((left > 0))
"""


def aws_loop(n, name, scenario):
    fleet = f"c{n}-{name}"
    prepare(scenario)
    names = " ".join(f"{fleet}-{i:02d}" for i in range(1, n + 1))
    env = dict(os.environ, AWS=AWS, URL=URL, IMAGE=IMAGE, FLEET=fleet, WORKSPACES=names,
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", **CREDS)
    start = time.monotonic()
    proc = subprocess.run(["bash", "-c", LOOP], env=env, capture_output=True, text=True)
    return measure(fleet, time.monotonic() - start, proc.returncode)


def row(tool, n, name, r, clean):
    if name == "clean":
        bound = (n - BURST) / RATE * 60
        ratio = f"{r['wall'] / bound:.2f} × limiter bound {bound:.1f}s" if tool == "prism" else ""
    elif name == "aws-bucket":
        bound = (n - 5) / 2
        ratio = f"{r['wall'] / bound:.2f} × AWS bound {bound:.1f}s"
    else:
        ratio = f"{r['wall'] / clean:.2f} × clean"
    share = f"{r['throttled']}/{r['calls']} ({100 * r['throttled'] / max(r['calls'], 1):.0f} %)"
    print(f"{tool:8} {n:>4} {name:11} {r['exit']:>4} {r['wall']:7.1f}s  {ratio:32} "
          f"{share:>15} {r['ice']:>4} {r['up']:>4} {r['max_per_ws']:>5}", flush=True)


print(f"prism apply (launch rate {RATE:g}/min, burst {BURST}) and a plain AWS CLI loop "
      "against the emulator\n")
print(f"{'tool':8} {'N':>4} {'scenario':11} {'exit':>4} {'wall':>8}  {'ratio':32} "
      f"{'throttled':>15} {'ICE':>4} {'up':>4} {'max/w':>5}")
for n in SIZES:
    tools = [("prism", prism)] + ([("aws-cli", aws_loop)] if AWS else [])
    tools = [t for t in tools if t[0] in TOOLS]
    for tool, go in tools:
        clean = None
        for name, scenario in SCENARIOS.items():
            if name not in PICKED:
                continue
            r = go(n, name, scenario)
            clean = clean or r["wall"]
            row(tool, n, name, r, clean)
if not AWS:
    print("\n(no AWS CLI given: the comparison rows are left out)")
