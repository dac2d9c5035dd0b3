//! The broker baseline for benchmarks: how fast this machine's broker takes
//! envelope-sized messages from an idempotent, acks=all producer configured as
//! the outbox relay's, keyed across many streams.
//!
//!   cargo run --release -p command-host --example produce_rate -- <brokers> <topic> <messages>

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic, count] = args.as_slice() else {
        eprintln!("usage: produce_rate <brokers> <topic> <messages>");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("messages is a number");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let payload = vec![b'x'; 400];
    let started = Instant::now();
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("stream-{}", i % 1_000);
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        match producer.send_result(record) {
            Ok(delivery) => pending.push(delivery),
            Err((error, _)) => panic!("enqueue failed: {error}"),
        }
        // Keep librdkafka's queue bounded, as the relay's batches do.
        if pending.len() >= 500 {
            for delivery in pending.drain(..) {
                delivery.await.expect("delivery").expect("acknowledged");
            }
        }
    }
    for delivery in pending {
        delivery.await.expect("delivery").expect("acknowledged");
    }
    let elapsed = started.elapsed().max(Duration::from_millis(1));
    println!("{:.0}", count as f64 / elapsed.as_secs_f64());
}
