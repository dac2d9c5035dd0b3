//! The command host's errors and the one function that maps them to HTTP.

use domain::DomainError;
use hyper::StatusCode;

use crate::records::RecordsError;
use event_store::StoreError;
use platform::auth::AuthError;
use platform::http::Problem;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad request framing found by the plumbing or router (400/404/405/413/415).
    #[error("{}", .0.detail)]
    Http(Problem),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The write kept losing races against other writers.
    #[error("the post kept changing; try again")]
    Conflict,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInProgress,
    /// The write could not be appended within its deadline; nothing changed.
    #[error("the write could not be made in time; nothing was changed, try again")]
    DeadlinePassed,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Records(#[from] RecordsError),
}

impl From<Problem> for CommandError {
    fn from(problem: Problem) -> Self {
        CommandError::Http(problem)
    }
}

/// The only place a command-host error becomes a status code.
pub fn problem_for(error: &CommandError) -> Problem {
    let detail = error.to_string();
    match error {
        CommandError::Http(problem) => problem.clone(),
        CommandError::Auth(_) => Problem::new(StatusCode::UNAUTHORIZED, detail),
        CommandError::Domain(domain) => match domain {
            DomainError::Validation(_) => {
                Problem::new(StatusCode::BAD_REQUEST, detail).with_kind("validation")
            }
            DomainError::Forbidden(_) => Problem::new(StatusCode::FORBIDDEN, detail),
            DomainError::NotFound(_) => Problem::new(StatusCode::NOT_FOUND, detail),
            DomainError::Gone => Problem::new(StatusCode::GONE, detail),
            DomainError::Conflict(_) => Problem::new(StatusCode::CONFLICT, detail),
            DomainError::PreconditionFailed { current } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                format!("the post is at version {current}, not the version in If-Match"),
            ),
        },
        CommandError::Conflict => Problem::new(StatusCode::CONFLICT, detail),
        CommandError::IdempotencyMismatch => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
            .with_kind("idempotency-key-reused"),
        CommandError::IdempotencyInProgress => {
            Problem::new(StatusCode::CONFLICT, detail).with_kind("idempotency-key-in-progress")
        }
        CommandError::Store(StoreError::Conflict { .. }) => {
            Problem::new(StatusCode::CONFLICT, detail)
        }
        CommandError::Store(StoreError::Corrupt(_) | StoreError::InvalidAppend(_))
        | CommandError::Records(RecordsError::Corrupt(_)) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stored data could not be read",
        ),
        CommandError::DeadlinePassed => Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail),
        CommandError::Store(StoreError::Unavailable(_) | StoreError::RolledBack(_))
        | CommandError::Records(RecordsError::Unavailable(_)) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage is unavailable; try again",
        ),
    }
}
