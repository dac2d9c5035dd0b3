//! How events travel on Kafka: topic `post-events`, key = stream id (one post's
//! events stay in order on one partition), value = the envelope JSON, headers
//! `type` and `schema`. The producer is idempotent with `acks=all`.
#![forbid(unsafe_code)]

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use domain::EventEnvelope;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka producer could not be created: {0}")]
    Setup(KafkaError),
    #[error("kafka did not take event {stream_id} v{version}: {error}")]
    Delivery {
        stream_id: String,
        version: u64,
        error: KafkaError,
    },
    #[error("kafka is unreachable: {0}")]
    Unreachable(String),
}

/// Sends envelopes to one topic.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer,
    brokers: String,
    topic: String,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("topic", &self.topic)
            .finish()
    }
}

impl KafkaPublisher {
    pub fn new(brokers: &str, topic: &str) -> Result<Self, PublishError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("compression.type", "none")
            // librdkafka retries internally for this long; after that the relay
            // sees the failure and tries the same events again later.
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(PublishError::Setup)?;
        Ok(Self {
            producer,
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
        })
    }

    /// A publisher with a new producer for the same brokers and topic. The
    /// idempotent producer's id and sequence numbers belong to the broker session
    /// it started in: after a broker restart lost that state, the old producer's
    /// every send is refused, while a new producer starts clean.
    pub fn renewed(&self) -> Result<Self, PublishError> {
        Self::new(&self.brokers, &self.topic)
    }

    /// Publishes `events` and waits until the broker acknowledged all of them.
    /// Events are enqueued in order, so per key they arrive in that order.
    pub async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PublishError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for envelope in events {
            let key = envelope.stream_id.to_string();
            let payload = serde_json::to_vec(envelope).expect("an envelope always serializes");
            let schema = envelope.schema.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "type",
                    value: Some(envelope.event_type.as_bytes()),
                })
                .insert(Header {
                    key: "schema",
                    value: Some(schema.as_bytes()),
                });
            let record = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            let delivery =
                self.producer
                    .send_result(record)
                    .map_err(|(error, _)| PublishError::Delivery {
                        stream_id: key.clone(),
                        version: envelope.version.get(),
                        error,
                    })?;
            deliveries.push((envelope, delivery));
        }
        for (envelope, delivery) in deliveries {
            let failed = |error| PublishError::Delivery {
                stream_id: envelope.stream_id.to_string(),
                version: envelope.version.get(),
                error,
            };
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(failed(error)),
                Err(_canceled) => return Err(failed(KafkaError::Canceled)),
            }
        }
        Ok(())
    }

    /// Whether the broker answers a metadata request for the topic.
    pub async fn ping(&self) -> Result<(), PublishError> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        // librdkafka's metadata call blocks the thread, so it runs off the runtime.
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .map(|_| ())
                .map_err(|e| PublishError::Unreachable(e.to_string()))
        })
        .await
        .map_err(|e| PublishError::Unreachable(e.to_string()))?
    }
}
