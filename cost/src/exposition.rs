//! A reader of Prometheus' text exposition format, enough for counters and gauges.
//!
//! Only samples matter here (`name{label="value",...} value [timestamp]`); comments and
//! `# HELP` / `# TYPE` lines are skipped. Label values are read with their escapes (`\\`,
//! `\"`, `\n`), because a label such as a consumer group's name may hold any character, and a
//! naive split on `,` or `}` would misread the lines after it.

use crate::CostError;

/// One sample of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of a page.
pub fn parse(text: &str) -> Result<Vec<Sample>, CostError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|reason| CostError::Exposition {
            line: index + 1,
            reason,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("a sample needs a metric name".into());
    }
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (Vec::new(), &line[name_end..])
    };
    let value = rest
        .split_whitespace()
        .next()
        .ok_or("a sample needs a value")?;
    let value = parse_value(value).ok_or_else(|| format!("{value:?} is not a number"))?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// A sample's labels, in the order written.
type Labels = Vec<(String, String)>;

/// Reads `label="value",...}` and returns the labels and what follows the `}`.
fn parse_labels(mut rest: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label needs `=`")?;
        let name = rest[..eq].trim().to_owned();
        let quoted = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value must be quoted")?;
        let (value, after) = read_quoted(quoted)?;
        labels.push((name, value));
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Reads a label value up to its closing quote, undoing the escapes.
fn read_quoted(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            _ => value.push(c),
        }
    }
    Err("a label value is not closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_and_without_labels() {
        let page = "# HELP kafscale_x Something.\n# TYPE kafscale_x counter\n\
                    kafscale_x{op=\"put\"} 317\nkafscale_y 2.5e3\n\n\
                    kafscale_z{a=\"1\",b=\"two\"} +Inf 1700000000000\n";
        let samples = parse(page).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "kafscale_x");
        assert_eq!(samples[0].label("op"), Some("put"));
        assert_eq!(samples[0].value, 317.0);
        assert_eq!(samples[1].value, 2500.0);
        assert!(samples[1].labels.is_empty());
        assert_eq!(samples[2].label("b"), Some("two"));
        assert!(samples[2].value.is_infinite());
    }

    #[test]
    fn label_values_keep_their_escaped_characters() {
        let line = r#"kafscale_consumer_group_lag{group="a,b}\"c\\d\ne",topic="t"} 4"#;
        let samples = parse(line).unwrap();
        assert_eq!(samples[0].label("group"), Some("a,b}\"c\\d\ne"));
        assert_eq!(samples[0].label("topic"), Some("t"));
        assert_eq!(samples[0].value, 4.0);
    }

    #[test]
    fn a_broken_line_is_named() {
        for (page, reason) in [
            ("ok 1\nkafscale_x{op=\"put} 3", "not closed"),
            ("ok 1\nkafscale_x{op=put} 3", "quoted"),
            ("ok 1\nkafscale_x lots", "not a number"),
            ("ok 1\nkafscale_x", "needs a value"),
        ] {
            let err = parse(page).unwrap_err().to_string();
            assert!(err.starts_with("line 2"), "{err}");
            assert!(err.contains(reason), "{err}");
        }
    }
}
