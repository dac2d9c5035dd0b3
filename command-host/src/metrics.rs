//! A small Prometheus registry: counters, gauges and latency histograms rendered
//! in the text exposition format. Enough for `/metrics`; no client crate needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Upper bounds (seconds) of the latency histogram buckets. Every 10 ms up to
/// 100 ms, then finer up to 250 ms: the pipeline's lag under load falls there,
/// and its p99 target (100 ms) should be read off a bound below it, not at it.
const BUCKETS: [f64; 21] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.125, 0.15,
    0.2, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The metrics of one host. Cloning shares the registry.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Registry>>,
}

type Series = (&'static str, String);

#[derive(Debug, Default)]
struct Registry {
    counters: BTreeMap<Series, u64>,
    gauges: BTreeMap<Series, f64>,
    histograms: BTreeMap<Series, Histogram>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

fn render_labels(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        // A panic while holding this lock cannot leave the maps inconsistent in a
        // way that matters for metrics, so a poisoned lock is used as is.
        let mut registry = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut registry)
    }

    /// Adds `by` to the counter `name` with `labels`.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, String)], by: u64) {
        let key = (name, render_labels(labels));
        self.with(|r| *r.counters.entry(key).or_default() += by);
    }

    /// Sets the gauge `name` with `labels`.
    pub fn set_gauge(&self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        let key = (name, render_labels(labels));
        self.with(|r| {
            r.gauges.insert(key, value);
        });
    }

    /// Records one observation (in seconds) in the histogram `name`.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, String)], seconds: f64) {
        self.observe_many(name, labels, [seconds]);
    }

    /// Records many observations (in seconds) in the histogram `name` at once.
    pub fn observe_many(
        &self,
        name: &'static str,
        labels: &[(&'static str, String)],
        seconds: impl IntoIterator<Item = f64>,
    ) {
        let key = (name, render_labels(labels));
        self.with(|r| {
            let histogram = r.histograms.entry(key).or_default();
            for seconds in seconds {
                for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
                    if seconds <= bound {
                        *bucket += 1;
                    }
                }
                histogram.count += 1;
                histogram.sum += seconds;
            }
        });
    }

    /// The counter's current value (0 if never incremented). For tests and health.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> u64 {
        let key = (name, render_labels(labels));
        self.with(|r| r.counters.get(&key).copied().unwrap_or(0))
    }

    /// Everything in Prometheus text format.
    pub fn render(&self) -> String {
        self.with(|r| {
            let mut out = String::new();
            let mut last = "";
            for ((name, labels), value) in &r.counters {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(out, "{name}{labels} {value}");
            }
            last = "";
            for ((name, labels), value) in &r.gauges {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} gauge");
                    last = name;
                }
                let _ = writeln!(out, "{name}{labels} {value}");
            }
            last = "";
            for ((name, labels), h) in &r.histograms {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    last = name;
                }
                let with_le = |le: &str| {
                    if labels.is_empty() {
                        format!("{{le=\"{le}\"}}")
                    } else {
                        format!("{},le=\"{le}\"}}", &labels[..labels.len() - 1])
                    }
                };
                for (count, bound) in h.buckets.iter().zip(BUCKETS) {
                    let _ = writeln!(out, "{name}_bucket{} {count}", with_le(&bound.to_string()));
                }
                let _ = writeln!(out, "{name}_bucket{} {}", with_le("+Inf"), h.count);
                let _ = writeln!(out, "{name}_sum{labels} {}", h.sum);
                let _ = writeln!(out, "{name}_count{labels} {}", h.count);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.inc("requests_total", &[("route", "GET /x".to_owned())], 2);
        m.set_gauge("lag", &[], 3.0);
        m.observe("latency_seconds", &[("route", "a\"b".to_owned())], 0.003);
        let text = m.render();
        assert!(
            text.contains("# TYPE requests_total counter\nrequests_total{route=\"GET /x\"} 2\n")
        );
        assert!(text.contains("lag 3\n"));
        assert!(text.contains("latency_seconds_bucket{route=\"a\\\"b\",le=\"0.0025\"} 0\n"));
        assert!(text.contains("latency_seconds_bucket{route=\"a\\\"b\",le=\"0.005\"} 1\n"));
        assert!(text.contains("latency_seconds_bucket{route=\"a\\\"b\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("latency_seconds_count{route=\"a\\\"b\"} 1\n"));
        assert_eq!(
            m.counter("requests_total", &[("route", "GET /x".to_owned())]),
            2
        );
    }

    #[test]
    fn lag_under_100_ms_is_bucketed_every_10_ms() {
        let m = Metrics::new();
        m.observe_many("lag_seconds", &[], [0.085, 0.095, 0.12]);
        let text = m.render();
        for (le, count) in [("0.08", 0), ("0.09", 1), ("0.1", 2), ("0.125", 3)] {
            let line = format!("lag_seconds_bucket{{le=\"{le}\"}} {count}\n");
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
    }
}
