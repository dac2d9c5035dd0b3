//! `GET /posts/{id}/events`: a post's history, a page at a time, straight
//! from the event store.

use hyper::StatusCode;
use serde_json::json;

use domain::{PostId, Version};

use crate::error::CommandError;
use event_store::EventStore;
use platform::http::{self, HttpResponse, Problem};

/// Which page of a post's history `GET /posts/{id}/events` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPage {
    pub from: Version,
    pub limit: usize,
}

impl HistoryPage {
    /// The most events one answer carries, and how many without `limit`.
    pub const MAX_LIMIT: usize = 1_000;

    /// `?from_version=N&limit=L`: N from 1, L from 1 to [`Self::MAX_LIMIT`];
    /// anything else is 400.
    pub fn parse(query: Option<&str>) -> Result<Self, Problem> {
        let mut page = Self {
            from: Version::new(1),
            limit: Self::MAX_LIMIT,
        };
        for (name, value) in http::query_pairs(query)? {
            let number = |what: &str, range: std::ops::RangeInclusive<u64>| {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        Problem::new(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "{what} must be a whole number from {} to {}, not {value:?}",
                                range.start(),
                                range.end()
                            ),
                        )
                    })
            };
            match name.as_str() {
                "from_version" => {
                    page.from = Version::new(number("from_version", 1..=i64::MAX as u64)?)
                }
                "limit" => page.limit = number("limit", 1..=Self::MAX_LIMIT as u64)? as usize,
                other => {
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        format!("unknown query parameter {other:?}: use from_version and limit"),
                    ));
                }
            }
        }
        Ok(page)
    }
}

/// One page of the post's events. `next` links the following page, or is
/// null once the page reached the stream's end; past the end the page is
/// empty. A post with no events at all is 404.
pub async fn history<S: EventStore>(
    store: &S,
    post_id: PostId,
    page: HistoryPage,
) -> Result<HttpResponse, CommandError> {
    // One more than asked for tells whether another page follows.
    let mut events = store
        .load_stream_page(post_id, page.from, page.limit + 1)
        .await?;
    if events.is_empty()
        && (page.from == Version::new(1)
            || store
                .load_stream_page(post_id, Version::new(1), 1)
                .await?
                .is_empty())
    {
        return Err(domain::DomainError::NotFound("post").into());
    }
    let next = (events.len() > page.limit).then(|| {
        events.truncate(page.limit);
        let after = events.last().map_or(page.from, |e| e.version.next());
        format!(
            "/posts/{post_id}/events?from_version={after}&limit={}",
            page.limit
        )
    });
    Ok(http::json(
        StatusCode::OK,
        &json!({ "events": events, "next": next }),
    ))
}
