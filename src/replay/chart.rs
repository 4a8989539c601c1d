//! The PNG chart: hit ratio (top) and origin fetches per second (bottom)
//! over trace time, one line per mode, drawn with plotters.
//!
//! Text needs a TrueType font, loaded at run time (none is shipped): the
//! file named by `WARMING_FONT`, else Debian's DejaVu Sans
//! (`fonts-dejavu-core`, [`DEFAULT_FONT`]).

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::Report;

/// Where the font is looked for when `WARMING_FONT` is unset.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Loads and registers the font once; the error says what to install.
fn font() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = std::env::var("WARMING_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
            let bytes = std::fs::read(&path).map_err(|e| {
                format!(
                    "font {path}: {e} (install fonts-dejavu-core or set WARMING_FONT to a .ttf)"
                )
            })?;
            // Registered fonts live for the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("font {path}: not a TrueType font"))
        })
        .clone()
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws the chart of `r` to `path` (PNG, 1200 x 800).
pub fn draw(r: &Report, path: &Path) -> Result<(), String> {
    font()?;
    let e = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (top, bottom) = root.split_vertically(400);
    let span = (r.last_at - r.first_at).max(1.0);
    let modes: Vec<_> = r.modes.iter().filter(|(_, m)| m.stats.is_some()).collect();
    // Minutes since the first request.
    let points = |f: &dyn Fn(u64, u64, u64, f64) -> Option<f64>| {
        modes
            .iter()
            .map(|(name, m)| {
                let s = &m.series;
                let off = s.start() - r.first_at;
                let pts: Vec<(f64, f64)> = s
                    .buckets
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &(req, hit, fetch))| {
                        let x = (off + (i as f64 + 0.5) * s.width) / 60.0;
                        f(req, hit, fetch, s.width).map(|y| (x, y))
                    })
                    .collect();
                (name.clone(), pts)
            })
            .collect::<Vec<_>>()
    };
    let hit = points(&|req, hit, _, _| (req > 0).then(|| hit as f64 / req as f64));
    let load = points(&|_, _, fetch, w| Some(fetch as f64 / w));
    let max_load = load
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let x_max = span / 60.0;
    panel(
        &top,
        &format!("{}: hit ratio over trace time", r.trace),
        "hit ratio",
        (x_max, 1.0),
        &hit,
        SeriesLabelPosition::LowerRight,
        &e,
    )?;
    panel(
        &bottom,
        "origin fetches per second",
        "fetches/s",
        (x_max, max_load * 1.05),
        &load,
        SeriesLabelPosition::UpperRight,
        &e,
    )?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// One panel of the chart: a line per mode, minutes `0..x_max` across and
/// `0..y_max` up, with its caption, y axis label and legend at `legend`.
fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    (x_max, y_max): (f64, f64),
    lines: &[(String, Vec<(f64, f64)>)],
    legend: SeriesLabelPosition,
    e: &dyn Fn(&dyn std::fmt::Display) -> String,
) -> Result<(), String> {
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|x| e(&x))?;
    c.configure_mesh()
        .x_desc("minutes")
        .y_desc(y_desc)
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (name, pts)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    Ok(())
}
