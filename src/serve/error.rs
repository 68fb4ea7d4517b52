//! Every error the API answers, in the catalogue's shape:
//! `{"error": {code, title, what_happened, what_prism_does, what_you_can_do}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::errors::Explained;

/// An answer that is not a success: a status and the error object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, title: impl Into<String>) -> ApiError {
        let title = title.into();
        ApiError::explained(
            status,
            Explained {
                code: code.into(),
                what_happened: title.clone(),
                title,
                what_prism_does: "prism changed nothing.".into(),
                what_you_can_do: String::new(),
            },
        )
    }

    /// What the caller can do about it.
    pub fn fix(mut self, what: impl Into<String>) -> ApiError {
        self.body["error"]["what_you_can_do"] = Value::String(what.into());
        self
    }

    /// What happened, when it says more than the title.
    pub fn happened(mut self, what: impl Into<String>) -> ApiError {
        self.body["error"]["what_happened"] = Value::String(what.into());
        self
    }

    /// One more key of the error object (a manifest's `problems`, a `shortfall`).
    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.body["error"][key] = value;
        self
    }

    /// An explained error (AWS's, a setting's) with `status`.
    pub fn explained(status: StatusCode, explained: Explained) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": explained }),
        }
    }

    /// An error already in the catalogue's JSON shape (`{"error": {...}}`).
    pub fn from_json(status: StatusCode, body: Value) -> ApiError {
        ApiError { status, body }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the request has no valid API token",
        )
        .fix("Send `Authorization: Bearer TOKEN` with the token from the state directory's `token` file.")
    }

    pub fn forbidden(why: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", why)
            .fix("Call the server by the address it listens on (127.0.0.1, localhost or [::1] with its port), from the server's own pages or a non-browser client.")
    }

    /// The shared store (replicas) could not be reached.
    pub fn store(e: crate::store::StoreError) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "StoreUnavailable",
            format!("the store the replicas share did not answer: {e}"),
        )
        .fix("Try again in a few seconds; if it goes on, check the table and this replica's access to it (docs/deploy.md).")
    }

    pub fn bad_request(why: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", why)
            .fix("Fix the request as docs/serve.md describes and send it again.")
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", what)
            .fix("List the launches with GET /api/v1/workspaces/bulk-launch.")
    }

    pub fn conflict(code: &str, what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
