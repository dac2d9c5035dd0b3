//! The MongoDB event store, without multi-document transactions: one document
//! per append (a *commit*) in the `commits` collection, holding that append's
//! events in version order. A commit's `_id` is its stream and the version it
//! ends at; its `follows`, unique, is its stream and the version it was
//! appended after. So two appends after the same version collide (error 11000,
//! the typed conflict), and an append after a version that no commit ends at
//! (a primary-key lookup) is refused before it is tried. Together: a command's
//! events are all or nothing (one single-document insert), and versions have
//! no gaps and no duplicates. Runs on MongoDB standalone or as a replica set,
//! and on FerretDB (the MongoDB wire protocol over PostgreSQL), whose queries
//! FerretDB 1.24 hands top-level equalities to PostgreSQL and runs everything
//! else itself over every document of the collection, so every lookup here
//! narrows by an equality first. (It hands them over as jsonb containment,
//! which its btree indexes cannot serve: on FerretDB each lookup is still a
//! scan of the collection's table in PostgreSQL, only without decoding every
//! document. MongoDB serves each from an index.)

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, IndexModel};

use domain::{EventEnvelope, EventMetadata, PostId, Timestamp, UserId, Version};

use super::{EventStore, ReadAllCursor, ReadAllPage, Snapshot, StoreError};

const DUPLICATE_KEY: i32 = 11_000;

#[derive(Debug, Clone)]
pub struct MongoEventStore {
    client: Client,
    commits: Collection<Document>,
    /// One document per stream: the latest snapshot's version, schema and
    /// how many chunks its state takes.
    snapshots: Collection<Document>,
    /// The snapshots' bytes, in chunks under MongoDB's 16 MB document limit,
    /// keyed by stream, version and position.
    snapshot_chunks: Collection<Document>,
    /// The most unpublished commits [`EventStore::unpublished_count`] reads.
    backlog_cap: i64,
}

/// How many unpublished commits a count of the backlog reads at most, so a
/// scrape of `/metrics` during a long broker outage stays cheap: the events
/// of the first this many (at least as many events) are reported.
pub const UNPUBLISHED_COUNT_CAP: i64 = 100_000;

/// The most bytes of a snapshot one chunk document holds.
const SNAPSHOT_CHUNK: usize = 8 * 1024 * 1024;

/// A snapshot chunk's `_id`: sorts by stream, then version, then position.
fn chunk_key(stream: &str, version: Version, index: usize) -> String {
    format!("{}:{index:06}", stream_version_key(stream, version))
}

/// The commits of `stream` that hold `from` or a later version, in order, as
/// a filter and a sort. Equality on the stream plus a bound on `last`: MongoDB
/// walks its `{stream_id, last}` index, and FerretDB narrows by the stream in
/// PostgreSQL. (A range on `_id` would do for MongoDB, but FerretDB runs a
/// range itself over every document: a command's catch-up then decoded every
/// commit of every stream.)
fn stream_from(stream: &str, from: Version) -> (Document, Document) {
    (
        doc! { "stream_id": stream, "last": { "$gte": version_of(from.get()) } },
        doc! { "stream_id": 1, "last": 1 },
    )
}

/// The chunks of `stream`'s snapshots before `version`: the ones a snapshot
/// at `version` makes garbage. By the stream's equality, like `stream_from`.
fn chunks_before(stream: &str, version: Version) -> Document {
    doc! { "stream_id": stream, "version": { "$lt": version_of(version.get()) } }
}

fn unavailable(error: MongoError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

/// Whether the error means another writer got there first.
fn is_duplicate_key(error: &MongoError) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn version_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stream and one of its versions as one key, padded so that keys sort like
/// versions: a commit's `_id` (the version it ends at) and its `follows`.
fn stream_version_key(stream: &str, version: Version) -> String {
    format!("{stream}:{:020}", version.get())
}

/// What a retry looks a request's events up by: user and key in one string
/// (a user id never contains '/').
fn key_of(user: &UserId, key: &str) -> String {
    format!("{}/{key}", user.as_str())
}

fn event_document(envelope: &EventEnvelope) -> Result<Document, StoreError> {
    let metadata = bson::to_bson(&envelope.metadata).map_err(corrupt)?;
    let data = bson::to_bson(&envelope.data).map_err(corrupt)?;
    Ok(doc! {
        "event_id": envelope.event_id.to_string(),
        "version": version_of(envelope.version.get()),
        "stream_type": &envelope.stream_type,
        "type": &envelope.event_type,
        "schema": i64::from(envelope.schema),
        "occurred_at": envelope.occurred_at.unix_millis(),
        "metadata": metadata,
        "data": data,
    })
}

fn commit_document(
    stream_id: PostId,
    expected: Version,
    events: &[EventEnvelope],
) -> Result<Document, StoreError> {
    let stream = stream_id.to_string();
    let keys: Vec<String> = events
        .iter()
        .filter_map(|e| {
            e.metadata
                .idempotency_key
                .as_deref()
                .map(|key| key_of(&e.metadata.user, key))
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let last = Version::new(expected.get() + events.len() as u64);
    Ok(doc! {
        "_id": stream_version_key(&stream, last),
        "follows": stream_version_key(&stream, expected),
        "stream_id": &stream,
        "first": version_of(expected.get() + 1),
        "last": version_of(last.get()),
        "count": events.len() as i64,
        "events": events.iter().map(event_document).collect::<Result<Vec<_>, _>>()?,
        "keys": keys,
        "published": false,
    })
}

fn number(document: &Document, key: &str) -> Result<i64, StoreError> {
    match document.get(key) {
        Some(Bson::Int64(n)) => Ok(*n),
        Some(Bson::Int32(n)) => Ok(i64::from(*n)),
        Some(Bson::Double(n)) if n.fract() == 0.0 => Ok(*n as i64),
        other => Err(corrupt(format!("{key} is {other:?}"))),
    }
}

fn event_from_document(
    stream_id: PostId,
    document: &Document,
) -> Result<EventEnvelope, StoreError> {
    let text = |key: &str| document.get_str(key).map_err(corrupt);
    let metadata: EventMetadata =
        bson::from_bson(document.get("metadata").cloned().unwrap_or(Bson::Null))
            .map_err(corrupt)?;
    let data: serde_json::Value =
        bson::from_bson(document.get("data").cloned().unwrap_or(Bson::Null)).map_err(corrupt)?;
    Ok(EventEnvelope {
        event_id: uuid::Uuid::try_parse(text("event_id")?).map_err(corrupt)?,
        stream_id,
        stream_type: text("stream_type")?.to_owned(),
        version: Version::new(u64::try_from(number(document, "version")?).map_err(corrupt)?),
        event_type: text("type")?.to_owned(),
        schema: u32::try_from(number(document, "schema")?).map_err(corrupt)?,
        occurred_at: Timestamp::from_unix_millis(number(document, "occurred_at")?),
        metadata,
        data,
    })
}

/// A commit's events, in version order.
fn events_of(commit: &Document) -> Result<Vec<EventEnvelope>, StoreError> {
    let stream_id =
        PostId::parse(commit.get_str("stream_id").map_err(corrupt)?).map_err(corrupt)?;
    commit
        .get_array("events")
        .map_err(corrupt)?
        .iter()
        .map(|event| match event {
            Bson::Document(event) => event_from_document(stream_id, event),
            other => Err(corrupt(format!("an event is {other:?}"))),
        })
        .collect()
}

impl MongoEventStore {
    /// Connects to `url`; the database is the URL's, or `sourcegram`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = Client::with_uri_str(url).await.map_err(unavailable)?;
        let database = client
            .default_database()
            .unwrap_or_else(|| client.database("sourcegram"));
        Ok(Self::in_database(client, &database))
    }

    fn in_database(client: Client, database: &mongodb::Database) -> Self {
        Self {
            commits: database.collection("commits"),
            snapshots: database.collection("snapshots"),
            snapshot_chunks: database.collection("snapshot_chunks"),
            client,
            backlog_cap: UNPUBLISHED_COUNT_CAP,
        }
    }

    /// Creates the indexes if missing.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // One append after each version: the conflict check.
        self.commits
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "follows": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .await
            .map_err(unavailable)?;
        let index = |keys: Document| IndexModel::builder().keys(keys).build();
        for keys in [
            // Loading a stream.
            doc! { "stream_id": 1, "last": 1 },
            // Reading every stream in order (replay).
            doc! { "stream_id": 1, "first": 1 },
            // The outbox.
            doc! { "published": 1, "stream_id": 1, "first": 1 },
            // A retry's lookup of what its first attempt appended.
            doc! { "keys": 1 },
        ] {
            self.commits
                .create_index(index(keys))
                .await
                .map_err(unavailable)?;
        }
        // A snapshot's clean-up of the chunks it replaced.
        self.snapshot_chunks
            .create_index(index(doc! { "stream_id": 1, "version": 1 }))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn find_commits(
        &self,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
    ) -> Result<Vec<Document>, StoreError> {
        let mut find = self.commits.find(filter).sort(sort);
        if let Some(limit) = limit {
            find = find.limit(limit);
        }
        find.await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)
    }

    /// Every event of `commits`, in their order.
    fn flatten(commits: &[Document]) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut events = Vec::new();
        for commit in commits {
            events.extend(events_of(commit)?);
        }
        Ok(events)
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
        let conflict = || StoreError::Conflict {
            stream_id,
            expected,
        };
        let stream = stream_id.to_string();
        // An append follows the end of a commit, or the empty stream. Commits
        // never change, so a version some commit ends at stays one; whether
        // another append already followed it is the unique `follows`'s to say.
        if expected != Version::EMPTY {
            let boundary = self
                .commits
                .find_one(doc! { "_id": stream_version_key(&stream, expected) })
                .projection(doc! { "_id": 1 })
                .await
                .map_err(unavailable)?;
            if boundary.is_none() {
                return Err(conflict());
            }
        }
        let commit = commit_document(stream_id, expected, events)?;
        match self.commits.insert_one(commit).await {
            Ok(_) => Ok(()),
            Err(error) if is_duplicate_key(&error) => Err(conflict()),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn load_stream_page(
        &self,
        stream_id: PostId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        // Each commit holds at least one event, so `limit` commits are enough.
        let (filter, sort) = stream_from(&stream_id.to_string(), from);
        let commits = self
            .find_commits(
                filter,
                sort,
                (limit != usize::MAX).then(|| version_of(limit.max(1) as u64)),
            )
            .await?;
        let mut events = Self::flatten(&commits)?;
        events.retain(|e| e.version >= from);
        events.truncate(limit);
        Ok(events)
    }

    async fn find_by_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let commits = self
            .find_commits(
                doc! { "keys": key_of(user, key) },
                doc! { "stream_id": 1, "first": 1 },
                None,
            )
            .await?;
        let mut events = Self::flatten(&commits)?;
        events.retain(|e| {
            e.metadata.user == *user && e.metadata.idempotency_key.as_deref() == Some(key)
        });
        Ok(events)
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
                { "stream_id": stream.to_string(), "last": { "$gt": version_of(version.get()) } },
            ] },
        };
        // Commits are read in order until they hold a page of events; the
        // cursor is dropped then, so a page reads about a page of events
        // whatever the commits' sizes.
        let mut commits = self
            .commits
            .find(filter)
            .sort(doc! { "stream_id": 1, "first": 1 })
            .batch_size(64)
            .await
            .map_err(unavailable)?;
        let mut events = Vec::with_capacity(limit);
        let mut exhausted = true;
        while let Some(commit) = commits.try_next().await.map_err(unavailable)? {
            let mut commit_events = events_of(&commit)?;
            if let Some((stream, version)) = cursor.after {
                commit_events.retain(|e| e.stream_id != stream || e.version > version);
            }
            events.extend(commit_events);
            if events.len() >= limit {
                exhausted = false;
                break;
            }
        }
        events.truncate(limit);
        // Not exhausted means a full page, so it has a last event.
        let next = (!exhausted).then(|| ReadAllCursor {
            after: events.last().map(|e| (e.stream_id, e.version)),
        });
        Ok(ReadAllPage { events, next })
    }

    async fn stream_heads(&self) -> Result<Vec<(PostId, Version)>, StoreError> {
        // Folded here rather than with `$group`/`$max`, which not every
        // MongoDB wire-protocol server has.
        let mut heads: HashMap<String, i64> = HashMap::new();
        let mut commits = self
            .commits
            .find(doc! {})
            .projection(doc! { "stream_id": 1, "last": 1 })
            .await
            .map_err(unavailable)?;
        while let Some(commit) = commits.try_next().await.map_err(unavailable)? {
            let stream = commit.get_str("stream_id").map_err(corrupt)?;
            let last = number(&commit, "last")?;
            let head = heads.entry(stream.to_owned()).or_default();
            *head = (*head).max(last);
        }
        heads
            .into_iter()
            .map(|(stream, last)| {
                Ok((
                    PostId::parse(&stream).map_err(corrupt)?,
                    Version::new(u64::try_from(last).map_err(corrupt)?),
                ))
            })
            .collect()
    }

    async fn unpublished(
        &self,
        limit: usize,
        skip: &[(PostId, Version)],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let skipped: HashSet<(PostId, Version)> = skip.iter().copied().collect();
        // Ordered by stream and version: MongoDB has no cheap global append order
        // without a hot counter, and Kafka only needs each stream's order.
        // Whole commits only, so a commit is marked once all of it went out.
        let commits = self
            .find_commits(
                doc! { "published": false },
                doc! { "published": 1, "stream_id": 1, "first": 1 },
                Some(version_of(limit.max(1) as u64 + skip.len() as u64)),
            )
            .await?;
        let mut events = Vec::new();
        for commit in &commits {
            let mut commit_events = events_of(commit)?;
            commit_events.retain(|e| !skipped.contains(&(e.stream_id, e.version)));
            if !events.is_empty() && events.len() + commit_events.len() > limit {
                break;
            }
            events.extend(commit_events);
        }
        Ok(events)
    }

    async fn mark_published(&self, events: &[(PostId, Version)]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        // A commit is marked once every one of its events is: the relay hands
        // out and marks whole commits, so that is every commit it published.
        let mut marked: HashMap<String, HashSet<i64>> = HashMap::new();
        for (stream, version) in events {
            marked
                .entry(stream.to_string())
                .or_default()
                .insert(version_of(version.get()));
        }
        let streams: Vec<String> = marked.keys().cloned().collect();
        let candidates = self
            .commits
            .find(doc! { "published": false, "stream_id": { "$in": streams } })
            .projection(doc! { "_id": 1, "stream_id": 1, "first": 1, "last": 1 })
            .await
            .map_err(unavailable)?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(unavailable)?;
        let mut done = Vec::new();
        for commit in &candidates {
            let stream = commit.get_str("stream_id").map_err(corrupt)?;
            let (first, last) = (number(commit, "first")?, number(commit, "last")?);
            if marked
                .get(stream)
                .is_some_and(|versions| (first..=last).all(|v| versions.contains(&v)))
            {
                done.push(commit.get("_id").cloned().unwrap_or(Bson::Null));
            }
        }
        if done.is_empty() {
            return Ok(());
        }
        self.commits
            .update_many(
                // `published` first: an equality FerretDB can narrow by.
                doc! { "published": false, "_id": { "$in": done } },
                doc! { "$set": { "published": true } },
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn unpublished_count(&self) -> Result<u64, StoreError> {
        let pipeline = vec![
            doc! { "$match": { "published": false } },
            doc! { "$limit": self.backlog_cap },
            doc! { "$group": { "_id": Bson::Null, "events": { "$sum": "$count" } } },
        ];
        let groups: Vec<Document> = self
            .commits
            .aggregate(pipeline)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        match groups.first() {
            None => Ok(0),
            Some(group) => u64::try_from(number(group, "events")?).map_err(corrupt),
        }
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let stream = snapshot.stream_id.to_string();
        let current = self
            .snapshots
            .find_one(doc! { "_id": &stream })
            .await
            .map_err(unavailable)?;
        if let Some(current) = current
            && number(&current, "version")? >= version_of(snapshot.version.get())
        {
            return Ok(());
        }
        // The chunks first, then the head that names them: a reader that finds
        // the head finds its chunks.
        let chunks: Vec<&[u8]> = snapshot.data.chunks(SNAPSHOT_CHUNK).collect();
        for (index, bytes) in chunks.iter().enumerate() {
            let id = chunk_key(&stream, snapshot.version, index);
            let data = Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: bytes.to_vec(),
            });
            let chunk = doc! {
                "_id": &id,
                "stream_id": &stream,
                "version": version_of(snapshot.version.get()),
                "data": data,
            };
            self.snapshot_chunks
                .replace_one(doc! { "_id": &id }, chunk)
                .upsert(true)
                .await
                .map_err(unavailable)?;
        }
        let head = doc! {
            "$set": {
                "version": version_of(snapshot.version.get()),
                "schema": i64::from(snapshot.schema),
                "chunks": version_of(chunks.len() as u64),
                "bytes": version_of(snapshot.data.len() as u64),
            }
        };
        let moved = self
            .snapshots
            .update_one(
                doc! { "_id": &stream, "version": { "$lt": version_of(snapshot.version.get()) } },
                head,
            )
            .upsert(true)
            .await;
        match moved {
            Ok(_) => {}
            // A later snapshot is there already: it stays, these chunks go.
            Err(error) if is_duplicate_key(&error) => {}
            Err(error) => return Err(unavailable(error)),
        }
        // Chunks of earlier versions are no longer named by any head.
        self.snapshot_chunks
            .delete_many(chunks_before(&stream, snapshot.version))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream_id: PostId) -> Result<Option<Snapshot>, StoreError> {
        let stream = stream_id.to_string();
        let Some(head) = self
            .snapshots
            .find_one(doc! { "_id": &stream })
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let version = Version::new(u64::try_from(number(&head, "version")?).map_err(corrupt)?);
        let schema = u32::try_from(number(&head, "schema")?).map_err(corrupt)?;
        let count = usize::try_from(number(&head, "chunks")?).map_err(corrupt)?;
        // Each chunk by its `_id`, the one lookup every server answers by key.
        let mut data = Vec::new();
        for index in 0..count {
            let chunk = self
                .snapshot_chunks
                .find_one(doc! { "_id": chunk_key(&stream, version, index) })
                .await
                .map_err(unavailable)?;
            // A newer snapshot replaced this one between the reads: read as if
            // there were none (the events are the truth).
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            data.extend_from_slice(&chunk.get_binary_generic("data").map_err(corrupt)?[..]);
        }
        Ok(Some(Snapshot {
            stream_id,
            version,
            schema,
            data,
        }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use domain::event::PostLiked;
    use uuid::Uuid;

    fn liked(stream: PostId, version: u64) -> EventEnvelope {
        let user = UserId::parse(&format!("u{version}")).expect("valid");
        EventEnvelope::new(
            stream,
            Version::new(version),
            &domain::PostEvent::PostLiked(PostLiked { user: user.clone() }),
            Uuid::new_v4(),
            Timestamp::from_unix_millis(1_795_428_000_000),
            EventMetadata {
                user,
                request_id: Uuid::new_v4(),
                idempotency_key: Some(format!("key-{version}")),
            },
        )
    }

    /// Whether the server narrows `filter` (and `sort`) on `collection` itself:
    /// on FerretDB, whether it hands the filter to PostgreSQL rather than
    /// decoding every document; on MongoDB, whether the plan has no collection
    /// scan.
    async fn narrowed(
        store: &MongoEventStore,
        collection: &str,
        filter: Document,
        sort: Document,
    ) -> Result<bool, String> {
        let plan = store
            .client
            .database(&store.commits.namespace().db)
            .run_command(doc! {
                "explain": { "find": collection, "filter": filter, "sort": sort },
                "verbosity": "queryPlanner",
            })
            .await
            .map_err(|error| error.to_string())?;
        Ok(match plan.get_bool("filterPushdown") {
            Ok(pushed_down) => pushed_down,
            Err(_) => !plan
                .get_document("queryPlanner")
                .map_err(|error| error.to_string())?
                .to_string()
                .contains("COLLSCAN"),
        })
    }

    /// Every lookup a command, a retry, a snapshot and a replay's catch-up make
    /// is narrowed by the server, on MongoDB and on FerretDB alike: one that
    /// FerretDB runs itself decodes every document of the collection, which
    /// made a replay's catch-up under load never finish.
    #[tokio::test]
    async fn every_lookup_by_stream_or_key_is_narrowed_by_the_server() {
        let Some(url) = testkit::mongodb_url("MongoDB lookups") else {
            return;
        };
        let database = testkit::unique_name("es");
        let client = Client::with_uri_str(&url).await.expect("connect");
        let store = MongoEventStore::in_database(client.clone(), &client.database(&database));
        let outcome = async {
            store.migrate().await.map_err(|e| e.to_string())?;
            let stream = PostId::from_uuid(Uuid::new_v4());
            for version in 1..=3 {
                store
                    .append_to_stream(stream, Version::new(version - 1), &[liked(stream, version)])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            store
                .save_snapshot(&Snapshot {
                    stream_id: stream,
                    version: Version::new(2),
                    schema: 1,
                    data: vec![7; 16],
                })
                .await
                .map_err(|e| e.to_string())?;
            let id = stream.to_string();
            let (page, page_order) = stream_from(&id, Version::new(2));
            let user = UserId::parse("u2").expect("valid");
            let lookups = [
                ("a page of a stream", "commits", page, page_order),
                (
                    "a retry's key",
                    "commits",
                    doc! { "keys": key_of(&user, "key-2") },
                    doc! {},
                ),
                (
                    "an append's boundary",
                    "commits",
                    doc! { "_id": stream_version_key(&id, Version::new(2)) },
                    doc! {},
                ),
                (
                    "a snapshot's head",
                    "snapshots",
                    doc! { "_id": &id },
                    doc! {},
                ),
                (
                    "a snapshot's chunk",
                    "snapshot_chunks",
                    doc! { "_id": chunk_key(&id, Version::new(2), 0) },
                    doc! {},
                ),
                (
                    "replaced chunks",
                    "snapshot_chunks",
                    chunks_before(&id, Version::new(2)),
                    doc! {},
                ),
            ];
            let mut scans = Vec::new();
            for (name, collection, filter, sort) in lookups {
                if !narrowed(&store, collection, filter, sort).await? {
                    scans.push(name);
                }
            }
            Ok::<_, String>(scans)
        }
        .await;
        client
            .database(&database)
            .drop()
            .await
            .expect("drop the test database");
        let scans = outcome.expect("the lookups ran");
        assert!(scans.is_empty(), "read the whole collection: {scans:?}");
    }

    /// A count of the backlog reads at most `backlog_cap` unpublished commits.
    #[tokio::test]
    async fn the_backlog_is_counted_up_to_a_cap() {
        let Some(url) = testkit::mongodb_url("MongoDB backlog cap") else {
            return;
        };
        let database = testkit::unique_name("es");
        let client = Client::with_uri_str(&url).await.expect("connect");
        let db = client.database(&database);
        let store = MongoEventStore {
            backlog_cap: 5,
            ..MongoEventStore::in_database(client.clone(), &db)
        };
        let outcome = async {
            for _ in 0..8 {
                let stream = PostId::from_uuid(Uuid::new_v4());
                store
                    .append_to_stream(stream, Version::EMPTY, &[liked(stream, 1)])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            store.unpublished_count().await.map_err(|e| e.to_string())
        }
        .await;
        db.drop().await.expect("drop the test database");
        assert_eq!(outcome.expect("counted"), 5);
    }
}
