//! Errors from the cloud, classified by what a caller should do about them.

use serde::Serialize;
use thiserror::Error;

/// What a failed call calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// AWS is rate limiting: back off, slow down, retry.
    Throttle,
    /// No capacity for this type in this availability zone: try another zone.
    Capacity,
    /// A passing fault (5xx, timeout, dropped connection): retry.
    Transient,
    /// Retrying cannot help.
    Permanent,
}

/// A failed cloud call, with the AWS error code kept.
#[derive(Debug, Clone, Error, Serialize)]
#[error("{operation} failed: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct CloudError {
    /// The API called, e.g. `DescribeInstances`.
    pub operation: &'static str,
    /// The AWS error code, when AWS answered with one.
    pub code: Option<String>,
    /// AWS's message, or a description of the transport failure.
    pub message: String,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    pub class: ErrorClass,
}

/// How the call failed below the level of an AWS answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An AWS answer (with or without a code).
    Answered,
    /// The call or the connection timed out.
    Timeout,
    /// The connection could not be made or broke (refused, reset, closed).
    Connection,
    /// The request could not be built or signed (e.g. no credentials).
    Local,
}

impl ErrorClass {
    /// Classifies by AWS error code first, then by HTTP status and transport.
    pub fn of(code: Option<&str>, status: Option<u16>, transport: Transport) -> ErrorClass {
        // The catalogue gives the class of every AWS code it knows; another code AWS
        // answers with is taken as permanent: retrying what is not understood is unsafe.
        if let Some(c) = code {
            return super::catalogue::lookup(c)
                .and_then(|e| e.class)
                .unwrap_or(ErrorClass::Permanent);
        }
        match (transport, status) {
            (Transport::Timeout | Transport::Connection, _) => ErrorClass::Transient,
            (_, Some(429)) => ErrorClass::Throttle,
            (_, Some(s)) if s >= 500 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

impl CloudError {
    /// An error AWS answered with.
    pub fn service(
        operation: &'static str,
        code: Option<&str>,
        message: impl Into<String>,
        status: Option<u16>,
    ) -> Self {
        CloudError {
            operation,
            code: code.map(str::to_string),
            message: message.into(),
            status,
            class: ErrorClass::of(code, status, Transport::Answered),
        }
    }

    /// A call that got no AWS answer; `code` is prism's name for the failure
    /// (NoCredentials, UnknownRegion, EndpointUnreachable, Timeout, …).
    pub fn transport(
        operation: &'static str,
        transport: Transport,
        code: &str,
        message: impl Into<String>,
    ) -> Self {
        CloudError {
            operation,
            code: Some(code.to_string()),
            message: message.into(),
            status: None,
            class: ErrorClass::of(None, None, transport),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use ErrorClass::*;
        use Transport::*;
        let cases: &[(Option<&str>, Option<u16>, Transport, ErrorClass)] = &[
            (Some("RequestLimitExceeded"), Some(503), Answered, Throttle),
            (Some("ThrottlingException"), Some(400), Answered, Throttle),
            (
                Some("InsufficientInstanceCapacity"),
                Some(500),
                Answered,
                Capacity,
            ),
            (Some("Unavailable"), Some(503), Answered, Transient),
            (Some("InternalError"), Some(500), Answered, Transient),
            (Some("VcpuLimitExceeded"), Some(400), Answered, Permanent),
            (
                Some("InvalidAMIID.NotFound"),
                Some(400),
                Answered,
                Permanent,
            ),
            (
                Some("IdempotentParameterMismatch"),
                Some(400),
                Answered,
                Permanent,
            ),
            (
                Some("UnauthorizedOperation"),
                Some(403),
                Answered,
                Permanent,
            ),
            (None, Some(502), Answered, Transient),
            (None, Some(429), Answered, Throttle),
            (None, Some(403), Answered, Permanent),
            (None, None, Timeout, Transient),
            (None, None, Connection, Transient),
            (None, None, Local, Permanent),
        ];
        for (code, status, transport, want) in cases {
            assert_eq!(
                ErrorClass::of(*code, *status, *transport),
                *want,
                "{code:?} {status:?} {transport:?}"
            );
        }
    }
}
