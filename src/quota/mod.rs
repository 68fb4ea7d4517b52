//! EC2 quota classes: which Service Quotas code counts the vCPUs of an instance type;
//! reading quotas ([`read`]), their arithmetic ([`arith`]) and the account's usage of
//! each ([`usage`]).

use serde::Serialize;

pub mod arith;
pub mod read;
pub mod request;
pub mod usage;

pub use arith::Status;
pub use read::{QuotaReading, read_quota};

/// One quota that prism knows how to read and reason about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuotaClass {
    /// Service Quotas service code (`ec2` or `ebs`).
    pub service: &'static str,
    /// Service Quotas quota code, e.g. `L-1216C47A`.
    pub code: &'static str,
    /// The friendly name accepted by `prism quota request --quota`.
    pub friendly: &'static str,
    /// A short human name.
    pub name: &'static str,
    /// What the quota counts.
    pub unit: &'static str,
}

const fn vcpus(code: &'static str, friendly: &'static str, name: &'static str) -> QuotaClass {
    QuotaClass {
        service: "ec2",
        code,
        friendly,
        name,
        unit: "vCPUs",
    }
}

/// On-Demand Standard (A, C, D, H, I, M, R, T, Z).
pub const STANDARD: QuotaClass = vcpus(
    "L-1216C47A",
    "on-demand-vcpus",
    "On-Demand Standard (A, C, D, H, I, M, R, T, Z)",
);

/// Every On-Demand vCPU class, Standard first.
pub const ON_DEMAND: [QuotaClass; 10] = [
    STANDARD,
    vcpus("L-DB2E81BA", "gpu-vcpus", "On-Demand G and VT"),
    vcpus("L-417A185B", "p-vcpus", "On-Demand P"),
    vcpus("L-74FC7D96", "f-vcpus", "On-Demand F"),
    vcpus("L-7295265B", "x-vcpus", "On-Demand X"),
    vcpus("L-1945791B", "inf-vcpus", "On-Demand Inf"),
    vcpus("L-2C3B7624", "trn-vcpus", "On-Demand Trn"),
    vcpus("L-6E869C2A", "dl-vcpus", "On-Demand DL"),
    vcpus("L-F7808C92", "hpc-vcpus", "On-Demand HPC"),
    vcpus("L-43DA4232", "high-memory-vcpus", "On-Demand High Memory"),
];

/// All Standard Spot Instance Requests.
pub const SPOT_STANDARD: QuotaClass = vcpus("L-34B43A08", "spot-vcpus", "Standard Spot");

/// EBS General Purpose SSD (gp3) storage.
pub const EBS_GP3: QuotaClass = QuotaClass {
    service: "ebs",
    code: "L-7A658B76",
    friendly: "ebs-gp3-tib",
    name: "EBS gp3 storage",
    unit: "TiB",
};

/// Instance family prefixes in match order: longer prefixes before the letters they
/// start with (`dl` before `d`, `inf` before `i`, `trn` before `t`, …).
const FAMILIES: [(&str, usize); 10] = [
    ("u-", 9),
    ("inf", 5),
    ("trn", 6),
    ("hpc", 8),
    ("dl", 7),
    ("vt", 1),
    ("g", 1),
    ("p", 2),
    ("f", 3),
    ("x", 4),
];

/// The On-Demand quota class of an instance type such as `t3.xlarge` or `p4d.24xlarge`.
pub fn on_demand_class(instance_type: &str) -> &'static QuotaClass {
    let family = instance_type
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    FAMILIES
        .iter()
        .find(|(prefix, _)| family.starts_with(prefix))
        .map_or(&ON_DEMAND[0], |(_, i)| &ON_DEMAND[*i])
}

const OTHERS: [QuotaClass; 2] = [SPOT_STANDARD, EBS_GP3];

/// Every quota prism knows, in the order `quota show` lists them.
pub fn all() -> impl Iterator<Item = &'static QuotaClass> {
    ON_DEMAND.iter().chain(OTHERS.iter())
}

/// A quota class by code or friendly name.
pub fn by_name(name: &str) -> Option<&'static QuotaClass> {
    all().find(|q| q.code.eq_ignore_ascii_case(name) || q.friendly == name)
}

/// The vCPU quota an instance counts against: its On-Demand class, or for a Spot
/// instance (`lifecycle` `spot`) of the Standard families, Standard Spot. Other Spot
/// and Capacity Block instances count against quotas prism does not track: none.
pub fn class_of(instance_type: &str, lifecycle: Option<&str>) -> Option<&'static QuotaClass> {
    let on_demand = on_demand_class(instance_type);
    match lifecycle {
        None => Some(on_demand),
        Some("spot") if on_demand.code == STANDARD.code => Some(&SPOT_STANDARD),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_map_to_their_quota_codes() {
        let cases = [
            ("t3.xlarge", "L-1216C47A"),
            ("m7i.large", "L-1216C47A"),
            ("d3.xlarge", "L-1216C47A"),
            ("dl1.24xlarge", "L-6E869C2A"),
            ("i4i.large", "L-1216C47A"),
            ("inf2.xlarge", "L-1945791B"),
            ("trn1.2xlarge", "L-2C3B7624"),
            ("hpc7g.4xlarge", "L-F7808C92"),
            ("h1.2xlarge", "L-1216C47A"),
            ("g5.xlarge", "L-DB2E81BA"),
            ("vt1.3xlarge", "L-DB2E81BA"),
            ("p4d.24xlarge", "L-417A185B"),
            ("f1.2xlarge", "L-74FC7D96"),
            ("x2idn.16xlarge", "L-7295265B"),
            ("u-6tb1.metal", "L-43DA4232"),
            ("z1d.large", "L-1216C47A"),
        ];
        for (instance_type, code) in cases {
            assert_eq!(on_demand_class(instance_type).code, code, "{instance_type}");
        }
    }

    #[test]
    fn instances_count_against_their_on_demand_or_spot_class() {
        let cases = [
            ("t3.xlarge", None, Some("L-1216C47A")),
            ("t3.xlarge", Some("spot"), Some("L-34B43A08")),
            ("g5.xlarge", None, Some("L-DB2E81BA")),
            ("g5.xlarge", Some("spot"), None),
            ("m7i.large", Some("capacity-block"), None),
        ];
        for (instance_type, lifecycle, code) in cases {
            assert_eq!(
                class_of(instance_type, lifecycle).map(|c| c.code),
                code,
                "{instance_type} {lifecycle:?}"
            );
        }
        assert_eq!(all().count(), 12);
    }

    #[test]
    fn classes_are_found_by_friendly_name_and_code() {
        assert_eq!(by_name("on-demand-vcpus").unwrap().code, "L-1216C47A");
        assert_eq!(by_name("l-db2e81ba").unwrap().friendly, "gpu-vcpus");
        assert_eq!(by_name("ebs-gp3-tib").unwrap().service, "ebs");
        assert!(by_name("nope").is_none());
    }
}
