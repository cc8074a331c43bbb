//! The result of a run: throughput, latency percentiles and the delivery check, as JSON (a
//! stable interface other tools read) and as a short human summary.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::consume::Seen;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// The JSON result file.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) config: serde_json::Value,
    pub(crate) records_sent: u64,
    pub(crate) records_acked: u64,
    pub(crate) produce_errors: u64,
    pub(crate) first_produce_error: Option<String>,
    pub(crate) produce_seconds: f64,
    pub(crate) produce_records_per_s: f64,
    pub(crate) produce_mib_per_s: f64,
    pub(crate) produce_latency_ms: Percentiles,
    pub(crate) consumed: bool,
    pub(crate) records_consumed: u64,
    pub(crate) consume_seconds: f64,
    pub(crate) consume_records_per_s: f64,
    pub(crate) consume_mib_per_s: f64,
    pub(crate) e2e_latency_ms: Percentiles,
    /// Acknowledged records never consumed.
    pub(crate) lost: u64,
    /// Records consumed more than once.
    pub(crate) duplicates: u64,
    /// Acknowledged records consumed at another offset than the one acknowledged.
    pub(crate) offset_mismatches: u64,
    /// Records consumed that were never acknowledged (sent, answer lost or refused).
    pub(crate) unacked_consumed: u64,
    pub(crate) consume_error: Option<String>,
}

/// The delivery check: every acknowledged record consumed exactly once, at its offset.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) consumed: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) offset_mismatches: u64,
    pub(crate) unacked_consumed: u64,
}

/// Compares what producers had acknowledged (`acked[producer][seq]`) with what consumers saw.
pub(crate) fn check_delivery(acked: &[Vec<Option<(i32, i64)>>], seen: &[Seen]) -> Delivery {
    let mut d = Delivery::default();
    let mut first: HashMap<(u32, u64), (i32, i64)> = HashMap::with_capacity(seen.len());
    for s in seen {
        d.consumed += 1;
        if first
            .insert((s.producer, s.seq), (s.partition, s.offset))
            .is_some()
        {
            d.duplicates += 1;
            continue;
        }
        match acked
            .get(s.producer as usize)
            .and_then(|p| p.get(s.seq as usize))
            .copied()
            .flatten()
        {
            Some(at) if at != (s.partition, s.offset) => d.offset_mismatches += 1,
            Some(_) => {}
            None => d.unacked_consumed += 1,
        }
    }
    for (producer, offsets) in acked.iter().enumerate() {
        for (seq, at) in offsets.iter().enumerate() {
            if at.is_some() && !first.contains_key(&(producer as u32, seq as u64)) {
                d.lost += 1;
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(producer: u32, seq: u64, partition: i32, offset: i64) -> Seen {
        Seen {
            producer,
            seq,
            partition,
            offset,
        }
    }

    #[test]
    fn the_delivery_check_finds_losses_duplicates_and_misplaced_records() {
        let acked = vec![
            vec![Some((0, 0)), Some((1, 0)), Some((0, 1)), None],
            vec![Some((1, 1))],
        ];
        let all = [
            seen(0, 0, 0, 0),
            seen(0, 1, 1, 0),
            seen(0, 2, 0, 1),
            seen(1, 0, 1, 1),
        ];
        assert_eq!(
            check_delivery(&acked, &all),
            Delivery {
                consumed: 4,
                ..Delivery::default()
            }
        );
        let messy = [
            seen(0, 0, 0, 0),
            seen(0, 0, 0, 0), // duplicate
            seen(0, 2, 0, 5), // wrong offset
            seen(0, 3, 1, 2), // never acknowledged
            seen(1, 0, 1, 1),
        ];
        // (0, 1) is lost.
        assert_eq!(
            check_delivery(&acked, &messy),
            Delivery {
                consumed: 5,
                lost: 1,
                duplicates: 1,
                offset_mismatches: 1,
                unacked_consumed: 1,
            }
        );
    }
}
