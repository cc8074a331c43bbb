//! `--plot FILE.png`: the latency percentile spectrum of a run as a picture.
//!
//! The JSON report and the summary give a handful of percentiles; whether a tail is a smooth
//! slope or a cliff at p99.9 (a stall, a flush, a GC-like pause) only shows over the whole
//! spectrum. This draws produce and end-to-end latency against the percentile on a "nines"
//! scale (x = -log10(1 - q): 0 is p0, 1 is p90, 2 is p99, 3 is p99.9, ...), with latency on
//! a log scale when it spans a decade or more (a tail easily spans two orders of magnitude
//! above the median), else linear from zero. The loadtest keeps no per-second time series, so
//! there is no latency-over-time panel.
//!
//! Drawing is plotters' bitmap backend; its text needs a TrueType font, which is read at run
//! time (`--plot-font`, else a few common system paths) and registered with plotters' ab_glyph
//! text renderer rather than looked up through fontconfig (a system library and a longer build).

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::LoadtestError;

/// Where a font is looked for when `--plot-font` is not given, in this order.
pub(crate) const DEFAULT_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// The picture's size in pixels.
pub(crate) const SIZE: (u32, u32) = (1200, 800);

/// The family the font is registered as; plotters' own labels (axes, legend) ask for it.
const FAMILY: &str = "sans-serif";

/// Proof that a font is registered with plotters, which drawing text needs.
#[derive(Debug, Clone)]
pub(crate) struct Font {
    _registered: (),
}

/// One curve: a latency histogram in microseconds and what it measures.
pub(crate) struct Series<'a> {
    pub(crate) name: &'a str,
    pub(crate) latency_us: &'a Histogram<u64>,
}

fn font_error(why: String) -> LoadtestError {
    LoadtestError::PlotFont(why)
}

/// Reads the font for the plot's text (`explicit`, else the first of `candidates` that
/// exists) and registers it with plotters.
pub(crate) fn load_font(
    explicit: Option<&Path>,
    candidates: &[&str],
) -> Result<Font, LoadtestError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => candidates
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                font_error(format!(
                    "none of {} exists",
                    if candidates.is_empty() {
                        "the default font paths".to_string()
                    } else {
                        candidates.join(", ")
                    }
                ))
            })?,
    };
    let bytes = std::fs::read(&path)
        .map_err(|e| font_error(format!("cannot read {}: {e}", path.display())))?;
    // plotters keeps registered fonts for the life of the process and wants them 'static:
    // one font, read once per run.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes).map_err(|_| {
        font_error(format!(
            "{} is not a TrueType or OpenType font",
            path.display()
        ))
    })?;
    tracing::debug!(font = %path.display(), "plot font registered");
    Ok(Font { _registered: () })
}

/// The percentile at `x` on the nines scale, as a label: 0%, 90%, 99%, 99.9%, ...
fn nines_label(x: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.ceil() as i64 - 2).clamp(0, 9) as usize;
    format!("{percent:.decimals$}%")
}

/// A latency in milliseconds, as a short axis label.
fn ms_label(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        trim(format!("{ms:.1}"))
    } else if ms >= 0.01 {
        trim(format!("{ms:.2}"))
    } else {
        trim(format!("{ms:.3}"))
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Where a series' curve ends on the nines scale: at p(1 - 1/n), the last quantile its `n`
/// samples resolve.
fn x_end(h: &Histogram<u64>) -> f64 {
    (h.len() as f64).log10()
}

/// The spectrum's points: (nines, latency in ms), ending with the maximum.
fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    const STEP: f64 = 0.01;
    let end = x_end(h);
    let ms = |us: u64| us as f64 / 1000.0;
    let steps = (end / STEP).floor() as usize;
    let mut points: Vec<(f64, f64)> = (0..=steps)
        .map(|i| {
            let x = i as f64 * STEP;
            (x, ms(h.value_at_quantile(1.0 - 10f64.powf(-x))))
        })
        .collect();
    points.push((end, ms(h.max())));
    points
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Draws the latency percentile spectrum of `series` under `title` into the PNG `path`.
/// Empty histograms are left out; with none left the axes are drawn with a note.
pub(crate) fn write_png(
    path: &Path,
    _font: &Font,
    title: &str,
    series: &[Series<'_>],
) -> Result<(), LoadtestError> {
    let drawn: Vec<&Series<'_>> = series.iter().filter(|s| !s.latency_us.is_empty()).collect();

    // Whole nines up to the longest curve (at least p99).
    let x_max = drawn
        .iter()
        .map(|s| x_end(s.latency_us).ceil())
        .fold(2.0, f64::max);
    // Latency on a log scale when it spans a decade or more (a long tail), else linear from
    // zero: plotters labels only powers of ten and their multiples on a log axis, so a
    // narrow range (say 60 to 120 ms) would show a single label.
    let (lo, hi) = drawn.iter().fold((f64::MAX, 0f64), |(lo, hi), s| {
        (
            lo.min(s.latency_us.min() as f64 / 1000.0),
            hi.max(s.latency_us.max() as f64 / 1000.0),
        )
    });
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let drawing = if drawn.is_empty() {
        draw_chart(&root, title, x_max, 0f64..100.0, "latency (ms)", &drawn)
    } else if hi >= 10.0 * lo {
        let y = ((lo * 0.8).max(0.001)..hi * 1.25).log_scale();
        draw_chart(&root, title, x_max, y, "latency (ms, log scale)", &drawn)
    } else {
        draw_chart(&root, title, x_max, 0f64..hi * 1.1, "latency (ms)", &drawn)
    };
    drawing
        .and_then(|()| root.present().map_err(|e| e.to_string()))
        .map_err(|e| LoadtestError::Plot(format!("{}: {e}", path.display())))
}

/// The chart on `root`, with the latency axis `y`.
fn draw_chart<Y>(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_max: f64,
    y: Y,
    y_desc: &str,
    drawn: &[&Series<'_>],
) -> Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(24)
        .margin_right(48)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_labels(x_max as usize + 1)
        .x_desc("percentile")
        .y_desc(y_desc)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| ms_label(*y))
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .draw()
        .map_err(|e| err(&e))?;

    for (i, s) in drawn.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let h = s.latency_us;
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let label = format!(
            "{}: {} samples, p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            s.name,
            h.len(),
            ms_label(q(0.50)),
            ms_label(q(0.99)),
            ms_label(q(0.999)),
            ms_label(h.max() as f64 / 1000.0),
        );
        chart
            .draw_series(LineSeries::new(spectrum(h), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
    }
    if drawn.is_empty() {
        root.draw(&Text::new(
            "no latency samples in this run",
            (SIZE.0 as i32 / 2 - 150, SIZE.1 as i32 / 2),
            (FAMILY, 22),
        ))
        .map_err(|e| err(&e))?;
    } else {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FAMILY, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::new_histogram;

    /// A deterministic sample shaped like a real one: a body from 0.7x to 1.3x `median_us`,
    /// then a tail reaching about 20x at p99.99.
    fn synthetic(n: u64, median_us: u64) -> Histogram<u64> {
        let mut h = new_histogram();
        for i in 0..n {
            let u = i as f64 / n as f64;
            let x = 0.7 + 0.6 * u + 0.002 / (1.0 - u);
            h.record((median_us as f64 * x) as u64 + 1).unwrap();
        }
        h
    }

    fn a_font() -> Font {
        load_font(None, DEFAULT_FONTS).unwrap_or_else(|e| {
            panic!("{e} (scripts/install-test-deps.sh installs fonts-dejavu-core)")
        })
    }

    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert!(bytes.len() > 33, "{} bytes is no PNG", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[8..16], b"\0\0\0\x0dIHDR", "first chunk is IHDR");
        let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    #[test]
    fn a_plot_of_two_spectra_is_a_png_of_the_stated_size() {
        let font = a_font();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.png");
        let produce = synthetic(20_000, 2_000);
        let e2e = synthetic(20_000, 9_000);
        let empty = new_histogram();
        write_png(
            &path,
            &font,
            "kafscale-loadtest: 20000 records of 200 B, 4 partitions, acks=all, flat out",
            &[
                Series {
                    name: "produce",
                    latency_us: &produce,
                },
                Series {
                    name: "end-to-end",
                    latency_us: &e2e,
                },
                Series {
                    name: "nothing",
                    latency_us: &empty,
                },
            ],
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(png_size(&bytes), SIZE);
        // Not a blank page: a flat white image compresses to a few hundred bytes.
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());

        // Less than a decade from fastest to slowest: a linear latency axis.
        let narrow = synthetic(2_000, 1_500);
        let path = dir.path().join("narrow.png");
        let series = [Series {
            name: "produce",
            latency_us: &narrow,
        }];
        write_png(&path, &font, "narrow", &series).unwrap();
        assert_eq!(png_size(&std::fs::read(&path).unwrap()), SIZE);
    }

    #[test]
    fn a_plot_without_samples_is_still_drawn() {
        let font = a_font();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.png");
        let empty = new_histogram();
        let series = [Series {
            name: "produce",
            latency_us: &empty,
        }];
        write_png(&path, &font, "no samples", &series).unwrap();
        assert_eq!(png_size(&std::fs::read(&path).unwrap()), SIZE);
    }

    #[test]
    fn a_missing_font_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("NoSuchFont.ttf");
        let e = load_font(Some(&missing), DEFAULT_FONTS)
            .unwrap_err()
            .to_string();
        for part in ["--plot-font", "fonts-dejavu-core", "NoSuchFont.ttf"] {
            assert!(e.contains(part), "{part:?} not in: {e}");
        }
        let nowhere = missing.to_str().unwrap();
        let e = load_font(None, &[nowhere]).unwrap_err().to_string();
        for part in ["--plot-font", "fonts-dejavu-core", nowhere] {
            assert!(e.contains(part), "{part:?} not in: {e}");
        }
        // A file that is no font.
        let junk = dir.path().join("junk.ttf");
        std::fs::write(&junk, b"not a font").unwrap();
        let e = load_font(Some(&junk), DEFAULT_FONTS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a TrueType"), "{e}");
    }

    #[test]
    fn the_nines_scale_labels_percentiles() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(5.0), "99.999%");
        let s = spectrum(&synthetic(1000, 1000));
        assert!(s.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(s.last().unwrap().0, 3.0);
    }
}
