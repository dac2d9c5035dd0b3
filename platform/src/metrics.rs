//! A small Prometheus registry: counters, gauges and latency histograms rendered
//! in the text exposition format. Enough for `/metrics`; no client crate needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Upper bounds (seconds) of the latency histogram buckets. Every 10 ms up to
/// 100 ms, then finer up to 250 ms: the pipeline's lag under load falls there,
/// and its p99 target (100 ms) should be read off a bound below it, not at it.
const BUCKETS: [f64; 21] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.125, 0.15,
    0.2, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The metrics of one host. Cloning shares the registry. Each series is
/// registered once and handed out as a typed handle ([`Counter`], [`Gauge`],
/// [`Histogram`]); counting through a handle takes no registry lock, so hot
/// paths keep their handles and never look a series up by name.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<RwLock<Registry>>,
}

type Series = (&'static str, String);

#[derive(Debug, Default)]
struct Registry {
    counters: BTreeMap<Series, Counter>,
    gauges: BTreeMap<Series, Gauge>,
    histograms: BTreeMap<Series, Histogram>,
}

/// A monotonic count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self, by: u64) {
        self.0.fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Observations in seconds, counted into [`BUCKETS`].
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<Mutex<Buckets>>);

#[derive(Debug, Default, Clone)]
struct Buckets {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        self.observe_many([seconds]);
    }

    pub fn observe_many(&self, seconds: impl IntoIterator<Item = f64>) {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for seconds in seconds {
            for (bucket, bound) in h.buckets.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *bucket += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        }
    }

    fn snapshot(&self) -> Buckets {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn render_labels(labels: &[(&'static str, &str)]) -> String {
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

/// The handle of `series` in `map`, registered on first use.
fn handle<T: Clone + Default>(
    registry: &RwLock<Registry>,
    pick: impl Fn(&mut Registry) -> &mut BTreeMap<Series, T>,
    read: impl Fn(&Registry) -> &BTreeMap<Series, T>,
    series: Series,
) -> T {
    {
        let registry = registry.read().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = read(&registry).get(&series) {
            return found.clone();
        }
    }
    let mut registry = registry.write().unwrap_or_else(|p| p.into_inner());
    pick(&mut registry).entry(series).or_default().clone()
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter `name` with `labels`.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        let series = (name, render_labels(labels));
        handle(&self.inner, |r| &mut r.counters, |r| &r.counters, series)
    }

    /// The gauge `name` with `labels`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        let series = (name, render_labels(labels));
        handle(&self.inner, |r| &mut r.gauges, |r| &r.gauges, series)
    }

    /// The latency histogram `name` with `labels`.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        let series = (name, render_labels(labels));
        handle(
            &self.inner,
            |r| &mut r.histograms,
            |r| &r.histograms,
            series,
        )
    }

    /// Everything in Prometheus text format.
    pub fn render(&self) -> String {
        let r = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut typed = TypeLines::default();
        for ((name, labels), value) in &r.counters {
            typed.once(&mut out, name, "counter");
            let _ = writeln!(out, "{name}{labels} {}", value.get());
        }
        let mut typed = TypeLines::default();
        for ((name, labels), value) in &r.gauges {
            typed.once(&mut out, name, "gauge");
            let _ = writeln!(out, "{name}{labels} {}", value.get());
        }
        let mut typed = TypeLines::default();
        for ((name, labels), h) in &r.histograms {
            typed.once(&mut out, name, "histogram");
            let h = h.snapshot();
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
    }
}

/// Writes each metric's `# TYPE` line once, before its first series (the
/// series of one name are next to each other: the maps are sorted).
#[derive(Default)]
struct TypeLines {
    last: &'static str,
}

impl TypeLines {
    fn once(&mut self, out: &mut String, name: &'static str, kind: &str) {
        if name != self.last {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            self.last = name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.counter("requests_total", &[("route", "GET /x")]).inc(2);
        m.gauge("lag", &[]).set(3.0);
        m.histogram("latency_seconds", &[("route", "a\"b")])
            .observe(0.003);
        let text = m.render();
        assert!(
            text.contains("# TYPE requests_total counter\nrequests_total{route=\"GET /x\"} 2\n")
        );
        assert!(text.contains("lag 3\n"));
        assert!(text.contains("latency_seconds_bucket{route=\"a\\\"b\",le=\"0.0025\"} 0\n"));
        assert!(text.contains("latency_seconds_bucket{route=\"a\\\"b\",le=\"0.005\"} 1\n"));
        assert!(text.contains("latency_seconds_bucket{route=\"a\\\"b\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("latency_seconds_count{route=\"a\\\"b\"} 1\n"));
        assert_eq!(m.counter("requests_total", &[("route", "GET /x")]).get(), 2);
    }

    #[test]
    fn lag_under_100_ms_is_bucketed_every_10_ms() {
        let m = Metrics::new();
        m.histogram("lag_seconds", &[])
            .observe_many([0.085, 0.095, 0.12]);
        let text = m.render();
        for (le, count) in [("0.08", 0), ("0.09", 1), ("0.1", 2), ("0.125", 3)] {
            let line = format!("lag_seconds_bucket{{le=\"{le}\"}} {count}\n");
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
    }
}
