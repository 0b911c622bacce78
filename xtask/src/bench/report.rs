//! The results: a table on the terminal, a CSV and an SVG chart.

// xtask is a plain synchronous program (the load generator has its own runtime, and these
// calls run outside it): blocking file access and sleeps are fine here.
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Result;

use super::Row;
use super::scenarios::Measured;

/// The pass with the median headline figure (rate, or p99 latency, or connect rate), with the
/// most messages any pass lost in `worst_lost`.
pub(crate) fn median_pass(mut passes: Vec<(Measured, f64, f64)>) -> Option<(Measured, f64, f64)> {
    let worst_lost = passes.iter().map(|(m, ..)| m.lost()).max().unwrap_or(0);
    passes.sort_by(|a, b| headline(&a.0).total_cmp(&headline(&b.0)));
    let middle = passes.len() / 2;
    let mut median = passes.into_iter().nth(middle)?;
    median.0.worst_lost = worst_lost;
    Some(median)
}

/// The figure compared between brokers: p99 latency, connect rate, the per-client median
/// publish rate (one-at-a-time stresser rows), or else the received rate.
fn headline(m: &Measured) -> f64 {
    if let Some((_, p99, _)) = m.latency_us {
        p99
    } else if let Some((rate, _)) = m.connections {
        rate
    } else if let (true, Some((_, median, _))) = (m.per_client_headline, m.per_client) {
        median
    } else {
        m.rate
    }
}

/// The figure shown for a row.
fn figure(m: &Measured) -> String {
    if let Some((p50, p99, p999)) = m.latency_us {
        let mut text = format!("p50 {p50:.0} µs / p99 {p99:.0} µs / p99.9 {p999:.0} µs");
        if m.loss() > 0.0 {
            let _ = write!(text, " LOSSY {:.1} %", m.loss() * 100.0);
        } else if m.worst_lost > 0 {
            let _ = write!(text, " LOSSY in another pass: up to {} lost", m.worst_lost);
        }
        return text;
    }
    if let Some((rate, kib)) = m.connections {
        return format!("{rate:.0} connects/s, {kib:.2} KiB/conn");
    }
    let mut text = match m.per_client {
        Some((min, median, max)) if m.per_client_headline => format!(
            "{median:.0} msg/s median per client (min {min:.0}, max {max:.0}; {:.0} msg/s in all)",
            m.rate
        ),
        Some((min, median, max)) => format!(
            "{:.0} msg/s (per client {min:.0}/{median:.0}/{max:.0})",
            m.rate
        ),
        None => format!("{:.0} msg/s", m.rate),
    };
    if m.lost() > 0 {
        let _ = write!(
            text,
            " LOSSY: {} of {} lost ({:.1} %)",
            m.lost(),
            m.expected,
            m.loss() * 100.0
        );
    } else if m.worst_lost > 0 {
        let _ = write!(
            text,
            " LOSSY in another pass: up to {} of {} lost",
            m.worst_lost, m.expected
        );
    } else if m.expected > 0 {
        text.push_str(", none lost");
    }
    if m.duplicates > 0 {
        let _ = write!(text, " DUPLICATES: {}", m.duplicates);
    }
    if !m.errors.is_empty() {
        let _ = write!(text, " ERRORS: {}", m.errors.len());
    }
    text
}

/// Prints the rows on the terminal, grouped by scenario.
pub(crate) fn table(rows: &[Row], passes: usize) {
    println!(
        "\nmedian of {passes} pass(es); msg/s received in all, except one-at-a-time rows: median \
         per-client publish rate (as mqtt-stresser reports it); per client: publish rate \
         min/median/max; cpu: broker / load generator; sink: a reference for the one-at-a-time \
         rows, the same publishers writing to a socket read in bulk once a millisecond (no \
         broker, no subscribers)"
    );
    let mut scenario = String::new();
    for row in rows {
        if row.scenario != scenario {
            scenario.clone_from(&row.scenario);
            println!("\n{scenario}");
        }
        println!(
            "  {:<10} {:<78} cpu {:>4.0} % / {:>4.0} %",
            row.broker,
            figure(&row.measured),
            row.broker_cpu,
            row.generator_cpu
        );
        for error in row.measured.errors.iter().take(3) {
            println!("  {:<10} error: {error}", "");
        }
    }
}

/// Writes every row to `path`: the received rate in all (`rate_msg_s`) and the per-client
/// publish rates (min/median/max) side by side, whichever the table compares.
pub(crate) fn csv(rows: &[Row], path: &Path) -> Result<()> {
    let mut out = String::from(
        "scenario,broker,sent,expected,received,loss,rate_msg_s,per_client_min_msg_s,\
         per_client_median_msg_s,per_client_max_msg_s,seconds,p50_us,p99_us,p999_us,\
         connects_s,kib_per_connection,broker_cpu_pct,generator_cpu_pct,duplicates,\
         worst_lost_any_pass,errors\n",
    );
    for row in rows {
        let m = &row.measured;
        let (p50, p99, p999) = m.latency_us.unwrap_or_default();
        let (connects, kib) = m.connections.unwrap_or_default();
        let (client_min, client_median, client_max) = m.per_client.unwrap_or_default();
        let _ = writeln!(
            out,
            "\"{}\",{},{},{},{},{:.4},{:.0},{:.0},{:.0},{:.0},{:.3},{:.0},{:.0},{:.0},{:.0},{:.3},\
             {:.0},{:.0},{},{},\"{}\"",
            row.scenario,
            row.broker,
            m.sent,
            m.expected,
            m.received,
            m.loss(),
            m.rate,
            client_min,
            client_median,
            client_max,
            m.seconds,
            p50,
            p99,
            p999,
            connects,
            kib,
            row.broker_cpu,
            row.generator_cpu,
            m.duplicates,
            m.worst_lost,
            m.errors.join("; ").replace('"', "'")
        );
    }
    std::fs::File::create(path)?.write_all(out.as_bytes())?;
    Ok(())
}

/// Grouped horizontal bars, one group per scenario, each bar scaled to the group's largest
/// value (throughput, the one-at-a-time rows' per-client median and connect rate: longer is
/// better; latency: p99, shorter is better).
pub(crate) fn svg(rows: &[Row], path: &Path) -> Result<()> {
    let colours = ["#2b8a3e", "#1c7ed6", "#e8590c", "#862e9c"];
    let mut brokers: Vec<&str> = Vec::new();
    for row in rows {
        if !brokers.contains(&row.broker) {
            brokers.push(row.broker);
        }
    }
    let mut groups: Vec<(&str, Vec<&Row>)> = Vec::new();
    for row in rows {
        match groups.iter_mut().find(|(name, _)| *name == row.scenario) {
            Some((_, list)) => list.push(row),
            None => groups.push((&row.scenario, vec![row])),
        }
    }
    let bar = 16;
    let group_height = |n: usize| 22 + n * (bar + 4) + 10;
    let height: usize = 40
        + groups
            .iter()
            .map(|(_, r)| group_height(r.len()))
            .sum::<usize>();
    let width = 900;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, broker) in brokers.iter().enumerate() {
        let colour = colours.get(i).copied().unwrap_or("#868e96");
        let x = 10 + i * 140;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"10\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{}\" y=\"21\">{broker}</text>",
            x + 16
        );
    }
    let mut y = 40;
    for (name, list) in &groups {
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>",
            y + 14,
            escape(name)
        );
        y += 22;
        let max = list
            .iter()
            .map(|r| headline(&r.measured))
            .fold(0.0, f64::max)
            .max(1e-9);
        for row in list {
            let value = headline(&row.measured);
            let length = (value / max * 520.0).max(1.0);
            let index = brokers.iter().position(|b| *b == row.broker).unwrap_or(0);
            let colour = colours.get(index).copied().unwrap_or("#868e96");
            let _ = writeln!(
                out,
                "<rect x=\"10\" y=\"{y}\" width=\"{length:.0}\" height=\"{bar}\" fill=\"{colour}\"/>\
                 <text x=\"{:.0}\" y=\"{}\">{}</text>",
                length + 16.0,
                y + 12,
                escape(&figure(&row.measured))
            );
            y += bar + 4;
        }
        y += 10;
    }
    out.push_str("</svg>\n");
    std::fs::File::create(path)?.write_all(out.as_bytes())?;
    Ok(())
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
