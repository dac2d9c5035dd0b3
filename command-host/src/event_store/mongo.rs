//! The MongoDB event store: one `events` collection with a unique index on
//! (stream_id, version). A duplicate key (11000) or a transaction write conflict
//! becomes the typed concurrency conflict; a command's events are inserted in
//! one multi-document transaction, so MongoDB must run as a replica set (a
//! single-node one is enough, as in docker-compose).

use futures_util::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{Error as MongoError, ErrorKind, TRANSIENT_TRANSACTION_ERROR, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, IndexModel};

use domain::{EventEnvelope, EventMetadata, PostId, Timestamp, UserId, Version};

use super::{EventStore, ReadAllCursor, ReadAllPage, StoreError};

const DUPLICATE_KEY: i32 = 11_000;
const WRITE_CONFLICT: i32 = 112;

#[derive(Debug, Clone)]
pub struct MongoEventStore {
    client: Client,
    events: Collection<Document>,
}

fn unavailable(error: MongoError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

/// Whether the error means another writer got there first.
fn is_conflict(error: &MongoError) -> bool {
    if error.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|w| w.code == DUPLICATE_KEY)),
        ErrorKind::Command(e) => e.code == WRITE_CONFLICT || e.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn version_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_document(envelope: &EventEnvelope) -> Result<Document, StoreError> {
    let metadata = bson::to_bson(&envelope.metadata).map_err(corrupt)?;
    let data = bson::to_bson(&envelope.data).map_err(corrupt)?;
    Ok(doc! {
        "stream_id": envelope.stream_id.to_string(),
        "version": version_of(envelope.version.get()),
        "event_id": envelope.event_id.to_string(),
        "stream_type": &envelope.stream_type,
        "type": &envelope.event_type,
        "schema": i64::from(envelope.schema),
        "occurred_at": envelope.occurred_at.unix_millis(),
        "metadata": metadata,
        "data": data,
        "published": false,
    })
}

fn from_document(document: &Document) -> Result<EventEnvelope, StoreError> {
    let text = |key: &str| document.get_str(key).map_err(corrupt);
    let number = |key: &str| match document.get(key) {
        Some(Bson::Int64(n)) => Ok(*n),
        Some(Bson::Int32(n)) => Ok(i64::from(*n)),
        other => Err(corrupt(format!("{key} is {other:?}"))),
    };
    let metadata: EventMetadata =
        bson::from_bson(document.get("metadata").cloned().unwrap_or(Bson::Null))
            .map_err(corrupt)?;
    let data: serde_json::Value =
        bson::from_bson(document.get("data").cloned().unwrap_or(Bson::Null)).map_err(corrupt)?;
    Ok(EventEnvelope {
        event_id: uuid::Uuid::try_parse(text("event_id")?).map_err(corrupt)?,
        stream_id: PostId::parse(text("stream_id")?).map_err(corrupt)?,
        stream_type: text("stream_type")?.to_owned(),
        version: Version::new(u64::try_from(number("version")?).map_err(corrupt)?),
        event_type: text("type")?.to_owned(),
        schema: u32::try_from(number("schema")?).map_err(corrupt)?,
        occurred_at: Timestamp::from_unix_millis(number("occurred_at")?),
        metadata,
        data,
    })
}

impl MongoEventStore {
    /// Connects to `url`; the database is the URL's, or `sourcegram`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = Client::with_uri_str(url).await.map_err(unavailable)?;
        let database = client
            .default_database()
            .unwrap_or_else(|| client.database("sourcegram"));
        Ok(Self {
            events: database.collection("events"),
            client,
        })
    }

    /// Creates the indexes if missing.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let unique = |keys: Document| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().unique(true).build())
                .build()
        };
        self.events
            .create_index(unique(doc! { "stream_id": 1, "version": 1 }))
            .await
            .map_err(unavailable)?;
        self.events
            .create_index(unique(doc! { "event_id": 1 }))
            .await
            .map_err(unavailable)?;
        self.events
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "published": 1, "stream_id": 1, "version": 1 })
                    .build(),
            )
            .await
            .map_err(unavailable)?;
        // A retry finds what its first attempt appended by the key in the metadata.
        self.events
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "metadata.user": 1, "metadata.idempotency_key": 1 })
                    .build(),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn current_version(
        &self,
        stream: &str,
        session: Option<&mut mongodb::ClientSession>,
    ) -> Result<i64, MongoError> {
        let find = self
            .events
            .find_one(doc! { "stream_id": stream })
            .sort(doc! { "version": -1 })
            .projection(doc! { "version": 1 });
        let found = match session {
            Some(session) => find.session(session).await?,
            None => find.await?,
        };
        Ok(found.and_then(|d| d.get_i64("version").ok()).unwrap_or(0))
    }

    async fn find_all(
        &self,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut find = self.events.find(filter).sort(sort);
        if let Some(limit) = limit {
            find = find.limit(limit);
        }
        let documents: Vec<Document> = find
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        documents.iter().map(from_document).collect()
    }
}

impl EventStore for MongoEventStore {
    async fn append_to_stream(
        &self,
        stream_id: PostId,
        expected: Version,
        events: &[EventEnvelope],
    ) -> Result<(), StoreError> {
        super::check_append(stream_id, expected, events)?;
        if events.is_empty() {
            return Ok(());
        }
        let stream = stream_id.to_string();
        let documents = events
            .iter()
            .map(to_document)
            .collect::<Result<Vec<_>, _>>()?;
        let conflict = || StoreError::Conflict {
            stream_id,
            expected,
        };
        let classify = |error: MongoError| {
            if is_conflict(&error) {
                conflict()
            } else {
                unavailable(error)
            }
        };
        if let [single] = documents.as_slice() {
            // One document is atomic on its own; the unique index catches a racer.
            if self
                .current_version(&stream, None)
                .await
                .map_err(unavailable)?
                != version_of(expected.get())
            {
                return Err(conflict());
            }
            self.events.insert_one(single).await.map_err(classify)?;
            return Ok(());
        }
        let mut session = self.client.start_session().await.map_err(unavailable)?;
        session.start_transaction().await.map_err(unavailable)?;
        let outcome = async {
            if self.current_version(&stream, Some(&mut session)).await?
                != version_of(expected.get())
            {
                return Ok(false);
            }
            self.events
                .insert_many(&documents)
                .session(&mut session)
                .await?;
            Ok::<_, MongoError>(true)
        }
        .await;
        match outcome {
            Ok(true) => session.commit_transaction().await.map_err(classify),
            Ok(false) => {
                let _ = session.abort_transaction().await;
                Err(conflict())
            }
            Err(error) => {
                let _ = session.abort_transaction().await;
                Err(classify(error))
            }
        }
    }

    async fn load_stream(
        &self,
        stream_id: PostId,
        from: Version,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.find_all(
            doc! { "stream_id": stream_id.to_string(), "version": { "$gte": version_of(from.get()) } },
            doc! { "version": 1 },
            None,
        )
        .await
    }

    async fn find_by_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.find_all(
            doc! { "metadata.user": user.as_str(), "metadata.idempotency_key": key },
            doc! { "stream_id": 1, "version": 1 },
            None,
        )
        .await
    }

    async fn read_all(
        &self,
        cursor: &ReadAllCursor,
        limit: usize,
    ) -> Result<ReadAllPage, StoreError> {
        let limit = limit.max(1);
        let filter = match cursor.after {
            None => doc! {},
            Some((stream, version)) => doc! { "$or": [
                { "stream_id": { "$gt": stream.to_string() } },
                { "stream_id": stream.to_string(), "version": { "$gt": version_of(version.get()) } },
            ] },
        };
        let events = self
            .find_all(
                filter,
                doc! { "stream_id": 1, "version": 1 },
                Some(version_of(limit as u64)),
            )
            .await?;
        let next = (events.len() == limit).then(|| ReadAllCursor {
            after: events.last().map(|e| (e.stream_id, e.version)),
        });
        Ok(ReadAllPage { events, next })
    }

    async fn stream_heads(&self) -> Result<Vec<(PostId, Version)>, StoreError> {
        let pipeline =
            vec![doc! { "$group": { "_id": "$stream_id", "version": { "$max": "$version" } } }];
        let groups: Vec<Document> = self
            .events
            .aggregate(pipeline)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        groups
            .iter()
            .map(|g| {
                let stream = PostId::parse(g.get_str("_id").map_err(corrupt)?).map_err(corrupt)?;
                let version = g.get_i64("version").map_err(corrupt)?;
                Ok((
                    stream,
                    Version::new(u64::try_from(version).map_err(corrupt)?),
                ))
            })
            .collect()
    }

    async fn unpublished(
        &self,
        limit: usize,
        skip: &[(PostId, Version)],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut filter = doc! { "published": false };
        if !skip.is_empty() {
            filter.insert("$nor", event_keys(skip));
        }
        // Ordered by stream and version: MongoDB has no cheap global append order
        // without a hot counter, and Kafka only needs each stream's order.
        self.find_all(
            filter,
            doc! { "published": 1, "stream_id": 1, "version": 1 },
            Some(version_of(limit.max(1) as u64)),
        )
        .await
    }

    async fn mark_published(&self, events: &[(PostId, Version)]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.events
            .update_many(
                doc! { "$or": event_keys(events) },
                doc! { "$set": { "published": true } },
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn unpublished_count(&self) -> Result<u64, StoreError> {
        self.events
            .count_documents(doc! { "published": false })
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// Filter documents matching each of `events` by stream and version.
fn event_keys(events: &[(PostId, Version)]) -> Vec<Document> {
    events
        .iter()
        .map(|(s, v)| doc! { "stream_id": s.to_string(), "version": version_of(v.get()) })
        .collect()
}
