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
use projection_host::consumer::{ConsumerConfig, Projection, run_consumer, stuck_partitions};
use projection_host::projector::ReadModel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use support::world;
use tokio::sync::watch;

const CONVERGE: Duration = Duration::from_secs(30);

fn consumer(group: &str) -> StreamConsumer {
    testkit::consumer_config(group)
        .set("fetch.wait.max.ms", "20")
        .create()
        .expect("consumer")
}

fn read_model_counter(metrics: &Metrics, name: &'static str) -> u64 {
    metrics.counter(name, &[("projection", "read_model".to_owned())])
}

/// The read-model consumer with `config`.
async fn spawn_read_model(
    w: &support::World,
    config: ConsumerConfig,
    metrics: &Metrics,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), rdkafka::error::KafkaError>>,
) {
    let model = ReadModel::open(w.pool.clone(), &w.read_model)
        .await
        .expect("open");
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_consumer(
        config,
        Arc::new(Projection::ReadModel(model)),
        Arc::clone(&w.store),
        metrics.clone(),
        Default::default(),
        stopped,
        Default::default(),
    ));
    (stop, task)
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
    let group = testkit::unique_name("stuck");
    let metrics = Metrics::new();
    let (stop, task) = spawn_read_model(
        &w,
        ConsumerConfig {
            topic: topic.clone(),
            stall_after: Duration::from_secs(2),
            ..w.consumer_config(&group)
        },
        &metrics,
    )
    .await;
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
async fn a_consumer_holding_nothing_while_its_group_stands_still_rejoins_without_an_instance_id() {
    let mut w = world().await;
    let topic = testkit::fresh_topic("stuck", 1).await;
    let publisher = KafkaPublisher::new(&testkit::kafka_brokers(), &topic).expect("producer");
    let group = testkit::unique_name("wedged");

    // A static member takes the only partition, then goes away without leaving
    // the group (a static member does not leave when it closes, as a killed
    // process does not): the group's next rebalance waits for it, and on tansu
    // nothing expires it until a member without an instance id turns up.
    let gone: BaseConsumer = testkit::consumer_config(&group)
        .set("group.instance.id", testkit::unique_name("gone"))
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    gone.subscribe(&[&topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while gone.assignment().expect("assignment").count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first member got the partition"
        );
        let _ = gone.poll(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::spawn_blocking(move || drop(gone))
        .await
        .expect("close the first member");
    let events = w.write(5, 5).await;
    publisher.publish(&events).await.expect("publish");

    // A static consumer joins: it holds nothing while the group waits, is
    // replaced by one without an instance id, whose join lets the broker
    // expire the member that is gone, and the group settles.
    let metrics = Metrics::new();
    let (stop, task) = spawn_read_model(
        &w,
        ConsumerConfig {
            topic: topic.clone(),
            instance_id: Some(testkit::unique_name("static")),
            stall_after: Duration::from_secs(2),
            ..w.consumer_config(&group)
        },
        &metrics,
    )
    .await;
    assert!(
        w.converges(&w.read_model, CONVERGE).await,
        "the group never settled:\n{}",
        metrics.render()
    );
    assert!(
        read_model_counter(&metrics, "sourcegram_consumer_restarts_total") >= 1,
        "the group settled without the consumer being replaced"
    );
    stop.send(true).expect("stop");
    task.await.expect("consumer task").expect("consumer");
}
