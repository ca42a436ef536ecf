//! `codecllm bench plot`: the peer benchmark's JSON (`scripts/peer-bench.sh`) drawn as an
//! SVG of decode tokens/s against VRAM, one line per system and mode (llama.cpp at each
//! `-ngl`, codecllm at each `--vram-budget`), one panel per model, the y axis logarithmic
//! when the speeds span more than a factor of 20. The title names the GPU and the commit.
use crate::error::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// What the plot reads of `peer-results.json`; everything else in it is ignored, and every
/// field may be missing (a step that failed leaves no row).
#[derive(Debug, Default, Deserialize)]
pub struct PeerResults {
    #[serde(default)]
    pub provenance: Option<PeerProvenance>,
    #[serde(default)]
    pub models: BTreeMap<String, PeerModel>,
    #[serde(default)]
    pub rows: Vec<PeerRow>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PeerProvenance {
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub gpu: Option<PeerGpu>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PeerGpu {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub driver_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PeerModel {
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PeerRow {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub system: String,
    #[serde(default)]
    pub series: String,
    #[serde(default)]
    pub sequences: Option<u32>,
    #[serde(default)]
    pub ngl: Option<i64>,
    /// Measured (nvidia-smi) peak, GB.
    #[serde(default)]
    pub vram_gb: Option<f64>,
    /// What the system itself reported, GB (the x value when nothing was measured).
    #[serde(default)]
    pub vram_reported_gb: Option<f64>,
    #[serde(default)]
    pub budget_gb: Option<f64>,
    #[serde(default)]
    pub decode_tok_s: Option<f64>,
    /// `false`: a row kept in the JSON but left out of the plot.
    #[serde(default)]
    pub plot: Option<bool>,
}

impl PeerRow {
    /// The x value: measured VRAM, else reported, else the budget.
    fn vram(&self) -> Option<f64> {
        self.vram_gb.or(self.vram_reported_gb).or(self.budget_gb).filter(|v| v.is_finite() && *v >= 0.0)
    }

    fn tok_s(&self) -> Option<f64> {
        self.decode_tok_s.filter(|v| v.is_finite() && *v > 0.0)
    }

    /// A short label beside the point: the `-ngl` or the budget.
    fn point_label(&self) -> String {
        match (self.ngl, self.budget_gb) {
            (Some(n), _) if n >= 99 => "all".into(),
            (Some(n), _) => format!("ngl {n}"),
            (None, Some(b)) => format!("{b} GB"),
            _ => String::new(),
        }
    }
}

/// One line of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub model: String,
    pub name: String,
    pub system: String,
    pub sequences: u32,
    /// (VRAM GB, tokens/s, label), sorted by VRAM.
    pub points: Vec<(f64, f64, String)>,
}

/// The rows grouped into series, in the order they first appear.
pub fn series(results: &PeerResults) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in &results.rows {
        let (Some(x), Some(y), true) = (r.vram(), r.tok_s(), r.plot.unwrap_or(true)) else { continue };
        let name = if r.series.is_empty() { r.system.clone() } else { r.series.clone() };
        let i = match out.iter().position(|s| s.model == r.model && s.name == name) {
            Some(i) => i,
            None => {
                out.push(Series { model: r.model.clone(), name, system: r.system.clone(), sequences: r.sequences.unwrap_or(1), points: Vec::new() });
                out.len() - 1
            }
        };
        out[i].points.push((x, y, r.point_label()));
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

const WIDTH: u32 = 1100;
const PANEL_HEIGHT: u32 = 620;
/// Tableau 10: distinguishable, and the same series keeps its colour in every panel.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("drawing the plot: {e}"))
}

/// The SVG of `json` (the text of a `peer-results.json`).
pub fn peer_svg(json: &str) -> Result<String> {
    let results: PeerResults = serde_json::from_str(json).map_err(|e| Error::Invalid(format!("not a peer-bench JSON: {e}")))?;
    let all = series(&results);
    if all.is_empty() {
        return Err(Error::Invalid("the JSON has no rows with both a VRAM figure and decode tokens/s".into()));
    }
    let mut models: Vec<&str> = Vec::new();
    for s in &all {
        if !models.contains(&s.model.as_str()) {
            models.push(&s.model);
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for s in &all {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    let prov = results.provenance.as_ref();
    let gpu = prov.and_then(|p| p.gpu.as_ref());
    let title = format!(
        "Decode tokens/s against VRAM — {}{} — codecllm {}",
        gpu.and_then(|g| g.name.as_deref()).unwrap_or("unknown GPU"),
        gpu.and_then(|g| g.driver_version.as_deref()).map(|d| format!(" (driver {d})")).unwrap_or_default(),
        prov.and_then(|p| p.commit.as_deref()).unwrap_or("unknown commit")
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, PANEL_HEIGHT * models.len() as u32 + 40)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(&title, ("sans-serif", 22)).map_err(plot_err)?;
        let panels = root.split_evenly((models.len(), 1));
        for (panel, model) in panels.iter().zip(&models) {
            let lines: Vec<&Series> = all.iter().filter(|s| s.model == *model).collect();
            let label = results.models.get(*model).and_then(|m| m.label.clone()).unwrap_or_else(|| model.to_string());
            let (xmax, ymin, ymax) =
                lines.iter().flat_map(|s| &s.points).fold((0f64, f64::INFINITY, 0f64), |(xm, lo, hi), p| (xm.max(p.0), lo.min(p.1), hi.max(p.1)));
            let x = 0.0..(xmax * 1.08).max(0.1);
            if ymax / ymin > 20.0 {
                draw_panel(panel, &label, &lines, &names, x, (ymin / 1.5..ymax * 1.5).log_scale(), true)?;
            } else {
                draw_panel(panel, &label, &lines, &names, x, 0.0..ymax * 1.12, false)?;
            }
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn draw_panel<Y>(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    lines: &[&Series],
    names: &[&str],
    x: std::ops::Range<f64>,
    y: Y,
    log: bool,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("VRAM, GB (peak measured by nvidia-smi while the process ran; else as reported)")
        .y_desc(if log { "decode tokens/s (log scale)" } else { "decode tokens/s" })
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    for s in lines {
        let colour = COLOURS[names.iter().position(|n| *n == s.name).unwrap_or(0) % COLOURS.len()];
        let style = ShapeStyle { color: colour.to_rgba(), filled: true, stroke_width: if s.sequences > 1 { 3 } else { 2 } };
        let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).collect();
        let legend = if s.sequences > 1 { format!("{} (aggregate)", s.name) } else { s.name.clone() };
        if s.sequences > 1 {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style)).map_err(plot_err)?;
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style)).map_err(plot_err)?;
        }
        let llama = s.system == "llama.cpp";
        chart
            .draw_series(pts.iter().map(|&p| -> DynElement<'static, SVGBackend, (f64, f64)> {
                if llama {
                    TriangleMarker::new(p, 6, style).into_dyn()
                } else {
                    Circle::new(p, 5, style).into_dyn()
                }
            }))
            .map_err(plot_err)?
            .label(legend)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        // The -ngl or budget beside each point, up and to the right of its marker.
        let font = ("sans-serif", 11).into_font().color(&colour);
        chart
            .draw_series(s.points.iter().filter(|p| !p.2.is_empty()).map(|p| EmptyElement::at((p.0, p.1)) + Text::new(p.2.clone(), (7, -14), font.clone())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// An axis label without trailing zeros: 300, 12.5, 0.25.
fn tick(v: f64) -> String {
    let s = if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Reads `json`, writes the SVG to `svg`; returns the number of series drawn.
pub fn plot_file(json: &Path, svg: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(json).map_err(|source| Error::Io { path: json.to_path_buf(), source })?;
    let out = peer_svg(&text).map_err(|e| match e {
        Error::Invalid(m) => Error::Input { path: json.to_path_buf(), msg: m },
        e => e,
    })?;
    std::fs::write(svg, out).map_err(|source| Error::Io { path: svg.to_path_buf(), source })?;
    let results: PeerResults = serde_json::from_str(&text).unwrap_or_default();
    Ok(series(&results).len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of what scripts/peer-bench.sh writes, trimmed: two models, llama.cpp at
    /// three -ngl, codecllm at two budgets, a 16-sequence row, a row without VRAM (skipped).
    pub const FIXTURE: &str = r#"{
      "schema": "codecllm-peer-bench/1",
      "provenance": {"commit": "abc1234-dirty", "gpu": {"name": "NVIDIA H200", "driver_version": "580.159.04"}},
      "models": {"main": {"label": "8b-shaped LLaMA, Gaussian weights"}, "small": {"label": "SmolLM2-135M-shaped"}},
      "rows": [
        {"model": "main", "system": "llama.cpp", "series": "llama.cpp Q8_0", "ngl": 0, "sequences": 1, "vram_gb": 0.9, "decode_tok_s": 7.4},
        {"model": "main", "system": "llama.cpp", "series": "llama.cpp Q8_0", "ngl": 16, "sequences": 1, "vram_gb": 4.6, "decode_tok_s": 15.8},
        {"model": "main", "system": "llama.cpp", "series": "llama.cpp Q8_0", "ngl": 99, "sequences": 1, "vram_gb": 8.9, "decode_tok_s": 224.0},
        {"model": "main", "system": "llama.cpp", "series": "llama.cpp Q8_0, 16 sequences", "ngl": 0, "sequences": 16, "vram_gb": 1.4, "decode_tok_s": 28.9},
        {"model": "main", "system": "codecllm", "series": "codecllm auto (rans)", "budget_gb": 4.5, "sequences": 1, "vram_gb": 5.0, "decode_tok_s": 17.0},
        {"model": "main", "system": "codecllm", "series": "codecllm auto (rans)", "budget_gb": 1.5, "sequences": 1, "vram_gb": 1.9, "decode_tok_s": 8.1},
        {"model": "main", "system": "codecllm", "series": "codecllm stream", "sequences": 1, "decode_tok_s": 6.7},
        {"model": "main", "system": "llama.cpp", "series": "llama.cpp Q8_0, 1 sequence (batched-bench)", "sequences": 1, "vram_gb": 1.3, "decode_tok_s": 8.5, "plot": false},
        {"model": "small", "system": "llama.cpp", "series": "llama.cpp Q8_0", "ngl": 99, "sequences": 1, "vram_gb": 0.7, "decode_tok_s": 867.0},
        {"model": "small", "system": "codecllm", "series": "codecllm int8-resident", "sequences": 1, "vram_reported_gb": 0.3, "decode_tok_s": 1047.0}
      ]
    }"#;

    #[test]
    fn groups_rows_into_sorted_series() {
        let r: PeerResults = serde_json::from_str(FIXTURE).unwrap();
        let s = series(&r);
        let names: Vec<_> = s.iter().map(|s| (s.model.as_str(), s.name.as_str(), s.points.len())).collect();
        assert_eq!(
            names,
            [
                ("main", "llama.cpp Q8_0", 3),
                ("main", "llama.cpp Q8_0, 16 sequences", 1),
                ("main", "codecllm auto (rans)", 2),
                ("small", "llama.cpp Q8_0", 1),
                ("small", "codecllm int8-resident", 1)
            ]
        );
        // Sorted by VRAM, labelled by -ngl or budget; the reported VRAM stands in for a missing measurement.
        assert_eq!(s[2].points.iter().map(|p| (p.0, p.2.as_str())).collect::<Vec<_>>(), [(1.9, "1.5 GB"), (5.0, "4.5 GB")]);
        assert_eq!(s[0].points[2].2, "all");
        assert_eq!(s[4].points[0].0, 0.3);
        assert_eq!(s[1].sequences, 16);
    }

    #[test]
    fn svg_has_title_axes_legend_and_every_series() {
        let svg = peer_svg(FIXTURE).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        for needle in [
            "NVIDIA H200",
            "abc1234-dirty",
            "8b-shaped LLaMA, Gaussian weights",
            "SmolLM2-135M-shaped",
            "llama.cpp Q8_0",
            "codecllm auto (rans)",
            "llama.cpp Q8_0, 16 sequences (aggregate)",
            "codecllm int8-resident",
            "VRAM, GB",
            "decode tokens/s (log scale)",
            "ngl 16",
        ] {
            assert!(svg.contains(needle), "the SVG lacks {needle:?}");
        }
        // A row without VRAM is not drawn, nor one marked `"plot": false`.
        assert!(!svg.contains("codecllm stream") && !svg.contains("batched-bench"));
    }

    #[test]
    fn narrow_range_is_linear_and_empty_input_is_an_error() {
        let one = r#"{"rows": [{"model": "m", "system": "codecllm", "series": "a", "vram_gb": 1.0, "decode_tok_s": 10.0},
                               {"model": "m", "system": "codecllm", "series": "a", "vram_gb": 2.0, "decode_tok_s": 12.0}]}"#;
        let svg = peer_svg(one).unwrap();
        assert!(svg.contains("decode tokens/s") && !svg.contains("log scale"));
        assert_eq!((tick(300.0), tick(12.5), tick(0.25), tick(2.0)), ("300".into(), "12.5".into(), "0.25".into(), "2".into()));
        assert!(svg.contains("unknown GPU"));
        assert!(peer_svg(r#"{"rows": []}"#).is_err());
        assert!(peer_svg("not json").is_err());
    }
}
