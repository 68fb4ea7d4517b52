"""Apply benchmark against the local AWS emulator (run through scripts/bench-apply).

For each fleet size (BENCH_SIZES, default "30 100 300"), against AWS's token buckets
(RunInstances 5 calls refilling 2/s and 1 000 instances refilling 2/s; CreateTags 100
refilling 10/s; the other changes 50 refilling 5/s), t3.micro workspaces are launched by:

  prism           untuned (`rate_limit: auto`): launches that can share a call do
  prism-per-call  one call per workspace at AWS's rate (120/min, burst 5, explicit)
  prism-2/min     the release plan's pace (2/min, burst 5): run only with BENCH_SEED=1,
                  else its own bound is printed
  aws-cli         a plain shell loop over `aws ec2 run-instances`, failures once more

Every row says the exit code, the wall time, when the last workspace was up (launched;
prism only), the RunInstances calls and the share throttled, the calls of every kind
(CreateTags, Describe*, …) and the share throttled, the workspaces up and the
most instances any workspace got (more than 1 is a duplicate). BENCH_SCENARIOS adds
`faults` (20 % of RunInstances throttled, 10 % of answers lost) and `sold-out` (the
region's first zone has no t3.micro) for untuned prism. Then a timetable boundary:
`workspace stop`, then `workspace start`, of the largest fleet, timed.

BENCH_TOOLS picks tools (comma-separated).

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

SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "30 100 300").split()]
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
TOOLS = os.environ.get("BENCH_TOOLS", "prism,prism-per-call,prism-2/min,aws-cli").split(",")
PICKED = os.environ.get("BENCH_SCENARIOS", "aws-bucket").split(",")
SCENARIOS = {
    "aws-bucket": {"throttle": True},
    "faults": {"throttle": True, "faults": FAULTS},
    "sold-out": {"throttle": True, "sold_out": [{"zone": f"{REGION}a", "instance_type": "t3.micro"}]},
}
PACES = {
    "prism": "",
    "prism-per-call": "rate_limit: {rate_per_minute: 120, burst_size: 5, adaptive: true}\n",
    "prism-2/min": "rate_limit: {rate_per_minute: 2, burst_size: 5}\n",
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


def measure(fleet, wall, exit_code, up_at=None):
    post("/_prism/throttle", {"enabled": False})
    post("/_prism/faults", {"faults": []})
    every = calls()
    runs = [c for c in every if c["action"] == "RunInstances"]
    codes = Counter(c.get("code") for c in runs)
    per_ws = instances(fleet)
    return {
        "exit": exit_code, "wall": wall, "up_at": up_at, "calls": len(runs),
        "throttled": codes["RequestLimitExceeded"], "ice": codes["InsufficientInstanceCapacity"],
        "all": len(every),
        "all_throttled": sum(c.get("code") == "RequestLimitExceeded" for c in every),
        "up": len(per_ws), "max_per_ws": max(per_ws.values(), default=0),
    }


def manifest(d, fleet, n, pace):
    path = os.path.join(d, "bench.yaml")
    with open(path, "w") as f:
        f.write(
            f"name: {fleet}\nproject: bench\ntemplate: t\ncount: {n}\nregion: {REGION}\n{pace}"
            "retry: {max_retries: 6, initial_backoff: 1s, max_backoff: 10s}\n"
            f"templates:\n  t: {{image: {IMAGE}, instance_type: t3.micro}}\n"
        )
    return path


def run_prism(d, *args):
    # A cache folder of its own: launch notes of other runs must not help.
    env = dict(os.environ, AWS_ENDPOINT_URL=URL, XDG_CACHE_HOME=d, **CREDS)
    start = time.monotonic()
    proc = subprocess.run([PRISM, *args], env=env, capture_output=True, text=True)
    return proc, time.monotonic() - start


def prism(tool, n, scenario, keep=None):
    fleet = f"{tool.replace('/', '')}-{n}"
    prepare(scenario)
    with tempfile.TemporaryDirectory() as d:
        path = manifest(d, fleet, n, PACES[tool])
        proc, wall = run_prism(d, "apply", "--yes", "--no-wait", "--format", "json", path)
        up = [json.loads(l)["elapsed_s"] for l in proc.stdout.splitlines()
              if l.startswith("{") and json.loads(l).get("event") == "launched"]
        r = measure(fleet, wall, proc.returncode, max(up, default=None))
        if keep is not None:
            keep.update(fleet=fleet, n=n, d=d)
            boundary(keep)
    return r


def boundary(fleet):
    """Stops, then starts, every workspace of a launched fleet, against AWS's buckets."""
    names = [f"{fleet['fleet']}-{i:02d}" for i in range(1, fleet["n"] + 1)]
    for verb in ("stop", "start"):
        post("/_prism/throttle", {"enabled": True})
        urllib.request.urlopen(urllib.request.Request(URL + "/_prism/calls", method="DELETE")).read()
        proc, wall = run_prism(fleet["d"], "workspace", verb, "--yes", "--fleet", fleet["fleet"], *names)
        post("/_prism/throttle", {"enabled": False})
        action = {"stop": "StopInstances", "start": "StartInstances"}[verb]
        sent = [c for c in calls() if c["action"] == action]
        fleet[verb] = (proc.returncode, wall, len(sent))


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


def row(tool, n, name, r):
    share = f"{r['throttled']}/{r['calls']} ({100 * r['throttled'] / max(r['calls'], 1):.0f} %)"
    every = f"{r['all_throttled']}/{r['all']} ({100 * r['all_throttled'] / max(r['all'], 1):.0f} %)"
    up_at = f"{r['up_at']:7.1f}s" if r.get("up_at") is not None else " " * 8
    print(f"{tool:15} {n:>4} {name:11} {r['exit']:>4} {r['wall']:7.1f}s {up_at} "
          f"{share:>15} {every:>16} {r['ice']:>4} {r['up']:>4} {r['max_per_ws']:>5}", flush=True)


print("Launching t3.micro workspaces against the emulator with AWS's token buckets\n")
print(f"{'tool':15} {'N':>4} {'scenario':11} {'exit':>4} {'wall':>8} {'up at':>8} "
      f"{'throttled':>15} {'all throttled':>16} {'ICE':>4} {'up':>4} {'max/w':>5}")
largest = {}
for n in SIZES:
    for tool in TOOLS:
        if tool == "aws-cli":
            if AWS:
                row(tool, n, "aws-bucket", aws_loop(n, "aws-bucket", SCENARIOS["aws-bucket"]))
            continue
        if tool == "prism-2/min" and os.environ.get("BENCH_SEED") != "1":
            print(f"{tool:15} {n:>4} {'aws-bucket':11}  not run: its own pace takes "
                  f"{max(n - 5, 0) / 2:.1f} min (BENCH_SEED=1 runs it)")
            continue
        for name in PICKED:
            keep = {} if (tool == "prism" and name == "aws-bucket" and n == max(SIZES)) else None
            row(tool, n, name, prism(tool, n, SCENARIOS[name], keep))
            if keep:
                largest = keep
if largest:
    print(f"\nA timetable boundary for {largest['n']} running workspaces "
          "(`workspace stop`, then `workspace start`, against AWS's buckets):")
    for verb in ("stop", "start"):
        code, wall, sent = largest[verb]
        print(f"  {verb:5}: exit {code}, {wall:.1f}s, {sent} call(s)")
if not AWS:
    print("\n(no AWS CLI given: the comparison rows are left out)")
