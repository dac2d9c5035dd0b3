//! One handler per write route: how its request becomes a [`PostCommand`].
//! Everything else a write goes through (authentication, `If-Match`,
//! `Idempotency-Key`, the write itself, the answer) is the same for all of
//! them and lives in [`crate::app`] and [`crate::service`].

use serde::Deserialize;

use domain::{CommentText, Message, PostCommand};

use crate::error::CommandError;
use crate::routes::{self, Endpoint};
use platform::http;
use platform::routes::Matched;

/// A write route's handler.
#[derive(Debug, Clone, Copy)]
pub struct Write {
    /// Whether the command comes with a JSON body.
    pub reads_body: bool,
    /// The command, from the route's parameters and the body (empty unless
    /// `reads_body`).
    pub command: fn(&Matched<'_, Endpoint>, &[u8]) -> Result<PostCommand, CommandError>,
}

pub const CREATE_POST: Write = Write {
    reads_body: true,
    command: |_, body| {
        Ok(PostCommand::CreatePost {
            message: message(body)?,
        })
    },
};

pub const EDIT_MESSAGE: Write = Write {
    reads_body: true,
    command: |_, body| {
        Ok(PostCommand::EditMessage {
            message: message(body)?,
        })
    },
};

pub const LIKE_POST: Write = Write {
    reads_body: false,
    command: |_, _| Ok(PostCommand::LikePost),
};

pub const UNLIKE_POST: Write = Write {
    reads_body: false,
    command: |_, _| Ok(PostCommand::UnlikePost),
};

pub const ADD_COMMENT: Write = Write {
    reads_body: true,
    command: |_, body| Ok(PostCommand::AddComment { text: text(body)? }),
};

pub const EDIT_COMMENT: Write = Write {
    reads_body: true,
    command: |matched, body| {
        Ok(PostCommand::EditComment {
            comment_id: routes::comment_id(matched)?,
            text: text(body)?,
        })
    },
};

pub const REMOVE_COMMENT: Write = Write {
    reads_body: false,
    command: |matched, _| {
        Ok(PostCommand::RemoveComment {
            comment_id: routes::comment_id(matched)?,
        })
    },
};

pub const DELETE_POST: Write = Write {
    reads_body: false,
    command: |_, _| Ok(PostCommand::DeletePost),
};

/// `{"message": "..."}`
fn message(body: &[u8]) -> Result<Message, CommandError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        message: String,
    }
    let body: Body = http::parse_json(body)?;
    Ok(Message::parse(&body.message).map_err(domain::DomainError::from)?)
}

/// `{"text": "..."}`
fn text(body: &[u8]) -> Result<CommentText, CommandError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        text: String,
    }
    let body: Body = http::parse_json(body)?;
    Ok(CommentText::parse(&body.text).map_err(domain::DomainError::from)?)
}
