use super::*;
use crate::cloud::{CloudError, ErrorClass};

fn context() -> Context {
    Context {
        region: Some("us-west-2".into()),
        zone: Some("us-west-2a".into()),
        instance_type: Some("t3.xlarge".into()),
        limit: Some(16.0),
        usage: Some(16),
        usage_by_type: vec![("t3.xlarge".into(), 2, 4), ("t3.medium".into(), 4, 2)],
        recommended_value: Some(25.0),
    }
}

#[test]
fn every_entry_renders_with_its_context() {
    let mut all = String::new();
    for entry in CATALOGUE {
        let err = CloudError::service(
            "RunInstances",
            Some(entry.codes[0]),
            "AWS's own words.",
            Some(400),
        );
        let e = explain(&err, &context());
        assert_eq!(e.code, entry.codes[0]);
        for text in [
            &e.title,
            &e.what_happened,
            &e.what_prism_does,
            &e.what_you_can_do,
        ] {
            assert!(
                !text.contains('{') || text.contains("{owner"),
                "unfilled placeholder in {text:?}"
            );
        }
        all.push_str(&render(&e));
        all.push('\n');
    }
    insta::assert_snapshot!(all);
}

#[test]
fn every_code_is_listed_once() {
    let mut seen = std::collections::HashSet::new();
    for entry in CATALOGUE {
        for code in entry.codes {
            assert!(seen.insert(*code), "{code} is in the catalogue twice");
        }
    }
}

#[test]
fn an_unknown_code_keeps_the_aws_code_and_message() {
    let err = CloudError::service("RunInstances", Some("Gremlins"), "something odd", Some(400));
    let e = explain(&err, &Context::default());
    assert_eq!(e.code, "Gremlins");
    assert!(e.what_happened.contains("Gremlins"));
    assert!(e.what_happened.contains("something odd"));
    assert_eq!(err.class, ErrorClass::Permanent);
}

#[test]
fn vcpu_limit_shows_usage_by_instance_type() {
    let err = CloudError::service(
        "RunInstances",
        Some("VcpuLimitExceeded"),
        "limit of 16",
        Some(400),
    );
    let e = explain(&err, &context());
    assert_eq!(e.title, "AWS vCPU limit reached (16/16 vCPUs used)");
    assert!(
        e.what_happened.contains("- 2× t3.xlarge (8 vCPUs total)"),
        "{}",
        e.what_happened
    );
    assert!(e.what_happened.contains("- 4× t3.medium (8 vCPUs total)"));
    assert!(e.what_happened.contains("= 16 vCPUs used / 16 limit"));
    assert!(
        e.what_you_can_do
            .contains("https://console.aws.amazon.com/servicequotas/")
    );
}

#[test]
fn troubleshooting_doc_is_generated_from_the_catalogue() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/troubleshooting.md");
    let generated = markdown();
    if std::env::var_os("PRISM_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/troubleshooting.md is out of date: regenerate it with PRISM_UPDATE_DOCS=1 cargo test troubleshooting"
    );
}

/// The codes the AWS SDKs retry as throttling or as passing faults, and the capacity
/// codes: each has its entry, with the class its retry needs.
#[test]
fn every_code_aws_retries_has_an_entry_with_its_class() {
    let want = [
        (
            ErrorClass::Throttle,
            &[
                "Throttling",
                "ThrottlingException",
                "ThrottledException",
                "RequestThrottledException",
                "TooManyRequestsException",
                "ProvisionedThroughputExceededException",
                "TransactionInProgressException",
                "RequestLimitExceeded",
                "BandwidthLimitExceeded",
                "LimitExceededException",
                "RequestThrottled",
                "SlowDown",
                "PriorRequestNotComplete",
                "EC2ThrottledException",
            ][..],
        ),
        (
            ErrorClass::Transient,
            &[
                "RequestTimeout",
                "RequestTimeoutException",
                "InternalError",
                "InternalFailure",
                "ServiceUnavailable",
                "Unavailable",
                "ServiceUnavailableException",
                "InternalServerError",
                "ServiceException",
            ][..],
        ),
        (
            ErrorClass::Capacity,
            &[
                "InsufficientInstanceCapacity",
                "InsufficientCapacity",
                "InsufficientHostCapacity",
                "InsufficientReservedInstanceCapacity",
                "Unsupported",
            ][..],
        ),
    ];
    let mut missing = vec![];
    for (class, codes) in want {
        for code in codes {
            match lookup(code) {
                Some(e) if e.class == Some(class) => {}
                other => missing.push(format!("{code}: {:?}", other.map(|e| e.class))),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "codes without their entry or class: {missing:#?}"
    );
}

/// prism's own failures never read as answers from AWS.
#[test]
fn prisms_own_failures_are_not_told_as_aws_answers() {
    for entry in CATALOGUE.iter().filter(|e| e.class.is_none()) {
        let err = CloudError::transport(
            "RunInstances",
            crate::cloud::Transport::Local,
            entry.codes[0],
            "details",
        );
        let e = explain(&err, &context());
        assert!(
            !e.what_happened.contains("AWS answered"),
            "{}: {}",
            entry.codes[0],
            e.what_happened
        );
    }
    let odd = CloudError::transport("RunInstances", crate::cloud::Transport::Local, "Weird", "x");
    assert!(
        !explain(&odd, &context())
            .what_happened
            .contains("AWS answered")
    );
}
