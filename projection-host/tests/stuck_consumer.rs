//! A consumer that receives nothing while its partitions hold messages past
//! what its group committed is stuck, whatever the cause; the projection host
//! replaces it with a new one that resumes from the committed offsets. Real
//! PostgreSQL and the real broker.

mod support;

use std::sync::Arc;
use std::time::Duration;

use command_host::metrics::Metrics;
use command_host::publisher::KafkaPublisher;
use command_host::testkit;
use projection_host::consumer::{Projection, run_consumer, stuck_partitions};
use projection_host::projector::ReadModel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::world;
use tokio::sync::watch;

const CONVERGE: Duration = Duration::from_secs(30);

fn consumer(group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", testkit::kafka_brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        .create()
        .expect("consumer")
}

fn read_model_counter(metrics: &Metrics, name: &'static str) -> u64 {
    metrics.counter(name, &[("projection", "read_model".to_owned())])
}

#[tokio::test]
async fn partitions_holding_messages_past_the_committed_offset_are_reported() {
    let mut w = world().await;
    let topic = testkit::fresh_topic("stuck", 1).await;
    let publisher = KafkaPublisher::new(&testkit::kafka_brokers(), &topic).expect("producer");
    let first = w.write(3, 2).await;
    publisher.publish(&first).await.expect("publish");

    let reader = consumer(&testkit::unique_name("stuck"));
    reader.subscribe(&[&topic]).expect("subscribe");
    let mut received = 0;
    let mut next = 0;
    while received < first.len() {
        let message = tokio::time::timeout(CONVERGE, reader.recv())
            .await
            .expect("messages arrive")
            .expect("receive");
        received += 1;
        next = rdkafka::Message::offset(&message) + 1;
    }
    reader
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let ask = |reader: &StreamConsumer| stuck_partitions(reader, &topic, Duration::from_secs(5));
    assert_eq!(
        ask(&reader).expect("offsets"),
        vec![],
        "caught up and committed"
    );

    // More messages that this consumer does not take: stuck at `next`.
    let second = w.write(2, 1).await;
    publisher.publish(&second).await.expect("publish");
    let high = next + second.len() as i64;
    assert_eq!(ask(&reader).expect("offsets"), vec![(0, next, high)]);
}

#[tokio::test]
async fn a_stuck_consumer_is_replaced_and_the_model_stays_exact() {
    let mut w = world().await;
    let topic = testkit::fresh_topic("stuck", 1).await;
    let publisher = KafkaPublisher::new(&testkit::kafka_brokers(), &topic).expect("producer");
    let events = w.write(10, 40).await;
    publisher.publish(&events).await.expect("publish");
    let model = ReadModel::open(w.pool.clone(), &w.read_model)
        .await
        .expect("open");
    let group = testkit::unique_name("stuck");
    let metrics = Metrics::new();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_consumer(
        projection_host::consumer::ConsumerConfig {
            topic: topic.clone(),
            stall_after: Duration::from_secs(2),
            ..w.consumer_config(&group)
        },
        Arc::new(Projection::ReadModel(model)),
        Arc::clone(&w.store),
        metrics.clone(),
        Default::default(),
        stopped,
        Default::default(),
    ));
    assert!(w.converges(&w.read_model, CONVERGE).await);
    assert_eq!(
        read_model_counter(&metrics, "sourcegram_consumer_restarts_total"),
        0,
        "a consumer that is caught up is left alone"
    );

    // The group's committed offset goes back to the start behind the running
    // consumer's back: it received everything and gets nothing more, yet the
    // partition holds messages past the group's offset, so it counts as stuck.
    let rewinder = consumer(&group);
    let mut start = TopicPartitionList::new();
    start
        .add_partition_offset(&topic, 0, Offset::Offset(0))
        .expect("partition");
    rewinder
        .commit(&start, CommitMode::Sync)
        .expect("commit the group's offset back to 0");
    drop(rewinder);

    let published = events.len() as u64;
    let replaced = testkit::eventually(CONVERGE, || {
        let metrics = metrics.clone();
        async move {
            let restarts = read_model_counter(&metrics, "sourcegram_consumer_restarts_total");
            let skipped = read_model_counter(&metrics, "sourcegram_events_skipped_total");
            (restarts >= 1 && skipped >= published).then_some(())
        }
    })
    .await;
    assert!(
        replaced.is_some(),
        "the consumer was not replaced and nothing was redelivered:\n{}",
        metrics.render()
    );
    assert!(
        w.converges(&w.read_model, CONVERGE).await,
        "the redelivered events changed nothing"
    );
    stop.send(true).expect("stop");
    task.await.expect("consumer task").expect("consumer");
}

#[tokio::test]
async fn a_consumer_holding_nothing_while_its_group_stands_still_is_replaced() {
    let mut w = world().await;
    let topic = testkit::fresh_topic("stuck", 1).await;
    let publisher = KafkaPublisher::new(&testkit::kafka_brokers(), &topic).expect("producer");
    let group = testkit::unique_name("wedged");

    // A member that takes the only partition and is then never polled again:
    // librdkafka's thread keeps it in the group, but it consumes nothing and
    // cannot take part in a rebalance, so the group's next rebalance does not
    // finish and a newcomer is left holding nothing.
    let wedged: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", testkit::kafka_brokers())
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    wedged.subscribe(&[&topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while wedged.assignment().expect("assignment").count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first member got the partition"
        );
        let _ = wedged.poll(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = w.write(5, 5).await;
    publisher.publish(&events).await.expect("publish");

    let model = ReadModel::open(w.pool.clone(), &w.read_model)
        .await
        .expect("open");
    let metrics = Metrics::new();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_consumer(
        projection_host::consumer::ConsumerConfig {
            topic: topic.clone(),
            stall_after: Duration::from_secs(2),
            ..w.consumer_config(&group)
        },
        Arc::new(Projection::ReadModel(model)),
        Arc::clone(&w.store),
        metrics.clone(),
        Default::default(),
        stopped,
        Default::default(),
    ));
    let replaced = testkit::eventually(CONVERGE, || {
        let metrics = metrics.clone();
        async move {
            (read_model_counter(&metrics, "sourcegram_consumer_restarts_total") >= 1).then_some(())
        }
    })
    .await;
    assert!(
        replaced.is_some(),
        "a consumer holding nothing in a group that does not move was left alone:\n{}",
        metrics.render()
    );

    // Once the wedged member leaves, the group settles and the model is exact.
    tokio::task::spawn_blocking(move || drop(wedged))
        .await
        .expect("close the wedged member");
    assert!(
        w.converges(&w.read_model, CONVERGE).await,
        "the model converges once the group can rebalance"
    );
    stop.send(true).expect("stop");
    task.await.expect("consumer task").expect("consumer");
}
