//! The Prometheus text exposition format (version 0.0.4), just what the
//! metrics here need: counters, gauges and histograms with labels.

use std::fmt::Write;

#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (index, count) in histogram.counts.iter().enumerate() {
            cumulative += count;
            let bound = histogram
                .bounds
                .get(index)
                .map_or_else(|| "+Inf".to_owned(), |bound| number(*bound));
            let mut with_bound = labels.to_vec();
            with_bound.push(("le", &bound));
            self.sample(&bucket, &with_bound, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, histogram.sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Observations per bucket (not cumulative); the last bucket is unbounded.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }

    /// Takes counts kept elsewhere (one per bucket, the unbounded one last).
    pub fn set_counts(&mut self, counts: &[u64], sum: f64) {
        for (slot, count) in self.counts.iter_mut().zip(counts) {
            *slot = *count;
        }
        self.sum = sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let mut histogram = Histogram::new(&[0.5, 1.0]);
        for value in [0.25, 0.75, 3.0] {
            histogram.observe(value);
        }
        let mut out = Exposition::default();
        out.family("t", "histogram", "A test.");
        out.histogram("t", &[("method", "a\"b")], &histogram);
        let text = out.finish();
        assert!(text.contains("t_bucket{method=\"a\\\"b\",le=\"0.5\"} 1\n"));
        assert!(text.contains("t_bucket{method=\"a\\\"b\",le=\"1\"} 2\n"));
        assert!(text.contains("t_bucket{method=\"a\\\"b\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("t_sum{method=\"a\\\"b\"} 4\n"));
        assert!(text.contains("t_count{method=\"a\\\"b\"} 3\n"));
    }
}
