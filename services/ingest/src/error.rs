//! The one place where ingest's errors become HTTP answers. A 4xx body says what
//! was wrong; a 5xx says little (the cause is logged once where it happened).

use crate::verify::SignatureError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{provider} webhooks are disabled: {var} is not set")]
    Disabled {
        provider: &'static str,
        var: &'static str,
    },
    #[error("content type must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("invalid signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this token lacks the {0} scope")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("too many requests from this token; retry in {} s", .retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    RepositoryNotAllowed(String),
    #[error("{0}")]
    OutboundRefused(String),
    #[error("the task queue is unavailable; retry later")]
    BrokerDown { retry_after: Duration },
    #[error("the task status store is unavailable; retry later")]
    StoreDown { retry_after: Duration },
    #[error("the request did not complete within {} s", .0.as_secs())]
    RequestTimeout(Duration),
    #[error("ingest is answering as many requests as it may; retry later")]
    Overloaded { retry_after: Duration },
    #[error("internal error")]
    Internal,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable snake_case code (`bad_signature`, `malformed_json`, …).
    pub error: &'static str,
    /// What was wrong, in words.
    pub message: String,
}

impl IngestError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Disabled { .. } | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Signature(_) | Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::MissingHeader(_) | Self::Malformed(_) | Self::Invalid(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Forbidden(_) | Self::RepositoryNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::OutboundRefused(_) => StatusCode::BAD_REQUEST,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BrokerDown { .. } | Self::StoreDown { .. } | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the body and the `reason` metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Disabled { .. } => "provider_disabled",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::TooLarge(_) => "body_too_large",
            Self::Signature(SignatureError::Stale(_)) => "stale_timestamp",
            Self::Signature(_) => "bad_signature",
            Self::MissingHeader(_) => "missing_header",
            Self::Malformed(_) => "malformed_json",
            Self::Invalid(_) => "invalid_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::RepositoryNotAllowed(_) => "repository_not_allowed",
            Self::OutboundRefused(_) => "outbound_refused",
            Self::RateLimited { .. } => "rate_limited",
            Self::NotFound(_) => "not_found",
            Self::BrokerDown { .. } => "broker_unavailable",
            Self::StoreDown { .. } => "store_unavailable",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::Internal => "internal",
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        match &self {
            Self::BrokerDown { retry_after }
            | Self::StoreDown { retry_after }
            | Self::Overloaded { retry_after }
            | Self::RateLimited { retry_after } => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            Self::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
