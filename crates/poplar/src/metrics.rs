//! Prometheus metrics and the health check, for `poplar serve`: the recorder the server's
//! counters go into ([`pop3_server::metrics`] names them), `/metrics` and `/healthz` over HTTP on
//! `[metrics] listen`, and the same figures in words for `poplar stats`.
//!
//! The recorder is installed whether or not the HTTP listener is configured, so `poplar stats`
//! always has figures. The listener admits only `metrics.allow_from` (loopback by default),
//! serves one request at a time per connection with short timeouts, and at most a few
//! connections at once: it is for a Prometheus server and a load balancer's health check, not
//! for the public.

use crate::http::{reply, typed};
use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pop3_server::Status;
use pop3_server::metrics::{METRICS, MetricKind};
use std::collections::BTreeMap;
use std::time::Duration;

/// Histogram buckets for session lengths (seconds): from a poll that finds nothing to a
/// large download.
const SESSION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// Histogram buckets for sending one message (seconds).
const SEND_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
];
/// Scrape connections served at once; more wait in the kernel's queue.
const MAX_SCRAPERS: usize = 8;
/// The store's answer to a health check must come within this.
const PROBE_TIME: Duration = Duration::from_secs(5);
/// Histogram samples are folded in at least this often (the recorder keeps them until then).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The installed recorder and the server it describes.
#[derive(Clone)]
pub(crate) struct Metrics {
    handle: PrometheusHandle,
    status: Status,
}

impl Metrics {
    /// Installs the process's recorder (once; `serve` calls it before anything that counts
    /// starts, the retention purge at start included) and names every metric.
    pub(crate) fn install_recorder(store: &'static str) -> Result<PrometheusHandle> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(pop3_server::metrics::SESSION_SECONDS.into()),
                SESSION_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(pop3_server::metrics::SEND_SECONDS.into()),
                    SEND_BUCKETS,
                )
            })
            .context("metrics buckets")?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)
            .context("a metrics recorder is installed already")?;
        pop3_server::metrics::describe(pop3_server::VERSION, store);
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(handle)
    }

    /// The installed recorder's figures, with the gauges of `status`.
    pub(crate) fn new(handle: PrometheusHandle, status: Status) -> Self {
        Self { handle, status }
    }

    /// The Prometheus text exposition, gauges refreshed.
    pub(crate) fn render(&self) -> String {
        pop3_server::metrics::set_gauges(&self.status);
        self.handle.render()
    }

    /// Serves `/metrics` and `/healthz` on `addr` to the networks in `allow_from`.
    pub(crate) async fn listen(
        &self,
        addr: std::net::SocketAddr,
        allow_from: Vec<ipnet::IpNet>,
    ) -> Result<std::net::SocketAddr> {
        let this = self.clone();
        let rules = crate::http::Listener {
            what: "metrics",
            allow_from: Some(allow_from),
            max_connections: MAX_SCRAPERS,
        };
        crate::http::listen(addr, rules, move |request| {
            let this = this.clone();
            async move { this.answer(request).await }
        })
        .await
    }

    async fn answer<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match request.uri().path() {
            "/metrics" => typed(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.render(),
            ),
            "/healthz" => match tokio::time::timeout(PROBE_TIME, self.status.ready()).await {
                Ok(Ok(())) => reply(StatusCode::OK, "ok\n"),
                Ok(Err(why)) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                Err(_) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the store did not answer within {PROBE_TIME:?}\n"),
                ),
            },
            _ => reply(StatusCode::NOT_FOUND, "try /metrics or /healthz\n"),
        }
    }
}

/// One sample of the text exposition: its metric name, labels and value.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: &'a str,
    value: f64,
}

/// Reads the samples of a Prometheus text exposition (what [`Metrics::render`] writes).
fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            Some(Sample {
                name,
                labels,
                value: value.parse().ok()?,
            })
        })
}

/// `poplar stats`: each metric's help text, then its value per label set (histograms as a
/// count and a mean).
pub(crate) fn in_words(text: &str) -> Vec<String> {
    let mut by_name: BTreeMap<&str, Vec<Sample<'_>>> = BTreeMap::new();
    for sample in samples(text) {
        by_name.entry(sample.name).or_default().push(sample);
    }
    let mut out = Vec::new();
    for metric in METRICS {
        out.push(format!("{}:", metric.help.trim_end_matches('.')));
        let lines: Vec<String> = match metric.kind {
            MetricKind::Counter | MetricKind::Gauge => by_name
                .get(metric.name)
                .map(|s| {
                    s.iter()
                        .map(|s| format!("  {}{}", number(s.value), labelled(s.labels)))
                        .collect()
                })
                .unwrap_or_default(),
            MetricKind::Histogram => {
                let count = format!("{}_count", metric.name);
                let sum = format!("{}_sum", metric.name);
                by_name
                    .get(count.as_str())
                    .map(|counts| {
                        counts
                            .iter()
                            .map(|c| {
                                let total = by_name
                                    .get(sum.as_str())
                                    .and_then(|s| s.iter().find(|s| s.labels == c.labels))
                                    .map_or(0.0, |s| s.value);
                                let mean = if c.value > 0.0 { total / c.value } else { 0.0 };
                                format!(
                                    "  {} times, {:.3} s on average{}",
                                    number(c.value),
                                    mean,
                                    labelled(c.labels)
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        if lines.is_empty() {
            out.push("  none yet".into());
        }
        out.extend(lines);
    }
    out
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// ` (listener pop3, result ok)` from `listener="pop3",result="ok"`.
fn labelled(labels: &str) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let words: Vec<String> = labels
        .split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some(format!("{key} {}", value.trim_matches('"')))
        })
        .collect();
    format!(" ({})", words.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP poplar_logins_total Login attempts.\n\
        # TYPE poplar_logins_total counter\n\
        poplar_logins_total{mechanism=\"USER\",result=\"ok\"} 3\n\
        poplar_logins_total{mechanism=\"PLAIN\",result=\"bad_password\"} 1\n\
        poplar_connections_open 2\n\
        poplar_session_duration_seconds_bucket{listener=\"pop3\",le=\"+Inf\"} 4\n\
        poplar_session_duration_seconds_sum{listener=\"pop3\"} 2\n\
        poplar_session_duration_seconds_count{listener=\"pop3\"} 4\n";

    #[test]
    fn samples_are_read_with_their_labels() {
        let all: Vec<_> = samples(TEXT).collect();
        assert_eq!(all.len(), 6);
        assert_eq!(
            all[0],
            Sample {
                name: "poplar_logins_total",
                labels: "mechanism=\"USER\",result=\"ok\"",
                value: 3.0
            }
        );
        assert_eq!(all[2].labels, "");
    }

    #[test]
    fn stats_say_counters_gauges_and_histograms_in_words() {
        let words = in_words(TEXT).join("\n");
        assert!(words.contains("Login attempts, by mechanism and result:\n  3 (mechanism USER, result ok)\n  1 (mechanism PLAIN, result bad_password)"), "{words}");
        assert!(words.contains("Connections open now:\n  2\n"), "{words}");
        assert!(
            words.contains("  4 times, 0.500 s on average (listener pop3)"),
            "{words}"
        );
        assert!(
            words.contains("Deliveries refused because the maildrop was full:\n  none yet"),
            "{words}"
        );
    }
}
