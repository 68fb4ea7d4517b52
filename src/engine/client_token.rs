//! ClientTokens: the same workspace, spec, zone and incarnation always give the same
//! token, so a retry after a lost response, a rerun after a crash, or a second apply
//! running at once gets the instance already launched instead of a new one.

use sha2::{Digest, Sha256};

use crate::cloud::LaunchSpec;

/// A digest of what the instance is launched as; a changed spec needs a new token,
/// or AWS answers IdempotentParameterMismatch.
pub fn spec_digest(spec: &LaunchSpec) -> String {
    let mut h = Sha256::new();
    for part in [
        spec.image_id.as_str(),
        spec.instance_type.as_str(),
        spec.user_data.as_deref().unwrap_or(""),
        &format!("{:?}", spec.root_volume),
        &spec.hibernation.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // Only when set, so that the tokens of every other launch stay as they were.
    if let Some(snapshot) = &spec.from_snapshot {
        h.update(snapshot.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

/// The token of `workspace` of `fleet`. Tokens are zonal on AWS, so the zone is part of
/// it; `incarnation` moves past a token whose instance was terminated
/// (IdempotentInstanceTerminated).
pub fn client_token(
    fleet: &str,
    workspace: &str,
    spec_digest: &str,
    zone: Option<&str>,
    incarnation: u32,
) -> String {
    let mut h = Sha256::new();
    for part in [
        fleet,
        workspace,
        spec_digest,
        zone.unwrap_or("any"),
        &incarnation.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // AWS allows 64 ASCII characters.
    format!("prism-{}", &hex(&h.finalize())[..40])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_and_differ_by_every_part() {
        let base = client_token("f", "f-01", "d", None, 0);
        assert_eq!(base, client_token("f", "f-01", "d", None, 0));
        assert!(base.len() <= 64 && base.is_ascii());
        for other in [
            client_token("g", "f-01", "d", None, 0),
            client_token("f", "f-02", "d", None, 0),
            client_token("f", "f-01", "e", None, 0),
            client_token("f", "f-01", "d", Some("us-west-2a"), 0),
            client_token("f", "f-01", "d", None, 1),
        ] {
            assert_ne!(base, other);
        }
    }

    use proptest::prelude::*;

    /// Short names from a small alphabet, so that two different tuples often read
    /// the same when run together ("ab" + "c" against "a" + "bc").
    fn part() -> impl Strategy<Value = String> {
        "[ab-]{0,3}"
    }

    type Key = (String, String, Option<String>, u32);

    fn key() -> impl Strategy<Value = Key> {
        let types = vec!["t3.micro", "t3.large", "m5.large"];
        let zones = vec!["us-west-2a", "us-west-2b"];
        (
            part(),
            prop::sample::select(types).prop_map(String::from),
            prop::option::of(prop::sample::select(zones).prop_map(String::from)),
            0u32..3,
        )
    }

    fn token_of((workspace, instance_type, zone, incarnation): &Key) -> String {
        let spec = LaunchSpec {
            client_token: String::new(),
            image_id: "ami-1".into(),
            instance_type: instance_type.clone(),
            availability_zone: None,
            tags: Default::default(),
            user_data: None,
            root_volume: None,
            hibernation: false,
            from_snapshot: None,
        };
        let digest = spec_digest(&spec);
        client_token("f", workspace, &digest, zone.as_deref(), *incarnation)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn tokens_are_deterministic_valid_and_distinct(a in key(), b in key()) {
            let (ta, tb) = (token_of(&a), token_of(&b));
            prop_assert_eq!(&ta, &token_of(&a.clone()));
            prop_assert!(ta.len() <= 64 && ta.is_ascii());
            prop_assert_eq!(a == b, ta == tb, "{:?} and {:?}", a, b);
        }

        #[test]
        fn free_text_parts_never_run_together(a in (part(), part(), part()), b in (part(), part(), part())) {
            // The fleet, the workspace and the spec digest sit side by side.
            let t = |(f, w, d): &(String, String, String)| client_token(f, w, d, None, 0);
            prop_assert_eq!(a == b, t(&a) == t(&b), "{:?} and {:?}", a, b);
        }
    }
}
