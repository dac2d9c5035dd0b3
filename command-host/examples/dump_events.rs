//! Every event of an event store, one tab-separated line each, for the drills'
//! checks: they load it into a PostgreSQL table and compare it with what was
//! acknowledged and with the read model, whichever store the system ran on.
//!
//!   cargo run -p command-host --example dump_events -- <event store URL>
//!
//! Columns: stream id, version, event type, the user in the event's data (a
//! like's or unlike's user; `\N` otherwise), the acting user, the idempotency
//! key (`\N` when none): PostgreSQL's text COPY format.

use std::io::Write as _;

use event_store::{AnyEventStore, EventStore, ReadAllCursor};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url] = args.as_slice() else {
        eprintln!("usage: dump_events <event store URL>");
        std::process::exit(2);
    };
    let store = match AnyEventStore::connect(url, 2).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("dump_events: {error}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut cursor = ReadAllCursor::default();
    loop {
        let page = match store.read_all(&cursor, 5_000).await {
            Ok(page) => page,
            Err(error) => {
                eprintln!("dump_events: {error}");
                std::process::exit(1);
            }
        };
        for event in &page.events {
            let field = |value: Option<&str>| value.map_or_else(|| "\\N".to_owned(), copy_text);
            let liker = event.data.get("user").and_then(serde_json::Value::as_str);
            let written = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}",
                event.stream_id,
                event.version,
                copy_text(&event.event_type),
                field(liker),
                copy_text(event.metadata.user.as_str()),
                field(event.metadata.idempotency_key.as_deref()),
            );
            if written.is_err() {
                std::process::exit(1);
            }
        }
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    if out.flush().is_err() {
        std::process::exit(1);
    }
}

/// A value as COPY's text format wants it: backslash, tab and newlines escaped.
fn copy_text(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}
