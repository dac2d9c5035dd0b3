//! Test support: a real PostgreSQL event store and read model in fresh schemas, a
//! fresh topic, a deterministic workload made by the domain itself, and the
//! expected rows folded from the event store.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use domain::{
    CommandContext, CommentId, CommentText, EventEnvelope, EventMetadata, Message, Post,
    PostCommand, PostId, Timestamp, UserId, Version, apply, decide,
};
use event_bus::KafkaPublisher;
use event_store::postgres::PostgresEventStore;
use event_store::{EventStore, ReadAllCursor};
use platform::stop::Background;
use plumbing::pg::PgPool;
use projection_host::consumer::{ConsumerConfig, Projection, run_consumer};
use projection_host::projector::ReadModel;
use read_model::SchemaName;
use read_model::rows::{CommentRow, PostRow, StreamRows};
use read_model::schema::{COMMENTS, LIKES, POSTS, Table};
use uuid::Uuid;

pub struct World {
    pub store: Arc<PostgresEventStore>,
    pub pool: PgPool,
    /// The event store's schema.
    pub schema: String,
    pub read_model: SchemaName,
    pub notifications: SchemaName,
    pub topic: String,
    pub publisher: KafkaPublisher,
    rng: u64,
    clock: i64,
}

pub async fn world() -> World {
    let (pool, schema) = testkit::fresh_pg_schema("proj").await;
    let store = PostgresEventStore::new(pool.clone());
    store.migrate().await.expect("migrate event store");
    let topic = testkit::fresh_topic("proj", 3).await;
    let publisher = KafkaPublisher::new(&testkit::kafka_brokers(), &topic).expect("producer");
    World {
        store: Arc::new(store),
        pool,
        schema,
        read_model: SchemaName::parse(&testkit::unique_name("rm")).expect("schema name"),
        notifications: SchemaName::parse(&testkit::unique_name("nt")).expect("schema name"),
        topic,
        publisher,
        rng: 0x5eed,
        clock: 1_795_428_000_000,
    }
}

const USERS: [&str; 12] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "oscar",
];

impl World {
    fn next(&mut self, below: u64) -> u64 {
        // A small deterministic generator (LCG): the same workload every run.
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.rng >> 33) % below
    }

    fn user(&mut self) -> UserId {
        let i = self.next(USERS.len() as u64) as usize;
        UserId::parse(USERS[i]).expect("valid user")
    }

    /// Creates `posts` posts and then `extra_events` more accepted commands spread
    /// over them, each appended to the store. Returns every appended envelope in
    /// append order.
    pub async fn write(&mut self, posts: usize, extra_events: usize) -> Vec<EventEnvelope> {
        let mut states: Vec<(PostId, Post)> = Vec::new();
        let mut appended = Vec::new();
        for _ in 0..posts {
            let id = PostId::from_uuid(Uuid::new_v4());
            let author = self.user();
            let command = PostCommand::CreatePost {
                message: Message::parse("hello").expect("valid"),
            };
            let mut post = Post::default();
            appended.extend(self.run(id, &mut post, &command, author).await);
            states.push((id, post));
        }
        let mut done = 0;
        while done < extra_events && !states.is_empty() {
            let which = self.next(states.len() as u64) as usize;
            let (id, mut post) = states[which].clone();
            let comments: Vec<CommentId> = post.live_comments().map(|(id, _)| *id).collect();
            let text = CommentText::parse("a comment").expect("valid");
            let command = match self.next(20) {
                0..=7 => PostCommand::LikePost,
                8..=9 => PostCommand::UnlikePost,
                10..=13 => PostCommand::AddComment { text },
                14 if !comments.is_empty() => PostCommand::EditComment {
                    comment_id: comments[0],
                    text,
                },
                15 if !comments.is_empty() => PostCommand::RemoveComment {
                    comment_id: comments[comments.len() - 1],
                },
                16 => PostCommand::EditMessage {
                    message: Message::parse("edited").expect("valid"),
                },
                _ => PostCommand::LikePost,
            };
            let actor = match command {
                PostCommand::EditMessage { .. } => post.author().cloned().expect("exists"),
                PostCommand::EditComment { comment_id, .. }
                | PostCommand::RemoveComment { comment_id } => {
                    post.comments()[&comment_id].author.clone()
                }
                _ => self.user(),
            };
            let events = self.run(id, &mut post, &command, actor).await;
            done += events.len();
            appended.extend(events);
            states[which].1 = post;
        }
        appended
    }

    /// Deletes `post` (by its author) and returns the appended envelope.
    pub async fn delete(&mut self, id: PostId) -> Vec<EventEnvelope> {
        let mut post = self.load(id).await;
        let author = post.author().cloned().expect("exists");
        self.run(id, &mut post, &PostCommand::DeletePost, author)
            .await
    }

    pub async fn command(
        &mut self,
        id: PostId,
        command: PostCommand,
        actor: &str,
    ) -> Vec<EventEnvelope> {
        let mut post = self.load(id).await;
        self.run(
            id,
            &mut post,
            &command,
            UserId::parse(actor).expect("valid"),
        )
        .await
    }

    pub async fn create(&mut self, author: &str) -> (PostId, Vec<EventEnvelope>) {
        let id = PostId::from_uuid(Uuid::new_v4());
        let command = PostCommand::CreatePost {
            message: Message::parse("hi").expect("valid"),
        };
        let events = self
            .run(
                id,
                &mut Post::default(),
                &command,
                UserId::parse(author).expect("valid"),
            )
            .await;
        (id, events)
    }

    async fn load(&self, id: PostId) -> Post {
        let envelopes = self
            .store
            .load_stream(id, Version::new(1))
            .await
            .expect("load");
        let events: Vec<_> = envelopes
            .iter()
            .map(|e| e.decode().expect("decodes"))
            .collect();
        Post::from_events(&events)
    }

    async fn run(
        &mut self,
        id: PostId,
        post: &mut Post,
        command: &PostCommand,
        actor: UserId,
    ) -> Vec<EventEnvelope> {
        self.clock += 1_000;
        let context = CommandContext {
            actor: actor.clone(),
            now: Timestamp::from_unix_millis(self.clock),
            post_id: id,
            new_comment_id: CommentId::from_uuid(Uuid::new_v4()),
            expected_version: None,
        };
        let Ok(events) = decide(post, command, &context) else {
            return Vec::new();
        };
        let expected = post.version();
        let mut version = expected;
        let envelopes: Vec<EventEnvelope> = events
            .iter()
            .map(|event| {
                version = version.next();
                EventEnvelope::new(
                    id,
                    version,
                    event,
                    Uuid::new_v4(),
                    context.now,
                    EventMetadata {
                        user: actor.clone(),
                        request_id: Uuid::new_v4(),
                        idempotency_key: None,
                    },
                )
            })
            .collect();
        if !envelopes.is_empty() {
            self.store
                .append_to_stream(id, expected, &envelopes)
                .await
                .expect("append");
        }
        for event in &events {
            apply(post, event);
        }
        envelopes
    }

    pub async fn publish(&self, envelopes: &[EventEnvelope]) {
        self.publisher.publish(envelopes).await.expect("publish");
    }

    /// [`World::write`]s, then publishes what was appended; returns it.
    pub async fn write_and_publish(
        &mut self,
        posts: usize,
        extra_events: usize,
    ) -> Vec<EventEnvelope> {
        let events = self.write(posts, extra_events).await;
        self.publish(&events).await;
        events
    }

    pub fn consumer_config(&self, group: &str) -> ConsumerConfig {
        ConsumerConfig {
            brokers: testkit::kafka_brokers(),
            topic: self.topic.clone(),
            group: group.to_owned(),
            max_batch: 200,
            max_wait: Duration::from_millis(5),
            fetch_wait: Duration::from_millis(20),
            instance_id: None,
            debug: None,
        }
    }

    /// Starts a consumer of `projection` in `group`.
    pub fn spawn_consumer(&self, projection: Projection, group: &str) -> Consumer {
        let stop = Background::new();
        let task = tokio::spawn(run_consumer(
            self.consumer_config(group),
            Arc::new(projection),
            Arc::clone(&self.store),
            platform::metrics::Metrics::new(),
            stop.stopping(),
            Default::default(),
        ));
        let task =
            tokio::spawn(async move { task.await.expect("consumer task").expect("consumer") });
        Consumer { stop, task }
    }

    /// The read model in its schema, its tables made.
    pub async fn open_read_model(&self) -> ReadModel {
        ReadModel::open(self.pool.clone(), &self.read_model)
            .await
            .expect("open")
    }

    /// Starts projecting into `model` what is published, in a group of its own.
    pub fn project(&self, model: ReadModel) -> Consumer {
        let group = testkit::unique_name("g");
        self.spawn_consumer(Projection::ReadModel(model), &group)
    }

    /// The rows every post should have: a fold of the whole event store.
    pub async fn expected(&self) -> BTreeMap<Uuid, StreamRows> {
        let mut all: BTreeMap<Uuid, StreamRows> = BTreeMap::new();
        let mut cursor = ReadAllCursor::default();
        loop {
            let page = self.store.read_all(&cursor, 1_000).await.expect("read all");
            for envelope in &page.events {
                let event = envelope.decode().expect("decodes");
                all.entry(envelope.stream_id.as_uuid())
                    .or_default()
                    .apply(envelope, &event);
            }
            match page.next {
                Some(next) => cursor = next,
                None => return all,
            }
        }
    }

    /// Waits until the read model in `schema` equals the fold of the store.
    pub async fn converges(&self, schema: &SchemaName, within: Duration) -> bool {
        let expected = self.expected().await;
        let pool = self.pool.clone();
        let matched = testkit::eventually(within, || {
            let pool = pool.clone();
            let expected = &expected;
            async move { (actual(&pool, schema).await == *expected).then_some(()) }
        })
        .await;
        if matched.is_none() {
            let got = actual(&self.pool, schema).await;
            let wrong = expected
                .iter()
                .filter(|(id, rows)| got.get(*id) != Some(*rows))
                .count();
            eprintln!(
                "read model differs from the store in {wrong} of {} posts; rows: {}",
                expected.len(),
                got.len()
            );
        }
        matched.is_some()
    }
}

/// A running consumer.
pub struct Consumer {
    stop: Background,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    /// Stops the consumer and waits until it has; it must not have failed.
    pub async fn stop(self) {
        self.stop.stop().await;
        self.task.await.expect("consumer");
    }
}

/// The rows of the read model in `schema`, per post.
pub async fn actual(pool: &PgPool, schema: &SchemaName) -> BTreeMap<Uuid, StreamRows> {
    let conn = pool.get().await.expect("connection");
    let mut all: BTreeMap<Uuid, StreamRows> = BTreeMap::new();
    let select = |table: &Table| {
        format!(
            "SELECT {} FROM {schema}.{}",
            table.column_list(),
            table.name
        )
    };
    for row in conn.query(&select(&POSTS), &[]).await.expect("posts") {
        let post = PostRow::from_row(&row).expect("a post row");
        let id = post.id;
        all.entry(id).or_default().post = Some(post);
    }
    for row in conn.query(&select(&COMMENTS), &[]).await.expect("comments") {
        let comment = CommentRow::from_row(&row).expect("a comment row");
        all.entry(comment.post_id)
            .or_default()
            .comments
            .insert(comment.id, comment);
    }
    for row in conn.query(&select(&LIKES), &[]).await.expect("likes") {
        all.entry(row.get("post_id"))
            .or_default()
            .likes
            .insert(row.get("user_id"));
    }
    all
}
