"""The local AWS emulator for prism's tests and demo.

moto server, run in this process, behind a small WSGI front that adds what real AWS
does and moto does not:

* Service Quotas for the ``ec2`` and ``ebs`` codes, and quota increase requests;
* RunInstances ClientToken idempotency, scoped per (account, region, zone) as on AWS;
* RunInstances of many instances as on AWS: ``MaxCount`` launched, or fewer when a
  zone is short of capacity or of vCPU quota (down to ``MinCount``);
* vCPU limit enforcement on RunInstances (VcpuLimitExceeded);
* faults on demand, lost responses, delays, AWS-like token buckets;
* eventual consistency: new instances hidden from DescribeInstances for a while;
* a log of every AWS call, for tests that count calls.

Every addition is kept per account, as moto keeps its own state: a call acts in the
account moto gives its access key (the default account, or the role's account for keys
that STS AssumeRole returned), so tests can run fleets in two accounts.

The control API lives under ``/_prism/`` (see README.md beside this file).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode

os.environ.setdefault("MOTO_ENABLE_AMI_VALIDATION", "true")
os.environ.setdefault("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")

from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.core.utils import utcnow  # noqa: E402
from moto.ec2.models import ec2_backends  # noqa: E402
from moto.ec2.models.instance_types import INSTANCE_TYPES  # noqa: E402
from moto.ec2.models.instances import InstanceBackend, StateReason  # noqa: E402
from moto.ec2 import utils as ec2_utils  # noqa: E402
from moto.iam.models import get_account_id_from  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server  # noqa: E402

# --- quota catalogue --------------------------------------------------------------

# (service, code) -> (name, unit, emulator default value)
QUOTAS = {
    ("ec2", "L-1216C47A"): ("Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "None", 64.0),
    ("ec2", "L-DB2E81BA"): ("Running On-Demand G and VT instances", "None", 8.0),
    ("ec2", "L-417A185B"): ("Running On-Demand P instances", "None", 0.0),
    ("ec2", "L-74FC7D96"): ("Running On-Demand F instances", "None", 0.0),
    ("ec2", "L-7295265B"): ("Running On-Demand X instances", "None", 0.0),
    ("ec2", "L-1945791B"): ("Running On-Demand Inf instances", "None", 0.0),
    ("ec2", "L-2C3B7624"): ("Running On-Demand Trn instances", "None", 0.0),
    ("ec2", "L-6E869C2A"): ("Running On-Demand DL instances", "None", 0.0),
    ("ec2", "L-F7808C92"): ("Running On-Demand HPC instances", "None", 0.0),
    ("ec2", "L-43DA4232"): ("Running On-Demand High Memory instances", "None", 0.0),
    ("ec2", "L-34B43A08"): ("All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", "None", 64.0),
    ("ebs", "L-7A658B76"): ("Storage for General Purpose SSD (gp3) volumes, in TiB", "None", 50.0),
}

SERVICE_NAMES = {"ec2": "Amazon Elastic Compute Cloud (Amazon EC2)", "ebs": "Amazon Elastic Block Store (Amazon EBS)"}

FAMILY_CODES = [
    ("u-", "L-43DA4232"),
    ("inf", "L-1945791B"),
    ("trn", "L-2C3B7624"),
    ("hpc", "L-F7808C92"),
    ("dl", "L-6E869C2A"),
    ("vt", "L-DB2E81BA"),
    ("g", "L-DB2E81BA"),
    ("p", "L-417A185B"),
    ("f", "L-74FC7D96"),
    ("x", "L-7295265B"),
]


def quota_code_for(instance_type: str) -> str:
    family = instance_type.split(".")[0].lower()
    for prefix, code in FAMILY_CODES:
        if family.startswith(prefix):
            return code
    return "L-1216C47A"


def vcpus_of(instance_type: str) -> int:
    info = INSTANCE_TYPES.get(instance_type, {})
    return int(info.get("VCpuInfo", {}).get("DefaultVCpus", 1))


# --- state ------------------------------------------------------------------------

# AWS's EC2 request token buckets of the actions that have their own: (capacity, refill
# per second). The other changes share the size of MUTATING_BUCKET, each its own.
BUCKETS = {
    "RunInstances": (5, 2.0),
    "StartInstances": (5, 2.0),
    "CreateTags": (100, 10.0),
    "DeleteTags": (100, 10.0),
    "TerminateInstances": (100, 5.0),
}
# AWS's resource token buckets, counted in instances: (capacity, refill per second).
RESOURCE_BUCKETS = {
    "RunInstances": (1000, 2.0),
    "StartInstances": (1000, 2.0),
    "StopInstances": (1000, 20.0),
    "TerminateInstances": (1000, 20.0),
}
MUTATING_BUCKET = (50, 5.0)
DESCRIBE_BUCKET = (100, 20.0)


@dataclass
class Fault:
    action: str
    code: str = "InternalError"
    status: int = 500
    message: str = "An internal error has occurred."
    count: int | None = None  # the first N matching calls; None = every call
    probability: float = 1.0
    lost: bool = False  # let the call take effect, then answer with the error
    delay_ms: int = 0
    filter: str | None = None  # only calls filtered by this name (e.g. "client-token")
    account: str | None = None  # only calls in this account; None = any
    seen: int = 0

    def matches(self, call: "Call") -> bool:
        return (
            self.action in (call.action, "*")
            and (self.filter is None or self.filter in filter_names(call.params))
            and self.account in (None, call.account)
        )

    def fires(self, rng: random.Random) -> bool:
        if self.count is not None and self.seen >= self.count:
            return False
        if rng.random() >= self.probability:
            return False
        self.seen += 1
        return True


@dataclass
class TokenRecord:
    fingerprint: str
    body: bytes
    instance_ids: list[str]


@dataclass
class State:
    lock: threading.RLock = field(default_factory=threading.RLock)
    calls: list[dict] = field(default_factory=list)
    # (account, region, service, code) -> applied value; "*" for the account or the region
    # applies where none of its own is set
    quotas: dict = field(default_factory=dict)
    requests: dict = field(default_factory=dict)  # id -> RequestedQuota dict
    faults: list[Fault] = field(default_factory=list)
    throttle: bool = False
    buckets: dict = field(default_factory=dict)  # (account, region, action) -> [tokens, last refill]
    resources: dict = field(default_factory=dict)  # (account, region, action) -> [instance tokens, last refill]
    lag_s: float = 0.0
    visible_at: dict = field(default_factory=dict)  # instance id -> monotonic time
    boot_s: float = 0.0
    running_at: dict = field(default_factory=dict)  # instance id -> monotonic time
    tokens: dict = field(default_factory=dict)  # (account, region, zone or "", ClientToken) -> TokenRecord
    sold_out: list = field(default_factory=list)  # [{"zone", "instance_type" (None: all), "left", "account" (None: all)}]
    token_locks: dict = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.quotas.clear()
            self.requests.clear()
            self.faults.clear()
            self.throttle = False
            self.buckets.clear()
            self.resources.clear()
            self.lag_s = 0.0
            self.visible_at.clear()
            self.boot_s = 0.0
            self.running_at.clear()
            self.tokens.clear()
            self.sold_out.clear()


STATE = State()
LAUNCH_LOCK = threading.Lock()


def _hide_lagging(original):
    """Eventual consistency: DescribeInstances does not show an instance until its lag has passed."""

    def all_reservations(self, filters=None):
        boot(self)
        reservations = original(self, filters)
        now = time.monotonic()
        hidden = {i for i, t in STATE.visible_at.items() if t > now}
        if not hidden:
            return reservations
        kept = []
        for reservation in reservations:
            reservation.instances = [i for i in reservation.instances if i.id not in hidden]
            if reservation.instances:
                kept.append(reservation)
        return kept

    return all_reservations


def every_instance(backend):
    """All instances, hidden or not (all_instances() goes through the lag filter)."""
    for reservation in list(backend.reservations.values()):
        yield from reservation.instances


def boot(backend) -> None:
    """Pending instances whose boot time has passed become running."""
    now = time.monotonic()
    with STATE.lock:
        done = [i for i, t in STATE.running_at.items() if t <= now]
        for instance_id in done:
            del STATE.running_at[instance_id]
    for instance in every_instance(backend):
        if instance.id in done and instance.state == "pending":
            instance._state.name = "running"
            instance._state.code = 16


InstanceBackend.all_reservations = _hide_lagging(InstanceBackend.all_reservations)
# DescribeInstances' client-token filter: the instance launched with that ClientToken.
ec2_utils.filter_dict_attribute_mapping["client-token"] = "client_token"

# --- responses --------------------------------------------------------------------


def ec2_error(code: str, message: str, status: int):
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()
    return status, [("Content-Type", "text/xml")], body


def json_error(code: str, message: str, status: int):
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)], body


def json_ok(payload: dict):
    return 200, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(payload).encode()


def error_for(service: str, code: str, message: str, status: int):
    return ec2_error(code, message, status) if service == "ec2" else json_error(code, message, status)


# --- request parsing --------------------------------------------------------------

CREDENTIAL = re.compile(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/aws4_request")


@dataclass
class Call:
    service: str
    region: str
    action: str
    params: dict
    body: bytes
    account: str = DEFAULT_ACCOUNT_ID


def filter_names(params: dict) -> list[str]:
    """The names of a Describe call's filters (Filter.N.Name), in order."""
    names = [(k.split(".")[1], v) for k, v in params.items() if k.startswith("Filter.") and k.endswith(".Name")]
    return [v for n, v in sorted(names, key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)]


def account_of(environ, access_key: str | None) -> str:
    """The account moto serves a request in, decided as moto decides it
    (``BaseResponse.get_current_account``): ``MOTO_ACCOUNT_ID``, else the
    ``x-moto-account-id`` header, else the account that issued the access key (STS
    AssumeRole issues keys in the role's account), else the default account."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return environ["HTTP_X_MOTO_ACCOUNT_ID"]
    return get_account_id_from(access_key) if access_key else DEFAULT_ACCOUNT_ID


def parse_call(environ, body: bytes) -> Call:
    region, service, access_key = "us-east-1", "unknown", None
    match = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match:
        access_key, region, service = match.group(1), match.group(2), match.group(3)
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        action = target.split(".")[-1]
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
    else:
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        action = params.get("Action", environ.get("PATH_INFO", ""))
    return Call(service, region, action, params, body, account_of(environ, access_key))


# --- service quotas ---------------------------------------------------------------


def quota_payload(call: Call, service: str, code: str, value: float) -> dict:
    name, unit, _ = QUOTAS[(service, code)]
    return {
        "ServiceCode": service,
        "ServiceName": SERVICE_NAMES[service],
        "QuotaArn": f"arn:aws:servicequotas:{call.region}:{call.account}:{service}/{code}",
        "QuotaCode": code,
        "QuotaName": name,
        "Value": value,
        "Unit": unit,
        "Adjustable": True,
        "GlobalQuota": False,
    }


ANY = "*"
ANY_REGION = ANY


def applied(call: Call, service: str, code: str) -> float | None:
    """The value applied in the call's account and region (Service Quotas are per
    account and region), if any: the most specific of the account's own in the region,
    the account's own in every region, anyone's in the region, anyone's anywhere."""
    for key in ((call.account, call.region), (call.account, ANY), (ANY, call.region), (ANY, ANY)):
        value = STATE.quotas.get((*key, service, code))
        if value is not None:
            return value
    return None


def applied_value(call: Call, service: str, code: str) -> float:
    value = applied(call, service, code)
    return QUOTAS[(service, code)][2] if value is None else value


def request_region(request: dict) -> str:
    # arn:aws:servicequotas:REGION:ACCOUNT:service/code
    return request["QuotaArn"].split(":")[3]


def request_account(request: dict) -> str:
    return request["QuotaArn"].split(":")[4]


def requested_here(request: dict, call: Call) -> bool:
    """Whether ``request`` was made in the call's account and region: the only place
    it is seen."""
    return request_region(request) == call.region and request_account(request) == call.account


def service_quotas(call: Call):
    """Service Quotas for ec2 and ebs; None lets moto answer the rest."""
    p, action = call.params, call.action
    key = (p.get("ServiceCode"), p.get("QuotaCode"))
    if action in ("GetServiceQuota", "GetAWSDefaultServiceQuota", "RequestServiceQuotaIncrease"):
        if key[0] not in SERVICE_NAMES:
            return None
        if key not in QUOTAS:
            return json_error("NoSuchResourceException", f"The request failed because the specified quota {key[1]} does not exist.", 400)
    if action == "GetAWSDefaultServiceQuota":
        return json_ok({"Quota": quota_payload(call, *key, QUOTAS[key][2])})
    if action == "GetServiceQuota":
        value = applied(call, *key)
        if value is None:
            # Real AWS answers this for quotas never changed from their default; the
            # client must fall back to GetAWSDefaultServiceQuota.
            return json_error("NoSuchResourceException", f"The request failed because the quota {key[1]} has no applied value.", 400)
        return json_ok({"Quota": quota_payload(call, *key, value)})
    if action == "RequestServiceQuotaIncrease":
        desired = float(p.get("DesiredValue", 0))
        if desired <= applied_value(call, *key):
            return json_error("IllegalArgumentException", "The desired value must be greater than the current value.", 400)
        for r in STATE.requests.values():
            if (
                (r["ServiceCode"], r["QuotaCode"]) == key
                and requested_here(r, call)
                and r["Status"] in ("PENDING", "CASE_OPENED")
            ):
                return json_error("ResourceAlreadyExistsException", f"A request for {key[1]} is already pending.", 400)
        now = datetime.now(timezone.utc).timestamp()
        request = {
            "Id": uuid.uuid4().hex,
            "CaseId": "",
            "ServiceCode": key[0],
            "ServiceName": SERVICE_NAMES[key[0]],
            "QuotaCode": key[1],
            "QuotaName": QUOTAS[key][0],
            "DesiredValue": desired,
            "Status": "PENDING",
            "Created": now,
            "LastUpdated": now,
            "Requester": f"arn:aws:iam::{call.account}:root",
            "QuotaArn": f"arn:aws:servicequotas:{call.region}:{call.account}:{key[0]}/{key[1]}",
            "GlobalQuota": False,
            "Unit": QUOTAS[key][1],
        }
        STATE.requests[request["Id"]] = request
        return json_ok({"RequestedQuota": request})
    if action == "GetRequestedServiceQuotaChange":
        request = STATE.requests.get(p.get("RequestId"))
        if request is None or not requested_here(request, call):
            return json_error("NoSuchResourceException", f"The request {p.get('RequestId')} does not exist.", 400)
        return json_ok({"RequestedQuota": request})
    if action in ("ListRequestedServiceQuotaChangeHistory", "ListRequestedServiceQuotaChangeHistoryByQuota"):
        found = [
            r
            for r in STATE.requests.values()
            if requested_here(r, call)
            and p.get("ServiceCode") in (None, r["ServiceCode"])
            and p.get("QuotaCode") in (None, r["QuotaCode"])
            and p.get("Status") in (None, r["Status"])
        ]
        found.sort(key=lambda r: r["Created"])
        return json_ok({"RequestedQuotas": found})
    return None


def set_request_status(request_id: str, status: str) -> dict | None:
    request = STATE.requests.get(request_id)
    if request is None:
        return None
    request["Status"] = status
    request["LastUpdated"] = datetime.now(timezone.utc).timestamp()
    if status == "APPROVED":
        key = (request_account(request), request_region(request), request["ServiceCode"], request["QuotaCode"])
        STATE.quotas[key] = request["DesiredValue"]
    return request


# --- EC2 additions ----------------------------------------------------------------


def account_usage(call: Call, code: str) -> int:
    backend = ec2_backends[call.account][call.region]
    return sum(
        vcpus_of(i.instance_type)
        for i in every_instance(backend)
        if i.state in ("pending", "running") and quota_code_for(i.instance_type) == code
    )


def vcpu_room(call: Call, wanted: int):
    """How many of ``wanted`` instances the vCPU quota has room for, down to
    ``MinCount``; VcpuLimitExceeded when not even that many fit."""
    instance_type = call.params.get("InstanceType", "m1.small")
    least = int(call.params.get("MinCount", "1"))
    code = quota_code_for(instance_type)
    limit = applied_value(call, "ec2", code)
    room = int((limit - account_usage(call, code)) // max(vcpus_of(instance_type), 1))
    if room < least:
        return None, ec2_error(
            "VcpuLimitExceeded",
            f"You have requested more vCPU capacity than your current vCPU limit of {int(limit)} allows "
            "for the instance bucket that the specified instance type belongs to. Please visit "
            "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
            400,
        )
    return min(wanted, room), None


# AWS leaves the Region and the Availability Zone out of the IdempotentParameterMismatch
# check: a token is scoped to its zone, and the same token in another zone is another
# request (it launches another instance).
NOT_FINGERPRINTED = ("ClientToken", "Placement.AvailabilityZone")


def request_fingerprint(params: dict) -> str:
    stable = sorted((k, v) for k, v in params.items() if k not in NOT_FINGERPRINTED)
    return hashlib.sha256(json.dumps(stable).encode()).hexdigest()


def token_key(call: Call, token: str) -> tuple:
    """Tokens are scoped per account, region and zone; a request without a zone has its
    own scope."""
    return (call.account, call.region, call.params.get("Placement.AvailabilityZone", ""), token)


INSTANCE_ID = re.compile(rb"<instanceId>(i-[0-9a-f]+)</instanceId>")


def token_lock(token: str) -> threading.Lock:
    with STATE.lock:
        return STATE.token_locks.setdefault(token, threading.Lock())


def replay_token(call: Call, token: str):
    """The answer AWS gives to a ClientToken it has seen before in that zone, or None."""
    record = STATE.tokens.get(token_key(call, token))
    if record is None:
        return None
    if record.fingerprint != request_fingerprint(call.params):
        return ec2_error(
            "IdempotentParameterMismatch",
            f"Arguments on this idempotent request are inconsistent with arguments used in previous request(s) with client token {token}.",
            400,
        )
    backend = ec2_backends[call.account][call.region]
    states = [i.state for i in every_instance(backend) if i.id in record.instance_ids]
    if states and all(s == "terminated" for s in states):
        return ec2_error(
            "IdempotentInstanceTerminated",
            f"The client token {token} has already been used by an instance that was terminated.",
            400,
        )
    return 200, [("Content-Type", "text/xml")], record.body


def after_run_instances(call: Call, token: str | None, status: int, body: bytes) -> None:
    if status != 200:
        return
    ids = [m.decode() for m in INSTANCE_ID.findall(body)]
    with STATE.lock:
        if token:
            STATE.tokens[token_key(call, token)] = TokenRecord(request_fingerprint(call.params), body, ids)
        if STATE.lag_s > 0:
            for instance_id in ids:
                STATE.visible_at[instance_id] = time.monotonic() + STATE.lag_s
        if STATE.boot_s > 0:
            backend = ec2_backends[call.account][call.region]
            for instance in every_instance(backend):
                if instance.id in ids:
                    instance._state.name = "pending"
                    instance._state.code = 0
                    STATE.running_at[instance.id] = time.monotonic() + STATE.boot_s


def capacity_rule(account: str, zone: str, instance_type: str):
    return next(
        (
            r
            for r in STATE.sold_out
            if r["zone"] == zone and r.get("instance_type") in (None, instance_type) and r.get("account") in (None, account)
        ),
        None,
    )


def sold_out(account: str, zone: str, instance_type: str) -> bool:
    rule = capacity_rule(account, zone, instance_type)
    return rule is not None and not rule.get("left")


def capacity_room(call: Call, wanted: int):
    """How many of ``wanted`` instances the zone asked for (or, without one, the zone
    AWS would choose: the region's first) has capacity for, down to ``MinCount``;
    InsufficientInstanceCapacity in AWS's words when not even that many: the zone
    asked for, and the zones that have capacity. A zone with ``left`` instances of
    capacity launches that many at most, and has that much less after."""
    zone = call.params.get("Placement.AvailabilityZone") or f"{call.region}a"
    instance_type = call.params.get("InstanceType", "m1.small")
    least = int(call.params.get("MinCount", "1"))
    rule = capacity_rule(call.account, zone, instance_type)
    room = wanted if rule is None else min(wanted, int(rule.get("left") or 0))
    if room >= least:
        return room, None
    backend = ec2_backends[call.account][call.region]
    others = [z.name for z in backend.describe_availability_zones() if z.name != zone and not sold_out(call.account, z.name, instance_type)]
    where = (
        f"by not specifying an Availability Zone in your request or choosing {', '.join(others)}."
        if others
        else "by trying again later."
    )
    return None, ec2_error(
        "InsufficientInstanceCapacity",
        f"We currently do not have sufficient {instance_type} capacity in the "
        f"Availability Zone you requested ({zone}). Our system will be working on "
        f"provisioning additional capacity. You can currently get {instance_type} capacity {where}",
        500,
    )


def use_capacity(call: Call, launched: int) -> None:
    zone = call.params.get("Placement.AvailabilityZone") or f"{call.region}a"
    rule = capacity_rule(call.account, zone, call.params.get("InstanceType", "m1.small"))
    if rule is not None and rule.get("left"):
        rule["left"] = max(int(rule["left"]) - launched, 0)


def with_count(body: bytes, count: int) -> bytes:
    """The RunInstances body with ``MinCount`` and ``MaxCount`` both ``count``: moto
    launches ``MinCount`` instances."""
    params = [(k, v) for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if k not in ("MinCount", "MaxCount")]
    params += [("MinCount", str(count)), ("MaxCount", str(count))]
    return urlencode(params).encode()


def hibernated(call: Call) -> None:
    """StopInstances with Hibernate=true leaves AWS's state reason for a hibernation."""
    if call.params.get("Hibernate", "").lower() != "true":
        return
    ids = {v for k, v in call.params.items() if k.startswith("InstanceId.")}
    backend = ec2_backends[call.account][call.region]
    for instance in every_instance(backend):
        if instance.id in ids:
            instance.state_reason = StateReason(
                "Client.UserInitiatedHibernate: User initiated hibernate",
                "Client.UserInitiatedHibernate",
            )


def stopped_ids(call: Call) -> set[str]:
    """The instances of a StartInstances call that are stopped, so that it starts them."""
    with STATE.lock:
        found = (find_instance(call, i) for i in instance_ids(call))
        return {i.id for i in found if i is not None and i.state == "stopped"}


def restarted(call: Call, ids: set[str]) -> None:
    """A start resets LaunchTime, as on AWS; the attachments keep the original launch."""
    for instance_id in ids:
        instance = find_instance(call, instance_id)
        if instance is not None:
            instance.launch_time = utcnow()


def age(region: str, seconds: float, account: str | None = None) -> None:
    """Moves every instance's launch, last start and attachments `seconds` back, as if
    all had happened that much earlier (in ``account``, or in every account)."""
    delta = timedelta(seconds=seconds)
    accounts = [account] if account else list(ec2_backends.keys())
    instances = [i for a in accounts for i in every_instance(ec2_backends[a][region])]
    for instance in instances:
        instance.launch_time -= delta
        for device in instance.block_device_mapping.values():
            if getattr(device, "attach_time", None) is not None:
                device.attach_time -= delta
        for nic in instance.nics.values():
            if nic.attach_time is not None:
                nic.attach_time -= delta


def instance_ids(call: Call) -> list[str]:
    return [v for k, v in sorted(call.params.items()) if k.startswith("InstanceId.")]


def find_instance(call: Call, instance_id: str):
    backend = ec2_backends[call.account][call.region]
    return next((i for i in every_instance(backend) if i.id == instance_id), None)


def check_modify_instance_type(call: Call):
    """ModifyInstanceAttribute InstanceType, as AWS checks it: the instance must be
    stopped, the type must exist and suit the instance's architecture. None lets moto
    apply it (moto alone changes the type whatever the state)."""
    p = call.params
    instance_type = p.get("InstanceType.Value")
    if instance_type is None and p.get("Attribute") == "instanceType":
        instance_type = p.get("Value")
    if instance_type is None:
        return None
    instance_id = p.get("InstanceId", "")
    instance = find_instance(call, instance_id)
    if instance is None:
        return ec2_error("InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist", 400)
    if instance.state != "stopped":
        return ec2_error("IncorrectInstanceState", f"The instance '{instance_id}' is not in the 'stopped' state.", 400)
    info = INSTANCE_TYPES.get(instance_type)
    if info is None:
        return ec2_error("InvalidParameterValue", f"Invalid value '{instance_type}' for InstanceType.", 400)
    arch = getattr(instance, "architecture", "x86_64") or "x86_64"
    supported = info.get("ProcessorInfo", {}).get("SupportedArchitectures", [arch])
    if arch not in supported:
        return ec2_error(
            "InvalidParameterValue",
            f"The architecture '{supported[0]}' of the specified instance type does not match the "
            f"architecture '{arch}' of the specified AMI. Specify an instance type and an AMI that have "
            "matching architectures, and try again.",
            400,
        )
    return None


def check_start_vcpu_limit(call: Call):
    """StartInstances counts against the vCPU quota as a launch does."""
    starting = [find_instance(call, i) for i in instance_ids(call)]
    starting = [i for i in starting if i is not None and i.state in ("stopped", "stopping")]
    by_code: dict[str, int] = {}
    for instance in starting:
        code = quota_code_for(instance.instance_type)
        by_code[code] = by_code.get(code, 0) + vcpus_of(instance.instance_type)
    for code, wanted in by_code.items():
        limit = applied_value(call, "ec2", code)
        if account_usage(call, code) + wanted > limit:
            return ec2_error(
                "VcpuLimitExceeded",
                f"You have requested more vCPU capacity than your current vCPU limit of {int(limit)} allows "
                "for the instance bucket that the specified instance type belongs to. Please visit "
                "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
                400,
            )
    return None


def instance_count(call: Call) -> int:
    """The instances a call acts on, as AWS's resource buckets count them."""
    if call.action == "RunInstances":
        return int(call.params.get("MaxCount", call.params.get("MinCount", "1")))
    return len(instance_ids(call))


def take_resources(call: Call) -> bool:
    """Takes the call's instances from its action's resource bucket in its account and
    region, if the action has one."""
    if call.action not in RESOURCE_BUCKETS:
        return True
    capacity, refill = RESOURCE_BUCKETS[call.action]
    need = instance_count(call)
    key = (call.account, call.region, call.action)
    with STATE.lock:
        now = time.monotonic()
        tokens, last = STATE.resources.get(key, (float(capacity), now))
        tokens = min(capacity, tokens + (now - last) * refill)
        if tokens < need:
            STATE.resources[key] = (tokens, now)
            return False
        STATE.resources[key] = (tokens - need, now)
        return True


def take_token(call: Call) -> bool:
    """Takes a token from the call's request bucket: one per action, account and region,
    as on AWS."""
    action = call.action
    if action in BUCKETS:
        capacity, refill = BUCKETS[action]
    elif action.startswith("Describe"):
        capacity, refill = DESCRIBE_BUCKET
    else:
        capacity, refill = MUTATING_BUCKET
    key = (call.account, call.region, action)
    with STATE.lock:
        now = time.monotonic()
        tokens, last = STATE.buckets.get(key, (float(capacity), now))
        tokens = min(capacity, tokens + (now - last) * refill)
        if tokens < 1:
            STATE.buckets[key] = (tokens, now)
            return False
        STATE.buckets[key] = (tokens - 1, now)
        return True


# --- the WSGI front ---------------------------------------------------------------


class Emulator:
    def __init__(self, moto_app):
        self.moto_app = moto_app

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_prism/"):
            status, headers, out = self.control(environ.get("REQUEST_METHOD", "GET"), path, body)
        elif path.startswith("/moto-api"):
            return self.moto_app(environ, start_response)
        else:
            status, headers, out = self.aws(environ, body)
        start_response(f"{status} {'OK' if status < 400 else 'Error'}", headers + [("Content-Length", str(len(out)))])
        return [out]

    def forward(self, environ, body: bytes):
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        captured = {}

        def start(status, headers, exc_info=None):
            captured["status"] = int(status.split()[0])
            captured["headers"] = [(k, v) for k, v in headers if k.lower() != "content-length"]

        out = b"".join(self.moto_app(environ, start))
        return captured["status"], captured["headers"], out

    def aws(self, environ, body: bytes):
        call = parse_call(environ, body)
        entry = {
            "service": call.service,
            "action": call.action,
            "region": call.region,
            "account": call.account,
            "time": time.time(),
        }
        if filter_names(call.params):
            entry["filters"] = filter_names(call.params)
        with STATE.lock:
            STATE.calls.append(entry)
        answer = self.answer(environ, call, body)
        status, out = answer[0], answer[2]
        code = None
        if status >= 400:
            found = re.search(rb"<Code>([^<]+)</Code>|\"__type\":\s*\"(?:[^\"#]*#)?([^\"]+)\"", out)
            code = (found.group(1) or found.group(2)).decode() if found else None
        with STATE.lock:
            entry["status"] = status
            entry["code"] = code
        return answer

    def answer(self, environ, call: Call, body: bytes):
        with STATE.lock:
            fault = next((f for f in STATE.faults if f.matches(call) and f.fires(STATE.rng)), None)
            # EC2's buckets: the store's DynamoDB calls are not EC2's to throttle.
            throttled = (
                STATE.throttle
                and call.service == "ec2"
                and not (take_token(call) and take_resources(call))
            )
        if throttled:
            return error_for(call.service, "RequestLimitExceeded", "Request limit exceeded.", 503)
        if fault and fault.delay_ms:
            time.sleep(fault.delay_ms / 1000)
        if fault and not fault.lost and fault.code:
            return error_for(call.service, fault.code, fault.message, fault.status)
        result = self.handle(environ, call, body)
        if fault and fault.lost:
            return error_for(call.service, fault.code or "InternalError", fault.message, fault.status)
        return result

    def handle(self, environ, call: Call, body: bytes):
        if call.service == "servicequotas":
            with STATE.lock:
                answer = service_quotas(call)
            if answer is not None:
                return answer
        if call.service == "ec2" and call.action == "RunInstances":
            return self.run_instances(environ, call, body)
        if call.service == "ec2" and call.action == "ModifyInstanceAttribute":
            with STATE.lock:
                refused = check_modify_instance_type(call)
            if refused is not None:
                return refused
        if call.service == "ec2" and call.action == "StartInstances":
            # Checked and started as one step, as launches are.
            with LAUNCH_LOCK:
                with STATE.lock:
                    refused = check_start_vcpu_limit(call)
                if refused is not None:
                    return refused
                stopped = stopped_ids(call)
                answer = self.forward(environ, body)
                if answer[0] == 200:
                    restarted(call, stopped)
                return answer
        answer = self.forward(environ, body)
        if call.service == "ec2" and call.action == "StopInstances" and answer[0] == 200:
            hibernated(call)
        return answer

    def run_instances(self, environ, call: Call, body: bytes):
        token = call.params.get("ClientToken") or None
        lock = token_lock(token) if token else threading.Lock()
        with lock:
            if token:
                replay = replay_token(call, token)
                if replay is not None:
                    return replay
            # The checks and the launch are one step, as on AWS: two launches at once
            # cannot both squeeze into the last vCPUs or the last capacity.
            with LAUNCH_LOCK:
                with STATE.lock:
                    wanted = int(call.params.get("MaxCount", call.params.get("MinCount", "1")))
                    count, refused = capacity_room(call, wanted)
                    if refused is None:
                        count, refused = vcpu_room(call, count)
                if refused is not None:
                    return refused
                status, headers, out = self.forward(environ, with_count(body, count))
                if status == 200:
                    with STATE.lock:
                        use_capacity(call, count)
                after_run_instances(call, token, status, out)
            return status, headers, out

    def control(self, method: str, path: str, body: bytes):
        payload = json.loads(body or b"{}") if body else {}
        with STATE.lock:
            if path == "/_prism/calls" and method == "GET":
                return json_ok({"calls": STATE.calls})
            if path == "/_prism/calls" and method == "DELETE":
                STATE.calls.clear()
                return json_ok({})
            if path == "/_prism/reset":
                STATE.reset()
                return json_ok({})
            if path == "/_prism/quotas" and method == "POST":
                region = payload.pop("region", ANY)
                account = payload.pop("account", ANY)
                for service, codes in payload.items():
                    for code, value in codes.items():
                        if (service, code) not in QUOTAS:
                            return json_error("UnknownQuota", f"{service}/{code}", 400)
                        STATE.quotas[(account, region, service, code)] = float(value)
                return json_ok({})
            if path == "/_prism/faults" and method == "POST":
                STATE.faults = [Fault(**f) for f in payload.get("faults", [])]
                return json_ok({})
            if path == "/_prism/throttle" and method == "POST":
                STATE.throttle = bool(payload.get("enabled", True))
                STATE.buckets.clear()
                return json_ok({})
            if path == "/_prism/boot" and method == "POST":
                STATE.boot_s = float(payload.get("seconds", 0))
                return json_ok({})
            if path == "/_prism/capacity" and method == "POST":
                STATE.sold_out = [
                    {"zone": r["zone"], "instance_type": r.get("instance_type"), "left": r.get("left"), "account": r.get("account")}
                    for r in payload.get("sold_out", [])
                ]
                return json_ok({})
            if path == "/_prism/age" and method == "POST":
                age(payload.get("region", "us-west-2"), float(payload.get("seconds", 0)), payload.get("account"))
                return json_ok({})
            if path == "/_prism/lag" and method == "POST":
                STATE.lag_s = float(payload.get("seconds", 0))
                if payload.get("reveal"):
                    # The lag is over for the instances hidden so far.
                    STATE.visible_at.clear()
                return json_ok({})
            if path.startswith("/_prism/quota-requests/") and method == "POST":
                request = set_request_status(path.rsplit("/", 1)[1], payload.get("status", "APPROVED"))
                if request is None:
                    return json_error("NoSuchResourceException", path, 404)
                return json_ok({"RequestedQuota": request})
        return json_error("NotFound", f"{method} {path}", 404)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args(argv)

    app = Emulator(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    port = server.server_port
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    print(f"prism emulator listening on http://{args.host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
