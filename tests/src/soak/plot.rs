//! The soak on one time axis (`target/soak/soak.svg`): latency, requests per second by
//! outcome, and each process's resident memory, with every scheduled change marked.

use super::load::Sample;
use super::report::{percentile, EventRecord, MemorySample, Report};
use std::fmt::Write;
use std::time::Instant;

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 170.0;
const GAP: f64 = 40.0;
const TOP: f64 = 60.0;
/// Seconds per point.
const BIN: f64 = 2.0;

pub fn svg(report: &Report, samples: &[Sample], events: &[EventRecord], memory: &[MemorySample], started: Instant) -> String {
    let span = (report.minutes * 60.0).max(1.0);
    let x = |t: f64| LEFT + (t / span).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT);
    let bins = (span / BIN).ceil() as usize;
    let t_of = |s: &Sample| s.sent.saturating_duration_since(started).as_secs_f64();
    let mut latency: Vec<Vec<f64>> = vec![Vec::new(); bins];
    let mut outcomes = vec![[0usize; 2]; bins];
    for s in samples {
        let i = (t_of(s) / BIN) as usize;
        if i >= bins {
            continue;
        }
        if s.code == tonic::Code::Ok {
            latency[i].push(s.latency_ms());
            outcomes[i][0] += 1;
        } else {
            outcomes[i][1] += 1;
        }
    }
    let height = TOP + 3.0 * PANEL + 2.0 * GAP + 50.0;
    let mut out = String::new();
    let _ = writeln!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#);
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14">Switchyard soak: {} min, {} filter, {} requests/s ({} requests, {} unexpected failures)</text>"#,
        report.minutes, report.filter, report.load_rps, report.requests, report.unexpected_failures
    );

    // Panel 1: latency p50 / p99 per bin (log scale).
    let p50: Vec<(f64, f64)> = latency.iter().enumerate().filter(|(_, l)| !l.is_empty()).map(|(i, l)| (i as f64 * BIN, percentile(l, 0.5))).collect();
    let p99: Vec<(f64, f64)> = latency.iter().enumerate().filter(|(_, l)| !l.is_empty()).map(|(i, l)| (i as f64 * BIN, percentile(l, 0.99))).collect();
    let top_ms = p99.iter().map(|p| p.1).fold(10.0, f64::max);
    let y0 = TOP;
    let ly = |v: f64| y0 + PANEL - (v.max(1.0).log10() / top_ms.log10()) * PANEL;
    panel(&mut out, y0, "latency ms, log scale (blue p50, red p99 of successful answers, per 2 s)", &[(1.0, "1"), (10.0, "10"), (100.0, "100"), (1000.0, "1000")].iter().filter(|(v, _)| *v <= top_ms).map(|(v, l)| (ly(*v), l.to_string())).collect::<Vec<_>>());
    line(&mut out, &p50, &x, &ly, "#1f77b4", "p50");
    line(&mut out, &p99, &x, &ly, "#d62728", "p99");

    // Panel 2: answers per second, ok and failed.
    let y1 = TOP + PANEL + GAP;
    let max_rate = outcomes.iter().map(|o| (o[0] + o[1]) as f64 / BIN).fold(1.0, f64::max);
    let ry = |v: f64| y1 + PANEL - v / max_rate * PANEL;
    panel(&mut out, y1, "answers/s (green ok, orange failed: expected or not)", &[(ry(0.0), "0".into()), (ry(max_rate / 2.0), format!("{:.0}", max_rate / 2.0)), (ry(max_rate), format!("{max_rate:.0}"))]);
    let ok: Vec<(f64, f64)> = outcomes.iter().enumerate().map(|(i, o)| (i as f64 * BIN, o[0] as f64 / BIN)).collect();
    let failed: Vec<(f64, f64)> = outcomes.iter().enumerate().map(|(i, o)| (i as f64 * BIN, o[1] as f64 / BIN)).collect();
    line(&mut out, &ok, &x, &ry, "#2ca02c", "ok");
    line(&mut out, &failed, &x, &ry, "#ff7f0e", "failed (expected or not)");

    // Panel 3: resident memory per process.
    let y2 = TOP + 2.0 * (PANEL + GAP);
    let max_mb = memory.iter().map(|m| m.resident.total_mb.max(m.heap.map_or(0.0, |h| h.in_use_mb))).fold(1.0, f64::max) * 1.1;
    let my = |v: f64| y2 + PANEL - v / max_mb * PANEL;
    let title = "resident memory MB (purple Envoy, brown sidecar; grey: the sidecar's malloc bytes in use, MiB)";
    panel(&mut out, y2, title, &[(my(0.0), "0".into()), (my(max_mb / 2.0), format!("{:.0}", max_mb / 2.0)), (my(max_mb), format!("{max_mb:.0}"))]);
    for (process, color) in [("envoy", "#9467bd"), ("sidecar", "#8c564b")] {
        let points: Vec<(f64, f64)> = memory.iter().filter(|m| m.process == process).map(|m| (m.t, m.resident.total_mb)).collect();
        line(&mut out, &points, &x, &my, color, process);
    }
    let heap: Vec<(f64, f64)> = memory.iter().filter_map(|m| Some((m.t, m.heap?.in_use_mb))).collect();
    line(&mut out, &heap, &x, &my, "#7f7f7f", "sidecar malloc in use");

    // Every scheduled change, across all panels.
    for e in events {
        let (color, dash) = match e.event.split(' ').next().unwrap_or("") {
            "model_swap" => ("#bbbbbb", ""),
            "model_corrupt" | "model_checksum_mismatch" | "schema_breaking" | "config_broken" => ("#ff7f0e", "4 3"),
            "chaos_latency" | "chaos_errors" | "chaos_off" => ("#d62728", "2 2"),
            "sidecar_restart" | "envoy_hot_restart" => ("#000000", ""),
            _ => ("#1f77b4", "4 3"),
        };
        let ex = x(e.at_s);
        let _ = writeln!(
            out,
            r#"<line x1="{ex:.1}" y1="{TOP}" x2="{ex:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="{dash}" stroke-width="1" opacity="0.7"><title>{} s {}: {}</title></line>"#,
            y2 + PANEL,
            e.at_s,
            e.event,
            escape(&e.outcome)
        );
        if matches!(color, "#000000") {
            let _ = writeln!(out, r#"<text x="{:.1}" y="{}" font-size="10">{}</text>"#, ex + 3.0, TOP - 4.0, e.event);
        }
    }
    let axis_y = y2 + PANEL + 18.0;
    let mut t = 0.0;
    let step = if span > 300.0 { 60.0 } else { 10.0 };
    while t <= span {
        let _ = writeln!(out, r#"<text x="{:.1}" y="{axis_y}" text-anchor="middle">{t:.0}</text>"#, x(t));
        t += step;
    }
    let _ = writeln!(out, r#"<text x="{:.1}" y="{}" text-anchor="middle">seconds (grey: model swap; orange dashed: refused change; red dotted: chaos; black: restart)</text>"#, WIDTH / 2.0, axis_y + 18.0);
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, y: f64, title: &str, ticks: &[(f64, String)]) {
    let _ = writeln!(out, r##"<rect x="{LEFT}" y="{y}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##, WIDTH - LEFT - RIGHT);
    let _ = writeln!(out, r#"<text x="{LEFT}" y="{}">{title}</text>"#, y - 5.0);
    for (ty, label) in ticks {
        let _ = writeln!(out, r#"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#, LEFT - 5.0, ty + 4.0);
    }
}

fn line(out: &mut String, points: &[(f64, f64)], x: &dyn Fn(f64) -> f64, y: &dyn Fn(f64) -> f64, color: &str, label: &str) {
    if points.is_empty() {
        return;
    }
    let path: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
    let _ = writeln!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{}"><title>{label}</title></polyline>"#, path.join(" "));
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
