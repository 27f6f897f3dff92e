//! The table as an SVG: one small bar chart per workload, each with its own linear scale
//! (gets and durable sets differ by a factor of a thousand, which one shared axis would hide).

use std::fmt::Write as _;

use crate::peer::Engine;
use crate::report::Row;

const COLUMNS: usize = 4;
const PANEL_W: f64 = 250.0;
const PANEL_H: f64 = 220.0;
const TOP: f64 = 60.0;
const COLORS: [&str; 5] = ["#d95f02", "#7570b3", "#1b9e77", "#666666", "#e7298a"];

/// Renders `rows` (medians per engine) as a standalone SVG document.
pub fn svg(rows: &[Row], title: &str) -> String {
    svg_of(rows, &Engine::ALL, title)
}

/// Renders `rows` as [`svg`] does, with one bar per engine of `engines`, in that order.
pub fn svg_of(rows: &[Row], engines: &[Engine], title: &str) -> String {
    let panel_rows = rows.len().div_ceil(COLUMNS);
    let width = PANEL_W * COLUMNS as f64;
    let height = TOP + PANEL_H * panel_rows as f64 + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, &engine) in engines.iter().enumerate() {
        let x = 10.0 + 90.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{}"/><text x="{}" y="45" font-size="13">{}</text>"#,
            color(engine),
            x + 16.0,
            engine.name()
        );
    }
    for (n, row) in rows.iter().enumerate() {
        let x0 = PANEL_W * (n % COLUMNS) as f64;
        let y0 = TOP + PANEL_H * (n / COLUMNS) as f64;
        panel(&mut s, row, engines, x0, y0);
    }
    s.push_str("</svg>\n");
    s
}

/// One colour per engine, the same in every chart.
fn color(engine: Engine) -> &'static str {
    COLORS[engine as usize]
}

fn panel(s: &mut String, row: &Row, engines: &[Engine], x0: f64, y0: f64) {
    let (left, plot_w) = (x0 + 15.0, PANEL_W - 30.0);
    let (bar_top, bar_bottom) = (y0 + 48.0, y0 + PANEL_H - 28.0);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-size="12" font-weight="bold" text-anchor="middle">{}</text>"#,
        x0 + PANEL_W / 2.0,
        y0 + 16.0,
        escape(&row.label)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
        x0 + PANEL_W / 2.0,
        y0 + 30.0,
        escape(row.unit.label())
    );
    let medians: Vec<Option<f64>> = engines.iter().map(|&e| row.median(e)).collect();
    let max = medians.iter().flatten().copied().fold(0.0, f64::max);
    let slot = plot_w / engines.len() as f64;
    for (i, median) in medians.iter().enumerate() {
        let Some(value) = median else { continue };
        let h = if max > 0.0 {
            (bar_bottom - bar_top) * value / max
        } else {
            0.0
        };
        let x = left + slot * i as f64 + slot * 0.15;
        let w = slot * 0.7;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="{}"><title>{}: {}</title></rect>"#,
            bar_bottom - h,
            color(engines[i]),
            engines[i].name(),
            row.unit.format(*value)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
            x + w / 2.0,
            bar_bottom - h - 3.0,
            row.unit.format(*value)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
            x + w / 2.0,
            bar_bottom + 13.0,
            engines[i].name()
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{bar_bottom}" x2="{}" y2="{bar_bottom}" stroke="#333"/>"##,
        left + plot_w
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Unit;

    #[test]
    fn draws_one_bar_per_engine_with_a_sample() {
        let mut row = Row::new("set <100 B>", Unit::OpsPerSec);
        row.push(Engine::Kvs, 2.0);
        row.push(Engine::Lmdb, 1.0);
        let doc = svg(&[row], "t");
        assert_eq!(
            doc.matches("<rect x=").count(),
            4 + 2,
            "4 legend boxes and 2 bars"
        );
        assert!(doc.contains("set &lt;100 B&gt;"));
        assert!(doc.ends_with("</svg>\n"));
    }
}
